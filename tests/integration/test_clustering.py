"""Clustering and self-healing with real processes: 1 `podium server` + N `podium agent`s.

Each agent is its own node on its own loopback address (127.0.0.1, .2, .3 …); a
"dead machine" is its agent and all its tasks killed with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from integration.cluster import wait_rounds, wait_until
from integration.multinode import MultiNodeCluster, healthy_running, web_job

pytestmark = pytest.mark.integration

TTL = 2.0  # the cluster's heartbeat TTL in these tests: heartbeats every TTL/3


MIGRATE_ONE = """
    migrate: {max_parallel: 1}
"""


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[MultiNodeCluster]:
    c = MultiNodeCluster(tmp_path / "cluster", heartbeat_ttl=TTL)
    try:
        c.start(3)
        yield c
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop()


def _run_web(c: MultiNodeCluster, tmp_path: Path, **kw: Any) -> dict[str, Any]:
    c.cli("job", "run", web_job(tmp_path / "web.yaml", **kw), "--detach", check=True)
    count = kw.get("count", 6)
    wait_until(
        lambda: len(healthy_running(c.job("web"))) == count,
        timeout=30,
        what=f"{count} healthy copies",
    )
    job: dict[str, Any] = c.job("web")
    return job


def _per_node(allocs: list[dict[str, Any]]) -> Counter[str]:
    return Counter(a["node_name"] for a in allocs)


def test_sigkill_of_a_node_replaces_its_allocs_within_five_seconds(
    cluster: MultiNodeCluster, tmp_path: Path
) -> None:
    job = _run_web(cluster, tmp_path)
    assert _per_node(healthy_running(job)) == {"node-1": 2, "node-2": 2, "node-3": 2}
    victim = cluster.agents[1]
    lost_ids = {a["id"] for a in healthy_running(job) if a["node_name"] == victim.name}

    t0 = time.monotonic()
    victim.kill9()

    def healed() -> bool:
        running = healthy_running(cluster.job("web"))
        return len(running) == 6 and all(a["node_name"] != victim.name for a in running)

    wait_until(healed, timeout=15, interval=0.05, what="6 healthy copies on surviving nodes")
    elapsed = time.monotonic() - t0
    assert elapsed < 5.0, f"replacements healthy after {elapsed:.2f}s"
    # Every replacement serves.
    assert len(cluster.serving("web")) == 6

    status = cluster.cli_json("job", "status", "web")
    rows = {a["id"]: a for a in status["allocations"]}
    for lost_id in lost_ids:
        row = rows[lost_id]
        assert row["client_status"] == "lost"
        assert row["desired_status"] == "stop"
        assert row["next_alloc"], "a lost alloc names its replacement"
        repl = rows[row["next_alloc"]]
        assert repl["previous_alloc"] == lost_id
        assert repl["client_status"] == "running" and repl["node_name"] != victim.name
    nodes = {n["name"]: n for n in cluster.cli_json("node", "status")}
    assert nodes[victim.name]["status"] == "down"
    text = cluster.cli("job", "status", "web", check=True).stdout
    assert "lost" in text


def test_sigstopped_node_stops_its_replaced_allocs_when_it_returns(
    cluster: MultiNodeCluster, tmp_path: Path
) -> None:
    job = _run_web(cluster, tmp_path)
    victim = cluster.agents[2]
    old = {a["id"] for a in healthy_running(job) if a["node_name"] == victim.name}
    assert len(old) == 2
    victim.pause()
    paused_at = time.monotonic()
    try:

        def replaced() -> bool:
            running = healthy_running(cluster.job("web"))
            return sum(1 for a in running if a["node_name"] != victim.name) == 6

        wait_until(replaced, timeout=15, what="replacements on the other nodes")
        # Its tasks kept running through the pause (the node is partitioned, not dead).
        assert len(victim.task_processes()) == 2
        time.sleep(max(0.0, 20.0 - (time.monotonic() - paused_at)))
    finally:
        victim.resume()
    back = time.monotonic()

    def old_gone() -> bool:
        return not victim.task_processes() and len(cluster.serving("web")) <= 6

    wait_until(old_gone, timeout=10, interval=0.05, what="the returning node to stop its copies")
    assert time.monotonic() - back < 5.0, f"stopped after {time.monotonic() - back:.2f}s"
    # From now on never more than 6 serve, and the 6 replacements keep serving.
    deadline = time.monotonic() + 4.0
    while time.monotonic() < deadline:
        serving = cluster.serving("web")
        assert len(serving) <= 6, f"{len(serving)} copies serving: {sorted(serving)}"
        time.sleep(0.2)
    assert len(cluster.serving("web")) == 6
    wait_until(
        lambda: cluster.cli_json("node", "status", victim.name)["status"] == "ready",
        timeout=5,
        what="the node to be ready again",
    )
    rows = {a["id"]: a for a in cluster.job("web")["allocations"]}
    for alloc_id in old:
        assert rows[alloc_id]["desired_status"] == "stop"
        assert rows[alloc_id]["next_alloc"]


def test_lost_after_keeps_a_returning_nodes_allocs_instead_of_replacing_them(
    cluster: MultiNodeCluster, tmp_path: Path
) -> None:
    job = _run_web(cluster, tmp_path, extra="disconnect: {lost_after: 60s}")
    before = {a["id"]: a["pids"]["server"] for a in healthy_running(job)}
    victim = cluster.agents[0]
    victim.pause()
    try:
        wait_until(
            lambda: cluster.cli_json("node", "status", victim.name)["status"] == "down",
            timeout=10,
            what="the node to be down",
        )
        # Two placement rounds since the server saw the node down: nothing was replaced.
        wait_rounds(cluster, "placement")
        allocs = cluster.job("web")["allocations"]
        assert len(allocs) == 6, "nothing replaced while the group waits for its node"
        assert not any(a["client_status"] == "lost" for a in allocs)
    finally:
        victim.resume()
    wait_until(
        lambda: cluster.cli_json("node", "status", victim.name)["status"] == "ready",
        timeout=10,
        what="the node to be ready again",
    )
    wait_rounds(cluster, "placement")  # what it would replace, it would have by now
    job = cluster.job("web")
    assert {a["id"]: a["pids"]["server"] for a in healthy_running(job)} == before
    assert len(job["allocations"]) == 6
    assert len(cluster.serving("web")) == 6


def test_server_restart_with_agents_running_declares_nothing_down(
    cluster: MultiNodeCluster, tmp_path: Path
) -> None:
    spec = tmp_path / "sleepers.yaml"
    spec.write_text(
        textwrap.dedent("""
        name: sleepers
        groups:
          - name: g
            count: 30
            tasks:
              - name: t
                driver: process
                config: {command: sleep, args: ["3600"]}
                resources: {cpu: 10, memory: 8}
        """)
    )
    cluster.cli("job", "run", str(spec), "--detach", check=True)

    def all_running() -> list[dict[str, Any]]:
        allocs = cluster.job("sleepers")["allocations"]
        running = [a for a in allocs if a["client_status"] == "running"]
        return running if len(running) == 30 else []

    before = {a["id"]: a["pids"]["t"] for a in wait_until(all_running, timeout=30, what="30")}
    assert len(set(_per_node(list(cluster.job("sleepers")["allocations"])))) == 3
    assert all(before.values())
    seq = max((e["seq"] for e in cluster.api("GET", "/v1/events", params={"limit": 1})), default=0)

    cluster.stop_server(kill=True)
    time.sleep(1.0)
    cluster.start_server()
    # Watch for well past the TTL: every node stays ready the whole time.
    deadline = time.monotonic() + 3 * TTL
    while time.monotonic() < deadline:
        nodes = cluster.api("GET", "/v1/nodes")
        assert [n["status"] for n in nodes] == ["ready"] * 3, nodes
        time.sleep(0.1)

    events = cluster.api("GET", "/v1/events", params={"index": seq, "limit": 0})
    downs = [e for e in events if e["type"] == "node.down"]
    assert downs == [], downs
    allocs = cluster.job("sleepers")["allocations"]
    assert {a["id"]: a["pids"]["t"] for a in allocs} == before, "no alloc replaced"
    assert all(a["client_status"] == "running" and a["restarts"] == 0 for a in allocs)
    for a in cluster.agents:
        assert a.alive
    pids = {p.pid for a in cluster.agents for p in a.task_processes()}
    assert set(before.values()) <= pids, "no task restarted"


class HealthWatcher:
    """Polls a job's healthy copies in a thread; remembers the fewest it ever saw."""

    def __init__(self, c: MultiNodeCluster, job: str) -> None:
        self.c, self.job = c, job
        self.fewest: int | None = None
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        end = time.monotonic() + 120  # bounded even if the test forgets to stop it
        while not self._stop.is_set() and time.monotonic() < end:
            try:
                n = len(healthy_running(self.c.job(self.job)))
            except httpx.HTTPError:
                continue
            self.fewest = n if self.fewest is None else min(self.fewest, n)
            self.samples += 1
            time.sleep(0.02)

    def __enter__(self) -> HealthWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def test_drain_moves_every_alloc_keeping_count_minus_max_parallel_healthy(
    cluster: MultiNodeCluster, tmp_path: Path
) -> None:
    job = _run_web(cluster, tmp_path, count=6, extra=MIGRATE_ONE)
    victim = "node-2"
    assert _per_node(healthy_running(job))[victim] == 2
    with HealthWatcher(cluster, "web") as watch:
        res = cluster.cli("node", "drain", victim, "--timeout", "60", timeout=90)
        out = _cli_ok(res)
        # Healthy again everywhere else before the watch ends.
        wait_until(
            lambda: len(healthy_running(cluster.job("web"))) == 6, timeout=10, what="6 healthy"
        )
    assert "draining" in out and "allocs left" in out and "drained" in out, out
    assert watch.samples > 20
    print(f"fewest healthy copies during the drain: {watch.fewest} of 6 ({watch.samples} samples)")
    assert watch.fewest is not None and watch.fewest >= 6 - 1, (
        f"only {watch.fewest} healthy copies at one point during the drain"
    )
    node = cluster.cli_json("node", "status", victim)
    assert node["drain"] is False and node["eligible"] is False
    assert node["allocations"] == 0
    running = healthy_running(cluster.job("web"))
    assert victim not in _per_node(running) and len(running) == 6
    assert not cluster.agents[1].task_processes()
    events = cluster.api("GET", "/v1/events", params={"limit": 0})
    assert any(e["type"] == "node.drain_complete" for e in events)


def test_system_job_runs_on_every_node_and_a_new_node_gets_one(
    cluster: MultiNodeCluster, tmp_path: Path
) -> None:
    spec = tmp_path / "sys.yaml"
    spec.write_text(
        textwrap.dedent("""
        name: sys
        type: system
        groups:
          - name: g
            tasks:
              - name: t
                driver: process
                config: {command: sleep, args: ["3600"]}
                resources: {cpu: 10, memory: 8}
        """)
    )
    cluster.cli("job", "run", str(spec), "--detach", check=True)

    def running_per_node() -> Counter[str]:
        allocs = cluster.job("sys")["allocations"]
        return _per_node(
            [a for a in allocs if a["client_status"] == "running" and a["desired_status"] == "run"]
        )

    wait_until(
        lambda: running_per_node() == {"node-1": 1, "node-2": 1, "node-3": 1},
        timeout=20,
        what="one copy per node",
    )
    t0 = time.monotonic()
    cluster.add_agent(wait=False)
    wait_until(
        lambda: running_per_node() == {"node-1": 1, "node-2": 1, "node-3": 1, "node-4": 1},
        timeout=15,
        interval=0.05,
        what="a copy on the new node",
    )
    elapsed = time.monotonic() - t0
    assert elapsed < 5.0, f"the new node ran its copy {elapsed:.2f}s after its agent started"
    assert len(cluster.agents[3].task_processes()) == 1
    # A node that leaves takes its copy with it (and it is not placed twice elsewhere).
    cluster.agents[3].kill9()
    wait_until(
        lambda: running_per_node() == {"node-1": 1, "node-2": 1, "node-3": 1},
        timeout=10,
        what="the dead node's copy gone",
    )
    lost = [a for a in cluster.job("sys")["allocations"] if a["client_status"] == "lost"]
    assert [a["node_name"] for a in lost] == ["node-4"]


def test_partitioned_nodes_stop_copies_whose_group_says_so(
    cluster: MultiNodeCluster, tmp_path: Path
) -> None:
    """No server answers (the server is stopped): `stop_after_disconnect` copies stop on
    their nodes; the others keep running, and nothing is declared down on its return."""
    _run_web(cluster, tmp_path, count=3, extra="disconnect: {stop_after_disconnect: 1s}")
    spec = tmp_path / "sleepers.yaml"
    spec.write_text(
        textwrap.dedent("""
        name: sleepers
        groups:
          - name: g
            count: 3
            tasks:
              - name: t
                driver: process
                config: {command: sleep, args: ["3600"]}
                resources: {cpu: 10, memory: 8}
        """)
    )
    cluster.cli("job", "run", str(spec), check=True)
    sleepers = {a["id"]: a["pids"]["t"] for a in cluster.job("sleepers")["allocations"]}

    def web_pids() -> set[int]:
        return {
            p.pid
            for a in cluster.agents
            for p in a.task_processes()
            if p.pid not in sleepers.values()
        }

    old_web = web_pids()
    assert len(old_web) == 3
    assert cluster.server_proc is not None
    seq = max((e["seq"] for e in cluster.api("GET", "/v1/events", params={"limit": 1})), default=0)
    os.kill(cluster.server_proc.pid, signal.SIGSTOP)
    paused = time.monotonic()
    try:
        wait_until(lambda: not web_pids(), timeout=10, interval=0.05, what="web copies stopped")
        stopped_after = time.monotonic() - paused
        # 1 s after the agent last heard a server (up to one heartbeat interval, TTL/3,
        # before the pause), then SIGTERM: python's http.server dies at once.
        low, high = 1.0 - TTL / 3 - 0.1, 1.0 + 2.0
        assert low < stopped_after < high, f"stopped after {stopped_after:.2f}s"
        alive = {p.pid for a in cluster.agents for p in a.task_processes()}
        assert set(sleepers.values()) <= alive, "copies without the policy keep running"
        time.sleep(max(0.0, 3 * TTL - (time.monotonic() - paused)))  # well past the TTL
    finally:
        os.kill(cluster.server_proc.pid, signal.SIGCONT)
    # Back in touch: the stopped copies are replaced, the others adopted untouched.
    wait_until(
        lambda: len(healthy_running(cluster.job("web"))) == 3, timeout=15, what="web replaced"
    )
    assert not (web_pids() & old_web)
    allocs = cluster.job("sleepers")["allocations"]
    assert {a["id"]: a["pids"]["t"] for a in allocs} == sleepers
    events = cluster.api("GET", "/v1/events", params={"index": seq, "limit": 0})
    assert [e for e in events if e["type"] == "node.down"] == []


def _cli_ok(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout
