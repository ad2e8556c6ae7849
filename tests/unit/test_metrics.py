"""Metrics pieces that need no cluster: label mapping, metrics-off, store timing, usage rates."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from podium.agent.usage import _usage
from podium.drivers.base import TaskStats
from podium.model.types import TaskUsage
from podium.runtime.logfiles import LogLimits, RotatingFile
from podium.server.metrics import ServerMetrics, TimedStore, rejection_reason
from podium.store.memory import MemoryStore


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def test_rejection_reasons_are_a_bounded_set() -> None:
    assert rejection_reason("node is gone") == "node_gone"
    assert rejection_reason("node is down, ineligible") == "node_unschedulable"
    assert rejection_reason("cpu exhausted") == "cpu"
    assert rejection_reason("memory exhausted") == "memory"
    assert rejection_reason("port collision") == "port"
    assert rejection_reason("something new") == "other"


def test_metrics_off_records_nothing_and_serves_nothing() -> None:
    m = ServerMetrics(None)
    m.applied(placed=3, batch=3, seconds=0.1, conflicts=1)
    m.rejected("cpu exhausted")
    m.heartbeats.inc()
    with m.subscribe("events"):
        pass
    assert not m.on and m.exposition() == b""


def test_applied_counts_placements_conflicts_and_batches() -> None:
    m = ServerMetrics(CollectorRegistry())
    m.applied(placed=3, batch=4, seconds=0.01, conflicts=1)
    m.applied(placed=0, batch=1, seconds=0.01, conflicts=0)
    m.rejected("memory exhausted")
    got = samples(m.exposition().decode())
    assert got[("podium_placements_total", ())] == 3
    assert got[("podium_plan_conflicts_total", ())] == 1
    assert got[("podium_plan_batch_size_count", ())] == 2
    assert got[("podium_plan_batch_size_sum", ())] == 5
    assert got[("podium_plan_rejections_total", (("reason", "memory"),))] == 1


async def test_timed_store_times_each_operation_by_backend() -> None:
    m = ServerMetrics(CollectorRegistry())
    store = TimedStore(MemoryStore(), "memory", m)
    await store.put("/a", b"1")
    await store.get("/a")
    await store.get("/b")
    await store.list("/")
    got = samples(m.exposition().decode())
    count = "podium_store_operation_duration_seconds_count"
    assert got[(count, (("backend", "memory"), ("operation", "get")))] == 2
    assert got[(count, (("backend", "memory"), ("operation", "put")))] == 1
    assert got[(count, (("backend", "memory"), ("operation", "list")))] == 1


def test_usage_rates_cpu_from_the_counter_between_samples() -> None:
    stats = TaskStats(cpu_percent=3.0, memory_bytes=10, pids=1, cpu_seconds=5.0)
    first = _usage(stats, None, 100.0, 64)
    assert first.cpu_percent == 3.0  # no earlier sample: the driver's own figure
    assert first.memory_limit_bytes == 64 * 1024 * 1024  # driver does not know: the task's
    prev = TaskUsage(time=100.0, cpu_seconds=4.0)
    later = _usage(stats, prev, 102.0, 64)
    assert later.cpu_percent == 50.0  # 1 cpu second in 2 s
    limited = TaskStats(cpu_percent=0, memory_bytes=1, pids=1, cpu_seconds=1, memory_limit_bytes=7)
    assert _usage(limited, None, 1.0, 64).memory_limit_bytes == 7


def test_log_writer_counts_bytes_written_across_rotations(tmp_path: Path) -> None:
    path = tmp_path / "t.stdout"
    f = RotatingFile(str(path), LogLimits(max_file_size=10, max_files=2))
    f.write(b"x" * 12)  # one rotation on the way
    f.write(b"yyy")
    f.close()
    assert f.written == 15
