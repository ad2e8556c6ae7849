"""The server's metrics (Prometheus, through prometheus-client), served at /v1/metrics.

    placement controller, plan applier --placed, rejected, batch, latency--> counters, histograms
    store (TimedStore)                 --operation latency by backend------> histogram
    API (app._wrap)                    --requests by route and code--------> counter, histogram
    heartbeats, liveness               --received, missed------------------> counters
    autoscaler                         --changes, cold starts--------------> counter, histogram
    scrape -> ClusterCollector: nodes, allocs, deployments by status, the leader, unplaced
              copies by job, stream subscribers (read from the cache at scrape time)

One registry per server (a `podium dev` process holds a server and an agent). Labels stay
bounded: routes are path templates, never ids; job names appear only on gauges of work
that waits. `ServerMetrics(None)` is the metrics-off build: every instrument is a no-op.
"""

from __future__ import annotations

import builtins
import time
from collections import Counter as Tally
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from podium.store.base import Compare, KeyValue, Op, Store, TxnResult, WatchEvent

if TYPE_CHECKING:
    from podium.server.leader import Leadership
    from podium.server.state import ClusterState

# `*_created` series double what a scrape carries and nothing here reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 5, 10, 50, 100, 500, 1000, 2000, 5000, 10000)
COLD_START_BUCKETS = (0.25, 0.5, 1, 2, 3, 5, 8, 13, 21, 34, 60)
REJECTION_REASONS = ("node_gone", "node_unschedulable", "cpu", "memory", "port", "other")


class _Noop:
    """Stands in for every instrument when metrics are off."""

    def labels(self, *args: str, **kw: str) -> _Noop:
        return self

    def inc(self, amount: float = 1) -> None:
        pass

    def dec(self, amount: float = 1) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def observe(self, value: float) -> None:
        pass


_NOOP = _Noop()


def rejection_reason(why: str) -> str:
    """The plan applier's re-check message as one of a few label values."""
    for key, word in (
        ("node_gone", "gone"),
        ("cpu", "cpu"),
        ("memory", "memory"),
        ("port", "port"),
        ("node_unschedulable", "node is"),
    ):
        if word in why:
            return key
    return "other"


class ServerMetrics:
    """The instruments the server's parts record into; `registry=None` turns them off."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.registry = registry
        on = registry is not None

        def make(kind: Any, name: str, doc: str, labels: Sequence[str] = (), **kw: Any) -> Any:
            return kind(name, doc, labels, registry=registry, **kw) if on else _NOOP

        self.placements = make(Counter, "podium_placements", "Allocations placed (committed).")
        self.plan_rejections = make(
            Counter,
            "podium_plan_rejections",
            "Placements the plan applier's re-check refused, by reason.",
            ["reason"],
        )
        self.plan_conflicts = make(
            Counter, "podium_plan_conflicts", "Plan writes that lost a compare-and-swap race."
        )
        self.plan_batch = make(
            Histogram,
            "podium_plan_batch_size",
            "Placements and alloc updates committed per plan-applier batch.",
            buckets=BATCH_BUCKETS,
        )
        self.plan_commit = make(
            Histogram,
            "podium_plan_commit_duration_seconds",
            "Time to re-check and commit one plan-applier batch.",
            buckets=LATENCY_BUCKETS,
        )
        self.scheduling = make(
            Histogram,
            "podium_scheduling_duration_seconds",
            "Time the scheduler takes to place one job in an evaluation round.",
            buckets=LATENCY_BUCKETS,
        )
        self.pending_jobs = make(
            Gauge, "podium_pending_jobs", "Jobs waiting for the placement controller's next round."
        )
        self.store_ops = make(
            Histogram,
            "podium_store_operation_duration_seconds",
            "Store operation latency, by backend and operation.",
            ["backend", "operation"],
            buckets=LATENCY_BUCKETS,
        )
        self.http_requests = make(
            Counter,
            "podium_http_requests",
            "API requests, by route template, method and status code.",
            ["route", "method", "code"],
        )
        self.http_latency = make(
            Histogram,
            "podium_http_request_duration_seconds",
            "API request handling time (to the first byte for streams), by route and method.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
        )
        self.denied = make(
            Counter,
            "podium_security_denied",
            "Requests refused for their credentials (401/403), by code.",
            ["code"],
        )
        self.heartbeats = make(Counter, "podium_heartbeats", "Node heartbeats received.")
        self.heartbeats_missed = make(
            Counter,
            "podium_heartbeats_missed",
            "Nodes declared down because their heartbeats stopped.",
        )
        self.subscribers = make(
            Gauge,
            "podium_stream_subscribers",
            "Open watches: event streams (SSE) and blocking queries, by stream.",
            ["stream"],
        )
        self.events_pruned = make(
            Counter, "podium_events_pruned", "Events dropped from the ring (by count or age)."
        )
        self.scaling_changes = make(
            Counter,
            "podium_scaling_changes",
            "Counts the autoscaler changed, by direction (up, down, idle: to 0).",
            ["direction"],
        )
        self.cold_start = make(
            Histogram,
            "podium_scaling_cold_start_seconds",
            "From a request waking a group scaled to 0 to its first healthy copy.",
            buckets=COLD_START_BUCKETS,
        )

    @property
    def on(self) -> bool:
        return self.registry is not None

    def exposition(self) -> bytes:
        return generate_latest(self.registry) if self.registry is not None else b""

    def applied(self, *, placed: int, batch: int, seconds: float, conflicts: int) -> None:
        if self.registry is None:
            return
        if placed:
            self.placements.inc(placed)
        if conflicts:
            self.plan_conflicts.inc(conflicts)
        self.plan_batch.observe(batch)
        self.plan_commit.observe(seconds)

    def rejected(self, why: str) -> None:
        self.plan_rejections.labels(rejection_reason(why)).inc()

    def subscribe(self, stream: str) -> _Subscription:
        return _Subscription(self.subscribers.labels(stream))


class _Subscription:
    """`with metrics.subscribe("events"):` counts one open watch while it lasts."""

    def __init__(self, gauge: Any) -> None:
        self.gauge = gauge

    def __enter__(self) -> None:
        self.gauge.inc()

    def __exit__(self, *exc: object) -> None:
        self.gauge.dec()


class ClusterCollector(Collector):
    """What the cache holds, counted at scrape time: no bookkeeping on the write path."""

    def __init__(
        self, state: ClusterState, leadership: Callable[[], Leadership | None], server_id: str
    ) -> None:
        self.state = state
        self.leadership = leadership
        self.server_id = server_id

    def collect(self) -> Iterator[Metric]:
        state = self.state
        nodes = GaugeMetricFamily("podium_nodes", "Nodes by status.", labels=["status"])
        by_status = Tally(
            "draining" if n.drain else "ineligible" if not n.eligible else n.status
            for n in state.nodes.values()
        )
        for status in ("initializing", "ready", "down", "draining", "ineligible"):
            nodes.add_metric([status], by_status.get(status, 0))
        yield nodes
        allocs = GaugeMetricFamily(
            "podium_allocs",
            "Allocations by client status (desired run or stop).",
            labels=["status"],
        )
        tally: Tally[str] = Tally(a.client_status for a in state.allocs.values())
        for status in ("pending", "running", "complete", "failed", "lost"):
            allocs.add_metric([status], tally.get(status, 0))
        yield allocs
        deps = GaugeMetricFamily("podium_deployments", "Deployments by status.", labels=["status"])
        dtally: Tally[str] = Tally(d.status for d in state.deployments.values())
        for status in ("running", "paused", "successful", "failed", "cancelled"):
            deps.add_metric([status], dtally.get(status, 0))
        yield deps
        yield GaugeMetricFamily("podium_jobs", "Jobs known.", value=len(state.jobs))
        yield GaugeMetricFamily(
            "podium_store_bad_values",
            "Stored records that do not decode and are skipped (see the store.bad_value event).",
            value=len(state.bad_values),
        )
        blocked = GaugeMetricFamily(
            "podium_job_unplaced_allocs",
            "Copies the scheduler could not place (blocked work), by job.",
            labels=["namespace", "job_name"],
        )
        for key, failures in state.placement_failures.items():
            ns, _, name = key.partition("/")
            blocked.add_metric([ns, name], sum(f.unplaced for f in failures))
        yield blocked
        lead = self.leadership()
        leader = GaugeMetricFamily(
            "podium_server_leader", "1 while this server is the leader.", labels=["server_id"]
        )
        leader.add_metric([self.server_id], 1 if lead is None or lead.is_leader else 0)
        yield leader
        info = GaugeMetricFamily(
            "podium_leader_info", "The current leader, as this server sees it.", labels=["address"]
        )
        if lead is not None and lead.leader is not None:
            info.add_metric([lead.leader.address], 1)
        yield info
        yield CounterMetricFamily(
            "podium_leader_changes",
            "Times this server saw the leader change since it started.",
            value=lead.leader_changes if lead is not None else 0,
        )


class TimedStore:
    """A Store that times each operation into `podium_store_operation_duration_seconds`.

    Everything else (watches, backend-specific methods) passes through untouched.
    """

    def __init__(self, inner: Store, backend: str, metrics: ServerMetrics) -> None:
        self.inner = inner
        self._ops = {
            op: metrics.store_ops.labels(backend, op)
            for op in ("get", "list", "put", "delete", "txn", "txn_many")
        }

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def get(self, key: str) -> KeyValue | None:
        t0 = time.perf_counter()
        try:
            return await self.inner.get(key)
        finally:
            self._ops["get"].observe(time.perf_counter() - t0)

    async def list(self, prefix: str) -> tuple[builtins.list[KeyValue], int]:
        t0 = time.perf_counter()
        try:
            return await self.inner.list(prefix)
        finally:
            self._ops["list"].observe(time.perf_counter() - t0)

    async def put(
        self, key: str, value: bytes, *, expect_rev: int | None = None, lease: int = 0
    ) -> int:
        t0 = time.perf_counter()
        try:
            return await self.inner.put(key, value, expect_rev=expect_rev, lease=lease)
        finally:
            self._ops["put"].observe(time.perf_counter() - t0)

    async def delete(self, key: str, *, expect_rev: int | None = None) -> int:
        t0 = time.perf_counter()
        try:
            return await self.inner.delete(key, expect_rev=expect_rev)
        finally:
            self._ops["delete"].observe(time.perf_counter() - t0)

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        t0 = time.perf_counter()
        try:
            return await self.inner.txn(compares, success, failure)
        finally:
            self._ops["txn"].observe(time.perf_counter() - t0)

    async def txn_many(
        self, txns: Sequence[tuple[Sequence[Compare], Sequence[Op]]]
    ) -> builtins.list[TxnResult]:
        t0 = time.perf_counter()
        try:
            return await self.inner.txn_many(txns)
        finally:
            self._ops["txn_many"].observe(time.perf_counter() - t0)

    async def revision(self) -> int:
        return await self.inner.revision()

    def watch(self, prefix: str, *, start_rev: int) -> AsyncIterator[WatchEvent]:
        return self.inner.watch(prefix, start_rev=start_rev)

    async def lease_grant(self, ttl: float) -> int:
        return await self.inner.lease_grant(ttl)

    async def lease_keepalive(self, lease: int) -> None:
        await self.inner.lease_keepalive(lease)

    async def lease_revoke(self, lease: int) -> None:
        await self.inner.lease_revoke(lease)

    async def close(self) -> None:
        await self.inner.close()


def backend_of(url: str) -> str:
    return url.split("://", 1)[0] if "://" in url else "sqlite"
