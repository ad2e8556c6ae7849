"""Cron runs across a server kill (SQLite) and a leader kill (etcd): every due time is
launched once, none is lost, and each run's task runs once.

The server is killed alone (agents keep running and report when it is back), and the
schedule is of the acceptance's shape (`* * * * *`, a restart in between) on seconds so
the suite stays short. The literal form, every minute for PODIUM_CRON_MINUTES minutes
with the server killed across a minute boundary, runs on demand:

    PODIUM_CRON_MINUTES=3 .venv/bin/pytest -s tests/integration/test_cron_failover.py -k literal
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration.cluster import ApiAndCli, wait_until
from integration.control_plane import ControlPlane
from integration.multinode import MultiNodeCluster
from integration.test_workloads import script_job

pytestmark = pytest.mark.integration


def cron_job(name: str, schedule: str, out: Path) -> dict[str, Any]:
    """Each run appends its own name to `out`."""
    job = script_job(name, f'echo "$PODIUM_JOB" >> {out}', type="cron")
    job["periodic"] = {"schedule": schedule, "successful_history": 1000}
    return job


def launched(c: ApiAndCli, name: str) -> list[int]:
    kids: list[dict[str, Any]] = c.api("GET", f"/v1/job/{name}")["children"]
    return sorted(int(k["name"].rpartition("-")[2]) for k in kids)


def suspend(c: ApiAndCli, job: dict[str, Any]) -> None:
    """No more runs; those launched go on to the end (a stop would stop them too)."""
    job["periodic"]["suspend"] = True
    c.api("POST", "/v1/jobs", json={"job": job})


def check_every_run_once(c: ApiAndCli, name: str, step: int, out: Path) -> list[int]:
    """No gap and no repeat in the runs launched, and each run's task ran once."""
    wait_until(
        lambda: all(k["status"] == "complete" for k in c.api("GET", f"/v1/job/{name}")["children"]),
        timeout=30,
        what="every run to complete",
    )
    times = launched(c, name)
    assert times == list(range(times[0], times[-1] + 1, step)), f"gaps or repeats: {times}"
    ran = out.read_text().split()
    assert sorted(ran) == sorted(f"{name}/periodic-{t}" for t in times), "a task ran twice or not"
    return times


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[MultiNodeCluster]:
    c = MultiNodeCluster(tmp_path / "cluster").start(1)
    try:
        yield c
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop()


def test_a_server_kill_loses_no_run_and_starts_none_twice(
    cluster: MultiNodeCluster, tmp_path: Path
) -> None:
    out = tmp_path / "ran"
    job = cron_job("tick", "*/2 * * * * *", out)
    cluster.api("POST", "/v1/jobs", json={"job": job})
    wait_until(lambda: len(launched(cluster, "tick")) >= 3, timeout=20, what="3 runs")
    cluster.stop_server(kill=True)
    down_at = time.time()
    time.sleep(2.5)  # a run falls due while no server runs
    cluster.start_server()
    missed = [t for t in range(int(down_at) + 1, int(time.time())) if t % 2 == 0]
    wait_until(lambda: len(launched(cluster, "tick")) >= 8, timeout=30, what="8 runs")
    suspend(cluster, job)
    times = check_every_run_once(cluster, "tick", 2, out)
    assert missed and set(missed) <= set(times), f"due while down: {missed}; launched: {times}"


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    c = ControlPlane(Path(tmp_path_factory.mktemp("cron-cp")), leader_ttl=2.0)
    try:
        c.start(etcd_members=3, servers=3, agents=1)
        yield c
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop()


def test_a_leader_kill_loses_no_run_and_starts_none_twice(cp: ControlPlane, tmp_path: Path) -> None:
    out = tmp_path / "ran"
    job = cron_job("tick", "*/2 * * * * *", out)
    cp.api("POST", "/v1/jobs", json={"job": job})
    wait_until(lambda: len(launched(cp, "tick")) >= 3, timeout=30, what="3 runs")
    old = cp.leader()
    assert old is not None
    old.kill9()
    killed_at = time.time()
    new, took = cp.wait_new_leader(old, timeout=15)
    print(f"new leader {new.addr} after {took:.2f}s")
    wait_until(lambda: launched(cp, "tick")[-1] > killed_at + 4, timeout=30, what="runs after")
    old.start()  # back as a follower: it must not launch anything again
    wait_until(lambda: old.status() is not None, timeout=20, what="the old leader back")
    settled = len(launched(cp, "tick"))
    wait_until(lambda: len(launched(cp, "tick")) >= settled + 2, timeout=30, what="2 more")
    suspend(cp, job)
    times = check_every_run_once(cp, "tick", 2, out)
    assert times[0] < killed_at < times[-1], "runs on both sides of the kill"


@pytest.mark.skipif(
    not os.environ.get("PODIUM_CRON_MINUTES"), reason="the literal minutes-long run: on demand"
)
def test_literal_every_minute_with_a_server_kill(cluster: MultiNodeCluster, tmp_path: Path) -> None:
    """`* * * * *` for PODIUM_CRON_MINUTES minutes; the server is killed 3 s before a
    minute and started 8 s after it, so that minute's run falls due while none runs."""
    minutes = int(os.environ["PODIUM_CRON_MINUTES"])
    out = tmp_path / "ran"
    job = cron_job("minutely", "* * * * *", out)
    cluster.api("POST", "/v1/jobs", json={"job": job})
    started = time.time()
    wait_until(lambda: launched(cluster, "minutely"), timeout=70, what="the first run")
    time.sleep((57 - time.time() % 60) % 60)
    cluster.stop_server(kill=True)
    missed = int(time.time() // 60 * 60 + 60)  # the minute due while it is down
    time.sleep(11)
    cluster.start_server()
    time.sleep(max(0.0, started + minutes * 60 + 5 - time.time()))
    suspend(cluster, job)
    times = check_every_run_once(cluster, "minutely", 60, out)
    print(f"runs launched at {[time.strftime('%H:%M:%S', time.gmtime(t)) for t in times]}")
    assert missed in times, f"the run due at {missed} while the server was down is lost"
    assert len(times) >= minutes
