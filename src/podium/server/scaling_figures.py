"""The figures an autoscaled group is judged by, from what podium already measures.

    UsageGatherer (every agent's /v1/agent/usage)
      ├─ per copy: cpu seconds (CpuRates: over 5 s at least), memory bytes
      │          ──copy_utilization()──> cpu, memory
      └─ per node and service: the proxy's counters ──TrafficMeter──> between two looks:
           requests/s, concurrency (seconds spent in requests per second: Little's law),
           latency_p95 (from the latency histogram's buckets), requests held now
    Prometheus: an instant query (GET /api/v1/query) that gives one number ──> prometheus

Counters are summed over the nodes whose proxies carry the group's services (the ingress
and every upstream listener). A counter that went down (an agent restarted) starts over.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import httpx

from podium.model.types import Allocation, AllocUsage, Group, Job, Node, ServiceTraffic
from podium.proxy.config import service_key
from podium.proxy.metrics import BUCKETS
from podium.server.usage import NodeUsage, UsageGatherer

log = logging.getLogger(__name__)

MIB = 1024 * 1024
STALE = 60.0  # seconds a node's last rates count when it stops answering
CPU_WINDOW = 5.0  # seconds a copy's CPU figure spans at least (once it has that much)


@dataclass(frozen=True)
class Traffic:
    """A service's (or group's) traffic between two looks, summed over the proxies."""

    rps: float
    concurrency: float  # requests in flight on average
    requests: int  # answered in the span
    held: int  # requests waiting now for a first copy
    buckets: tuple[int, ...]  # latency histogram of the span (BUCKETS, +Inf)

    def p95(self) -> float | None:
        return quantile(self.buckets, 0.95)


def quantile(buckets: Iterable[int], q: float) -> float | None:
    """Prometheus' histogram_quantile over one span's bucket counts (linear in a bucket)."""
    counts = list(buckets)
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if seen + n >= rank and n > 0:
            if i >= len(BUCKETS):
                return BUCKETS[-1]  # in +Inf: the highest bound known
            low = BUCKETS[i - 1] if i > 0 else 0.0
            return low + (BUCKETS[i] - low) * (rank - seen) / n
        seen += n
    return BUCKETS[-1]


@dataclass
class _Seen:
    time: float  # the agent's clock
    counters: ServiceTraffic


@dataclass
class _Span:
    at: float  # when computed (this server's clock)
    rps: float
    concurrency: float
    requests: int
    held: int
    buckets: tuple[int, ...]


class TrafficMeter:
    """Rates per service from successive counter readings of every node's proxy."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], _Seen] = {}
        self._spans: dict[str, dict[str, _Span]] = {}  # service key -> node id -> span

    def observe(self, nodes: Iterable[NodeUsage], now: float) -> None:
        for n in nodes:
            t = n.services_time
            for key, c in n.services.items():
                prev = self._seen.get((n.node_id, key))
                self._seen[(n.node_id, key)] = _Seen(t, c)
                if prev is None or t <= prev.time:
                    continue
                p = prev.counters
                span = t - prev.time
                if c.requests < p.requests or len(c.buckets) != len(p.buckets):
                    continue  # the proxy restarted: its counters begin again
                requests = c.requests - p.requests
                self._spans.setdefault(key, {})[n.node_id] = _Span(
                    at=now,
                    rps=requests / span,
                    concurrency=max(0.0, c.latency_sum - p.latency_sum) / span,
                    requests=requests,
                    held=c.held,
                    buckets=tuple(a - b for a, b in zip(c.buckets, p.buckets, strict=True)),
                )
        for key in list(self._spans):
            nodes_ = self._spans[key]
            for node_id in [i for i, s in nodes_.items() if now - s.at > STALE]:
                del nodes_[node_id]
            if not nodes_:
                del self._spans[key]

    def known(self) -> bool:
        """Whether any proxy has been read twice (so rates exist at all)."""
        return bool(self._spans) or any(True for _ in self._seen)

    def service(self, key: str) -> Traffic | None:
        spans = list(self._spans.get(key, {}).values())
        if not spans:
            return None
        width = len(BUCKETS) + 1
        buckets = [0] * width
        for s in spans:
            for i, n in enumerate(s.buckets[:width]):
                buckets[i] += n
        return Traffic(
            rps=sum(s.rps for s in spans),
            concurrency=sum(s.concurrency for s in spans),
            requests=sum(s.requests for s in spans),
            held=sum(s.held for s in spans),
            buckets=tuple(buckets),
        )

    def group(self, job: Job, group: Group) -> Traffic | None:
        """The traffic of every service the group declares, summed (None: not measured)."""
        found = [
            t
            for svc in group.services
            if (t := self.service(service_key(job.namespace, svc.name))) is not None
        ]
        if not found:
            return None
        buckets = [sum(col) for col in zip(*(t.buckets for t in found), strict=True)]
        return Traffic(
            rps=sum(t.rps for t in found),
            concurrency=sum(t.concurrency for t in found),
            requests=sum(t.requests for t in found),
            held=sum(t.held for t in found),
            buckets=tuple(buckets),
        )


def copy_cores(a: Allocation, node: Node | None) -> float:
    """The cores a copy may use (its CFS quota): cpu MHz / the node's MHz per core."""
    per_core = node.cpu_per_core if node is not None else 1000
    return a.resources.cpu / per_core


class CpuRates:
    """Each copy's CPU over the last `window` seconds at least (from its cpu_seconds
    counter), not over the agent's last sampling second alone: one busy or idle second
    under a loaded machine must not move the count (metrics-server likewise averages)."""

    def __init__(self, window: float = CPU_WINDOW) -> None:
        self.window = window
        self._samples: dict[str, deque[tuple[float, float]]] = {}  # alloc id -> (time, cpu s)

    def observe(self, usages: Iterable[AllocUsage]) -> None:
        seen = set()
        for u in usages:
            seen.add(u.id)
            q = self._samples.setdefault(u.id, deque())
            if q and u.cpu_seconds < q[-1][1]:
                q.clear()  # the counter started over (a task restarted)
            if q and u.time <= q[-1][0]:
                continue
            q.append((u.time, u.cpu_seconds))
            # Keep one sample at or before the window's start: the base of the rate.
            while len(q) > 2 and q[1][0] <= u.time - self.window:
                q.popleft()
        for gone in [k for k in self._samples if k not in seen]:
            del self._samples[gone]

    def percent(self, alloc_id: str, *, since: float) -> float | None:
        """Percent of one core from the base sample (not before `since`) to the newest;
        None with fewer than two samples since then."""
        q = self._samples.get(alloc_id)
        if not q:
            return None
        points = [p for p in q if p[0] >= since]
        if len(points) < 2 or points[-1][0] <= points[0][0]:
            return None
        (t0, c0), (t1, c1) = points[0], points[-1]
        return (c1 - c0) / (t1 - t0) * 100


def copy_utilization(
    metric: str,
    copies: list[Allocation],
    usage: UsageGatherer,
    nodes: dict[str, Node],
    *,
    now: float,
    warmup: float,
    cpu: CpuRates | None = None,
) -> tuple[float | None, ...]:
    """Each live copy's use in percent of what it reserves. None (no figure, HPA's missing
    copy) while it does not run, or started less than `warmup` ago: a process starting up
    burns CPU that says nothing about its load (HPA's initial readiness delay). CPU comes
    from `cpu` (a rate over a window after the warmup) when given, else the last sample."""
    out: list[float | None] = []
    for a in copies:
        u = usage.alloc(a.id) if a.client_status == "running" else None
        started = max((t.started_at for t in a.task_states.values()), default=0.0)
        if u is None or now - started < warmup:
            out.append(None)
        elif metric == "cpu":
            cores = copy_cores(a, nodes.get(a.node_id))
            used = cpu.percent(a.id, since=started + warmup) if cpu else u.cpu_percent
            out.append(used / cores if used is not None and cores > 0 else None)
        else:
            limit = a.resources.memory * MIB
            out.append(u.memory_bytes / limit * 100 if limit else None)
    return tuple(out)


class Prometheus:
    """Instant queries to a user's Prometheus: each must give one number."""

    MAX_BYTES = 1024 * 1024

    def __init__(self, url: str, *, timeout: float = 2.0, concurrency: int = 4) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._slots = asyncio.Semaphore(concurrency)

    async def value(self, client: httpx.AsyncClient, query: str) -> tuple[float | None, str]:
        """(the number, "") or (None, why there is none)."""
        async with self._slots:
            try:
                async with client.stream(
                    "GET",
                    f"{self.url}/api/v1/query",
                    params={"query": query},
                    timeout=self.timeout,
                ) as r:
                    body = b""
                    async for chunk in r.aiter_bytes():
                        body += chunk
                        if len(body) > self.MAX_BYTES:
                            return None, "the answer is larger than 1 MiB"
                    status = r.status_code
            except (httpx.HTTPError, OSError) as e:
                return None, f"Prometheus at {self.url} did not answer ({type(e).__name__})"
        return parse_query_answer(status, body)


def parse_query_answer(status: int, body: bytes) -> tuple[float | None, str]:
    """The one number a Prometheus instant query answered, or why there is none."""
    try:
        data = json.loads(body)
    except ValueError:
        return None, f"Prometheus answered HTTP {status} without JSON"
    if not isinstance(data, dict) or data.get("status") != "success":
        error = data.get("error", "") if isinstance(data, dict) else ""
        return None, f"the query failed: {str(error)[:200] or f'HTTP {status}'}"
    result = data.get("data", {})
    kind, items = result.get("resultType"), result.get("result")
    try:
        if kind == "scalar":
            value = float(items[1])
        elif kind == "vector":
            if not items:
                return None, "the query gave no series"
            if len(items) > 1:
                return None, f"the query gave {len(items)} series; wrap it in sum()"
            value = float(items[0]["value"][1])
        else:
            return None, f"the query gave a {kind}; expected one number (a scalar or one series)"
    except (TypeError, ValueError, KeyError, IndexError):
        return None, "the query's answer has no number"
    if math.isnan(value) or math.isinf(value):
        return None, f"the query gave {value}"
    return value, ""
