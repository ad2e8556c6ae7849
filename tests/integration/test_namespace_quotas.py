"""Namespace quotas on a real `podium dev`: with a quota of 3 allocs in namespace a, a job
of count 5 is refused naming the quota, a job of count 3 runs, `job scale` to 4 is
refused, namespace b is unaffected; cpu and job counts are held too; status shows use."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration.cluster import DevCluster, wait_until

pytestmark = pytest.mark.integration

JOB = """\
name: {name}
namespace: {ns}
groups:
  - name: g
    count: {count}
    update: {{min_healthy_time: 0s}}
    tasks:
      - name: t
        config: {{command: sleep, args: ["600"]}}
        resources: {{cpu: {cpu}, memory: 16}}
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    c = DevCluster(tmp_path_factory.mktemp("quota") / "dev").start()
    try:
        for ns in ("a", "b"):
            c.cli("namespace", "create", ns, check=True)
        yield c
    finally:
        c.stop()
        c.kill_leftovers()


def write(tmp: Path, name: str, ns: str, count: int, cpu: int = 10) -> str:
    path = tmp / f"{name}-{ns}-{count}.yaml"
    path.write_text(JOB.format(name=name, ns=ns, count=count, cpu=cpu))
    return str(path)


def running(c: DevCluster, job: str, ns: str) -> int:
    allocs = c.api("GET", f"/v1/job/{job}", params={"namespace": ns})["allocations"]
    return sum(1 for a in allocs if a["client_status"] == "running")


def test_quota_of_three_allocs(cluster: DevCluster, tmp_path: Path) -> None:
    c = cluster
    out = c.cli_json("namespace", "quota", "set", "a", "--allocs", "3")
    assert out["quota"]["allocs"] == 3 and out["used"]["allocs"] == 0
    res = c.cli("job", "run", write(tmp_path, "five", "a", 5), "--detach")
    assert res.returncode == 1, res.stdout
    err = res.stderr
    assert "quota of namespace 'a'" in err and "allocs: quota 3" in err and "asks 5" in err, err
    assert "Traceback" not in err
    c.cli("job", "run", write(tmp_path, "three", "a", 3), "--detach", check=True)
    wait_until(lambda: running(c, "three", "a") == 3, timeout=30, what="3 copies running")
    res = c.cli("job", "scale", "three", "g", "4", "-n", "a")
    assert res.returncode == 1 and "0 in use by other jobs" in res.stderr, res.stderr
    assert "allocs: quota 3" in res.stderr and "asks 4" in res.stderr, res.stderr
    # Scaling down passes; the refused versions were never written.
    versions = c.api("GET", "/v1/job/three/versions", params={"namespace": "a"})
    assert [v["version"] for v in versions] == [0]
    # b has no quota: five copies run there.
    c.cli("job", "run", write(tmp_path, "five", "b", 5), "--detach", check=True)
    wait_until(lambda: running(c, "five", "b") == 5, timeout=30, what="5 copies in b")
    status = c.cli_json("namespace", "status", "a")
    assert status["used"]["allocs"] == 3 and status["quota"]["allocs"] == 3, status
    text = c.cli("namespace", "status", "a", check=True).stdout
    assert "allocs (allocations)" in text and " 3 " in text, text
    c.cli("job", "scale", "three", "g", "2", "-n", "a", check=True)


def test_cpu_and_job_counts_and_lowered_quotas(cluster: DevCluster, tmp_path: Path) -> None:
    c = cluster
    c.cli("namespace", "create", "c", check=True)
    c.cli_json("namespace", "quota", "set", "c", "--cpu", "100", "--jobs", "1")
    res = c.cli("job", "run", write(tmp_path, "big", "c", 2, cpu=60), "--detach")
    assert res.returncode == 1 and "cpu: quota 100 MHz" in res.stderr and "asks 120" in res.stderr
    c.cli("job", "run", write(tmp_path, "small", "c", 1, cpu=60), "--detach", check=True)
    res = c.cli("job", "run", write(tmp_path, "other", "c", 1, cpu=10), "--detach")
    assert res.returncode == 1 and "jobs: quota 1 jobs, 1 in use by other jobs" in res.stderr, (
        res.stderr
    )
    # A quota lowered below what runs stops nothing, and the job may still shrink.
    c.cli_json("namespace", "quota", "set", "c", "--cpu", "10")
    wait_until(lambda: running(c, "small", "c") == 1, timeout=30, what="small running")
    res = c.cli("job", "scale", "small", "g", "0", "-n", "c")
    assert res.returncode == 0, res.stderr
    bad = c.request("PUT", "/v1/namespace/c/quota", json={"cpu": -1, "pods": 2})
    assert bad.status_code == 400, bad.text
    assert {p["path"] for p in bad.json()["problems"]} == {"cpu", "pods"}
    assert json.loads(c.cli("namespace", "status", "c", "--json", check=True).stdout)["quota"]


FAILING = """\
name: flaky
namespace: d
groups:
  - name: g
    count: 2
    restart: {attempts: 0, mode: fail}
    reschedule: {delay: 1s, unlimited: true}
    update: {min_healthy_time: 0s}
    tasks:
      - name: t
        config: {command: sleep, args: ["600"]}
        resources: {cpu: 10, memory: 16}
"""


def test_a_replacement_past_the_quota_stays_pending_with_the_reason(
    cluster: DevCluster, tmp_path: Path
) -> None:
    """A quota lowered under what runs stops nothing; a copy that fails is replaced only
    while the quota leaves room: here it stays pending, the reason in `job status` and in
    a job.quota_held event."""
    c = cluster
    c.cli("namespace", "create", "d", check=True)
    path = tmp_path / "flaky.yaml"
    path.write_text(FAILING)
    c.cli("job", "run", str(path), "--detach", check=True)
    wait_until(lambda: running(c, "flaky", "d") == 2, timeout=30, what="2 copies running")
    c.cli_json("namespace", "quota", "set", "d", "--allocs", "1")
    victim = c.api("GET", "/v1/job/flaky", params={"namespace": "d"})["allocations"][0]
    # The copy's task dies: restart attempts 0, so the alloc fails and is rescheduled.
    pid = c.api("GET", f"/v1/allocation/{victim['id']}")["task_states"]["t"]["pid"]
    os.kill(pid, signal.SIGKILL)

    def held() -> Any:
        s = c.cli_json("job", "status", "flaky", "-n", "d")
        fails = s["placement_failures"]
        return fails and "quota of namespace 'd'" in fails[0]["message"] and s

    status = wait_until(held, timeout=30, what="the replacement held by the quota")
    assert "allocs quota 1" in status["placement_failures"][0]["message"], status
    assert running(c, "flaky", "d") == 1
    events = c.cli_json("events", "--key", "flaky", "--limit", "0")
    assert any(e["type"] == "job.quota_held" for e in events), [e["type"] for e in events]
    # Room again: the held copy is placed (the controller looks again on its own).
    c.cli_json("namespace", "quota", "set", "d", "--allocs", "2")
    wait_until(lambda: running(c, "flaky", "d") == 2, timeout=30, what="placed once room is back")
