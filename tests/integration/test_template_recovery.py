"""Templates across an agent restart: a config that changed while the agent was away is acted
on once it re-adopts its tasks, and the secrets of a copy stopped meanwhile are removed."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import yaml

from integration.cluster import unmount_under, wait_until
from integration.multinode import AgentProc, MultiNodeCluster

JOB = {
    "name": "rec",
    "type": "batch",  # restart by default: the config changes in place
    "groups": [
        {
            "name": "g",
            "tasks": [
                {
                    "name": "t",
                    "config": {"command": "sleep", "args": ["600"]},
                    "templates": [
                        {"destination": "app.conf", "data": '{{ config("r/s")["v"] }}', "splay": 0},
                        {"destination": "secrets/pw", "data": '{{ secret("r/pw")["value"] }}'},
                    ],
                }
            ],
        }
    ],
}


def _away(agent: AgentProc) -> None:
    """The agent process dies alone; its tasks keep running."""
    assert agent.proc is not None
    os.kill(agent.proc.pid, signal.SIGKILL)
    agent.proc.wait(10)


def test_an_agent_restart_keeps_templates_true(tmp_path: Path) -> None:
    # A long heartbeat TTL: the node stays up while its agent restarts (its copy is not
    # marked lost and replaced meanwhile).
    c = MultiNodeCluster(tmp_path, heartbeat_ttl=60.0).start(1)
    agent = c.agents[0]
    try:
        c.cli("config", "put", "r/s", "v=one", check=True)
        c.cli("secret", "put", "r/pw", "-", input="pw\n", check=True)
        spec = tmp_path / "rec.yaml"
        spec.write_text(yaml.safe_dump(JOB))
        c.cli("job", "run", str(spec), "--detach", check=True)
        alloc = c.wait_alloc("rec", "running", timeout=30)
        task_dir = agent.data_dir / "allocs" / alloc / "t"
        pid = c.api("GET", f"/v1/allocation/{alloc}")["task_states"]["t"]["pid"]

        # Away: the config changes (in place: a new job version the agent has not seen).
        _away(agent)
        c.cli("config", "put", "r/s", "v=two", "--detach", check=True)
        agent.start()
        wait_until(
            lambda: (task_dir / "app.conf").read_text() == "two",
            timeout=30,
            what="the file rendered again",
        )
        wait_until(
            lambda: (
                c.api("GET", f"/v1/allocation/{alloc}")["task_states"]["t"]["pid"] not in (0, pid)
            ),
            timeout=30,
            what="the task restarted for it",
        )

        # Away again: the copy is stopped; back, its secrets go with it.
        assert (task_dir / "secrets").is_mount() or os.geteuid() != 0
        _away(agent)
        c.cli("job", "stop", "rec", "--detach", check=True)
        agent.start()
        wait_until(lambda: not (task_dir / "secrets").exists(), timeout=30, what="secrets removed")
    finally:
        c.stop()
        unmount_under(tmp_path)
