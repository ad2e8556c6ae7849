"""The proxy holds requests for a sleeping service (scaled to 0) on real sockets: they wait
in a bounded queue while it wakes, go on when an endpoint arrives, or get 503 with
Retry-After (queue full, or no copy within the hold timeout)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator

import pytest

from integration.test_proxy import HTTP, STARTED, Backend, Client, free_port
from podium.proxy import Endpoint, Proxy, Route, UpstreamConfig, WakeConfig
from podium.proxy.http import PIPELINE_MAX

pytestmark = pytest.mark.integration


@pytest.fixture
async def woken() -> AsyncIterator[tuple[Proxy, list[str]]]:
    calls: list[str] = []
    p = Proxy(sweep_interval=0.05, on_wake=calls.append)
    yield p, calls
    await p.close()
    while STARTED:
        await STARTED.pop().stop()


async def raw_get(port: int, path: str = "/", host: str = "svc") -> tuple[int, bytes, bytes]:
    """(status, head, body) of one request on its own connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    async with asyncio.timeout(10):
        head = await reader.readuntil(b"\r\n\r\n")
        m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        body = await reader.readexactly(int(m.group(1))) if m else b""
    writer.close()
    return int(head[9:12]), head, body


async def listen(p: Proxy, service: str = "api") -> int:
    port = free_port()
    await p.listen_upstream(service, "127.0.0.1", port, HTTP)
    return port


async def test_held_requests_go_on_when_the_first_endpoint_arrives(
    woken: tuple[Proxy, list[str]],
) -> None:
    p, calls = woken
    p.set_wake("api", WakeConfig(timeout=10, max_held=100))
    port = await listen(p)
    t0 = time.monotonic()
    waiting = [asyncio.ensure_future(raw_get(port)) for _ in range(20)]
    await asyncio.sleep(0.5)
    assert not any(w.done() for w in waiting)  # held, not refused
    assert calls == ["api"]  # asked once to wake (again only after a second)
    assert len(p._services["api"].held) == 20
    backend = await Backend("a").start()
    p.set_endpoints("api", [backend.endpoint()])
    answers = await asyncio.gather(*waiting)
    assert [(s, b) for s, _, b in answers] == [(200, b"a")] * 20
    assert time.monotonic() - t0 >= 0.5
    snap = p.snapshot()["services"]["api"]
    assert snap["held"] == 20 and snap["hold_expired"] == 0
    # Awake: the next request goes straight through, and nothing is held.
    assert (await raw_get(port))[0] == 200 and not p._services["api"].held


async def test_no_copy_within_the_timeout_answers_503_with_retry_after(
    woken: tuple[Proxy, list[str]],
) -> None:
    p, calls = woken
    p.set_wake("api", WakeConfig(timeout=0.6, max_held=10, retry_after=7))
    port = await listen(p)
    t0 = time.monotonic()
    status, head, body = await raw_get(port)
    waited = time.monotonic() - t0
    assert status == 503 and 0.5 <= waited < 3, waited
    assert b"\r\nretry-after: 7\r\n" in head.lower()
    assert b"not ready in time" in body
    assert p.snapshot()["services"]["api"]["hold_expired"] == 1
    assert len(calls) == 1


async def test_a_full_queue_answers_503_at_once(woken: tuple[Proxy, list[str]]) -> None:
    p, _ = woken
    p.set_wake("api", WakeConfig(timeout=10, max_held=2))
    port = await listen(p)
    first = [asyncio.ensure_future(raw_get(port)) for _ in range(2)]
    await asyncio.sleep(0.3)
    t0 = time.monotonic()
    status, head, body = await raw_get(port)
    assert status == 503 and time.monotonic() - t0 < 1
    assert b"retry-after: 5" in head.lower() and b"2 requests already wait" in body
    assert p.snapshot()["services"]["api"]["hold_refused"] == 1
    backend = await Backend("a").start()
    p.set_endpoints("api", [backend.endpoint()])
    assert [s for s, _, _ in await asyncio.gather(*first)] == [200, 200]


async def test_a_client_that_leaves_leaves_the_queue(woken: tuple[Proxy, list[str]]) -> None:
    p, _ = woken
    p.set_wake("api", WakeConfig(timeout=10, max_held=10))
    port = await listen(p)
    c = await Client.open(port)
    c.send("/")
    await asyncio.sleep(0.3)
    assert len(p._services["api"].held) == 1
    await c.close()
    await asyncio.sleep(0.3)
    assert not p._services["api"].held


async def test_a_service_that_no_longer_sleeps_answers_the_held_at_once(
    woken: tuple[Proxy, list[str]],
) -> None:
    p, _ = woken
    p.set_wake("api", WakeConfig(timeout=30, max_held=10))
    port = await listen(p)
    waiting = asyncio.ensure_future(raw_get(port))
    await asyncio.sleep(0.3)
    p.set_wake("api", None)  # its job was stopped, or min raised above 0
    status, _, body = await waiting
    assert status == 503 and b"no healthy endpoint" in body


async def test_tcp_connections_wait_too(woken: tuple[Proxy, list[str]]) -> None:
    p, calls = woken
    p.set_wake("db", WakeConfig(timeout=10, max_held=10))
    port = free_port()
    await p.listen_upstream("db", "127.0.0.1", port, UpstreamConfig(mode="tcp"))
    waiting = asyncio.ensure_future(raw_get(port, "/x"))
    await asyncio.sleep(0.4)
    assert not waiting.done() and calls == ["db"]
    backend = await Backend("b").start()
    p.set_endpoints("db", [Endpoint("b", "127.0.0.1", backend.port)])
    status, _, body = await waiting
    assert (status, body) == (200, b"b")


async def test_the_ingress_holds_for_a_sleeping_route(woken: tuple[Proxy, list[str]]) -> None:
    p, calls = woken
    p.set_wake("web", WakeConfig(timeout=10, max_held=10))
    port = free_port()
    await p.listen_ingress("127.0.0.1", port, [Route(service="web", host="web.test")], HTTP)
    waiting = asyncio.ensure_future(raw_get(port, host="web.test"))
    await asyncio.sleep(0.4)
    assert calls == ["web"] and not waiting.done()
    backend = await Backend("w").start()
    p.set_endpoints("web", [backend.endpoint()])
    assert (await waiting)[0] == 200
    # A service that does not sleep still answers 503 at once when it has no endpoint.
    p.set_endpoints("web", [])
    p.set_wake("web", None)
    assert (await raw_get(port, host="web.test"))[0] == 503


async def test_a_held_upload_is_read_no_further_than_a_bound(
    woken: tuple[Proxy, list[str]],
) -> None:
    """An upload (a streamed body) waits with its request: the proxy stops reading it
    at PIPELINE_MAX instead of buffering it all, and it goes through whole on release."""
    p, _ = woken
    p.set_wake("api", WakeConfig(timeout=10, max_held=10))
    port = await listen(p)
    size = 8 * 1024 * 1024
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"POST /up HTTP/1.1\r\nHost: svc\r\ncontent-length: {size}\r\n\r\n".encode())

    async def upload() -> None:
        chunk = b"x" * 65536
        for _ in range(size // len(chunk)):
            writer.write(chunk)
            await writer.drain()

    sending = asyncio.ensure_future(upload())
    await asyncio.sleep(1.0)
    (held,) = p._services["api"].held
    buffered = len(held.queue[0].out)  # type: ignore[attr-defined]
    assert buffered <= PIPELINE_MAX + 512 * 1024, buffered
    assert not sending.done()  # the client is held back by TCP, not read into memory
    backend = await Backend("a").start()
    p.set_endpoints("api", [backend.endpoint()])
    async with asyncio.timeout(20):
        await sending
        head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert backend.hits == ["POST"]
    writer.close()
