"""Commands that wait say what they wait for: `node drain` of the only node names what blocks
it; `deployment status --watch` started after a rollout ended waits for the next one."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from integration.cluster import PODIUM, ROOT, DevCluster, read_until
from support.cli import cli_at

pytestmark = pytest.mark.integration

JOB = """\
name: steady
groups:
  - name: g
    update: {{min_healthy_time: 0.5s, health_check: task_states}}
    tasks:
      - name: t
        config: {{command: sleep, args: ["{secs}"]}}
        resources: {{cpu: 10, memory: 16}}
"""


@pytest.fixture(scope="module")
def cluster(module_cluster: DevCluster) -> DevCluster:
    return module_cluster


def cli(c: DevCluster, *args: str) -> tuple[int, str, str]:
    result = cli_at(c.addr, *args, **c.tls_env())
    return result.exit_code, result.stdout, result.stderr


def run_version(c: DevCluster, tmp_path: Path, secs: int) -> None:
    path = tmp_path / f"steady-{secs}.yaml"
    path.write_text(JOB.format(secs=secs))
    code, out, err = cli(c, "job", "run", str(path), "--timeout", "60")
    assert code == 0, out + err


def test_watch_after_a_finished_rollout_waits_for_the_next(
    cluster: DevCluster, tmp_path: Path
) -> None:
    run_version(cluster, tmp_path, 600)
    run_version(cluster, tmp_path, 601)  # version 1: a deployment, which ends successful
    env = {**os.environ, "PODIUM_ADDR": cluster.addr, **cluster.tls_env()}
    watch = subprocess.Popen(
        [*PODIUM, "deployment", "status", "steady", "--watch", "--timeout", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=ROOT,
    )
    try:
        said = read_until(watch, "waiting for the next deployment", timeout=20)
        assert "is successful; waiting for the next deployment" in said, said
        assert watch.poll() is None, "the watch ended instead of waiting"
        run_version(cluster, tmp_path, 602)  # version 2 rolls out
        out = said + watch.communicate(timeout=60)[0].decode()
    finally:
        watch.kill()
        watch.wait()
    assert watch.returncode == 0, out
    assert " v2 successful" in out, out


def test_draining_the_only_node_says_what_blocks_it(cluster: DevCluster, tmp_path: Path) -> None:
    run_version(cluster, tmp_path, 603)
    drain = subprocess.Popen(
        [*PODIUM, "node", "drain", "dev", "--timeout", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PODIUM_ADDR": cluster.addr, **cluster.tls_env()},
        cwd=ROOT,
    )
    blocked = "waiting to move steady.g[0]: no other eligible node (1 node(s): dev draining)"
    # The scheduler's own account, as the job's placement failure has it.
    scheduler = "job 'steady' group 'g': 1 unplaced — 0/1 nodes fit: 1 filtered by node-status"
    try:
        said = read_until(drain, scheduler, timeout=30)
        assert drain.poll() is None, said  # still waiting, and saying why
    finally:
        drain.kill()
        drain.wait()
        cli(cluster, "node", "drain", "dev", "--disable")
        cli(cluster, "node", "eligibility", "dev", "--enable")
    assert blocked in said, said
    assert scheduler in said, said
