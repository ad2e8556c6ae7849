"""L7: HTTP/1.1 over asyncio Protocols, pooled kept-alive upstream connections.

Requests from clients (the internet-facing side) are parsed by llhttp (httptools) in its
strict mode, which refuses what RFC 9112 says to refuse: Content-Length with
Transfer-Encoding, duplicate or malformed Content-Length, whitespace before a colon,
obs-fold, bare LF, bad chunk framing; on top of it a duplicate or (HTTP/1.1) missing Host
and Transfer-Encoding in HTTP/1.0 are refused. What goes to the endpoint is re-encoded
from what was parsed (request line, headers as received, a chunked body re-chunked, no
trailers), so client and endpoint can never disagree on where a request ends.
Responses from endpoints are framed by a small scanner (Content-Length, chunked,
until-close) and passed through untouched. One exchange per client connection at a time:
pipelined requests wait, parsed, in a queue and go out one after another.

    HTTPDownstream ── request ──► Balancer.pick ─► EndpointState.idle (pool) or connect
          ▲                                            │
          └──────────── response bytes ◄── HTTPUpstream ┘ (back to the pool when framed)
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections import deque
from time import monotonic
from typing import cast

import httptools

from podium.proxy.balancer import Balancer, EndpointState
from podium.proxy.config import open_endpoint
from podium.proxy.listener import Listener
from podium.proxy.metrics import BUCKETS

IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))
MAX_HEAD = 64 * 1024
BUFFER_BODY = 1024 * 1024  # request bodies up to this are buffered whole, so they can be retried
PIPELINE_MAX = 256 * 1024  # read-ahead while a request is in flight, before pausing the client
POOL_MAX = 512  # idle connections kept per endpoint

# HTTPUpstream states
IDLE, HEAD, LENGTH, CHUNKED, UNTIL_CLOSE, TUNNEL = range(6)

REASONS = {
    400: b"Bad Request",
    404: b"Not Found",
    431: b"Request Header Fields Too Large",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}


class ProtocolError(Exception):
    pass


def error_response(status: int, message: str, *, close: bool, retry_after: int = 0) -> bytes:
    body = (message + "\n").encode()
    head = b"HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n" % (
        status,
        REASONS[status],
        len(body),
    )
    if retry_after:
        head += b"retry-after: %d\r\n" % retry_after
    return head + (b"connection: close\r\n\r\n" if close else b"\r\n") + body


def header_value(lower: bytes, name: bytes) -> bytes | None:
    """The value of header `name` (given as b'\\r\\nname:') in a lowered head, or None."""
    i = lower.find(name)
    if i < 0:
        return None
    j = lower.find(b"\r\n", i + 2)
    return lower[i + len(name) : j].strip()


class ChunkScanner:
    """Finds where a chunked body ends, across reads, without copying the data."""

    __slots__ = ("line", "remaining", "state")

    SIZE, DATA, DATA_CRLF, TRAILER = range(4)

    def __init__(self) -> None:
        self.state = self.SIZE
        self.remaining = 0
        self.line = b""

    def feed(self, data: bytes, start: int) -> int:
        """Index just past the end of the body in `data`, or -1 if it goes on."""
        i, n = start, len(data)
        while i < n:
            state = self.state
            if state == self.DATA or state == self.DATA_CRLF:
                take = min(self.remaining, n - i)
                i += take
                self.remaining -= take
                if self.remaining == 0:
                    if state == self.DATA:
                        self.state, self.remaining = self.DATA_CRLF, 2
                    else:
                        self.state = self.SIZE
                continue
            j = data.find(b"\n", i)
            if j < 0:
                self.line += data[i:]
                if len(self.line) > 8192:
                    raise ProtocolError("chunk line too long")
                return -1
            line = self.line + data[i:j] if self.line else data[i:j]
            self.line = b""
            i = j + 1
            if state == self.SIZE:
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise ProtocolError("bad chunk size") from None
                if size < 0:
                    raise ProtocolError("bad chunk size")
                if size == 0:
                    self.state = self.TRAILER
                else:
                    self.state, self.remaining = self.DATA, size
            elif not line.strip():
                return i  # the empty line after the (possibly empty) trailer
        return -1


class HTTPUpstream(asyncio.Protocol):
    """One connection to an endpoint; serves one exchange at a time, then waits in the pool."""

    __slots__ = ("buf", "chunks", "down", "ep", "keep", "remaining", "state", "transport")

    def __init__(self, ep: EndpointState) -> None:
        self.ep = ep
        self.down: HTTPDownstream | None = None
        self.state = IDLE
        self.buf = b""
        self.remaining = 0
        self.chunks: ChunkScanner | None = None
        self.keep = True
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def send(self, down: HTTPDownstream, data: bytes) -> None:
        self.down = down
        self.state = HEAD
        self.keep = True
        assert self.transport is not None
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        d = self.down
        if d is None:
            # nothing was asked: a broken server; this connection cannot be trusted
            self.abort()
            return
        state = self.state
        if state == LENGTH:
            n = len(data)
            remaining = self.remaining
            if n < remaining:
                self.remaining = remaining - n
                d.transport.write(data)
                return
            self.remaining = 0
            if n == remaining:
                d.transport.write(data)
            else:
                d.transport.write(data[:remaining])
                self.keep = False  # the server said more than it framed
            self._done(d)
            return
        if state == HEAD:
            self._head(d, self.buf + data if self.buf else data)
            return
        if state == CHUNKED:
            assert self.chunks is not None
            try:
                end = self.chunks.feed(data, 0)
            except ProtocolError:
                d.abort_exchange(self)
                return
            if end < 0:
                d.transport.write(data)
                return
            if end < len(data):
                d.transport.write(data[:end])
                self.keep = False
            else:
                d.transport.write(data)
            self._done(d)
            return
        d.transport.write(data)  # UNTIL_CLOSE or TUNNEL

    def _head(self, d: HTTPDownstream, buf: bytes) -> None:
        # The hot path of every response: find the head's end, read the status and the
        # framing headers from a lowered copy, write the bytes on as they came.
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                d.abort_exchange(self)
                return
            self.buf = buf
            return
        if self.buf:
            self.buf = b""
        try:
            if buf[4] != 47:  # b"HTTP/"
                raise ValueError
            status = int(buf[9:12])
        except (ValueError, IndexError):
            d.abort_exchange(self)
            return
        head_end = end + 4
        if status < 200:
            self._informational(d, buf, status, head_end)
            return
        if 502 <= status <= 504 and d.retry_on_status(self, status):
            return
        stop = end + 2
        have = len(buf)
        lower = buf.lower() if have <= 4096 else buf[:stop].lower()
        i = lower.find(b"\r\nconnection:", 12, stop)
        if buf[7] == 49:  # HTTP/1.1
            keep = i < 0 or lower.find(b"close", i, lower.find(b"\r\n", i + 2)) < 0
        else:
            keep = i >= 0 and lower.find(b"keep-alive", i, lower.find(b"\r\n", i + 2)) > 0
        # the balancer hears only of answers that can change an endpoint's state
        d.sent = True
        d.status = status
        ep = self.ep
        if status >= 500 or ep.failures or ep.fivexx or not ep.ok:
            d.report(ep, status)
        if d.head_req or status == 204 or status == 304:
            length = 0
        else:
            i = lower.find(b"\r\ncontent-length:", 12, stop)
            if i < 0:
                self._unframed(d, buf, lower, head_end, stop, keep)
                return
            try:
                length = int(lower[i + 17 : lower.find(b"\r\n", i + 2)])
            except ValueError:
                d.abort_exchange(self)
                return
        total = head_end + length
        if have == total:
            d.transport.write(buf)
        elif have < total:
            d.transport.write(buf)
            self.keep = keep
            self.state = LENGTH
            self.remaining = total - have
            return
        else:
            d.transport.write(buf[:total])
            keep = False  # the server said more than it framed
        self.down = None
        self.state = IDLE
        d.exchange_done(self, keep)

    def _informational(self, d: HTTPDownstream, buf: bytes, status: int, head_end: int) -> None:
        d.sent = True
        if status == 101:  # switching protocols: from now on a plain byte relay
            self.state = TUNNEL
            self.keep = False
            d.transport.write(buf)
            d.tunnel = True
            return
        d.transport.write(buf[:head_end])  # 100 Continue and friends; the real head follows
        if len(buf) > head_end:
            self._head(d, buf[head_end:])

    def _unframed(
        self, d: HTTPDownstream, buf: bytes, lower: bytes, head_end: int, stop: int, keep: bool
    ) -> None:
        """No Content-Length: a chunked body, or one that ends when the server closes."""
        i = lower.find(b"\r\ntransfer-encoding:", 12, stop)
        if i < 0 or lower.find(b"chunked", i, lower.find(b"\r\n", i + 2)) < 0:
            self.state = UNTIL_CLOSE
            self.keep = False
            d.close_after = True
            d.transport.write(buf)
            return
        self.keep = keep
        self.state = CHUNKED
        self.chunks = chunks = ChunkScanner()
        try:
            stop_at = chunks.feed(buf, head_end)
        except ProtocolError:
            d.abort_exchange(self)
            return
        if stop_at < 0:
            d.transport.write(buf)
            return
        if stop_at < len(buf):
            d.transport.write(buf[:stop_at])
            self.keep = False
        else:
            d.transport.write(buf)
        self._done(d)

    def _done(self, d: HTTPDownstream) -> None:
        self.down = None
        self.state = IDLE
        d.exchange_done(self, self.keep)

    def connection_lost(self, exc: Exception | None) -> None:
        self.keep = False
        d = self.down
        if d is None:
            try:
                self.ep.idle.remove(self)
            except ValueError:
                pass
            return
        self.down = None
        state = self.state
        self.state = IDLE
        if state == UNTIL_CLOSE:
            d.exchange_done(self, False)
        elif state == TUNNEL:
            d.transport.close()
        else:
            d.upstream_lost(self, state == HEAD and not self.buf)

    def pause_writing(self) -> None:
        if self.down is not None:
            self.down.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.down is not None:
            self.down.transport.resume_reading()

    def abort(self) -> None:
        self.down = None
        self.keep = False
        if self.transport is not None:
            self.transport.abort()


class Request:
    """One request as parsed, re-encoded for the endpoint: the head from the parser's parts,
    a chunked body re-chunked, so the endpoint reads exactly the framing we read."""

    __slots__ = (
        "attached",
        "chunked",
        "close",
        "complete",
        "error",
        "head_req",
        "host",
        "method",
        "out",
        "streaming",
        "target",
        "wire",
    )

    def __init__(self) -> None:
        self.method = b""
        self.target = b""
        self.host = b""
        self.close = False
        self.chunked = False
        self.head_req = False
        self.streaming = False  # its body goes on as it comes: not buffered, not retried
        self.complete = False
        self.attached = False  # its bytes so far went to an endpoint; the rest follows there
        self.out = bytearray()  # bytes not yet sent (all of them until dispatched)
        self.wire = b""  # a whole buffered request: what a retry sends again
        self.error: tuple[int, str] | None = None  # not a request: answer this and close


class HTTPDownstream(asyncio.Protocol):
    """A client connection: parses requests (llhttp via httptools, strict: what RFC 9112
    says to reject is rejected), sends each to an endpoint, relays the answer."""

    __slots__ = (
        "attempts",
        "backlog",
        "balancer",
        "busy",
        "close_after",
        "closed",
        "cur",
        "ep",
        "hdrs",
        "head_bytes",
        "head_req",
        "held_at",
        "idle_since",
        "idle_t0",
        "listener",
        "loop",
        "p_cl",
        "p_done",
        "p_expect",
        "p_host",
        "p_te",
        "p_url",
        "parser",
        "paused",
        "queue",
        "released",
        "sent",
        "status",
        "t0",
        "transport",
        "tried",
        "tunnel",
        "up",
    )

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.loop = listener.loop
        self.balancer: Balancer | None = listener.balancer
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self.queue: deque[Request] = deque()  # queue[0] is in flight while busy
        self.cur: Request | None = None  # the request being parsed (its body may go on)
        self.p_url = b""
        self.hdrs: list[bytes] = []
        self.p_host: bytes | None = None
        self.p_te = False
        self.p_cl = 0
        self.p_expect = False
        self.p_done = False  # the current message's head is complete (then: a body or trailer)
        self.head_bytes = 0
        self.backlog = 0  # bytes read while a request was in flight
        self.busy = False
        self.closed = False
        self.paused = False
        self.close_after = False
        self.tunnel = False
        self.up: HTTPUpstream | None = None
        self.ep: EndpointState | None = None
        self.head_req = False
        self.sent = False  # response bytes went to the client: no retry after that
        self.status = 0
        self.attempts = 0
        self.tried: list[EndpointState] | None = None
        self.t0 = 0.0
        self.idle_t0 = -1.0
        self.idle_since = 0.0
        self.held_at = 0.0  # waiting for a sleeping service's first endpoint since
        self.released = 0.0  # when the wait ended (the request timeout counts from then)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.listener.conns.add(self)
        self.t0 = monotonic()
        if self.balancer is not None:
            m = self.balancer.service.metrics
            m.connections += 1
            m.active += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.listener.conns.discard(self)
        if self.listener.balancer is not None:
            self.listener.balancer.service.metrics.active -= 1
        up = self.up
        if up is not None:
            self.up = None
            up.abort()  # mid-exchange: the connection cannot go back to the pool
        if self.ep is not None:
            self.ep.active -= 1
            self.ep = None
        if self.held_at and self.balancer is not None:
            self.held_at = 0.0
            self.balancer.service.unhold(self)

    def pause_writing(self) -> None:
        if self.up is not None and self.up.transport is not None:
            self.up.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.up is not None and self.up.transport is not None:
            self.up.transport.resume_reading()

    # -- parsing (httptools calls these from feed_data) ------------------------------

    def on_message_begin(self) -> None:
        self.p_url = b""
        self.hdrs = []
        self.p_host = None
        self.p_te = False
        self.p_cl = 0
        self.p_expect = False
        self.p_done = False

    def on_url(self, url: bytes) -> None:
        self.p_url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.p_done:
            return  # a chunked body's trailer section: not forwarded
        n = len(name)
        if n == 4 and name.lower() == b"host":
            if self.p_host is not None:
                raise ProtocolError("more than one Host header")
            self.p_host = value
        elif n == 17 and name.lower() == b"transfer-encoding":
            self.p_te = True
        elif n == 14 and name.lower() == b"content-length":
            self.p_cl = int(value)  # llhttp checked it: digits, one header
        elif n == 6 and name.lower() == b"expect":
            self.p_expect = True  # the client waits for 100 Continue: stream the body
        self.hdrs.append(b"%s: %s\r\n" % (name, value))

    def on_headers_complete(self) -> None:
        self.p_done = True
        p = self.parser
        assert p is not None
        version = p.get_http_version()
        if version == "1.1":
            if self.p_host is None:
                raise ProtocolError("no Host header")
        elif version != "1.0":
            raise ProtocolError("unsupported HTTP version")
        elif self.p_te:
            raise ProtocolError("Transfer-Encoding in an HTTP/1.0 request")
        r = Request()
        r.method = method = p.get_method()
        r.target = self.p_url
        r.host = self.p_host or b""
        r.close = not p.should_keep_alive()
        r.head_req = method == b"HEAD"
        r.chunked = self.p_te
        r.streaming = self.p_te or self.p_expect or self.p_cl > BUFFER_BODY or p.should_upgrade()
        r.out += b"%s %s HTTP/%s\r\n%s\r\n" % (
            method,
            self.p_url,
            version.encode(),
            b"".join(self.hdrs),
        )
        self.head_bytes = 0
        self.cur = r
        if self.queue:
            self.backlog += len(r.out)  # waits behind the request in flight
        self.queue.append(r)

    def on_body(self, body: bytes) -> None:
        r = self.cur
        assert r is not None
        data = b"%x\r\n%s\r\n" % (len(body), body) if r.chunked else body
        if r.attached:
            up = self.up
            if up is not None and up.transport is not None:
                up.transport.write(data)
            return  # the exchange ended early: the rest of the body has no reader
        if self.queue and r is not self.queue[0]:
            self.backlog += len(data)
        r.out += data
        if self.held_at and len(r.out) > PIPELINE_MAX and not self.paused:
            # Held for a sleeping service: the rest of the upload waits in the client.
            self.paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        r = self.cur
        assert r is not None
        self.cur = None
        if r.chunked:
            self._end_chunks(r)
        r.complete = True
        if not r.streaming:
            r.wire = bytes(r.out)

    def _end_chunks(self, r: Request) -> None:
        if r.attached:
            up = self.up
            if up is not None and up.transport is not None:
                up.transport.write(b"0\r\n\r\n")
        else:
            r.out += b"0\r\n\r\n"

    # -- requests ---------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.tunnel:
            if self.up is not None and self.up.transport is not None:
                self.up.transport.write(data)
            return
        parser = self.parser
        if parser is None:
            r = self.queue[-1] if self.queue else None
            if r is not None and r.error is None:  # after an upgrade request: raw bytes
                if r.attached and self.up is not None and self.up.transport is not None:
                    self.up.transport.write(data)
                else:
                    r.out += data
            return
        if not self.p_done:
            self.head_bytes += len(data)
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            self.parser = None  # what follows belongs to the protocol switched to
            r = self.queue[-1]
            r.close = True
            r.out += data[e.args[0] :]
        except httptools.HttpParserError as e:
            cause = e.__context__ if isinstance(e, httptools.HttpParserCallbackError) else e
            self._refuse(400, f"bad request: {cause}")
        else:
            if not self.p_done and self.head_bytes > MAX_HEAD:
                self._refuse(431, "request head too large")
        if self.busy:
            if self.backlog > PIPELINE_MAX and not self.paused:
                self.paused = True
                self.transport.pause_reading()
            return
        self._next()

    def _refuse(self, status: int, message: str) -> None:
        """Parsing stopped here: answer `status` once the requests before it are answered,
        then close (what follows cannot be framed)."""
        self.parser = None
        cur = self.cur
        if cur is not None and (cur.attached or (self.busy and self.queue[0] is cur)):
            # Its body was going through to an endpoint that now waits for the rest: there
            # is no honest way on for either side.
            self.transport.abort()
            return
        r = Request()
        r.error = (status, message)
        if cur is not None:
            self.queue.remove(cur)  # a half-parsed request is never sent
        self.cur = None
        self.queue.append(r)
        self.transport.pause_reading()

    def _next(self) -> None:
        queue = self.queue
        if not queue:
            return
        r = queue[0]
        if r.error is not None:
            self._reject(*r.error)
            return
        if not (r.complete or r.streaming):
            return  # a small body still coming: wait for all of it (it can be retried)
        balancer = self.balancer
        listener = self.listener
        if listener.router is not None:
            service = listener.router.match(r.host.lower(), r.target)
            if service is None:
                self._reject(404, "no route")
                return
            balancer = listener.balancer_for(service)
        assert balancer is not None
        self.close_after = r.close
        self.head_req = r.head_req
        self.balancer = balancer
        self.busy = True
        self.sent = False
        self.t0 = t0 = monotonic()
        balancer.budget.requests += 1
        self._dispatch(balancer, t0)

    def _idempotent(self) -> bool:
        """Whether the request in flight may be sent twice (only whole, buffered requests)."""
        r = self.queue[0]
        return not r.streaming and r.method in IDEMPOTENT

    def _send(self, up: HTTPUpstream) -> None:
        r = self.queue[0]
        self.up = up
        if r.streaming:
            data = bytes(r.out)
            r.out.clear()
            r.attached = True
            up.send(self, data)
        else:
            up.send(self, r.wire)

    def _dispatch(self, balancer: Balancer, now: float) -> None:
        ep = balancer.pick(now, self.tried or ())
        if ep is None:
            svc = balancer.service
            wake = svc.wake
            if wake is not None and not svc.states and not self.tried:
                # A sleeping service: wait for its first copy (the agent wakes it).
                if svc.hold(self, now):
                    self.held_at = now
                    return
                self._answer(
                    503,
                    f"service {svc.name} is starting and {wake.max_held} requests already "
                    "wait for it; retry",
                    retry_after=wake.retry_after,
                )
                return
            self._answer(503, "no healthy endpoint")
            return
        ep.active += 1
        self.ep = ep
        idle = ep.idle
        while idle:
            up = idle.pop()
            t = up.transport
            if t is not None and not t.is_closing():
                self._send(up)
                return
        self.listener.spawn(self._connect(balancer, ep))

    async def _connect(self, balancer: Balancer, ep: EndpointState) -> None:
        up = HTTPUpstream(ep)
        try:
            async with asyncio.timeout(balancer.config.connect_timeout):
                await open_endpoint(self.loop, lambda: up, ep.endpoint)
        except (OSError, TimeoutError):
            balancer.failure(ep, monotonic())
            if self.ep is ep:
                self._attempt_failed(ep, 502, "connect failed", connect=True)
            return
        if self.ep is not ep or self.closed:
            up.abort()  # the client left (or timed out) while we connected
            return
        self._send(up)

    def _attempt_failed(self, ep: EndpointState, status: int, why: str, *, connect: bool) -> None:
        ep.active -= 1
        self.ep = None
        self.up = None
        balancer = self.balancer
        assert balancer is not None
        self.attempts += 1
        now = monotonic()
        if (
            not self.sent
            and self.attempts <= balancer.config.retries
            and (connect or (self._idempotent() and balancer.budget.try_spend(now)))
        ):
            balancer.service.metrics.retries += 1
            if self.tried is None:
                self.tried = [ep]
            else:
                self.tried.append(ep)
            self._dispatch(balancer, now)
            return
        self._answer(status, why)

    def retry_on_status(self, up: HTTPUpstream, status: int) -> bool:
        """A 502/503/504 head arrived: retry elsewhere if allowed (the answer is dropped)."""
        balancer = self.balancer
        assert balancer is not None
        if (
            self.attempts >= balancer.config.retries
            or not self._idempotent()
            or not balancer.budget.try_spend(monotonic())
        ):
            return False
        ep = self.ep
        assert ep is not None
        balancer.response(ep, status, monotonic())
        up.abort()  # its body is unread: cheaper to drop than to drain
        self.up = None
        ep.active -= 1
        self.ep = None
        self.attempts += 1
        balancer.service.metrics.retries += 1
        if self.tried is None:
            self.tried = [ep]
        else:
            self.tried.append(ep)
        self._dispatch(balancer, monotonic())
        return True

    def report(self, ep: EndpointState, status: int) -> None:
        """Tell the balancer about a response that may move a breaker or an ejection."""
        if self.balancer is not None:
            self.balancer.response(ep, status, monotonic())

    def exchange_done(self, up: HTTPUpstream, keep: bool) -> None:
        ep = self.ep
        self.up = None
        self.ep = None
        balancer = self.balancer
        assert balancer is not None
        m = balancer.service.metrics
        took = monotonic() - self.t0
        m.requests += 1
        if self.status >= 500:
            m.errors += 1
        m.buckets[bisect_left(BUCKETS, took)] += 1
        m.latency_sum += took
        if ep is not None:
            ep.active -= 1
            idle = ep.idle
            if keep and not ep.removed and len(idle) < POOL_MAX:
                idle.append(up)
            else:
                up.abort()
        else:
            up.abort()
        self._finish()

    def _finish(self, *, soon: bool = False) -> None:
        """The exchange is over: take the next pipelined request (on the next loop turn when
        `soon`, so answers of our own to many pipelined requests cannot recurse deeply)."""
        self.busy = False
        if self.attempts:
            self.attempts = 0
            self.tried = None
        r = self.queue.popleft()
        if not r.complete:
            self.close_after = True  # the rest of its body is on the way: no reader for it
        if self.close_after:
            self.transport.close()
            return
        if self.listener.router is not None:
            self.balancer = None
        self.backlog = 0
        if self.paused and self.parser is not None:
            self.paused = False
            self.transport.resume_reading()
        if self.queue:
            if soon:
                self.loop.call_soon(self._resume)
            else:
                self._next()

    def _resume(self) -> None:
        if not self.busy and not self.closed and self.queue:
            self._next()

    def upstream_lost(self, up: HTTPUpstream, before_response: bool) -> None:
        ep = self.ep
        if ep is None:
            return
        balancer = self.balancer
        assert balancer is not None
        if before_response and not self.sent:
            balancer.failure(ep, monotonic())
            self._attempt_failed(ep, 502, "endpoint closed the connection", connect=False)
            return
        self.abort_exchange(up)

    def abort_exchange(self, up: HTTPUpstream) -> None:
        """The endpoint broke the response: there is no honest way to go on with this client."""
        up.abort()
        ep = self.ep
        if ep is not None and self.balancer is not None:
            self.balancer.failure(ep, monotonic())
        if not self.sent and ep is not None:
            self._attempt_failed(ep, 502, "bad response from endpoint", connect=False)
            return
        if self.balancer is not None:
            self.balancer.service.metrics.observe(monotonic() - self.t0, True)
        self.transport.abort()

    # -- a sleeping service -------------------------------------------------------

    def release(self, now: float) -> None:
        """The service this request waited for has an endpoint now: send it there."""
        self.held_at = 0.0
        self.released = now
        if self.paused and self.queue and not self.queue[0].complete:
            self.paused = False  # paused while held (a pipelined backlog has a whole first)
            self.transport.resume_reading()
        balancer = self.balancer
        if balancer is not None and self.busy:
            self._dispatch(balancer, now)

    def expire(self, now: float) -> None:
        """No copy came within the service's hold timeout."""
        self.held_at = 0.0
        balancer = self.balancer
        if balancer is None or not self.busy:
            return
        wake = balancer.service.wake
        self._answer(
            503,
            f"service {balancer.service.name} is starting (it was scaled to zero) and was "
            "not ready in time; retry",
            retry_after=wake.retry_after if wake is not None else 1,
        )

    # -- answers of our own ------------------------------------------------------

    def _answer(self, status: int, message: str, *, retry_after: int = 0) -> None:
        """Answer the request in flight ourselves (no endpoint, failed, timed out)."""
        balancer = self.balancer
        assert balancer is not None
        self.status = status
        balancer.service.metrics.observe(monotonic() - self.t0, True)
        self.transport.write(
            error_response(status, message, close=self.close_after, retry_after=retry_after)
        )
        self._finish(soon=True)

    def _reject(self, status: int, message: str) -> None:
        """A request we will not forward: answer and close (what follows cannot be trusted)."""
        self.parser = None
        self.queue.clear()
        self.transport.write(error_response(status, message, close=True))
        self.transport.close()

    # -- housekeeping ------------------------------------------------------------

    def sweep(self, now: float) -> None:
        if not self.busy:
            # idle keep-alive client: noticed without a per-request cost (t0 moves on each request)
            if self.idle_t0 != self.t0:
                self.idle_t0, self.idle_since = self.t0, now
            elif now - self.idle_since > self.listener.config.idle_timeout:
                self.transport.close()
            return
        if self.tunnel or self.held_at:
            return  # held: the service's own sweep answers it when its wait is over
        ep = self.ep
        up = self.up
        balancer = self.balancer
        started = self.released if self.released > self.t0 else self.t0
        if ep is None or balancer is None or now < started + balancer.config.request_timeout:
            return
        if up is not None:
            self.up = None
            up.abort()
        balancer.failure(ep, now)
        if self.sent:
            self.ep = None
            ep.active -= 1
            balancer.service.metrics.observe(now - self.t0, True)
            self.transport.abort()
            return
        self.sent = True  # no retry after the time is up
        self._attempt_failed(ep, 504, "endpoint timed out", connect=False)

    def shut(self) -> None:
        self.transport.abort()
