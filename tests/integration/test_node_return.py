"""A node that comes back keeps its healthy work (issue 19, item 10).

One server, one agent (separate processes). The agent alone is killed with SIGKILL (its
tasks live on, as they would through an agent crash) and started again 1-4 s later, ten
times. Whenever the gap plus the agent's start outlasts the 3 s heartbeat TTL the server
marks the node down and its allocs lost; with nowhere else to place them, their
replacements wait. When the node returns, the server keeps the originals (the group's
`disconnect.reconcile: keep_original`, the default) and the agent re-adopts them: no
task is killed by podium, the same pids and container ids run at the end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration.cluster import wait_until
from integration.docker_image import IMAGE, docker_ok, engine_problem, remove_containers
from integration.multinode import AgentProc, MultiNodeCluster
from integration.os_tasks import os_tasks

pytestmark = pytest.mark.integration

GAPS = (1.0, 3.5, 2.0, 4.0, 1.5, 3.0, 2.5, 4.0, 1.2, 3.8)  # seconds the agent stays dead
ALLOCS = 10
PROCESSES = 4  # per alloc, and one container: 50 tasks


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[MultiNodeCluster]:
    c = MultiNodeCluster(tmp_path, heartbeat_ttl=3.0)
    try:
        c.start(1)
        yield c
    finally:
        node = _node_id(c.agents[0]) if c.agents else ""
        c.stop()
        if node and engine_problem() is None:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                remove_containers(f"podium.node_id={node}")


def _node_id(agent: AgentProc) -> str:
    path = agent.data_dir / "node-id"
    return path.read_text().strip() if path.exists() else ""


def _spec(tmp: Path, containers: bool) -> str:
    tasks = "".join(
        f"""
      - name: p{i}
        kill_timeout: 1s
        config: {{command: sleep, args: ["3600"]}}
        resources: {{cpu: 10, memory: 8}}"""
        for i in range(PROCESSES)
    )
    if containers:
        tasks += f"""
      - name: c0
        driver: docker
        kill_timeout: 1s
        config: {{image: "{IMAGE}", command: sleep, args: ["3600"]}}
        resources: {{cpu: 10, memory: 8}}"""
    path = tmp / "keep.yaml"
    path.write_text(
        textwrap.dedent(f"""
        name: keep
        groups:
          - name: g
            count: {ALLOCS}
            tasks:""")
        + tasks
        + "\n"
    )
    return str(path)


def _os_tasks(agent: AgentProc) -> dict[tuple[str, str], list[str]]:
    return os_tasks(agent.task_processes(), _node_id(agent))


def _kill_agent_only(agent: AgentProc) -> None:
    assert agent.proc is not None
    with contextlib.suppress(ProcessLookupError):
        os.kill(agent.proc.pid, signal.SIGKILL)  # the agent, not its tasks (own sessions)
    agent.proc.wait(10)


def _settled(c: MultiNodeCluster, ids: set[str]) -> list[dict[str, Any]] | None:
    """The job's allocs once exactly the original ones run, each reported running."""
    allocs = c.api("GET", "/v1/allocations", params={"job": "keep"})
    live = [a for a in allocs if a["desired_status"] == "run"]
    if {a["id"] for a in live} == ids and all(a["client_status"] == "running" for a in live):
        return live
    return None


def test_agent_kill9_ten_times_keeps_every_task(cluster: MultiNodeCluster, tmp_path: Path) -> None:
    c = cluster
    agent = c.agents[0]
    containers = docker_ok("the node return test")
    expected = ALLOCS * (PROCESSES + (1 if containers else 0))
    res = c.cli("job", "run", _spec(tmp_path, containers), timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    before = wait_until(
        lambda: t if len(t := _os_tasks(agent)) == expected else None,
        timeout=60,
        what=f"{expected} tasks running",
    )
    assert all(len(v) == 1 for v in before.values()), before
    ids = {a for a, _ in before}
    went_down = 0
    for i, gap in enumerate(GAPS):
        _kill_agent_only(agent)
        time.sleep(gap)  # the agent stays dead this long: the scenario itself, not a wait
        node = c.api("GET", "/v1/nodes")[0]
        went_down += node["status"] == "down"
        agent.start()
        wait_until(
            lambda: _settled(c, ids), timeout=40, what=f"the originals back, restart {i + 1}"
        )
        now = wait_until(
            lambda: t if len(t := _os_tasks(agent)) == expected else None,
            timeout=20,
            what=f"{expected} tasks after restart {i + 1}",
        )
        assert now == before, f"restart {i + 1} (gap {gap}s): tasks were replaced or duplicated"
    print(f"the node was marked down in {went_down} of {len(GAPS)} restarts")
    assert went_down >= 2, "no gap outlasted the heartbeat TTL: the case was not exercised"
    killed = [line for line in agent.logs().splitlines() if "stopping orphaned task" in line]
    assert not killed, killed[:5]
