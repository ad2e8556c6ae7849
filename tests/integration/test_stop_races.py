"""A stop always finishes (issue 19, item 13): allocs created and stopped at once, before or
while the agent starts them, all end `complete`; none stays `desired=stop, pending`."""

from __future__ import annotations

import time
from collections import Counter

import httpx
import pytest

from integration.cluster import DevCluster, wait_until

pytestmark = pytest.mark.integration

RACES = 1000
PER_ROUND = 50


def _job(count: int) -> dict[str, object]:
    return {
        "name": "churn",
        "type": "service",
        "groups": [
            {
                "name": "g",
                "count": count,
                "update": {"max_parallel": 0},
                "tasks": [
                    {
                        "name": "t",
                        "driver": "process",
                        "config": {"command": "sleep", "args": ["3600"]},
                        "resources": {"cpu": 1, "memory": 1},
                        "kill_timeout": "1s",
                    }
                ],
            }
        ],
    }


def test_create_then_stop_races_leave_nothing_pending(dev_cluster: DevCluster) -> None:
    http = httpx.Client(base_url=dev_cluster.addr, verify=dev_cluster.ssl_context(), timeout=30)
    http.post("/v1/jobs", json={"job": _job(0)}).raise_for_status()
    created: set[str] = set()
    t0 = time.monotonic()
    while len(created) < RACES and time.monotonic() - t0 < 240:
        http.post("/v1/job/churn/scale", json={"group": "g", "count": PER_ROUND}).raise_for_status()
        # As soon as the copies exist, stop them: the agent sees each either about to run,
        # starting, or already stopped before it ever ran.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            allocs = http.get("/v1/allocations", params={"job": "churn"}).json()
            fresh = [a["id"] for a in allocs if a["desired_status"] == "run"]
            if len(fresh) >= PER_ROUND:
                break
            time.sleep(0.005)
        http.post("/v1/job/churn/scale", json={"group": "g", "count": 0}).raise_for_status()
        created.update(fresh)
    assert len(created) >= RACES, f"only {len(created)} allocs created in the time allowed"

    def settled() -> bool:
        allocs = http.get("/v1/allocations", params={"job": "churn"}).json()
        return not [a for a in allocs if a["client_status"] in ("pending", "running")]

    try:
        wait_until(settled, timeout=60, interval=0.2, what="every stopped alloc to finish")
    finally:
        allocs = http.get("/v1/allocations", params={"job": "churn"}).json()
        states = Counter((a["desired_status"], a["client_status"]) for a in allocs)
        print(f"{len(created)} created and stopped; end states: {dict(states)}")
    mine = [a for a in allocs if a["id"] in created]
    assert {a["client_status"] for a in mine} <= {"complete"}, Counter(
        a["client_status"] for a in mine
    )
    assert sum(1 for a in mine if a["client_status"] == "pending") == 0
    # And `job stop` finishes at once: nothing is left to wait for.
    res = dev_cluster.cli("job", "stop", "churn", timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    http.close()
