"""The proxy on real sockets (127.0.0.1): balancing, retries, breaker, ejection, ingress, metrics.

Backends are small HTTP/1.1 servers started in the test's event loop; each answers
with its own name, so a response says which endpoint served it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import struct
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from podium.agent.mesh import MeshGateway
from podium.errors import ValidationError
from podium.proxy import Endpoint, Proxy, Route, UpstreamConfig
from podium.tls import pki
from podium.tls.context import ServerTLS, client_context
from podium.tls.files import Credentials

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["asyncio", "uvloop"])
def event_loop_policy(request: pytest.FixtureRequest) -> asyncio.AbstractEventLoopPolicy:
    """Every test on both loops: the agent runs the stock one, `python -m podium.proxy` uvloop."""
    if request.param == "uvloop":
        import uvloop

        return uvloop.EventLoopPolicy()
    return asyncio.DefaultEventLoopPolicy()


HTTP = UpstreamConfig(mode="http", connect_timeout=0.5, request_timeout=5.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


STARTED: list[Backend] = []


class Backend:
    """A tiny keep-alive HTTP/1.1 server: answers `status` with its name as the body.

    `/slow` waits `slow` seconds first; `chunked` answers with a chunked body.
    """

    def __init__(self, name: str, *, status: int = 200, slow: float = 0.5) -> None:
        self.name = name
        self.status = status
        self.slow = slow
        self.chunked = False
        self.hits: list[str] = []  # method of every request served
        self.server: asyncio.Server | None = None
        self.port = 0
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self, port: int = 0) -> Backend:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.port = self.server.sockets[0].getsockname()[1]
        STARTED.append(self)
        return self

    def endpoint(self, weight: int = 1) -> Endpoint:
        return Endpoint(self.name, "127.0.0.1", self.port, weight)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for w in list(self.writers):
                w.close()
            await self.server.wait_closed()
            self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                method, target = head.split(b" ", 2)[:2]
                m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                if re.search(rb"(?i)\r\nexpect:\s*100-continue", head):
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                if m:
                    await reader.readexactly(int(m.group(1)))
                self.hits.append(method.decode())
                if target == b"/slow":
                    await asyncio.sleep(self.slow)
                body = self.name.encode()
                status = b"%d X" % self.status
                if self.chunked:
                    writer.write(
                        b"HTTP/1.1 " + status + b"\r\ntransfer-encoding: chunked\r\n\r\n"
                        b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
                    )
                else:
                    writer.write(
                        b"HTTP/1.1 %s\r\ncontent-length: %d\r\n\r\n%s" % (status, len(body), body)
                    )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()


class Client:
    """One kept-alive client connection that reads Content-Length and chunked answers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Client:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def request(
        self, path: str = "/", *, method: str = "GET", host: str = "svc", body: bytes = b""
    ) -> tuple[int, str]:
        self.send(path, method=method, host=host, body=body)
        return await self.read()

    def send(
        self, path: str = "/", *, method: str = "GET", host: str = "svc", body: bytes = b""
    ) -> None:
        self.writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: {host}\r\ncontent-length: {len(body)}\r\n\r\n".encode()
            + body
        )

    async def read(self) -> tuple[int, str]:
        async with asyncio.timeout(10):
            head = await self.reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
            if m:
                return status, (await self.reader.readexactly(int(m.group(1)))).decode()
            assert re.search(rb"(?i)\r\ntransfer-encoding:\s*chunked", head)
            body = b""
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    return status, body.decode()
                body += await self.reader.readexactly(size)
                await self.reader.readexactly(2)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def get(port: int, path: str = "/", **kw: str) -> tuple[int, str]:
    c = await Client.open(port)
    try:
        return await c.request(path, **kw)
    finally:
        await c.close()


@pytest.fixture
async def proxy(event_loop_policy: asyncio.AbstractEventLoopPolicy) -> AsyncIterator[Proxy]:
    on_uvloop = type(asyncio.get_running_loop()).__module__.startswith("uvloop")
    assert on_uvloop == type(event_loop_policy).__module__.startswith("uvloop")
    p = Proxy(sweep_interval=0.05)
    yield p
    await p.close()
    while STARTED:
        await STARTED.pop().stop()


async def backends(*names: str, **kw: float) -> list[Backend]:
    return [await Backend(n, **kw).start() for n in names]  # type: ignore[arg-type]


async def upstream(proxy: Proxy, bs: list[Backend], config: UpstreamConfig = HTTP) -> int:
    proxy.set_endpoints("api", [b.endpoint() for b in bs])
    port = free_port()
    await proxy.listen_upstream("api", "127.0.0.1", port, config)
    return port


def cfg(**kw: object) -> UpstreamConfig:
    return UpstreamConfig(**{**HTTP.__dict__, **kw})  # type: ignore[arg-type]


# -- balancing ----------------------------------------------------------------------


async def test_round_robin_spreads_requests_over_one_kept_alive_connection(proxy: Proxy) -> None:
    bs = await backends("a", "b", "c")
    port = await upstream(proxy, bs)
    c = await Client.open(port)
    answers = [await c.request() for _ in range(30)]
    await c.close()
    assert Counter(answers) == {(200, "a"): 10, (200, "b"): 10, (200, "c"): 10}


async def test_weighted_follows_the_weights(proxy: Proxy) -> None:
    a, b = await backends("a", "b")
    proxy.set_endpoints("api", [a.endpoint(3), b.endpoint(1)])
    port = free_port()
    await proxy.listen_upstream("api", "127.0.0.1", port, cfg(policy="weighted"))
    c = await Client.open(port)
    answers = Counter([(await c.request())[1] for _ in range(40)])
    await c.close()
    assert answers == {"a": 30, "b": 10}


async def test_least_conn_avoids_the_busy_endpoint(proxy: Proxy) -> None:
    bs = await backends("a", "b", slow=0.8)
    port = await upstream(proxy, bs, cfg(policy="least_conn"))
    slow_client = await Client.open(port)
    slow_client.send("/slow")
    await asyncio.sleep(0.1)  # the slow request is in flight on one endpoint
    busy = "a" if bs[0].hits else "b"
    c = await Client.open(port)
    answers = [(await c.request())[1] for _ in range(6)]
    assert busy not in answers
    assert (await slow_client.read())[1] == busy
    await c.close()
    await slow_client.close()


async def test_tcp_mode_relays_and_balances_per_connection(proxy: Proxy) -> None:
    bs = await backends("a", "b")
    port = await upstream(proxy, bs, cfg(mode="tcp"))
    answers = [await get(port) for _ in range(4)]
    assert Counter(answers) == {(200, "a"): 2, (200, "b"): 2}


async def test_tcp_mode_passes_a_half_close_on(proxy: Proxy) -> None:
    async def shout(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write((await reader.read()).upper())  # read() waits for the client's EOF
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(shout, "127.0.0.1", 0)
    proxy.set_endpoints("echo", [Endpoint("e", "127.0.0.1", server.sockets[0].getsockname()[1])])
    port = free_port()
    await proxy.listen_upstream("echo", "127.0.0.1", port, cfg(mode="tcp"))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"hello ")
    writer.write(b"world")
    writer.write_eof()
    async with asyncio.timeout(5):
        assert await reader.read() == b"HELLO WORLD"
    writer.close()
    server.close()
    await server.wait_closed()


# -- retries, budget, breaker, ejection ---------------------------------------------


async def test_connect_failures_are_retried_even_for_post(proxy: Proxy) -> None:
    (b,) = await backends("b")
    dead = Endpoint("dead", "127.0.0.1", free_port())
    proxy.set_endpoints("api", [dead, b.endpoint()])
    port = free_port()
    await proxy.listen_upstream("api", "127.0.0.1", port, cfg(breaker_failures=100))
    c = await Client.open(port)
    answers = [await c.request(method="POST", body=b"x") for _ in range(6)]
    await c.close()
    assert answers == [(200, "b")] * 6
    # round robin comes back to the dead endpoint every other pick (its breaker is held shut)
    assert proxy.snapshot()["services"]["api"]["retries"] == 6


async def test_503_is_retried_for_get_but_not_for_post(proxy: Proxy) -> None:
    bad, good = await backends("bad", "good")
    bad.status = 503
    port = await upstream(proxy, [bad, good], cfg(outlier_failures=1000))
    c = await Client.open(port)
    gets = [await c.request() for _ in range(10)]
    posts = [await c.request(method="POST", body=b"data") for _ in range(10)]
    await c.close()
    assert gets == [(200, "good")] * 10
    assert Counter(posts) == {(503, "bad"): 5, (200, "good"): 5}
    # every GET went to "bad" first (the retry moves the cursor on to "good")
    assert bad.hits.count("POST") == 5 and bad.hits.count("GET") == 10


async def test_retry_budget_keeps_retries_from_multiplying_load(proxy: Proxy) -> None:
    bs = await backends("a", "b")
    for b in bs:
        b.status = 503
    port = await upstream(proxy, bs, cfg(retries=2, retry_budget=0.2, outlier_failures=1000))
    c = await Client.open(port)
    answers = [await c.request() for _ in range(100)]
    await c.close()
    assert all(s == 503 for s, _ in answers)
    hits = sum(len(b.hits) for b in bs)
    # without a budget: 300; with it: 100 + 20% + the small initial allowance and floor
    assert 100 < hits <= 100 + 20 + 10 + 5
    assert proxy.snapshot()["services"]["api"]["retries"] == hits - 100


async def test_breaker_opens_then_a_half_open_probe_closes_it(proxy: Proxy) -> None:
    (b,) = await backends("b")
    revived = Backend("revived")
    dead_port = free_port()
    proxy.set_endpoints("api", [Endpoint("revived", "127.0.0.1", dead_port), b.endpoint()])
    port = free_port()
    await proxy.listen_upstream(
        "api", "127.0.0.1", port, cfg(breaker_failures=2, breaker_open_for=0.5)
    )
    c = await Client.open(port)
    for _ in range(4):
        assert await c.request() == (200, "b")

    def state() -> dict[str, object]:
        eps = proxy.snapshot()["services"]["api"]["endpoints"]
        return next(e for e in eps if e["id"] == "revived")

    assert state()["breaker"] == "open"
    retries = proxy.snapshot()["services"]["api"]["retries"]
    assert retries == 2
    for _ in range(4):  # while open, the dead endpoint is not even tried
        assert await c.request() == (200, "b")
    assert proxy.snapshot()["services"]["api"]["retries"] == retries
    await revived.start(dead_port)
    await asyncio.sleep(0.6)
    answers = [(await c.request())[1] for _ in range(4)]
    assert state()["breaker"] == "closed"
    assert answers.count("revived") == 2
    await c.close()


async def test_outlier_ejection_removes_a_failing_endpoint_but_never_all(proxy: Proxy) -> None:
    a, b, bad = await backends("a", "b", "bad")
    bad.status = 500
    port = await upstream(proxy, [a, b, bad], cfg(outlier_failures=2, outlier_max_ejected=0.5))
    c = await Client.open(port)
    first = [await c.request() for _ in range(6)]
    assert first.count((500, "bad")) == 2
    later = [(await c.request())[1] for _ in range(6)]
    assert "bad" not in later
    assert proxy.snapshot()["services"]["api"]["ejections"] == 1
    # every endpoint failing: at most half are ejected, the rest keep answering
    a.status = b.status = 500
    answers = [await c.request() for _ in range(12)]
    await c.close()
    assert all(s == 500 for s, _ in answers)  # the endpoints' own answers, not "no endpoint"
    eps = proxy.snapshot()["services"]["api"]["endpoints"]
    assert sum(not e["ejected"] for e in eps) >= 1
    assert sum(e["ejected"] for e in eps) <= 1


async def test_request_timeout_answers_504(proxy: Proxy) -> None:
    (a,) = await backends("a", slow=3.0)
    port = await upstream(proxy, [a], cfg(request_timeout=0.3))
    c = await Client.open(port)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    status, _ = await c.request("/slow")
    assert status == 504
    assert loop.time() - t0 < 2.0
    await c.close()


async def test_idle_kept_alive_client_is_closed_after_idle_timeout(proxy: Proxy) -> None:
    (a,) = await backends("a")
    port = await upstream(proxy, [a], cfg(idle_timeout=0.6))
    c = await Client.open(port)
    assert await c.request() == (200, "a")
    await asyncio.sleep(0.15)
    assert await c.request() == (200, "a")  # activity restarts the idle clock
    async with asyncio.timeout(3):
        assert await c.reader.read() == b""  # then, idle, the proxy closes it
    await c.close()


# -- endpoint changes keep connections -----------------------------------------------


async def test_set_endpoints_keeps_an_established_tcp_connection(proxy: Proxy) -> None:
    a, b = await backends("a", "b")
    port = await upstream(proxy, [a], cfg(mode="tcp"))
    c = await Client.open(port)
    assert await c.request() == (200, "a")
    proxy.set_endpoints("api", [b.endpoint()])
    assert await c.request() == (200, "a")  # the relay stays on its endpoint
    assert await get(port) == (200, "b")  # new connections go to the new set
    await c.close()


async def test_set_endpoints_keeps_a_kept_alive_http_connection(proxy: Proxy) -> None:
    a, b = await backends("a", "b", slow=0.3)
    port = await upstream(proxy, [a])
    c = await Client.open(port)
    assert await c.request() == (200, "a")
    c.send("/slow")
    await asyncio.sleep(0.1)
    proxy.set_endpoints("api", [b.endpoint()])
    assert await c.read() == (200, "a")  # the request in flight finishes
    assert await c.request() == (200, "b")  # the same client connection goes on
    assert proxy.snapshot()["services"]["api"]["endpoints"][0]["id"] == "b"
    await c.close()


# -- framing ------------------------------------------------------------------------


async def test_pipelined_requests_and_chunked_answers_keep_their_order(proxy: Proxy) -> None:
    bs = await backends("a", "b")
    for b in bs:
        b.chunked = True
    port = await upstream(proxy, bs)
    c = await Client.open(port)
    for _ in range(6):
        c.send()
    answers = [await c.read() for _ in range(6)]
    await c.close()
    assert [n for _, n in answers] == ["a", "b"] * 3


async def test_large_request_body_streams_through(proxy: Proxy) -> None:
    (a,) = await backends("a")
    port = await upstream(proxy, [a])
    c = await Client.open(port)
    assert await c.request(method="PUT", body=b"z" * (3 * 1024 * 1024)) == (200, "a")
    assert await c.request() == (200, "a")
    await c.close()


async def test_expect_100_continue_goes_through_at_once(proxy: Proxy) -> None:
    (a,) = await backends("a")
    port = await upstream(proxy, [a])
    c = await Client.open(port)
    c.writer.write(
        b"PUT /up HTTP/1.1\r\nHost: svc\r\nExpect: 100-continue\r\ncontent-length: 5\r\n\r\n"
    )
    async with asyncio.timeout(2):  # the proxy must not wait for a body the client holds back
        assert (await c.reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100")
    c.writer.write(b"hello")
    assert await c.read() == (200, "a")
    assert await c.request() == (200, "a")
    await c.close()


# -- ingress ------------------------------------------------------------------------


async def test_ingress_routes_by_host_and_path_prefix(proxy: Proxy) -> None:
    web, api, admin = await backends("web", "api", "admin")
    for svc, b in (("web", web), ("api", api), ("admin", admin)):
        proxy.set_endpoints(svc, [b.endpoint()])
    port = free_port()
    routes = [
        Route("web"),
        Route("api", path_prefix="/api"),
        Route("admin", host="admin.example.com"),
    ]
    await proxy.listen_ingress("127.0.0.1", port, routes, HTTP)
    c = await Client.open(port)
    assert await c.request("/", host="www.example.com") == (200, "web")
    assert await c.request("/api/users?id=1", host="www.example.com") == (200, "api")
    assert await c.request("/apidocs", host="www.example.com") == (200, "web")
    assert await c.request("/", host="Admin.Example.com:8080") == (200, "admin")
    await c.close()
    proxy.set_routes("127.0.0.1", port, [Route("api", host="api.example.com")])
    assert await get(port, host="api.example.com") == (200, "api")
    assert (await get(port, host="www.example.com"))[0] == 404
    with pytest.raises(ValidationError, match=r"routes\[0\]\.path_prefix"):
        proxy.set_routes("127.0.0.1", port, [Route("api", path_prefix="api")])


async def test_no_endpoints_answers_503(proxy: Proxy) -> None:
    port = await upstream(proxy, [])
    assert (await get(port))[0] == 503


async def test_many_pipelined_requests_answered_by_the_proxy_itself(proxy: Proxy) -> None:
    port = await upstream(proxy, [])
    c = await Client.open(port)
    for _ in range(3000):  # deeper than the recursion limit if answers chained calls
        c.send()
    answers = [await c.read() for _ in range(3000)]
    await c.close()
    assert {s for s, _ in answers} == {503}


# -- metrics, validation, standalone ---------------------------------------------------


async def test_metrics_text_parses_and_counts(proxy: Proxy) -> None:
    bs = await backends("a", "b")
    port = await upstream(proxy, bs)
    c = await Client.open(port)
    for _ in range(5):
        await c.request()
    await c.close()
    families = {f.name: f for f in text_string_to_metric_families(proxy.metrics_text())}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    assert families["podium_proxy_requests"].type == "counter"
    assert families["podium_proxy_request_duration_seconds"].type == "histogram"
    api = ("service", "api")
    assert samples[("podium_proxy_requests_total", (api,))] == 5
    assert samples[("podium_proxy_errors_total", (api,))] == 0
    assert samples[("podium_proxy_request_duration_seconds_count", (api,))] == 5
    assert samples[("podium_proxy_request_duration_seconds_bucket", (("le", "+Inf"), api))] == 5
    assert samples[("podium_proxy_endpoints", (api,))] == 2


async def test_bad_config_names_the_field(proxy: Proxy) -> None:
    with pytest.raises(ValidationError, match="policy"):
        await proxy.listen_upstream("api", "127.0.0.1", free_port(), cfg(policy="random"))
    with pytest.raises(ValidationError, match=r"endpoints\[0\]\.port"):
        proxy.set_endpoints("api", [Endpoint("x", "127.0.0.1", 0)])


async def test_standalone_process_serves_and_reports_its_port(proxy: Proxy) -> None:
    bs = await backends("a", "b")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "podium.proxy", "--listen", "127.0.0.1:0", "--mode", "http",
        "--backend", f"127.0.0.1:{bs[0].port}", "--backend", f"127.0.0.1:{bs[1].port}",
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(10):
            line = (await proc.stdout.readline()).decode()
        m = re.fullmatch(r"listening on 127\.0\.0\.1:(\d+)\n", line)
        assert m, line
        port = int(m.group(1))
        assert sorted([(await get(port))[1] for _ in range(2)]) == ["a", "b"]
    finally:
        proc.terminate()
        assert await proc.wait() == 0


def _mesh_creds(tmp_path: Path) -> dict[str, Credentials]:
    """Agent certificates of one CA for nodes a (the proxy's) and b (the gateway's)."""
    ca_cert, ca_key = pki.create_ca()
    creds = {}
    for node in ("a", "b"):
        key = pki.make_key()
        cert = pki.issue(ca_cert, ca_key, key.public_key(), role="agent", name=node)
        creds[node] = Credentials.in_dir(str(tmp_path), node)
        creds[node].save(chain_pem=pki.cert_pem(cert), key=key, ca_pem=pki.cert_pem(ca_cert))
    return creds


@contextlib.asynccontextmanager
async def _through_mesh(
    proxy: Proxy, tmp_path: Path, serve: Any, config: UpstreamConfig
) -> AsyncIterator[tuple[int, MeshGateway]]:
    """A tcp listener of `proxy` whose one endpoint (`serve`) is another node's: reached
    over mutual TLS through that node's mesh gateway. Yields the listener's port."""
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    target = server.sockets[0].getsockname()[1]
    creds = _mesh_creds(tmp_path)
    gateway = MeshGateway(
        "127.0.0.1", 0, ServerTLS(creds["b"], require_client_cert=True), {target}.__contains__
    )
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    async with asyncio.TaskGroup() as tg:
        run = tg.create_task(gateway.run(ready))
        host, _, gport = (await ready).rpartition(":")
        via = Endpoint(
            "e", "127.0.0.1", target, via=(host, int(gport)), tls_name=pki.node_name("b"),
            ssl=client_context(creds["a"]),
        )  # fmt: skip
        proxy.set_endpoints("echo", [via])
        port = free_port()
        await proxy.listen_upstream("echo", "127.0.0.1", port, config)
        try:
            yield port, gateway
        finally:
            run.cancel()
            server.close()
            await server.wait_closed()


def _asyncio_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "asyncio"]


async def test_tcp_mode_through_a_mesh_gateway_ends_with_the_server_and_warns_nothing(
    proxy: Proxy, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another node's copy, reached over mutual TLS through its node's mesh gateway: the
    bytes go both ways, and the server's close ends the client's connection without
    asyncio's 'returning true from eof_received() has no effect when using ssl' (a TLS
    transport cannot half close: once per mesh connection in an agent's log)."""

    async def shout(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write((await reader.readline()).upper())
        await writer.drain()
        writer.close()

    caplog.set_level(logging.WARNING)
    async with _through_mesh(proxy, tmp_path, shout, cfg(mode="tcp")) as (port, gateway):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hello\n")
        async with asyncio.timeout(5):
            assert await reader.read() == b"HELLO\n"  # read() ends with the server's close
        writer.close()
    assert gateway.connections == 1
    assert _asyncio_logs(caplog) == []


async def test_tcp_mode_through_a_mesh_gateway_ends_cleanly_after_a_client_reset(
    proxy: Proxy, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The client's side ends first (a reset, as a load generator's exit sends): the
    proxy closes its TLS connection to the gateway, whose answering close_notify reaches
    a proxy whose client connection is gone and must not pass an EOF on to it (uvloop
    raised 'the handler is closed', logged once per connection)."""
    served = asyncio.Event()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while line := await reader.readline():
                writer.write(line)
                await writer.drain()
        served.set()
        writer.close()

    def gateway_busy() -> bool:
        return any(
            t.get_coro().__qualname__ == "MeshGateway._handle"  # type: ignore[union-attr]
            for t in asyncio.all_tasks()
        )

    caplog.set_level(logging.WARNING)
    async with _through_mesh(proxy, tmp_path, echo, cfg(mode="tcp")) as (port, gateway):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hello\n")
        async with asyncio.timeout(5):
            assert await reader.readline() == b"hello\n"
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()  # a reset, not a FIN
            await served.wait()
            while gateway_busy():  # until the gateway's side of the TLS connection ends
                await asyncio.sleep(0.01)
    assert gateway.connections == 1
    assert _asyncio_logs(caplog) == []
