"""What `podium job run`, `job status`, `job stop` and `alloc status` tell a user, checked
against what is really going on: healthy only when it is, counts that say what they
count, check results that stay fresh."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from integration.cluster import ROOT, DevCluster, wait_until

pytestmark = pytest.mark.integration
SERVER = Path(__file__).with_name("versioned_server.py")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    c = DevCluster(tmp_path_factory.mktemp("truth") / "dev").start()
    try:
        yield c
    finally:
        c.stop()
        c.kill_leftovers()


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def squatter() -> Iterator[int]:
    """Another process's HTTP server holding a port: it answers every check with 200."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield int(srv.server_address[1])
    finally:
        srv.shutdown()
        srv.server_close()


def write(tmp: Path, spec: dict[str, Any]) -> str:
    path = tmp / f"{spec['name']}-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(spec))
    return str(path)


def web_job(
    name: str,
    *,
    count: int = 1,
    port: dict[str, Any] | None = None,
    command: list[str] | None = None,
    env: dict[str, str] | None = None,
    check: dict[str, Any] | None = None,
    update: dict[str, Any] | None = None,
) -> dict[str, Any]:
    group: dict[str, Any] = {
        "name": "app",
        "count": count,
        "network": {"ports": {"http": port or {}}},
        "services": [
            {
                "name": name,
                "port": "http",
                "checks": [
                    check or {"type": "http", "path": "/", "interval": "0.5s", "timeout": "0.5s"}
                ],
            }
        ],
        "tasks": [
            {
                "name": "server",
                "config": {
                    "command": (command or [sys.executable])[0],
                    "args": (command or [sys.executable, str(SERVER)])[1:],
                },
                "env": env or {},
                # At 50 MHz (2% of a core) Python took ~8 s to listen: what these tests
                # measured was mostly the copies' start.
                "resources": {"cpu": 250, "memory": 32},
            }
        ],
    }
    if update is not None:
        group["update"] = update
    return {"name": name, "groups": [group]}


def test_a_task_whose_port_another_process_answers_is_not_called_healthy(
    cluster: DevCluster, tmp_path: Path, squatter: int
) -> None:
    """`porttaken`: the task crash-loops on "Address already in use" while another process
    answers its checks. `job run` must not say healthy, and must exit non-zero."""
    spec = web_job(
        "porttaken",
        port={"static": squatter},
        command=["python3", "-m", "http.server", str(squatter), "--bind", "127.0.0.1"],
    )
    res = cluster.cli("job", "run", write(tmp_path, spec), timeout=120)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert "porttaken' healthy" not in out, out
    # Whichever comes first: its exits, or its check found answered by someone else.
    assert "Address already in use" in out or "another process holds the port" in out, out
    d = cluster.cli_json("deployment", "status", "porttaken")["deployment"]
    assert d["status"] == "failed", d


def test_a_running_task_whose_port_another_process_answers_is_not_healthy(
    cluster: DevCluster, tmp_path: Path, squatter: int
) -> None:
    """The task runs without a restart (it never binds: slow, or it binds elsewhere) and
    another process answers its port: the check passes, but it is not the task's health."""
    spec = web_job("notmine", port={"static": squatter}, command=["sleep", "300"])
    res = cluster.cli("job", "run", write(tmp_path, spec), timeout=120)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert "notmine' version 0 healthy" not in out, out
    assert f"port {squatter} answers, but no process of this alloc listens on it" in out, out
    cluster.cli("job", "stop", "notmine", "--purge", check=True)


def test_job_run_of_a_new_job_returns_once_its_deployment_succeeded(
    cluster: DevCluster,
) -> None:
    """`make dev` printed "job 'web' healthy" while the deployment still ran."""
    res = cluster.cli("job", "run", str(ROOT / "examples" / "web.yaml"), timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    d = cluster.cli_json("deployment", "status", "web")["deployment"]
    assert d["status"] == "successful", (d, res.stdout)
    assert "successful" in res.stdout, res.stdout
    cluster.cli("job", "stop", "web", "--purge", check=True)


def _alloc(cluster: DevCluster, job: str) -> dict[str, Any]:
    rows = cluster.api("GET", f"/v1/job/{job}")["allocations"]
    live = [a for a in rows if a["desired_status"] == "run"]
    assert len(live) == 1, rows
    return cluster.cli_json("alloc", "status", live[0]["id"])  # type: ignore[no-any-return]


def test_alloc_status_shows_each_checks_latest_result_and_time(
    cluster: DevCluster, tmp_path: Path
) -> None:
    """Check results were sent only when a status flipped: a check going from "connection
    refused" to an HTTP error (critical both) kept the first output, and a passing check's
    time froze. Now both stay fresh (a new output within CHECK_SYNC), and the reports stay
    few."""
    answer = tmp_path / "health-answer"  # what GET /health says, with a 500
    answer.write_text("warming up")
    spec = web_job(
        "fresh",
        command=["sh", "-c", f"sleep 1.5; exec {sys.executable} {SERVER}"],
        env={"HEALTH_FILE": str(answer)},
        update={"health_check": "task_states", "min_healthy_time": "1s"},
    )
    quick = {"interval": "0.5s", "timeout": "0.5s"}
    spec["groups"][0]["services"][0]["checks"] = [
        {"name": "root", "type": "http", "path": "/", **quick},  # 200
        {"name": "failing", "type": "http", "path": "/health", **quick},  # 500
    ]
    cluster.cli("job", "run", "--detach", write(tmp_path, spec), check=True)

    def checks() -> dict[str, dict[str, Any]]:
        return {c["name"]: c for c in _alloc(cluster, "fresh")["checks"]}

    wait_until(
        lambda: "ConnectionRefusedError" in checks()["failing"]["output"],
        timeout=10,
        what="the first result: nothing listens yet",
    )
    wait_until(  # reported with the root check's flip to passing, as the server listens
        lambda: "HTTP 500: warming up" in checks()["failing"]["output"],
        timeout=10,
        what="the check's new output (critical both times) once the server listens",
    )
    # No check's status flips from here: the new output travels alone.
    answer.write_text("disk full")
    wait_until(  # README: within 5 s (CHECK_SYNC); a check interval and `alloc status` on top
        lambda: "HTTP 500: disk full" in checks()["failing"]["output"],
        timeout=5 + 3,
        what="a still failing check's new output, within 5 s",
    )
    first = wait_until(lambda: checks()["root"]["checked_at"], timeout=10, what="a result")
    wait_until(
        lambda: checks()["root"]["checked_at"] > first + 2,
        timeout=10,
        what="a passing check's time to keep refreshing",
    )
    out = cluster.cli("alloc", "status", _alloc(cluster, "fresh")["id"][:8], check=True).stdout
    assert "disk full" in out and "warming up" not in out, out
    # Bounded: 2 checks every 0.5 s are ~24 results in 6 s; the alloc is written at most
    # once per CHECK_SYNC (5 s) for them, so 3 distinct writes at most (one in flight).
    writes: set[float] = set()
    t_end = time.monotonic() + 6
    while time.monotonic() < t_end:
        writes.add(_alloc(cluster, "fresh")["modify_time"])
        time.sleep(0.1)
    assert 1 <= len(writes) <= 3, f"{len(writes)} writes in 6 s"
    cluster.cli("job", "stop", "fresh", "--purge", check=True)


def test_a_count_change_reports_every_healthy_copy_of_the_version(
    cluster: DevCluster, tmp_path: Path
) -> None:
    """It said "1/3 healthy — every copy on the new version is healthy": the copies kept
    in place were not counted."""
    fast = {"min_healthy_time": "0.5s"}
    cluster.cli("job", "run", write(tmp_path, web_job("count", count=2, update=fast)), check=True)
    res = cluster.cli(
        "job", "run", write(tmp_path, web_job("count", count=3, update=fast)), check=True
    )
    d = cluster.cli_json("deployment", "status", "count")["deployment"]
    assert d["status"] == "successful" and d["job_version"] == 1, d
    assert d["groups"]["app"]["healthy"] == 3, d["groups"]
    assert "3/3 healthy" in res.stdout and "1/3 healthy" not in res.stdout, res.stdout
    cluster.cli("job", "stop", "count", "--purge", check=True)


def test_during_a_rollout_the_group_counts_old_and_new_copies(
    cluster: DevCluster, tmp_path: Path
) -> None:
    """It showed only the new version's copies (RUNNING 1, HEALTHY 0 while 3 served)."""
    slow = {"min_healthy_time": "3s"}
    v0 = web_job("mixed", count=3, env={"VERSION": "a"}, update=slow)
    cluster.cli("job", "run", write(tmp_path, v0), check=True, timeout=120)
    v1 = web_job("mixed", count=3, env={"VERSION": "b"}, update=slow)
    cluster.cli("job", "run", "--detach", write(tmp_path, v1), check=True)

    def mixed() -> dict[str, Any] | None:
        s = cluster.api("GET", "/v1/job/mixed")
        g = s["groups"]["app"]
        both = {v: n for v, n in g["versions"].items() if n["running"]}
        return s if len(both) == 2 else None

    s = wait_until(mixed, timeout=30, interval=0.1, what="old and new copies running at once")
    g = s["groups"]["app"]
    assert g["running"] == sum(n["running"] for n in g["versions"].values()) >= 2, g
    assert g["versions"]["0"]["running"] >= 1 and g["versions"]["1"]["running"] >= 1, g
    out = cluster.cli("job", "status", "mixed", check=True).stdout
    assert "version 1 (current):" in out and "version 0:" in out, out
    cluster.cli("deployment", "status", "mixed", "--watch", "--timeout", "60", check=True)
    cluster.cli("job", "stop", "mixed", "--purge", check=True)


def test_job_stop_counts_the_copies_it_stopped_not_old_ones(
    cluster: DevCluster, tmp_path: Path
) -> None:
    """It said "14 allocation(s) down" when 3 ran: stopped copies of old versions counted."""
    fast = {"max_parallel": 2, "min_healthy_time": "0.5s"}
    for version in ("a", "b"):
        spec = web_job("stops", count=2, env={"VERSION": version}, update=fast)
        cluster.cli("job", "run", write(tmp_path, spec), check=True, timeout=120)
    rows = cluster.api("GET", "/v1/job/stops")["allocations"]
    assert len(rows) == 4, rows  # two old copies, stopped, and two running
    res = cluster.cli("job", "stop", "stops", check=True)
    assert "2 allocation(s) running" in res.stdout, res.stdout
    assert "2 running allocation(s) stopped" in res.stdout, res.stdout
    cluster.cli("job", "stop", "stops", "--purge", check=True)
