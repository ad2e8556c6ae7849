"""A rolling update of a 6-copy service under about 500 requests/s through the proxy.

Old copies leave the catalog when the deployment stops them and get their stop signal
`shutdown_delay` later, so the proxies have moved to the other copies by then.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from integration.cluster import free_port, wait_until
from integration.test_service_discovery import ServiceCluster, _load, client_job, service_job


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceCluster]:
    c = ServiceCluster(tmp_path_factory.mktemp("rollout") / "dev").start()
    try:
        yield c
    finally:
        c.stop()
        c.kill_leftovers()


def rolling_job(version: str) -> dict[str, Any]:
    job = service_job("roll", 6, shutdown_delay="1s")
    group = job["groups"][0]
    group["update"] = {"max_parallel": 2, "min_healthy_time": "1s", "healthy_deadline": "30s"}
    group["tasks"][0]["env"] = {"APP_VERSION": version}
    # About 80 requests/s per copy: with its CPU a hard quota (cpu 20 is 2% of a core), a new
    # copy could not start and answer its checks in time, and would rightly fail fast.
    group["tasks"][0]["resources"]["cpu"] = 100
    return job


def latest_deployment(c: ServiceCluster) -> dict[str, Any] | None:
    found = c.api("GET", "/v1/deployments", params={"job": "roll"})
    return max(found, key=lambda d: d["job_version"]) if found else None


@pytest.mark.slow
def test_rolling_update_under_load(cluster: ServiceCluster) -> None:
    cluster.run_job(rolling_job("v1"))
    wait_until(
        lambda: len(cluster.api("GET", "/v1/service/roll")["endpoints"]) == 6,
        timeout=30,
        what="6 healthy copies of v1",
    )
    local_port = free_port()
    cluster.run_job(
        client_job(
            "roll-holder",
            [{"service": "roll", "local_port": local_port, "mode": "http"}],
            [sys.executable, "-c", "import time; time.sleep(120)"],
        )
    )
    wait_until(
        lambda: httpx.get(f"http://127.0.0.1:{local_port}/", timeout=2).status_code == 200,
        timeout=20,
        what="the upstream listener to answer",
    )
    update = threading.Timer(2.0, lambda: cluster.run_job(rolling_job("v2")))
    update.start()
    sent, failures = asyncio.run(_load(local_port, rate=500, seconds=20, workers=25))
    update.join()
    print(f"sent {sent}, failed {len(failures)}: {failures[:5]}")
    d = latest_deployment(cluster)
    assert d is not None and d["job_version"] == 1
    assert d["status"] == "successful", d
    live = [
        a
        for a in cluster.api("GET", "/v1/job/roll")["allocations"]
        if a["desired_status"] == "run" and a["client_status"] == "running"
    ]
    assert len(live) == 6 and {a["job_version"] for a in live} == {1}
    assert sent > 500 * 20 * 0.8, f"the load generator fell behind: {sent} sent"
    assert len(failures) < sent * 0.001, failures[:10]
