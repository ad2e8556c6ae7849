"""Garbage collection: bounded event history, and allocs nobody needs any more.

Removed: events beyond the newest `max_events`; allocs that are stopped and
terminal whose job is gone (purged); for live jobs, terminal allocs beyond the
newest `keep_terminal` per job (history for `job status`, but bounded).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from podium.model.types import Allocation
from podium.runtime.clock import Clock
from podium.server.state import ClusterState
from podium.store import keys
from podium.store.base import Compare, Delete, Op

log = logging.getLogger(__name__)


@dataclass
class GCSettings:
    interval: float = 30.0
    max_events: int = 20_000
    keep_terminal: int = 50
    min_age: float = 60.0  # a terminal alloc stays at least this long (seconds)


class GarbageCollector:
    def __init__(
        self, state: ClusterState, clock: Clock, settings: GCSettings | None = None
    ) -> None:
        self.state = state
        self.clock = clock
        self.settings = settings or GCSettings()

    async def run(self) -> None:
        await self.state.ready.wait()
        while True:
            await self.clock.sleep(self.settings.interval)
            try:
                await self.collect()
            except Exception:
                log.exception("garbage collection failed; will retry")

    async def collect(self) -> int:
        removed = 0
        kvs, _ = await self.state.store.list(keys.EVENTS)
        extra = len(kvs) - self.settings.max_events
        if extra > 0:
            txns: list[tuple[list[Compare], list[Op]]] = [
                ([], [Delete(kv.key)]) for kv in kvs[:extra]
            ]
            await self.state.store.txn_many(txns)
            removed += extra
        now = self.clock.now()
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
