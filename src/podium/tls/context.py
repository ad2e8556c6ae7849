"""SSL contexts: a server's (reloadable in place) and a client's (which checks the peer's role).

A listening socket keeps the SSL context it was created with, so a server hands each new
connection the latest one from its SNI callback (called for every handshake, with or
without SNI): renewed certificates and a changed trust bundle take effect at the next
connection, with no restart and no dropped connection.

A client checks the peer's *role*, not only its chain: it verifies the name in the
peer's certificate against `server.podium` (servers) or `<node-id>.node.podium` (one
node), whatever address it dialled, so an agent's certificate can never pass as a
server's. httpx is told that name per request (`sni_hostname`); see `NamedTransport`.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

import httpx

from podium.tls.files import Credentials, read_text

log = logging.getLogger(__name__)


def server_context(creds: Credentials, *, require_client_cert: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(creds.cert, creds.key)
    ctx.load_verify_locations(creds.ca)
    # OPTIONAL on the API: joining and the CA bundle need no certificate; every other
    # route refuses a caller without one (401). Agents' APIs and the proxy REQUIRE one.
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    # No TLS 1.3 session tickets: nothing of ours resumes sessions, and a ticket arrives
    # after the handshake, while a threaded client (websockets' sync client: the CLI's
    # `alloc exec`) may already be reading in one thread as it writes its request in
    # another; OpenSSL does not take one SSL object used from two threads at once, and
    # such a request was lost now and then (the exec WebSocket never answered).
    ctx.num_tickets = 0
    return ctx


def client_context(creds: Credentials | None, *, ca: str | None = None) -> ssl.SSLContext:
    """Verify the peer against `creds.ca` (or `ca`), present `creds`' certificate if any."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(ca or (creds.ca if creds else None))
    if creds is not None:
        ctx.load_cert_chain(creds.cert, creds.key)
    return ctx


class ServerTLS:
    """A listener's TLS: `listen_context` for the socket; `reload()` after files change."""

    def __init__(self, creds: Credentials, *, require_client_cert: bool) -> None:
        self.creds = creds
        self.require_client_cert = require_client_cert
        self.current = server_context(creds, require_client_cert=require_client_cert)
        self.listen_context = server_context(creds, require_client_cert=require_client_cert)
        self.listen_context.sni_callback = self._pick
        self.loaded_at = creds.mtime()
        self.ca_pem = read_text(creds.ca)

    def _pick(self, sock: Any, _name: str | None, _ctx: ssl.SSLContext) -> None:
        sock.context = self.current
        return None

    def reload(self) -> None:
        """Build a fresh context from the files; a bad file keeps the old one (logged)."""
        try:
            self.current = server_context(self.creds, require_client_cert=self.require_client_cert)
            self.loaded_at = self.creds.mtime()
            self.ca_pem = read_text(self.creds.ca)
        except (OSError, ssl.SSLError, ValueError) as e:
            log.error("TLS files %s could not be loaded, keeping the old ones: %s", self.creds, e)

    def reload_if_changed(self) -> bool:
        if self.creds.mtime() != self.loaded_at:
            self.reload()
            return True
        return False


class NamedTransport(httpx.AsyncBaseTransport):
    """Every request checks the peer's certificate for `name`, whatever host it dials."""

    def __init__(self, inner: httpx.AsyncBaseTransport, name: str) -> None:
        self.inner = inner
        self.name = name

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme == "https":
            request.extensions["sni_hostname"] = self.name
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class SyncNamedTransport(httpx.BaseTransport):
    def __init__(self, inner: httpx.BaseTransport, name: str) -> None:
        self.inner = inner
        self.name = name

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme == "https":
            request.extensions["sni_hostname"] = self.name
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()
