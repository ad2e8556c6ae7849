"""Per-service counters and a latency histogram, rendered as Prometheus text.

Counting is a few integer additions per request; rendering happens only on scrape.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

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
            "latency_seconds": {
                "sum": self.latency_sum,
                "buckets": dict(zip([*map(str, BUCKETS), "+Inf"], self.buckets, strict=True)),
            },
        }


_COUNTERS = (
    ("requests", "podium_proxy_requests_total", "Requests (http) or connections (tcp) handled."),
    ("errors", "podium_proxy_errors_total", "Requests answered 5xx or connections not relayed."),
    ("retries", "podium_proxy_retries_total", "Attempts beyond the first."),
    ("ejections", "podium_proxy_ejections_total", "Endpoints ejected as outliers."),
    ("breaker_opens", "podium_proxy_breaker_opens_total", "Endpoint circuit breakers opened."),
    ("connections", "podium_proxy_connections_total", "Downstream connections accepted."),
)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(services: list[ServiceMetrics], endpoints: dict[str, int]) -> str:
    """Prometheus text exposition (version 0.0.4) for every service."""
    lines: list[str] = []
    for attr, metric, help_ in _COUNTERS:
        lines += [f"# HELP {metric} {help_}", f"# TYPE {metric} counter"]
        for m in services:
            lines.append(f'{metric}{{service="{_label(m.name)}"}} {getattr(m, attr)}')
    lines += [
        "# HELP podium_proxy_active_connections Downstream connections open now.",
        "# TYPE podium_proxy_active_connections gauge",
    ]
    for m in services:
        lines.append(f'podium_proxy_active_connections{{service="{_label(m.name)}"}} {m.active}')
    lines += [
        "# HELP podium_proxy_endpoints Endpoints known for the service.",
        "# TYPE podium_proxy_endpoints gauge",
    ]
    for m in services:
        lines.append(f'podium_proxy_endpoints{{service="{_label(m.name)}"}} {endpoints[m.name]}')
    metric = "podium_proxy_request_duration_seconds"
    lines += [
        f"# HELP {metric} Time from request (http) or connection (tcp) to the end of the answer.",
        f"# TYPE {metric} histogram",
    ]
    for m in services:
        svc = _label(m.name)
        total = 0
        for bound, count in zip([*map(repr, BUCKETS), "+Inf"], m.buckets, strict=True):
            total += count
            lines.append(f'{metric}_bucket{{service="{svc}",le="{bound}"}} {total}')
        lines.append(f'{metric}_sum{{service="{svc}"}} {m.latency_sum}')
        lines.append(f'{metric}_count{{service="{svc}"}} {total}')
    return "\n".join(lines) + "\n"
