"""Request smuggling through podium's ingress: 0 desyncs.

Each vector is a request whose framing a lenient server could read differently from a
strict one (RFC 9112 section 6 and 11.2), with a second request hidden where only one of
the readings sees it. The vector goes through the ingress to a backend that frames
requests leniently, the way smuggling victims do (a Content-Length header wins even with
whitespace before the colon or beside Transfer-Encoding; a folded or obfuscated
Transfer-Encoding still means chunked), and records each request it reads. A desync is
any request the backend read that the client did not get an answer for, or a hidden
`/smuggled` request reaching the backend at all; the proxy's kept-alive connection to
the backend is then checked with a clean request from another client.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator

import pytest

from podium.proxy import Endpoint, Proxy, Route, UpstreamConfig

pytestmark = pytest.mark.integration

HIDDEN = b"GET /smuggled HTTP/1.1\r\nHost: svc\r\n\r\n"
AFTER = b"GET /after HTTP/1.1\r\nHost: svc\r\n\r\n"


def cl_te(cl: int) -> bytes:
    return b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" % cl


VECTORS: dict[str, bytes] = {
    "CL.TE": b"POST / HTTP/1.1\r\nHost: svc\r\n" + cl_te(5 + len(HIDDEN)) + HIDDEN,
    "TE.CL": b"POST / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"
    + b"%x\r\n" % (len(HIDDEN) + 2)
    + HIDDEN
    + b"\r\n\r\n0\r\n\r\n",
    "CL.CL differing": b"POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: 0\r\nContent-Length: %d\r\n\r\n"
    % len(HIDDEN)
    + HIDDEN,
    "CL.CL same": b"POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: %d\r\nContent-Length: %d\r\n\r\n"
    % (len(HIDDEN), len(HIDDEN))
    + HIDDEN,
    "CL list": b"POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: %d, %d\r\n\r\n"
    % (len(HIDDEN), len(HIDDEN))
    + HIDDEN,
    "CL plus sign": b"POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: +%d\r\n\r\n" % len(HIDDEN)
    + HIDDEN,
    "space before colon CL": b"POST / HTTP/1.1\r\nHost: svc\r\nContent-Length : %d\r\n\r\n"
    % len(HIDDEN)
    + HIDDEN,
    "space before colon TE": b"POST / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding : chunked\r\n\r\n"
    b"0\r\n\r\n" + HIDDEN,
    "obs-fold TE": b"POST / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n"
    + HIDDEN,
    "obs-fold CL": b"POST / HTTP/1.1\r\nHost: svc\r\nX-Pad: a\r\n Content-Length: %d\r\n\r\n"
    % len(HIDDEN)
    + HIDDEN,
    "TE xchunked": b"POST / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: xchunked\r\n"
    b"Content-Length: %d\r\n\r\n" % len(HIDDEN) + HIDDEN,
    "TE chunked, identity": b"POST / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked, identity\r\n\r\n"
    b"0\r\n\r\n" + HIDDEN,
    "TE in HTTP/1.0": b"POST / HTTP/1.0\r\nHost: svc\r\nConnection: keep-alive\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + HIDDEN,
    "duplicate Host": b"GET / HTTP/1.1\r\nHost: svc\r\nHost: admin.internal\r\n\r\n",
    "no Host": b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n",
    "bare LF": b"POST / HTTP/1.1\nHost: svc\nContent-Length: %d\n\n" % len(HIDDEN) + HIDDEN,
    "bare LF in chunks": b"POST / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"%x\n" % len(HIDDEN) + HIDDEN + b"\n0\n\n",
    "bad chunk size": b"POST / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0x0\r\n\r\n" + HIDDEN,
    "chunk size overflow": b"POST / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"1000000000000000000000000000000a\r\n0123456789\r\n0\r\n\r\n" + HIDDEN,
    "NUL in a header": b"GET / HTTP/1.1\r\nHost: svc\r\nX-A: a\x00" + HIDDEN[:-4] + b"\r\n\r\n",
    "CR alone in a header": b"GET / HTTP/1.1\r\nHost: svc\r\nX-A: a\r" + HIDDEN,
    "space in a header name": b"POST / HTTP/1.1\r\nHost: svc\r\nContent Length: %d\r\n\r\n"
    % len(HIDDEN)
    + HIDDEN,
}


# What RFC 9112 says a server must refuse (or a proxy must not forward as is): refused
# with 400 before anything reaches the backend.
MUST_REFUSE = {
    "CL.TE",
    "TE.CL",
    "CL.CL differing",
    "CL.CL same",
    "CL list",
    "space before colon CL",
    "space before colon TE",
    "obs-fold TE",
    "obs-fold CL",
    "TE in HTTP/1.0",
    "duplicate Host",
    "no Host",
    "bare LF",
}


class LenientBackend:
    """Reads requests the way a lenient server does, and records each one it reads."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []  # request targets, in the order read
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> LenientBackend:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await _read_head(r)
                line, _, rest = head.partition(b"\n")
                target = line.split(b" ")[1] if line.count(b" ") >= 2 else b"?"
                self.seen.append(target)
                lower = rest.replace(b"\r\n", b"\n").replace(b"\n ", b" ").lower()
                cl = re.search(rb"(?m)^\s*content[ -]length\s*:\s*\+?(\d+)", lower)
                if cl:
                    await r.readexactly(int(cl.group(1)))
                elif re.search(rb"(?m)^transfer-encoding\s*:.*chunked", lower):
                    while True:
                        size = int(re.split(rb"[;\s]", (await r.readline()).strip())[0] or b"0", 16)
                        await r.readexactly(size)
                        await r.readline()
                        if size == 0:
                            break
                body = b"ok " + target
                w.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, IndexError):
            pass
        finally:
            w.close()


async def _read_head(r: asyncio.StreamReader) -> bytes:
    lines = []
    while True:
        line = await r.readline()
        if not line:
            raise asyncio.IncompleteReadError(b"", None)
        if line in (b"\r\n", b"\n"):
            return b"".join(lines)
        lines.append(line)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def ingress() -> AsyncIterator[tuple[int, LenientBackend]]:
    backend = await LenientBackend().start()
    proxy = Proxy(sweep_interval=0.05)
    proxy.set_endpoints("svc", [Endpoint("b", "127.0.0.1", backend.port)])
    port = free_port()
    await proxy.listen_ingress(
        "127.0.0.1", port, [Route("svc")], UpstreamConfig(mode="http", retries=0)
    )
    try:
        yield port, backend
    finally:
        await proxy.close()
        await backend.stop()


async def _exchange(port: int, data: bytes) -> list[bytes]:
    """Send `data`, then read answers until the proxy closes or goes quiet; their bodies."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    bodies: list[bytes] = []
    try:
        while True:
            async with asyncio.timeout(1.0):
                head = await reader.readuntil(b"\r\n\r\n")
                m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                body = await reader.readexactly(int(m.group(1))) if m else b""
            bodies.append(head[9:12] + b" " + body)
    except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return bodies


@pytest.mark.parametrize("name", list(VECTORS))
async def test_smuggling_vector_causes_no_desync(
    ingress: tuple[int, LenientBackend], name: str
) -> None:
    port, backend = ingress
    answers = await _exchange(port, VECTORS[name] + AFTER)
    # Another client afterwards, most likely on the same pooled backend connection.
    (victim,) = await _exchange(
        port, b"GET /victim HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n"
    )
    assert victim == b"200 ok /victim", f"{name}: the next client got {victim!r}"
    answered = [a.split(b" ", 2)[2] for a in answers if a.startswith(b"200 ok ")]
    assert b"/smuggled" not in backend.seen, f"{name}: a hidden request reached the backend"
    assert backend.seen[: len(answered)] == answered, (
        f"{name}: the backend read {backend.seen}, the client got answers for {answered}"
    )
    assert backend.seen == [*answered, b"/victim"], (
        f"{name}: the backend read {backend.seen}, the client got answers for {answered}"
    )
    refused = [a for a in answers if a.startswith(b"400 ")]
    assert answered or refused, f"{name}: neither answered nor refused: {answers}"
    if name in MUST_REFUSE:
        assert answers[:1] == refused[:1] and not answered, f"{name}: answers {answers}"


async def test_a_clean_request_after_the_vectors_still_works(
    ingress: tuple[int, LenientBackend],
) -> None:
    port, backend = ingress
    answers = await _exchange(port, b"GET /a HTTP/1.1\r\nHost: svc\r\n\r\n" + AFTER)
    assert answers == [b"200 ok /a", b"200 ok /after"]
    assert backend.seen == [b"/a", b"/after"]


async def test_a_bad_request_is_refused_after_the_good_ones_before_it(
    ingress: tuple[int, LenientBackend],
) -> None:
    port, backend = ingress
    bad = b"GET /b HTTP/1.1\r\nHost: svc\r\nHost: other\r\n\r\n"
    answers = await _exchange(port, b"GET /a HTTP/1.1\r\nHost: svc\r\n\r\n" + bad + AFTER)
    assert [a[:3] for a in answers] == [b"200", b"400"], answers
    assert answers[0] == b"200 ok /a" and b"Host" in answers[1]
    assert backend.seen == [b"/a"]


async def test_an_oversized_head_is_refused(ingress: tuple[int, LenientBackend]) -> None:
    port, backend = ingress
    big = b"GET / HTTP/1.1\r\nHost: svc\r\nX-Big: " + b"a" * (80 * 1024)
    answers = await _exchange(port, big)  # never ends its head
    assert [a[:3] for a in answers] == [b"431"], answers
    assert backend.seen == []
