"""Garbage collection: bounded event history, and allocs nobody needs any more.

Removed: events beyond the newest `events.max_events` or older than `events.max_age`
(the ring; collected when a term starts, so a smaller ring applies at once); allocs
that are stopped and terminal whose job is gone (purged); for live jobs, terminal
allocs beyond the newest `keep_terminal` per job (history for `job status`, bounded).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from podium.model.types import Allocation
from podium.runtime.clock import Clock
from podium.server.events import EventRing, prune_keys
from podium.server.metrics import ServerMetrics
from podium.server.state import ClusterState
from podium.store import keys
from podium.store.base import Compare, Delete, Op

log = logging.getLogger(__name__)


@dataclass
class GCSettings:
    interval: float = 30.0
    events: EventRing = field(default_factory=EventRing)
    keep_terminal: int = 50
    min_age: float = 60.0  # a terminal alloc stays at least this long (seconds)


class GarbageCollector:
    def __init__(
        self,
        state: ClusterState,
        clock: Clock,
        settings: GCSettings | None = None,
        *,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self.state = state
        self.clock = clock
        self.settings = settings or GCSettings()
        self.metrics = metrics or ServerMetrics(None)

    async def run(self) -> None:
        await self.state.ready.wait()
        while True:
            try:
                await self.collect()
            except Exception:
                log.exception("garbage collection failed; will retry")
            await self.clock.sleep(self.settings.interval)

    async def collect(self) -> int:
        removed = 0
        now = self.clock.now()
        kvs, _ = await self.state.store.list(keys.EVENTS)
        doomed_events = prune_keys([kv.key for kv in kvs], self.settings.events, now)
        for i in range(0, len(doomed_events), 1000):
            txns: list[tuple[list[Compare], list[Op]]] = [
                ([], [Delete(k)]) for k in doomed_events[i : i + 1000]
            ]
            await self.state.store.txn_many(txns)
        if doomed_events:
            self.metrics.events_pruned.inc(len(doomed_events))
            removed += len(doomed_events)
        doomed: list[Allocation] = []
        for job_key, ids in list(self.state.by_job.items()):
            allocs = [self.state.allocs[i] for i in ids if i in self.state.allocs]
            dead = sorted(
                (
                    a
                    for a in allocs
                    if (a.terminal and a.desired_status == "stop") or (a.terminal and a.next_alloc)
                ),
                key=lambda a: a.modify_time,
                reverse=True,
            )
            dead = [a for a in dead if now - a.modify_time >= self.settings.min_age]
            if job_key not in self.state.jobs:
                doomed.extend(
                    a
                    for a in allocs
                    if a.terminal or (a.desired_status == "stop" and a.client_status == "pending")
                )
            else:
                doomed.extend(dead[self.settings.keep_terminal :])
        if doomed:
            await self.state.store.txn_many(
                [
                    (
                        [Compare(keys.alloc(a.id), "mod_rev", "=", a.revision)],
                        [Delete(keys.alloc(a.id))],
                    )
                    for a in doomed
                ]
            )
            removed += len(doomed)
        return removed
