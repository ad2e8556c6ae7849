"""Service discovery on a real `podium dev`: the catalog, DNS, upstreams and ingress.

One cluster serves the module (DNS and ingress on free loopback ports); each test runs
its own jobs. Tasks are tests/integration/svc_server.py: an HTTP service whose /health
fails while a `sick` file exists in its alloc dir.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import httpx
import psutil
import pytest

from integration.cluster import PODIUM, ROOT, DevCluster, free_port, wait_until

SERVER = str(Path(__file__).with_name("svc_server.py"))
CHECK_INTERVAL = 1.0


class ServiceCluster(DevCluster):
    """`podium dev` with its DNS and ingress on ports of our choosing."""

    dns_port: int = 0
    ingress_port: int = 0
    extra: tuple[str, ...] = ()  # more `podium dev` options

    def start(self, *, timeout: float = 20.0) -> ServiceCluster:
        self.dns_port, self.ingress_port = free_port(), free_port()
        self.log_path = self.data_dir / "dev.log"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")  # noqa: SIM115 - owned by the subprocess
        self.proc = subprocess.Popen(
            [
                *PODIUM,
                "dev",
                "--data-dir",
                str(self.data_dir),
                "--addr",
                f"127.0.0.1:{self.port}",
                "--dns-addr",
                f"127.0.0.1:{self.dns_port}",
                "--ingress-addr",
                f"127.0.0.1:{self.ingress_port}",
                *self.extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        wait_until(self._ready, timeout=timeout, what="podium dev to serve with a ready node")
        return self

    def dns(self, name: str, rdtype: str = "SRV", *, tcp: bool = False) -> dns.message.Message:
        query = dns.message.make_query(name, rdtype)
        send = dns.query.tcp if tcp else dns.query.udp
        return send(query, "127.0.0.1", port=self.dns_port, timeout=2.0)

    def srv_ports(self, name: str) -> set[int]:
        reply = self.dns(name)
        assert reply.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(reply.rcode())
        return {r.port for rrset in reply.answer for r in rrset}

    def run_job(self, job: dict[str, Any]) -> None:
        self.api("POST", "/v1/jobs", json={"job": job})

    def running_ports(self, job: str, label: str = "http") -> dict[int, str]:
        """Port -> alloc id of the job's copies whose client status is running."""
        rows = self.api("GET", f"/v1/job/{job}")["allocations"]
        out = {}
        for row in rows:
            if row["desired_status"] == "run" and row["client_status"] == "running":
                alloc = self.api("GET", f"/v1/allocation/{row['id']}")
                out[alloc["ports"][label]] = alloc["id"]
        return out

    def agent_http(self) -> str:
        return str(self.api("GET", "/v1/nodes")[0]["http_addr"])

    def task_pid(self, alloc_id: str) -> int:
        alloc = self.api("GET", f"/v1/allocation/{alloc_id}")
        return int(next(iter(alloc["task_states"].values()))["pid"])


def service_job(
    name: str,
    count: int,
    *,
    tags: list[str] | None = None,
    ingress: dict[str, str] | None = None,
    restart_delay: str = "1s",
    shutdown_delay: str = "0s",
) -> dict[str, Any]:
    service: dict[str, Any] = {
        "name": name,
        "port": "http",
        "tags": tags or [],
        "checks": [{"type": "http", "path": "/health", "interval": f"{CHECK_INTERVAL}s"}],
    }
    if ingress is not None:
        service["ingress"] = ingress
    return {
        "name": name,
        "groups": [
            {
                "name": "main",
                "count": count,
                "shutdown_delay": shutdown_delay,
                "restart": {"attempts": 10, "delay": restart_delay, "mode": "delay"},
                "network": {"ports": {"http": {}}},
                "services": [service],
                "tasks": [
                    {
                        "name": "server",
                        "config": {"command": sys.executable, "args": [SERVER, name]},
                        # 300 MHz: a hard limit, and python must start in time
                        "resources": {"cpu": 300, "memory": 32},
                    }
                ],
            }
        ],
    }


def client_job(name: str, upstreams: list[dict[str, Any]], command: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "type": "batch",
        "groups": [
            {
                "name": "main",
                "restart": {"attempts": 0},
                "reschedule": {"attempts": 0, "unlimited": False},
                "tasks": [
                    {
                        "name": "client",
                        "config": {"command": command[0], "args": command[1:]},
                        # 300 MHz: a hard limit, and python must start in time
                        "resources": {"cpu": 300, "memory": 32},
                        "upstreams": upstreams,
                    }
                ],
            }
        ],
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceCluster]:
    c = ServiceCluster(tmp_path_factory.mktemp("svc") / "dev").start()
    try:
        yield c
    finally:
        c.stop()
        c.kill_leftovers()


# ----------------------------------------------------------------- catalog + DNS


def test_dns_answers_healthy_copies_only(cluster: ServiceCluster) -> None:
    cluster.run_job(service_job("web", 3, tags=["primary"]))
    ports = wait_until(
        lambda: (p := cluster.running_ports("web")) and len(p) == 3 and p,
        timeout=20,
        what="3 running copies of web",
    )
    wait_until(
        lambda: cluster.srv_ports("web.service.podium") == set(ports),
        timeout=10,
        what="SRV to list the 3 copies",
    )
    # A, TCP, tags, unknown names, foreign names.
    a = cluster.dns("web.service.podium", "A", tcp=True)
    assert [r.address for rrset in a.answer for r in rrset] == ["127.0.0.1"]
    assert cluster.srv_ports("primary.web.service.podium") == set(ports)
    assert cluster.dns("other.web.service.podium").rcode() == dns.rcode.NXDOMAIN
    assert cluster.dns("nope.service.podium").rcode() == dns.rcode.NXDOMAIN
    assert cluster.dns("web.service.podium", "AAAA").answer == []
    refused = cluster.dns("example.com", "A")
    assert refused.rcode() == dns.rcode.REFUSED and not refused.answer
    listing = cluster.cli_json("service", "list")
    assert {k: v for k, v in listing[0].items() if k in ("name", "healthy", "total")} == {
        "name": "web",
        "healthy": 3,
        "total": 3,
    }

    # A check that starts failing takes its copy out within one check interval.
    sick_port, sick_alloc = sorted(ports.items())[0]
    sick_file = cluster.data_dir / "agent" / "allocs" / sick_alloc / "alloc" / "sick"
    sick_file.write_text("")
    t0 = time.monotonic()
    wait_until(
        lambda: sick_port not in cluster.srv_ports("web.service.podium"),
        timeout=5,
        what="the sick copy to leave DNS",
    )
    assert time.monotonic() - t0 < CHECK_INTERVAL + 1.5  # interval + probe + margin (2 cores)
    sick_file.unlink()
    wait_until(
        lambda: cluster.srv_ports("web.service.podium") == set(ports),
        timeout=10,
        what="the recovered copy to return",
    )

    # A killed process leaves at once (the agent sees its task die), well within the interval.
    killed_port, killed_alloc = sorted(ports.items())[1]
    psutil.Process(cluster.task_pid(killed_alloc)).kill()
    t0 = time.monotonic()
    wait_until(
        lambda: killed_port not in cluster.srv_ports("web.service.podium"),
        timeout=5,
        interval=0.02,
        what="the killed copy to leave DNS",
    )
    assert time.monotonic() - t0 < CHECK_INTERVAL + 0.5
    status = cluster.cli("service", "status", "web", check=True).stdout
    assert "web:" in status and f":{killed_port}" not in status
    assert cluster.cli("service", "status", "nosuch").returncode == 1
    cluster.api("DELETE", "/v1/job/web")


def test_blocking_query_wakes_on_change(cluster: ServiceCluster) -> None:
    cluster.run_job(service_job("block", 2))
    wait_until(
        lambda: len(cluster.api("GET", "/v1/service/block")["endpoints"]) == 2,
        timeout=20,
        what="2 endpoints of block",
    )
    first = cluster.api("GET", "/v1/service/block")
    result: dict[str, Any] = {}

    def watch() -> None:
        t0 = time.monotonic()
        r = cluster.request(
            "GET", "/v1/service/block", params={"index": first["index"], "wait": "20s"}, timeout=30
        )
        result.update(r.json(), took=time.monotonic() - t0)

    watcher = threading.Thread(target=watch)
    watcher.start()
    time.sleep(0.5)
    assert not result, "the blocking query answered before any change"
    cluster.api("POST", f"/v1/allocation/{first['endpoints'][0]['alloc_id']}/stop")
    watcher.join(25)
    assert result["took"] < 5, result
    assert result["index"] > first["index"]
    ids = {e["alloc_id"] for e in result["endpoints"]}
    assert first["endpoints"][0]["alloc_id"] not in ids
    # An unknown name is answered (empty) rather than refused: a watcher may come first.
    empty = cluster.api("GET", "/v1/service/unknown-yet")
    assert empty["endpoints"] == [] and empty["known"] is False
    bad = cluster.request("GET", "/v1/service/Bad_Name")
    assert bad.status_code == 400 and "name" in bad.text
    cluster.api("DELETE", "/v1/job/block")


def test_shutdown_delay_leaves_the_catalog_before_the_signal(cluster: ServiceCluster) -> None:
    cluster.run_job(service_job("drain", 1, shutdown_delay="2s"))
    endpoint = wait_until(
        lambda: cluster.api("GET", "/v1/service/drain")["endpoints"],
        timeout=20,
        what="an endpoint of drain",
    )[0]
    process = psutil.Process(cluster.task_pid(endpoint["alloc_id"]))
    cluster.api("POST", f"/v1/allocation/{endpoint['alloc_id']}/stop")
    t0 = time.monotonic()
    wait_until(
        lambda: (
            endpoint["alloc_id"]
            not in {e["alloc_id"] for e in cluster.api("GET", "/v1/service/drain")["endpoints"]}
        ),
        timeout=5,
        what="the stopped copy to leave the catalog",
    )
    assert time.monotonic() - t0 < 1.0
    assert process.is_running(), "the task was signalled before shutdown_delay"
    time.sleep(max(0.0, t0 + 1.0 - time.monotonic()))
    assert process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    process.wait(10)  # then it is stopped
    assert time.monotonic() - t0 >= 1.9
    cluster.api("DELETE", "/v1/job/drain")


# --------------------------------------------------------------- upstreams, ingress


def test_task_reaches_a_service_through_its_upstream(cluster: ServiceCluster) -> None:
    cluster.run_job(service_job("api", 2))
    wait_until(
        lambda: len(cluster.api("GET", "/v1/service/api")["endpoints"]) == 2,
        timeout=20,
        what="2 endpoints of api",
    )
    local_port = free_port()
    script = (
        "import time, urllib.request\n"
        "seen = set()\n"
        "deadline = time.time() + 15\n"
        "while len(seen) < 2 and time.time() < deadline:\n"
        "    try:\n"
        f"        body = urllib.request.urlopen('http://127.0.0.1:{local_port}/x', timeout=2).read()\n"
        "        seen.add(body.split()[1].decode())\n"
        "    except OSError:\n"
        "        time.sleep(0.1)\n"
        "print('copies', len(seen))\n"
        "raise SystemExit(0 if len(seen) == 2 else 1)\n"
    )
    cluster.run_job(
        client_job(
            "caller",
            [{"service": "api", "local_port": local_port, "mode": "http"}],
            [sys.executable, "-c", script],
        )
    )
    job = wait_until(
        lambda: (
            (j := cluster.api("GET", "/v1/job/caller"))["allocations"]
            and j["allocations"][0]["client_status"] in ("complete", "failed")
            and j
        ),
        timeout=30,
        what="the caller to finish",
    )
    alloc = job["allocations"][0]
    logs = cluster.cli("alloc", "logs", alloc["id"]).stdout
    assert alloc["client_status"] == "complete", (alloc, logs)
    assert "copies 2" in logs
    metrics = cluster.agent_get(cluster.api("GET", "/v1/nodes")[0], "/v1/metrics").text
    assert "api" in metrics
    cluster.api("DELETE", "/v1/job/api")


def test_ingress_routes_by_host_and_path(cluster: ServiceCluster) -> None:
    cluster.run_job(service_job("alpha", 1, ingress={"host": "alpha.test"}))
    cluster.run_job(service_job("beta", 1, ingress={"path": "/beta"}))
    url = f"http://127.0.0.1:{cluster.ingress_port}"

    def get(path: str, host: str) -> tuple[int, str]:
        r = httpx.get(url + path, headers={"Host": host}, timeout=5)
        return r.status_code, r.text

    wait_until(
        lambda: get("/beta/x", "any.test")[0] == 200 and get("/", "alpha.test")[0] == 200,
        timeout=25,
        what="both ingress routes to answer",
    )
    code, body = get("/hello", "ALPHA.test:8080")
    assert code == 200 and body.startswith("alpha ") and body.rstrip().endswith("/hello")
    code, body = get("/beta/y", "other.test")
    assert code == 200 and body.startswith("beta ")
    code, _ = get("/elsewhere", "other.test")
    assert code == 404
    rows = {r["name"]: r for r in cluster.cli_json("service", "list")}
    assert rows["alpha"]["ingress"] == [{"host": "alpha.test", "path": "/"}]
    cluster.api("DELETE", "/v1/job/alpha")
    cluster.api("DELETE", "/v1/job/beta")


# ----------------------------------------------------------------------- load


async def _load(port: int, *, rate: float, seconds: float, workers: int) -> tuple[int, list[str]]:
    """GET / at `rate` per second over kept-alive connections; (sent, failures)."""
    failures: list[str] = []
    sent = 0
    interval = workers / rate
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds

    async def worker(offset: float) -> None:
        nonlocal sent
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        next_at = loop.time() + offset
        while next_at < end:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at += interval
            sent += 1
            try:
                async with asyncio.timeout(5):
                    if conn is None:
                        conn = await asyncio.open_connection("127.0.0.1", port)
                    reader, writer = conn
                    writer.write(b"GET / HTTP/1.1\r\nHost: load\r\n\r\n")
                    status = await reader.readline()
                    length = 0
                    while (line := await reader.readline()) not in (b"\r\n", b""):
                        if line.lower().startswith(b"content-length:"):
                            length = int(line.split(b":")[1])
                    await reader.readexactly(length)
                if b" 200 " not in status:
                    failures.append(status.decode(errors="replace").strip())
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as e:
                failures.append(f"{type(e).__name__}: {e}")
                if conn is not None:
                    conn[1].close()
                conn = None
        if conn is not None:
            conn[1].close()

    await asyncio.gather(*(worker(i * interval / workers) for i in range(workers)))
    return sent, failures


@pytest.mark.slow
def test_proxy_under_load_while_copies_are_killed(cluster: ServiceCluster) -> None:
    """About 500 requests/s for 30 s through the agent's proxy to 6 copies; 3 SIGKILLed."""
    cluster.run_job(service_job("six", 6, restart_delay="2s"))
    wait_until(
        lambda: len(cluster.api("GET", "/v1/service/six")["endpoints"]) == 6,
        timeout=30,
        what="6 healthy copies",
    )
    local_port = free_port()
    cluster.run_job(
        client_job(
            "holder",
            [{"service": "six", "local_port": local_port, "mode": "http"}],
            [sys.executable, "-c", "import time; time.sleep(120)"],
        )
    )
    wait_until(
        lambda: httpx.get(f"http://127.0.0.1:{local_port}/", timeout=2).status_code == 200,
        timeout=20,
        what="the upstream listener to answer",
    )
    victims = [e["alloc_id"] for e in cluster.api("GET", "/v1/service/six")["endpoints"][:3]]
    pids = [cluster.task_pid(a) for a in victims]

    def killer() -> None:
        for pid in pids:
            time.sleep(6)
            psutil.Process(pid).kill()

    t = threading.Thread(target=killer)
    t.start()
    sent, failures = asyncio.run(_load(local_port, rate=500, seconds=30, workers=25))
    t.join()
    print(f"sent {sent}, failed {len(failures)}: {failures[:5]}")
    for alloc_id, pid in zip(victims, pids, strict=True):
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        state = next(iter(cluster.api("GET", f"/v1/allocation/{alloc_id}")["task_states"].values()))
        assert state["pid"] != pid, "the killed copy was not noticed"
    assert sent > 500 * 30 * 0.8, f"the load generator fell behind: {sent} sent"
    assert len(failures) < sent * 0.001, failures[:10]
    cluster.api("DELETE", "/v1/job/holder")
    cluster.api("DELETE", "/v1/job/six")
