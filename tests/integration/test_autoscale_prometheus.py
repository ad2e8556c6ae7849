"""A `prometheus:` scaling policy asks a real Prometheus (Debian's package): the query's
number sets the count (ceil(value / target)), the event carries it, and a query that
fails changes nothing and says why in `job scaling status`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from integration.cluster import free_port, wait_until
from integration.test_autoscale import events, scaled_job, status
from integration.test_metrics_prometheus import Prometheus
from integration.test_service_discovery import ServiceCluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Prometheus]:
    # No scrape targets: the queries below are answered from PromQL alone.
    (tmp_path / "prom").mkdir()
    prom = Prometheus(tmp_path / "prom", "global: {evaluation_interval: 1s}\n")
    try:

        def ready() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{prom.port}/-/ready", timeout=2).is_success
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=30, what="prometheus to be ready")
        yield prom
    finally:
        prom.stop()


def test_a_prometheus_query_sets_the_count(tmp_path: Path, prometheus: Prometheus) -> None:
    c = ServiceCluster(tmp_path / "dev")
    c.extra = ("--prometheus-url", f"http://127.0.0.1:{prometheus.port}")
    c.start()
    try:
        c.run_job(scaled_job("queue", {
            "min": 1, "max": 4, "interval": "1s",
            "policies": [{"prometheus": "vector(25)", "target": 10}],
        }, cpu=50))  # fmt: skip
        wait_until(lambda: status(c, "queue")["count"] == 3, timeout=30, interval=0.5,
                   what="the count the query asks for")  # fmt: skip
        (up,) = [e for e in events(c, "queue") if e["type"] == "scaling.up"]
        print(f"\n{up['message']}")
        assert up["message"] == (
            "group web: 1 → 3: prometheus 25.0 vs target 10 per copy over 1 copy → 3"
        )
        # A query Prometheus refuses: no figure, no change, and the reason is shown.
        c.run_job(scaled_job("broken", {
            "min": 1, "max": 4, "interval": "1s",
            "policies": [{"prometheus": "sum(rate(", "target": 10}],
        }, cpu=50))  # fmt: skip
        figure = wait_until(lambda: status(c, "broken")["figures"], timeout=30, interval=0.5,
                            what="a look at the broken group")[0]  # fmt: skip
        print(figure["text"])
        assert figure["count"] is None
        assert re.fullmatch(r"prometheus: no figure \(the query failed: .+\)", figure["text"])
        assert status(c, "broken")["count"] == 1
        out = c.cli("job", "scaling", "status", "queue", check=True).stdout
        assert "prometheus 25.0 vs target 10 per copy over 3 copies → 3" in out, out
    finally:
        c.stop()
        c.kill_leftovers()


def test_without_a_prometheus_the_policy_says_so(tmp_path: Path) -> None:
    c = ServiceCluster(tmp_path / "dev")
    c.extra = ("--prometheus-url", f"http://127.0.0.1:{free_port()}")  # nothing listens
    c.start()
    try:
        c.run_job(scaled_job("queue", {
            "min": 1, "max": 4, "interval": "1s",
            "policies": [{"prometheus": "vector(25)", "target": 10}],
        }, cpu=50))  # fmt: skip
        figure = wait_until(lambda: status(c, "queue")["figures"], timeout=30, interval=0.5,
                            what="a look at the group")[0]  # fmt: skip
        assert figure["count"] is None and "did not answer" in figure["text"], figure
        assert status(c, "queue")["count"] == 1
    finally:
        c.stop()
        c.kill_leftovers()
