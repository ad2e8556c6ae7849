"""The core acceptance, end to end: `podium dev` as a real subprocess, driven by the CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from integration.cluster import ROOT, DevCluster, http_get, wait_until

pytestmark = pytest.mark.integration
WEB = str(ROOT / "examples" / "web.yaml")


def _running(c: DevCluster, job: str) -> list[dict]:
    s = c.cli_json("job", "status", job)
    return [
        a
        for a in s["allocations"]
        if a["desired_status"] == "run" and a["client_status"] == "running"
    ]


def test_job_run_waits_until_healthy_and_each_copy_serves(dev_cluster: DevCluster) -> None:
    res = dev_cluster.cli("job", "run", WEB, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "healthy" in res.stdout
    allocs = _running(dev_cluster, "web")
    assert len(allocs) == 3
    ports = {a["ports"]["http"] for a in allocs}
    assert len(ports) == 3, "each copy has its own port"
    assert all(a["healthy"] for a in allocs)
    for port in ports:
        assert http_get(port) == 200


def test_killed_task_is_restarted_within_two_seconds(dev_cluster: DevCluster) -> None:
    dev_cluster.cli("job", "run", WEB, check=True, timeout=60)
    victim = _running(dev_cluster, "web")[0]
    pid, port = victim["pids"]["server"], victim["ports"]["http"]
    os.kill(pid, signal.SIGKILL)
    t0 = time.monotonic()

    def serving_again() -> bool:
        return http_get(port, timeout=0.3) == 200 and psutil.pid_exists(pid) is False

    wait_until(serving_again, timeout=5, interval=0.02, what="the alloc to serve again")
    elapsed = time.monotonic() - t0
    assert elapsed < 2.0, f"served again after {elapsed:.2f}s"
    status = dev_cluster.cli_json("job", "status", "web")
    row = next(a for a in status["allocations"] if a["id"] == victim["id"])
    assert row["restarts"] >= 1
    assert row["pids"]["server"] != pid
    assert status["groups"]["frontend"]["restarts"] >= 1


def test_job_stop_kills_every_process_including_grandchildren(
    dev_cluster: DevCluster, tmp_path: Path
) -> None:
    spec = tmp_path / "forky.yaml"
    # Each task leaves a grandchild in its own session that ignores SIGTERM.
    spec.write_text(
        textwrap.dedent("""
        name: forky
        groups:
          - name: g
            count: 2
            tasks:
              - name: t
                driver: process
                kill_timeout: 2s
                config:
                  command: sh
                  args: ["-c", "setsid sh -c 'trap \\"\\" TERM; sleep 1000' & sleep 1000 & trap '' TERM; sleep 1000"]
    """)
    )
    dev_cluster.cli("job", "run", str(spec), check=True, timeout=60)
    wait_until(
        lambda: len(dev_cluster.task_processes()) >= 2 * 4,
        timeout=10,
        what="tasks and their grandchildren to start",
    )
    procs = dev_cluster.task_processes()
    t0 = time.monotonic()
    res = dev_cluster.cli("job", "stop", "forky", timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    wait_until(
        lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in procs),
        timeout=5,
        what="every process of the job to be gone",
    )
    assert time.monotonic() - t0 < 2.0 + 2.5, "gone within the grace period (plus reporting)"


def test_unplaceable_job_fails_with_reason_and_server_survives(
    dev_cluster: DevCluster, tmp_path: Path
) -> None:
    spec = tmp_path / "huge.yaml"
    spec.write_text(
        textwrap.dedent("""
        name: huge
        groups:
          - name: g
            tasks:
              - name: t
                config: {command: sleep, args: ["100"]}
                resources: {cpu: 100, memory: 9000000}
    """)
    )
    res = dev_cluster.cli("job", "run", str(spec), timeout=30)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    out = res.stdout + res.stderr
    assert "exhausted on memory" in out, out
    assert "0/1 nodes fit" in out, out
    assert dev_cluster.api("GET", "/v1/status")["nodes"] == 1


def test_node_keeps_back_cpu_memory_and_ports_bound_on_the_host(tmp_path: Path) -> None:
    """The node offers what the system and the agent leave, and a port something else on
    the host listens on is reserved: a job asking for it is refused with the reason instead
    of being placed and failing to bind."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        c = DevCluster(tmp_path / "dev").start()
        try:
            (node,) = c.api("GET", "/v1/nodes")
            r = node["resources"]
            assert taken in r["reserved_ports"], r["reserved_ports"]
            assert c.port in r["reserved_ports"]  # the server's own API, too
            assert r["reserved_cpu"] >= 100 and r["reserved_memory"] >= 256, r
            assert int(node["attributes"]["cpu.totalcompute"]) == r["cpu"] + r["reserved_cpu"]
            spec = tmp_path / "clash.yaml"
            spec.write_text(
                textwrap.dedent(f"""
                name: clash
                groups:
                  - name: g
                    network: {{ports: {{http: {{static: {taken}}}}}}}
                    tasks:
                      - name: t
                        config: {{command: sleep, args: ["100"]}}
                """)
            )
            res = c.cli("job", "run", str(spec), timeout=30)
            out = res.stdout + res.stderr
            assert res.returncode != 0 and "static port reserved by the node" in out, out
        finally:
            c.stop()
            c.kill_leftovers()


def test_restart_on_same_data_dir_keeps_jobs_and_never_duplicates(tmp_path: Path) -> None:
    c = DevCluster(tmp_path / "dev").start()
    try:
        c.cli("job", "run", WEB, check=True, timeout=60)
        before = {a["id"]: a["pids"]["server"] for a in _running(c, "web")}
        c.kill9()
        c.port = c.port  # same address
        c.start()
        wait_until(
            lambda: len(_running(c, "web")) == 3 and all(a["healthy"] for a in _running(c, "web")),
            timeout=30,
            what="3 healthy copies again",
        )
        # Never two live copies of one alloc: one process per alloc, the same ones as before.
        procs = c.task_processes()
        by_alloc: dict[str, int] = {}
        for p in procs:
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
            aid = p.environ()["PODIUM_ALLOC_ID"]
            by_alloc[aid] = by_alloc.get(aid, 0) + 1
        assert all(n == 1 for n in by_alloc.values()), by_alloc
        after = {a["id"]: a["pids"]["server"] for a in _running(c, "web")}
        assert after == before, "the restarted agent re-adopted the same tasks"
        assert json.loads(c.cli("job", "status", "--json", check=True).stdout)[0]["name"] == "web"
    finally:
        c.stop()
        c.kill_leftovers()


def test_alloc_logs_exec_restart_and_stop(dev_cluster: DevCluster) -> None:
    dev_cluster.cli("job", "run", WEB, check=True, timeout=60)
    a = _running(dev_cluster, "web")[0]
    short, port, pid = a["id"][:8], a["ports"]["http"], a["pids"]["server"]
    http_get(port)
    # http.server logs requests to stderr; the health checks alone produce some.
    logs = wait_until(
        lambda: dev_cluster.cli("alloc", "logs", short, "--stderr").stdout,
        timeout=5,
        what="stderr log lines",
    )
    assert '"GET / HTTP/1.' in logs
    res = dev_cluster.cli("alloc", "exec", short, "--", "sh", "-c", "echo $PODIUM_PORT_HTTP")
    assert res.returncode == 0 and res.stdout.strip() == str(port), res.stdout + res.stderr
    assert dev_cluster.cli("alloc", "exec", short, "--", "sh", "-c", "exit 3").returncode == 3
    # Restart in place: same alloc, new process, counted once, and it stays up.
    dev_cluster.cli("alloc", "restart", short, check=True)

    def restarted() -> dict | None:
        now = dev_cluster.cli_json("alloc", "status", short)
        return now if now["task_states"]["server"]["restarts"] >= 1 else None

    after = wait_until(restarted, timeout=10, what="the restart to be counted")
    assert after["task_states"]["server"]["restarts"] == 1, after["task_states"]
    assert after["client_status"] == "running"
    new_pid = next(x for x in _running(dev_cluster, "web") if x["id"] == a["id"])["pids"]["server"]
    assert new_pid not in (pid, 0) and psutil.pid_exists(new_pid)
    assert http_get(port) == 200
    # Stop: the alloc ends and a replacement takes its index.
    dev_cluster.cli("alloc", "stop", short, check=True)
    wait_until(
        lambda: (
            len(_running(dev_cluster, "web")) == 3
            and a["id"] not in {x["id"] for x in _running(dev_cluster, "web")}
        ),
        timeout=15,
        what="a replacement alloc",
    )
    stopped = dev_cluster.cli_json("alloc", "status", short)
    assert stopped["desired_status"] == "stop" and stopped["client_status"] == "complete"


def test_lost_agent_state_adopts_running_processes(tmp_path: Path) -> None:
    """kill -9, then the agent's state file is lost too: the processes still running are
    found by their identity and adopted, none started twice."""
    c = DevCluster(tmp_path / "dev").start()
    try:
        c.cli("job", "run", WEB, check=True, timeout=60)
        before = {a["id"]: a["pids"]["server"] for a in _running(c, "web")}
        c.kill9()
        state_file = c.data_dir / "agent" / "agent-state.json"
        assert state_file.exists()
        state_file.unlink()
        c.start()
        wait_until(
            lambda: len(_running(c, "web")) == 3 and all(a["healthy"] for a in _running(c, "web")),
            timeout=30,
            what="3 healthy copies again",
        )
        after = {a["id"]: a["pids"]["server"] for a in _running(c, "web")}
        assert after == before, "the same processes, adopted"
        live = [p for p in c.task_processes() if p.status() != psutil.STATUS_ZOMBIE]
        assert sorted(p.pid for p in live) == sorted(before.values())
    finally:
        c.stop()
        c.kill_leftovers()
