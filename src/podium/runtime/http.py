"""Serving an ASGI app inside our own event loop: bind first, no uvicorn signal handling."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn


class QuietUvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the process owner decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def install_signal_handlers(self) -> None:
        return None


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


def server(app: Any) -> QuietUvicorn:
    return QuietUvicorn(
        uvicorn.Config(
            app,
            log_level="warning",
            lifespan="off",
            loop="none",
            timeout_graceful_shutdown=1,
        )
    )
