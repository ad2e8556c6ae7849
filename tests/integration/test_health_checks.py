"""Health checks against real sockets and a real `podium dev`: an HTTP client that sends
only what it should, checks that never probe podium's own listeners, and command checks
that run inside the task (its cgroup), not in the agent."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration.cluster import DevCluster, wait_until
from podium.agent.health import run_check
from podium.model.types import Check

pytestmark = pytest.mark.integration


class Recorder:
    """A TCP server that records each request's raw bytes and answers a fixed response."""

    def __init__(self, response: bytes) -> None:
        self.response = response
        self.requests: list[bytes] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                data = b""
                try:
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    self.requests.append(data)
                    conn.sendall(self.response)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    r = Recorder(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    try:
        yield r
    finally:
        r.close()


def probe(check: Check, port: int, **kw: Any) -> tuple[str, str]:
    return asyncio.run(run_check(check, address="127.0.0.1", port=port, **kw))


def test_a_path_with_cr_lf_is_never_sent(recorder: Recorder) -> None:
    """The path went into a hand-written request line: CR/LF in it injected headers. A spec
    stored before validation refused such paths must not get through the agent either."""
    evil = Check(name="c", path="/x HTTP/1.1\r\nX-Injected: yes\r\nFoo: bar", timeout=2)
    status, output = probe(evil, recorder.port)
    assert status == "critical" and "path refused" in output, output
    assert not any(b"X-Injected" in r for r in recorder.requests), recorder.requests
    status, _ = probe(Check(name="c", path="/ok?q=1", timeout=2), recorder.port)
    assert status == "passing"
    assert recorder.requests[-1].startswith(b"GET /ok?q=1 HTTP/1.1\r\n"), recorder.requests


def test_a_redirect_is_not_followed() -> None:
    r = Recorder(b"HTTP/1.1 302 Found\r\nLocation: /next\r\nContent-Length: 0\r\n\r\n")
    try:
        status, output = probe(Check(name="c", path="/", timeout=2), r.port)
    finally:
        r.close()
    assert (status, output) == ("passing", "HTTP 302")
    assert len(r.requests) == 1, r.requests


def test_a_failing_http_check_says_what_the_task_answered() -> None:
    r = Recorder(b"HTTP/1.1 503 Unavailable\r\nContent-Length: 15\r\n\r\ndb unreachable\n")
    try:
        status, output = probe(Check(name="c", path="/", timeout=2), r.port)
    finally:
        r.close()
    assert (status, output) == ("critical", "HTTP 503: db unreachable")


def test_a_check_never_probes_the_nodes_own_services(recorder: Recorder) -> None:
    own = {recorder.port: "the agent's API"}
    status, output = probe(Check(name="c", type="tcp", timeout=2), recorder.port, own_ports=own)
    assert status == "critical" and "the agent's API" in output, output
    assert recorder.requests == []


# ------------------------------------------------------------------ on a dev cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    c = DevCluster(tmp_path_factory.mktemp("checks") / "dev").start()
    try:
        yield c
    finally:
        c.stop()
        c.kill_leftovers()


def run(cluster: DevCluster, tmp: Path, spec: dict[str, Any], *args: str) -> Any:
    path = tmp / f"{spec['name']}.json"
    path.write_text(json.dumps(spec))
    return cluster.cli("job", "run", *args, str(path), timeout=60)


def sleeper(name: str, **group: Any) -> dict[str, Any]:
    return {
        "name": name,
        "groups": [
            {
                "name": "g",
                "tasks": [{"name": "t", "config": {"command": "sleep", "args": ["300"]}}],
                **group,
            }
        ],
    }


def test_a_static_port_of_the_servers_api_is_refused(cluster: DevCluster, tmp_path: Path) -> None:
    """The node reserves its own services' ports: a group asking for one is not placed there
    (its check would have probed podium, and passed)."""
    spec = sleeper(
        "onapi",
        network={"ports": {"http": {"static": cluster.port}}},
        services=[{"name": "onapi", "port": "http", "checks": [{"type": "tcp"}]}],
    )
    res = run(cluster, tmp_path, spec)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "static port reserved by the node" in res.stdout + res.stderr, res.stdout + res.stderr
    node = cluster.api("GET", "/v1/nodes")[0]
    reserved = cluster.api("GET", f"/v1/node/{node['id']}")["resources"]["reserved_ports"]
    agent_port = int(node["http_addr"].rpartition(":")[2])
    assert cluster.port in reserved and agent_port in reserved, reserved
    cluster.cli("job", "stop", "onapi", "--purge", check=True)


def test_a_check_on_a_port_of_the_nodes_proxy_is_refused(
    cluster: DevCluster, tmp_path: Path
) -> None:
    """A proxy listener opens after the node registered: the agent refuses it at probe time
    (or, once the agent has reported the bound port as reserved, it is not placed at all)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        local = int(s.getsockname()[1])
    client = sleeper("client")
    client["groups"][0]["tasks"][0]["upstreams"] = [{"service": "nothing", "local_port": local}]
    assert run(cluster, tmp_path, client).returncode == 0
    spec = sleeper(
        "onproxy",
        network={"ports": {"http": {"static": local}}},
        services=[{"name": "onproxy", "port": "http", "checks": [{"type": "tcp"}]}],
    )
    run(cluster, tmp_path, spec, "--detach")

    def output() -> str:
        s = cluster.api("GET", "/v1/job/onproxy")
        if not s["allocations"]:
            # The agent found the listener bound before the job came and reported its
            # port as reserved: the copy is not placed at all (refused the other way).
            return " ".join(f["message"] for f in s["placement_failures"])
        a = cluster.api("GET", f"/v1/allocation/{s['allocations'][0]['id']}")
        return str(a["checks"][0]["output"]) if a["checks"] else ""

    out = wait_until(lambda: output(), timeout=15, what="a check result or a placement failure")
    assert "listener of the node's proxy" in out or "static port reserved by the node" in out, out
    for job in ("onproxy", "client"):
        cluster.cli("job", "stop", job, "--purge", check=True)


def test_a_command_check_runs_inside_the_tasks_cgroup(cluster: DevCluster, tmp_path: Path) -> None:
    node = cluster.api("GET", "/v1/nodes")[0]
    if node["attributes"].get("driver.process.cgroups", "none") == "none":
        if os.geteuid() == 0:
            pytest.fail("running as root, yet the process driver found no usable cgroups")
        pytest.skip("no writable cgroups without root: tasks run with rlimits only")
    spec = sleeper(
        "incg",
        services=[
            {
                "name": "incg",
                "checks": [
                    {
                        "type": "command",
                        "command": ["cat", "/proc/self/cgroup"],
                        "interval": "0.5s",
                        "timeout": "0.5s",
                    }
                ],
            }
        ],
    )
    assert run(cluster, tmp_path, spec, "--detach").returncode == 0
    rows = wait_until(
        lambda: cluster.api("GET", "/v1/job/incg")["allocations"], timeout=10, what="an alloc"
    )
    alloc_id = rows[0]["id"]

    def output() -> str:
        a = cluster.api("GET", f"/v1/allocation/{alloc_id}")
        return str(a["checks"][0]["output"]) if a["checks"] and a["checks"][0]["output"] else ""

    out = wait_until(output, timeout=15, what="the command check's output")
    assert f"/podium/{alloc_id}-t" in out, out
    cluster.cli("job", "stop", "incg", "--purge", check=True)
