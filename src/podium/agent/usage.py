"""Resource use of this node's tasks, sampled from the drivers' stats when someone asks.

    /v1/agent/usage (the server gathers it), /v1/metrics (Prometheus)
        --sample(max_age)--> driver.stats(handle) for every running task, concurrently
        --> AllocUsage per alloc (its tasks summed), each with the wall time it was taken

CPU percent is the rate of the task's cpu_seconds counter between two samples (the
driver's own figure only for a task's first sample). A sample younger than `max_age`
is served as it is, and callers that arrive together share one sampling, so a dashboard
and a scraper cost the node one round of stats, not one each. Nothing runs when no one
asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from podium.drivers.base import StatsDriver, TaskStats
from podium.errors import PodiumError
from podium.model.types import AllocUsage, TaskUsage

if TYPE_CHECKING:
    from podium.agent.alloc_runner import AllocRunner

log = logging.getLogger(__name__)

MIB = 1024 * 1024
STATS_TIMEOUT = 3.0  # a driver that does not answer within this is left out of a sample


class UsageSampler:
    def __init__(
        self,
        runners: Mapping[str, AllocRunner],
        *,
        clock: Callable[[], float] = time.time,
        timeout: float = STATS_TIMEOUT,
    ) -> None:
        self.runners = runners
        self.clock = clock
        self.timeout = timeout
        self.latest: dict[str, AllocUsage] = {}
        self.sampled_at = 0.0
        self._lock = asyncio.Lock()

    async def sample(self, *, max_age: float = 1.0) -> dict[str, AllocUsage]:
        """Every running alloc's usage, no older than `max_age` seconds."""
        if self.clock() - self.sampled_at <= max_age:
            return self.latest
        async with self._lock:
            if self.clock() - self.sampled_at <= max_age:  # another caller just sampled
                return self.latest
            jobs = [
                (runner, name, task)
                for runner in list(self.runners.values())
                for name, task in runner.tasks.items()
                if task.handle is not None and isinstance(task.driver, StatsDriver)
            ]
            results = await asyncio.gather(*(self._stats(t.driver, t.handle) for _, _, t in jobs))
            now = self.clock()
            fresh: dict[str, AllocUsage] = {}
            for (runner, name, task), stats in zip(jobs, results, strict=True):
                if stats is None:
                    continue
                a = runner.alloc
                alloc = fresh.get(a.id)
                if alloc is None:
                    alloc = fresh[a.id] = AllocUsage(
                        id=a.id,
                        namespace=a.namespace,
                        job=a.job,
                        group=a.group,
                        node_id=a.node_id,
                        time=now,
                    )
                before = self.latest.get(a.id)
                prev = before.tasks.get(name) if before is not None else None
                usage = _usage(stats, prev, now, task.cfg.memory_mb)
                alloc.tasks[name] = usage
                alloc.cpu_percent = round(alloc.cpu_percent + usage.cpu_percent, 2)
                alloc.cpu_seconds += usage.cpu_seconds
                alloc.memory_bytes += usage.memory_bytes
                alloc.memory_limit_bytes += usage.memory_limit_bytes
            self.latest, self.sampled_at = fresh, now
            return fresh

    async def _stats(self, driver: object, handle: object) -> TaskStats | None:
        assert isinstance(driver, StatsDriver)
        with contextlib.suppress(PodiumError, OSError, TimeoutError):
            async with asyncio.timeout(self.timeout):
                return await driver.stats(handle)  # type: ignore[arg-type]
        return None


def _usage(stats: TaskStats, prev: TaskUsage | None, now: float, memory_mb: int) -> TaskUsage:
    percent = stats.cpu_percent
    if prev is not None and now > prev.time and stats.cpu_seconds >= prev.cpu_seconds:
        percent = (stats.cpu_seconds - prev.cpu_seconds) / (now - prev.time) * 100
    return TaskUsage(
        time=now,
        cpu_percent=round(max(0.0, percent), 2),
        cpu_seconds=stats.cpu_seconds,
        memory_bytes=stats.memory_bytes,
        memory_limit_bytes=stats.memory_limit_bytes or memory_mb * MIB,
        pids=stats.pids,
    )
