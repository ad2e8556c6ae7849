"""Serving an ASGI app inside our own event loop: bind first, no uvicorn signal handling.

With TLS, each connection's peer identity (read once from its certificate, see
podium.tls.identity) is in every request's `scope["state"]["peer"]`, WebSockets included.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from podium.tls.context import ServerTLS
from podium.tls.identity import ANONYMOUS, of_ssl_object


class QuietUvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the process owner decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def install_signal_handlers(self) -> None:
        return None


class PeerProtocol(HttpToolsProtocol):
    """HTTP (and the WebSockets it upgrades to) with the peer's identity in the scope state."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        try:
            peer = of_ssl_object(transport.get_extra_info("ssl_object"))
        except ValueError:  # a certificate our CA signed but we cannot read: no identity
            peer = ANONYMOUS
        # A per-connection copy: uvicorn copies app_state into each request's scope and
        # hands it to the WebSocket protocol on an upgrade.
        self.app_state = {**self.app_state, "peer": peer}


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, bound now, so a taken port is a clear error and port 0 works."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    return sock


def server(app: Any, *, tls: ServerTLS | None = None) -> QuietUvicorn:
    extra: dict[str, Any] = {}
    if tls is not None:
        extra["ssl_context_factory"] = lambda _cfg, _default: tls.listen_context
    return QuietUvicorn(
        uvicorn.Config(
            app,
            log_level="warning",
            lifespan="off",
            loop="none",
            http=PeerProtocol,
            timeout_graceful_shutdown=1,
            **extra,
        )
    )
