"""The agent's metrics (Prometheus, through prometheus-client), served at its /v1/metrics.

    health checks --AgentMetrics.check()--> results by status, latency histogram (live)
    scrape: UsageSampler.sample() first, then AgentCollector reads, at scrape time,
        runners   -> tasks by state, restarts, OOM kills (per task)
        usage     -> cpu seconds, memory and its limit (per task and per alloc)
        LogRelay  -> log bytes written (per task and stream)
        proxy     -> ProxyCollector (per service)

One registry per agent. Per-task series carry the alloc id: they live on the node
that runs the alloc and vanish with it; the server's metrics never name allocs. A
podium job is `job_name` (Prometheus keeps `job` for its own scrape job).
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from podium.proxy.metrics import ProxyCollector

if TYPE_CHECKING:
    from podium.agent.agent import Agent

# As on the server: nothing reads `*_created`.
disable_created_metrics()  # type: ignore[no-untyped-call]

CHECK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
TASK_LABELS = ["namespace", "job_name", "group", "alloc", "task"]
ALLOC_LABELS = ["namespace", "job_name", "group", "alloc"]


class AgentMetrics:
    def __init__(self, agent: Agent) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["namespace", "job_name", "group", "check"]
        self.check_results = Counter(
            "podium_check_results",
            "Health check results, by check and status.",
            [*labels, "status"],
            registry=self.registry,
        )
        self.check_latency = Histogram(
            "podium_check_duration_seconds",
            "Health check latency, by check.",
            labels,
            buckets=CHECK_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(AgentCollector(agent))
        self.registry.register(ProxyCollector(agent.proxies.proxy.metrics_source))

    def check(self, labels: tuple[str, str, str, str], status: str, seconds: float) -> None:
        self.check_results.labels(*labels, status).inc()
        self.check_latency.labels(*labels).observe(seconds)

    async def exposition(self, agent: Agent) -> bytes:
        await agent.usage.sample(max_age=1.0)
        return generate_latest(self.registry)


class AgentCollector(Collector):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Metric]:
        agent = self.agent
        runners = list(agent.runners.values())
        states = GaugeMetricFamily(
            "podium_agent_tasks", "Tasks on this node, by state.", labels=["state"]
        )
        tally: Tally[str] = Tally(t.state.state for r in runners for t in r.tasks.values())
        for state in ("pending", "running", "dead"):
            states.add_metric([state], tally.get(state, 0))
        yield states
        restarts = CounterMetricFamily(
            "podium_task_restarts", "Task restarts (policy and requested).", labels=TASK_LABELS
        )
        ooms = CounterMetricFamily(
            "podium_task_oom_kills", "Tasks killed for running out of memory.", labels=TASK_LABELS
        )
        log_bytes = CounterMetricFamily(
            "podium_task_log_bytes",
            "Bytes a task wrote to its logs (rotated ones included).",
            labels=[*TASK_LABELS, "stream"],
        )
        for r in runners:
            a = r.alloc
            for name, t in r.tasks.items():
                key = [a.namespace, a.job, a.group, a.id, name]
                restarts.add_metric(key, t.state.restarts)
                ooms.add_metric(key, r.oom_kills.get(name, 0))
                log_bytes.add_metric([*key, "stdout"], agent.logs.written(t.cfg.stdout_path))
                log_bytes.add_metric([*key, "stderr"], agent.logs.written(t.cfg.stderr_path))
        yield restarts
        yield ooms
        yield log_bytes
        yield from self._usage()

    def _usage(self) -> Iterator[Metric]:
        task_cpu = CounterMetricFamily(
            "podium_task_cpu_seconds", "CPU time a task used.", labels=TASK_LABELS
        )
        task_mem = GaugeMetricFamily(
            "podium_task_memory_rss_bytes", "A task's memory working set.", labels=TASK_LABELS
        )
        task_limit = GaugeMetricFamily(
            "podium_task_memory_limit_bytes", "A task's memory limit.", labels=TASK_LABELS
        )
        alloc_cpu = CounterMetricFamily(
            "podium_alloc_cpu_seconds", "CPU time an alloc's tasks used.", labels=ALLOC_LABELS
        )
        alloc_mem = GaugeMetricFamily(
            "podium_alloc_memory_rss_bytes",
            "An alloc's memory working set (its tasks summed).",
            labels=ALLOC_LABELS,
        )
        alloc_limit = GaugeMetricFamily(
            "podium_alloc_memory_limit_bytes", "An alloc's memory limit.", labels=ALLOC_LABELS
        )
        for u in self.agent.usage.latest.values():
            key = [u.namespace, u.job, u.group, u.id]
            alloc_cpu.add_metric(key, u.cpu_seconds)
            alloc_mem.add_metric(key, u.memory_bytes)
            alloc_limit.add_metric(key, u.memory_limit_bytes)
            for name, t in u.tasks.items():
                task_cpu.add_metric([*key, name], t.cpu_seconds)
                task_mem.add_metric([*key, name], t.memory_bytes)
                task_limit.add_metric([*key, name], t.memory_limit_bytes)
        yield from (task_cpu, task_mem, task_limit, alloc_cpu, alloc_mem, alloc_limit)
