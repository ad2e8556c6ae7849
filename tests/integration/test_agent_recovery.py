"""Agent crashes: `kill -9` of `podium dev` and a restart must leave every task running.

Ground truth comes from the OS (processes found by their alloc env, containers by their
node label), not only from what the agent reports: the same pids and container ids
before and after, one copy of each task, 0 restarts.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from integration.cluster import DevCluster, agent_syncs, wait_until
from integration.docker_image import IMAGE, engine_problem, remove_containers
from integration.docker_image import docker_ok as containers_ok
from integration.os_tasks import os_tasks as tasks_on_os

pytestmark = pytest.mark.integration

KILLS = 10


def docker_ok() -> bool:
    """Containers join the recovery tests where an engine answers (it must in CI)."""
    return containers_ok("recovery tests")


def node_id(c: DevCluster) -> str:
    return (c.data_dir / "agent" / "node-id").read_text().strip()


def state_file(c: DevCluster) -> Path:
    return c.data_dir / "agent" / "agent-state.json"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[DevCluster]:
    c = DevCluster(tmp_path / "dev").start()
    try:
        yield c
    finally:
        c.stop()
        c.kill_leftovers()
        with contextlib.suppress(OSError):
            if engine_problem() is None:
                remove_containers(f"podium.node_id={node_id(c)}")


def job_spec(tmp: Path, name: str, *, count: int, processes: int, containers: int) -> str:
    tasks = []
    for i in range(processes):
        tasks.append(
            f"""
      - name: p{i}
        kill_timeout: 1s
        config: {{command: sleep, args: ["1000"]}}
        resources: {{cpu: 10, memory: 16}}"""
        )
    for i in range(containers):
        tasks.append(
            f"""
      - name: c{i}
        driver: docker
        kill_timeout: 1s
        config: {{image: "{IMAGE}", command: sleep, args: ["1000"]}}
        resources: {{cpu: 10, memory: 16}}"""
        )
    path = tmp / f"{name}.yaml"
    path.write_text(
        textwrap.dedent(f"""
        name: {name}
        groups:
          - name: g
            count: {count}
            restart: {{attempts: 5, interval: 1m, delay: 0.2s, mode: delay}}
            tasks:""")
        + "".join(tasks)
        + "\n"
    )
    return str(path)


def os_tasks(c: DevCluster) -> dict[tuple[str, str], list[str]]:
    """(alloc id, task) -> the pids / container ids the OS holds for it right now."""
    return tasks_on_os(c.task_processes(), node_id(c))


def tasks_if(c: DevCluster, n: int) -> dict[tuple[str, str], list[str]] | None:
    """The OS's tasks once there are `n` of them (for wait_until)."""
    found = os_tasks(c)
    return found if len(found) == n else None


def server_tasks(c: DevCluster, job: str) -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for row in c.api("GET", "/v1/allocations", params={"job": job}):
        if row["desired_status"] != "run":
            continue
        a = c.api("GET", f"/v1/allocation/{row['id']}")
        for task, st in a["task_states"].items():
            out[(a["id"], task)] = st
    return out


def agent_runners(c: DevCluster) -> int:
    node = c.api("GET", "/v1/nodes")[0]
    r = c.agent_get(node, "/v1/agent/health", timeout=2)
    return int(r.json()["allocs"]) if node["status"] == "ready" else -1


def synced_twice(c: DevCluster) -> bool:
    """The restarted agent has matched its runners to the server's allocs twice: the
    first sync adopts (or wrongly starts) tasks, the second follows the reports that made;
    a wrong agent's second copies exist by then."""
    node = c.api("GET", "/v1/nodes")[0]
    return node["status"] == "ready" and agent_syncs(c, node) >= 2


def restart(c: DevCluster) -> None:
    c.kill9()
    c.start()


def test_kill9_agent_ten_times_keeps_every_task(cluster: DevCluster, tmp_path: Path) -> None:
    c = cluster
    containers = 1 if docker_ok() else 0
    # 10 allocs x (2 processes + 1 container): 20 processes and 10 containers.
    spec = job_spec(tmp_path, "mixed", count=10, processes=2, containers=containers)
    res = c.cli("job", "run", spec, timeout=90)
    assert res.returncode == 0, res.stdout + res.stderr
    expected = 10 * (2 + containers)
    before = wait_until(
        lambda: tasks_if(c, expected),
        timeout=20,
        what=f"{expected} tasks running",
    )
    assert all(len(v) == 1 for v in before.values()), before
    for i in range(KILLS):
        restart(c)
        wait_until(lambda: agent_runners(c) == 10, timeout=20, what="the agent to take its allocs")
        # Once a wrong agent would have started second copies, compare with the OS.
        wait_until(lambda: synced_twice(c), timeout=20, what="the agent's second sync")
        now = wait_until(
            lambda: tasks_if(c, expected),
            timeout=10,
            what=f"{expected} tasks after restart {i + 1}",
        )
        assert now == before, f"restart {i + 1}: tasks changed or were duplicated"
    states = wait_until(
        lambda: (
            s
            if len(s := server_tasks(c, "mixed")) == expected
            and all(t["state"] == "running" for t in s.values())
            else None
        ),
        timeout=10,
        what="every task reported running",
    )
    assert {k: t["restarts"] for k, t in states.items()} == dict.fromkeys(states, 0)
    pids = {k: str(t["pid"]) for k, t in states.items() if k[1].startswith("p")}
    assert pids == {k: v[0] for k, v in before.items() if k[1].startswith("p")}


def test_tasks_that_exit_while_the_agent_is_down_are_restarted_once(
    cluster: DevCluster, tmp_path: Path
) -> None:
    c = cluster
    containers = 1 if docker_ok() else 0
    spec = job_spec(tmp_path, "exits", count=2, processes=1, containers=containers)
    c.cli("job", "run", spec, check=True, timeout=60)
    expected = 2 * (1 + containers)
    before = wait_until(lambda: tasks_if(c, expected), timeout=20, what="tasks")
    keys = sorted(before)
    victims = [k for k in keys if k[0] == keys[0][0]]  # every task of the first alloc
    c.kill9()
    for key in victims:
        (ident,) = before[key]
        if key[1].startswith("p"):
            os.kill(int(ident), signal.SIGKILL)
        else:
            subprocess.run(["docker", "kill", ident], check=True, capture_output=True, timeout=30)
    c.start()

    def settled() -> dict[tuple[str, str], dict[str, Any]] | None:
        s = server_tasks(c, "exits")
        ok = len(s) == expected and all(t["state"] == "running" for t in s.values())
        return s if ok and all(s[k]["restarts"] == 1 for k in victims) else None

    # "Once": each restarted task runs again with one restart counted, reported after it
    # started; another restart would need the new process to exit (the OS check below).
    wait_until(settled, timeout=20, what="the exited tasks to be restarted")
    states = server_tasks(c, "exits")
    now = os_tasks(c)
    for key in keys:
        assert len(now[key]) == 1, now
        if key in victims:
            assert states[key]["restarts"] == 1, states[key]
            assert now[key] != before[key]
        else:
            assert states[key]["restarts"] == 0, states[key]
            assert now[key] == before[key]


def test_lost_state_finds_containers_by_label_and_stops_orphans(
    cluster: DevCluster, tmp_path: Path
) -> None:
    c = cluster
    have_docker = docker_ok()
    if have_docker:
        spec = job_spec(tmp_path, "boxes", count=3, processes=0, containers=1)
        c.cli("job", "run", spec, check=True, timeout=60)
    before = wait_until(
        lambda: tasks_if(c, (3 if have_docker else 0)),
        timeout=20,
        what="the containers",
    )
    c.kill9()
    # An orphan process recorded in the state file, under an alloc the server never knew.
    orphan_alloc = str(uuid.uuid4())
    orphan = subprocess.Popen(
        ["sleep", "1000"],
        start_new_session=True,
        env={**os.environ, "PODIUM_ALLOC_DIR": str(c.data_dir / "orphan"), "PODIUM_TASK": "o"},
    )
    try:
        handle = {
            "driver": "process",
            "alloc_id": orphan_alloc,
            "task": "o",
            "state": {
                "pid": orphan.pid,
                "pgid": orphan.pid,
                "create_time": psutil.Process(orphan.pid).create_time(),
                "cwd": "",
                "cgroup_version": "none",
                "cgroups": {},
                "oom_base": 0,
            },
            "started_at": time.time(),
        }
        # The state file is lost: only the orphan's entry is left in it.
        state_file(c).write_text(json.dumps({"allocs": {orphan_alloc: {"o": handle}}}))
        stray = ""
        if have_docker:
            stray = subprocess.run(
                [
                    "docker",
                    "run",
                    "-d",
                    "--label",
                    f"podium.node_id={node_id(c)}",
                    "--label",
                    f"podium.alloc_id={uuid.uuid4()}",
                    "--label",
                    "podium.task=stray",
                    IMAGE,
                    "sleep",
                    "1000",
                ],
                capture_output=True,
                text=True,
                check=True,
                timeout=30,
            ).stdout.strip()
        c.start()
        wait_until(lambda: orphan.poll() is not None, timeout=15, what="the orphan process to stop")
        if have_docker:
            wait_until(
                lambda: not any(stray in v for v in os_tasks(c).values()),
                timeout=15,
                what="the stray container to stop",
            )
            wait_until(lambda: agent_runners(c) == 3, timeout=20, what="the agent's allocs")
            wait_until(lambda: synced_twice(c), timeout=20, what="the agent's second sync")
            assert os_tasks(c) == before, "containers were adopted by label, never duplicated"
            states = server_tasks(c, "boxes")
            assert [t["restarts"] for t in states.values()] == [0, 0, 0], states
    finally:
        if orphan.poll() is None:
            orphan.kill()
        orphan.wait(5)


@pytest.mark.parametrize(
    ("code", "restart", "outcome"),
    [(0, "{}", "complete"), (3, "{attempts: 0, mode: fail}", "failed")],
)
def test_a_batch_task_that_ends_while_the_agent_is_down_is_judged_by_its_exit(
    cluster: DevCluster, tmp_path: Path, code: int, restart: str, outcome: str
) -> None:
    """A cron child that finished while `podium dev` was down ran again when it came back:
    its exit status was lost with its parent. It is kept, and judged as if seen (a failed
    exit goes through the restart policy like any other: here it allows no restart)."""
    c = cluster
    runs, go = tmp_path / "runs", tmp_path / "go"
    spec = tmp_path / "once.yaml"
    spec.write_text(
        textwrap.dedent(
            f"""\
            name: once
            type: batch
            groups:
              - name: g
                restart: {restart}
                reschedule: {{attempts: 0}}
                tasks:
                  - name: t
                    config:
                      command: sh
                      args: ["-c", "echo run >>{runs}; until [ -e {go} ]; do sleep 0.05; done; exit {code}"]
                    resources: {{cpu: 10, memory: 16}}
            """
        )
    )
    c.cli("job", "run", "--detach", str(spec), check=True, timeout=30)
    wait_until(lambda: runs.exists(), timeout=20, what="the task to start")
    c.kill9()
    go.touch()
    wait_until(lambda: not c.task_processes(), timeout=10, what="the task to end")
    c.start()

    def finished() -> dict[str, Any] | None:
        (row,) = c.api("GET", "/v1/allocations", params={"job": "once"})
        return row if row["client_status"] in ("complete", "failed") else None

    row = wait_until(finished, timeout=20, what="the alloc to finish")
    state = c.api("GET", f"/v1/allocation/{row['id']}")["task_states"]["t"]
    assert (row["client_status"], state["exit_code"]) == (outcome, code), state
    assert runs.read_text() == "run\n", "the task ran again"
    assert state["restarts"] == 0, state
    assert 0 < state["started_at"] <= state["finished_at"], state  # kept over the restart
