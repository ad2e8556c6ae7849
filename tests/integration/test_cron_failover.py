"""Cron runs across a leader kill on etcd: every due time launched once, none lost.

A real control plane (3 etcd members, 3 servers with a 2 s leader lease, 1 agent). A
seconds schedule of the acceptance's shape (`* * * * *`, restart in between) keeps the
test short; the minutes-long form is test_workloads.py's `literal` test, on demand.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration.cluster import wait_until
from integration.control_plane import ControlPlane
from integration.test_workloads import check_every_run_once, cron_job

pytestmark = pytest.mark.integration


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


def launched(cp: ControlPlane, name: str) -> list[int]:
    kids: list[dict[str, Any]] = cp.api("GET", f"/v1/job/{name}")["children"]
    return sorted(int(k["name"].rpartition("-")[2]) for k in kids)


def test_a_leader_kill_loses_no_run_and_starts_none_twice(cp: ControlPlane, tmp_path: Path) -> None:
    out = tmp_path / "ran"
    job = cron_job("tick", "*/2 * * * * *", out, successful_history=100)
    cp.api("POST", "/v1/jobs", json={"job": job})
    wait_until(lambda: len(launched(cp, "tick")) >= 3, timeout=30, what="3 runs")
    old = cp.leader()
    assert old is not None
    old.kill9()
    new, took = cp.wait_new_leader(old, timeout=15)
    print(f"new leader {new.addr} after {took:.2f}s")
    before = launched(cp, "tick")
    wait_until(lambda: len(launched(cp, "tick")) >= len(before) + 3, timeout=30, what="3 more")
    old.start()  # back as a follower: it must not launch anything again
    wait_until(lambda: old.status() is not None, timeout=20, what="the old leader back")
    settled = launched(cp, "tick")
    wait_until(lambda: len(launched(cp, "tick")) >= len(settled) + 2, timeout=30, what="2 more")
    cp.api("DELETE", "/v1/job/tick")
    times = launched(cp, "tick")
    assert times[0] < before[-1] - 2 and times[-1] > before[-1], "runs on both sides of the kill"
    check_every_run_once(times, 2, out, "tick")
