"""L4: a byte relay between a pair of Protocols with pause/resume flow control.

The downstream side reads ahead only while the upstream connection is being opened;
after that every chunk is handed straight to the other transport's `write`, which
sends at once when the socket is writable (uvloop) and buffers otherwise.
"""

from __future__ import annotations

import asyncio
from time import monotonic
from typing import cast

from podium.proxy.balancer import Balancer, EndpointState
from podium.proxy.config import open_endpoint
from podium.proxy.listener import Listener

PENDING_MAX = 256 * 1024  # bytes read ahead while connecting, before pausing the client


class TCPUpstream(asyncio.Protocol):
    __slots__ = ("down", "eof", "transport")

    def __init__(self, down: TCPDownstream) -> None:
        self.down = down
        self.eof = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        d = self.down
        d.active = True
        d.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        d = self.down
        if d.eof or d.closed:  # nothing left to pass the EOF on to (its client has gone)
            return False
        if d.transport.can_write_eof():
            d.transport.write_eof()
        # keep sending what the client still writes (half close); a TLS connection (another
        # node's mesh gateway) cannot half close: it closes after its peer's close_notify
        t = self.transport
        return t is None or t.get_extra_info("sslcontext") is None

    def connection_lost(self, exc: Exception | None) -> None:
        self.down.upstream_lost()

    def pause_writing(self) -> None:
        self.down.transport.pause_reading()

    def resume_writing(self) -> None:
        self.down.transport.resume_reading()


class TCPDownstream(asyncio.Protocol):
    __slots__ = (
        "active",
        "attempts",
        "balancer",
        "closed",
        "eof",
        "ep",
        "held_at",
        "idle_since",
        "listener",
        "pending",
        "t0",
        "transport",
        "tried",
        "up",
    )

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        balancer = listener.balancer
        assert balancer is not None
        self.balancer: Balancer = balancer
        self.up: TCPUpstream | None = None
        self.ep: EndpointState | None = None
        self.pending: list[bytes] = []
        self.eof = False
        self.closed = False
        self.active = True
        self.idle_since = 0.0
        self.attempts = 0
        self.tried: list[EndpointState] = []
        self.t0 = 0.0
        self.held_at = 0.0  # waiting for a sleeping service's first endpoint since

    # -- client side -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.listener.conns.add(self)
        m = self.balancer.service.metrics
        m.connections += 1
        m.active += 1
        self.t0 = monotonic()
        self._attempt()

    def data_received(self, data: bytes) -> None:
        up = self.up
        if up is not None and up.transport is not None:
            self.active = True
            up.transport.write(data)
            return
        self.pending.append(data)
        if sum(map(len, self.pending)) > PENDING_MAX:
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        up = self.up
        if up is None or up.transport is None:
            return True  # sent on once connected
        if up.eof:
            return False
        if up.transport.can_write_eof():
            up.transport.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.listener.conns.discard(self)
        m = self.balancer.service.metrics
        m.active -= 1
        if self.held_at:
            self.held_at = 0.0
            self.balancer.service.unhold(self)
        if self.ep is not None:
            self.ep.active -= 1
            self.ep = None
            m.observe(monotonic() - self.t0, False)
        up = self.up
        if up is not None and up.transport is not None:
            up.transport.close()  # flushes what the client sent last

    def pause_writing(self) -> None:
        up = self.up
        if up is not None and up.transport is not None:
            up.transport.pause_reading()

    def resume_writing(self) -> None:
        up = self.up
        if up is not None and up.transport is not None:
            up.transport.resume_reading()

    # -- upstream side -----------------------------------------------------------

    def _attempt(self) -> None:
        now = monotonic()
        ep = self.balancer.pick(now, self.tried)
        if ep is None:
            svc = self.balancer.service
            if svc.wake is not None and not svc.states and not self.tried and svc.hold(self, now):
                self.held_at = now  # a sleeping service: wait for its first copy
                return
            svc.metrics.observe(now - self.t0, True)
            self.transport.abort()
            return
        ep.active += 1
        self.ep = ep
        self.listener.spawn(self._connect(ep))

    async def _connect(self, ep: EndpointState) -> None:
        loop = self.listener.loop
        cfg = self.balancer.config
        up = TCPUpstream(self)
        try:
            async with asyncio.timeout(cfg.connect_timeout):
                await open_endpoint(loop, lambda: up, ep.endpoint)
        except (OSError, TimeoutError):
            self.balancer.failure(ep, monotonic())
            if self.closed:
                return
            ep.active -= 1
            self.ep = None
            self.attempts += 1
            if self.attempts <= cfg.retries:
                self.balancer.service.metrics.retries += 1
                self.tried.append(ep)
                self._attempt()
            else:
                self.balancer.service.metrics.observe(monotonic() - self.t0, True)
                self.transport.abort()
            return
        self.balancer.success(ep)
        assert up.transport is not None
        if self.closed:
            up.transport.close()
            return
        self.up = up
        if self.pending:
            up.transport.write(b"".join(self.pending))
            self.pending = []
            self.transport.resume_reading()
        if self.eof and up.transport.can_write_eof():
            up.transport.write_eof()

    def upstream_lost(self) -> None:
        if not self.closed:
            self.transport.close()  # flushes what the server sent last

    # -- a sleeping service -------------------------------------------------------

    def release(self, now: float) -> None:
        self.held_at = 0.0
        self.active = True
        self._attempt()

    def expire(self, now: float) -> None:
        """No copy came in time: a TCP client can only be told by a closed connection."""
        self.held_at = 0.0
        self.balancer.service.metrics.observe(now - self.t0, True)
        self.transport.abort()

    # -- housekeeping ------------------------------------------------------------

    def sweep(self, now: float) -> None:
        """Close a relay idle for longer than request_timeout (checked every sweep)."""
        if self.held_at:
            return  # the service's own sweep ends the wait
        if self.active:
            self.active = False
            self.idle_since = now
        elif now - self.idle_since > self.balancer.config.request_timeout:
            self.shut()

    def shut(self) -> None:
        self.transport.abort()
        up = self.up
        if up is not None and up.transport is not None:
            up.transport.abort()
