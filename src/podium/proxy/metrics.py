"""Per-service counters and a latency histogram, exposed through prometheus-client.

Counting is a few integer additions per request (ServiceMetrics); ProxyCollector turns
them into metric families only when scraped. NoServiceMetrics counts nothing (the
metrics-off build the overhead benchmark compares against).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

# seconds; upper bounds of the latency buckets (le=...)
BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class ServiceMetrics:
    __slots__ = (
        "active",
        "breaker_opens",
        "buckets",
        "connections",
        "ejections",
        "errors",
        "held",
        "hold_expired",
        "hold_refused",
        "latency_sum",
        "name",
        "requests",
        "retries",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.requests = 0  # http: responses sent; tcp: connections relayed
        self.errors = 0  # http: 5xx sent (the proxy's own or the upstream's); tcp: failed connects
        self.retries = 0
        self.ejections = 0
        self.breaker_opens = 0
        self.connections = 0  # downstream connections accepted
        self.active = 0  # downstream connections open now
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.latency_sum = 0.0
        self.held = 0  # requests that waited for a sleeping service's first copy
        self.hold_expired = 0  # ... and were answered 503 when none came in time
        self.hold_refused = 0  # answered 503 at once: the wait queue was full

    def observe(self, seconds: float, error: bool) -> None:
        self.requests += 1
        if error:
            self.errors += 1
        self.buckets[bisect_left(BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "retries": self.retries,
            "ejections": self.ejections,
            "breaker_opens": self.breaker_opens,
            "connections": self.connections,
            "active_connections": self.active,
            "held": self.held,
            "hold_expired": self.hold_expired,
            "hold_refused": self.hold_refused,
            "latency_seconds": {
                "sum": self.latency_sum,
                "buckets": dict(zip([*map(str, BUCKETS), "+Inf"], self.buckets, strict=True)),
            },
        }


class NoServiceMetrics(ServiceMetrics):
    """Metrics off: the request path records nothing."""

    __slots__ = ()

    def observe(self, seconds: float, error: bool) -> None:
        pass


_COUNTERS = (
    ("requests", "podium_proxy_requests", "Requests (http) or connections (tcp) handled."),
    ("errors", "podium_proxy_errors", "Requests answered 5xx or connections not relayed."),
    ("retries", "podium_proxy_retries", "Attempts beyond the first."),
    ("ejections", "podium_proxy_ejections", "Endpoints ejected as outliers."),
    ("breaker_opens", "podium_proxy_breaker_opens", "Endpoint circuit breakers opened."),
    ("connections", "podium_proxy_connections", "Downstream connections accepted."),
    (
        "held",
        "podium_proxy_held_requests",
        "Requests held while a sleeping service (autoscaled to 0) woke.",
    ),
    (
        "hold_expired",
        "podium_proxy_hold_expired",
        "Held requests answered 503 because no copy was ready within hold_timeout.",
    ),
    (
        "hold_refused",
        "podium_proxy_hold_refused",
        "Requests answered 503 at once because hold_requests were already waiting.",
    ),
)


class ProxyCollector(Collector):
    """Reads the services' counters at scrape time (a prometheus_client collector), so the
    request path pays only the integer additions of ServiceMetrics."""

    def __init__(self, source: Callable[[], tuple[list[ServiceMetrics], dict[str, int]]]) -> None:
        self.source = source  # () -> (services, endpoints known per service)

    def collect(self) -> Iterator[Metric]:
        services, endpoints = self.source()
        for attr, name, help_ in _COUNTERS:
            counter = CounterMetricFamily(name, help_, labels=["service"])
            for m in services:
                counter.add_metric([m.name], getattr(m, attr))
            yield counter
        active = GaugeMetricFamily(
            "podium_proxy_active_connections",
            "Downstream connections open now.",
            labels=["service"],
        )
        known = GaugeMetricFamily(
            "podium_proxy_endpoints", "Endpoints known for the service.", labels=["service"]
        )
        latency = HistogramMetricFamily(
            "podium_proxy_request_duration_seconds",
            "Time from request (http) or connection (tcp) to the end of the answer.",
            labels=["service"],
        )
        for m in services:
            active.add_metric([m.name], m.active)
            known.add_metric([m.name], endpoints.get(m.name, 0))
            cumulative, total = [], 0
            for bound, count in zip(
                [*map(floatToGoString, BUCKETS), "+Inf"], m.buckets, strict=True
            ):
                total += count
                cumulative.append((bound, float(total)))
            latency.add_metric([m.name], cumulative, sum_value=m.latency_sum)
        yield active
        yield known
        yield latency


def render(services: list[ServiceMetrics], endpoints: dict[str, int]) -> str:
    """Prometheus text exposition (version 0.0.4) for every service."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProxyCollector(lambda: (services, endpoints)))
    return generate_latest(registry).decode()
