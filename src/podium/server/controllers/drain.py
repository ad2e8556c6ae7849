"""The drain controller: moves allocs off draining nodes a few at a time.

    node.drain set (API) --> for each group with copies on draining nodes:
        in flight = copies marked `migrate` whose replacement is not yet running healthy
        mark up to migrate.max_parallel - in flight more copies  (alloc.migrate = True)
    reconcile() places a marked copy's replacement elsewhere; once the replacement
    runs healthy, the old copy is stopped (here, at once; by reconcile, on its next pass)
    past the node's drain deadline every remaining copy is marked and stopped at once
    a draining node with no live allocs left: drain complete, node ineligible

System-job copies need no marking: reconcile stops them on a draining node, since
the node is leaving and they go with it. Level-triggered: each pass reads only
the current state, so a restart of the server resumes a drain where it was.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass

import msgspec

from podium.errors import PodiumError
from podium.model.types import Allocation, Node
from podium.runtime.clock import Clock
from podium.server import allocs as alloc_ops
from podium.server import nodes as node_ops
from podium.server.state import ClusterState
from podium.store import keys

log = logging.getLogger(__name__)


@dataclass
class DrainSettings:
    interval: float = 0.25  # a pass at least this often while any node drains


def migrated(state: ClusterState, a: Allocation) -> bool:
    """A marked copy whose replacement (or the replacement's, if that one failed)
    runs and is healthy: its move is done."""
    repl = a
    for _ in range(20):  # bounded: a chain of failed replacements is short
        nxt = state.allocs.get(repl.next_alloc) if repl.next_alloc else None
        if nxt is None:
            return False
        if nxt.client_status == "running" and nxt.healthy is True and nxt.desired_status == "run":
            return True
        repl = nxt
    return False


def plan_stops(state: ClusterState) -> list[Allocation]:
    """Marked copies still running whose move is done: stop them now (reconcile would
    too, but only on its next evaluation; a health change does not trigger one)."""
    out = []
    for node in state.nodes.values():
        if node.drain:
            for a in state.allocs_of_node(node.id):
                if a.migrate and a.live and migrated(state, a):
                    out.append(a)
    return out


def plan_marks(state: ClusterState, now: float) -> list[Allocation]:
    """The copies to mark for migration now (pure over the state: tested directly)."""
    draining = {n.id: n for n in state.nodes.values() if n.drain}
    if not draining:
        return []
    in_flight: dict[tuple[str, str], int] = defaultdict(int)
    waiting: dict[tuple[str, str], list[Allocation]] = defaultdict(list)
    marks: list[Allocation] = []
    for node in draining.values():
        forced = bool(node.drain_deadline) and now >= node.drain_deadline
        for a in sorted(state.allocs_of_node(node.id), key=lambda x: (x.job, x.group, x.index)):
            job = state.jobs.get(f"{a.namespace}/{a.job}")
            if job is None or job.stop or job.type == "system":
                continue  # reconcile stops these by itself
            key = (f"{a.namespace}/{a.job}", a.group)
            if a.migrate:
                if not migrated(state, a) and (a.live or a.next_alloc):
                    in_flight[key] += 1
                continue
            if not a.live:
                continue
            if forced:
                marks.append(a)
            elif job.type != "batch":  # batch copies finish, unless the deadline passes
                waiting[key].append(a)
    for key, allocs in sorted(waiting.items()):
        group = state.jobs[key[0]].group(key[1])
        budget = (group.migrate.max_parallel if group else 1) - in_flight[key]
        marks.extend(allocs[: max(0, budget)])
    return marks


def finished(state: ClusterState, node: Node) -> bool:
    return node.drain and not any(a.live for a in state.allocs_of_node(node.id))


class DrainController:
    def __init__(
        self, state: ClusterState, clock: Clock, settings: DrainSettings | None = None
    ) -> None:
        self.state = state
        self.clock = clock
        self.settings = settings or DrainSettings()
        self._wake = asyncio.Event()
        state.add_listener(self._on_change)

    def _on_change(self, prefix: str, old: object | None, new: object | None) -> None:
        if prefix in (keys.NODES, keys.ALLOCS):
            self._wake.set()

    async def run(self) -> None:
        await self.state.ready.wait()
        while True:
            try:
                await self.step()
                self.state.rounds["drain"] += 1
            except PodiumError as e:  # a lost race: the next pass reads fresh state
                log.info("drain pass: %s; retrying", e)
            try:
                async with asyncio.timeout(self.settings.interval * 8):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            await self.clock.sleep(self.settings.interval / 5)

    async def step(self) -> None:
        now = self.clock.now()
        for a in plan_stops(self.state):
            log.info("drain: %s runs healthy elsewhere; stopping it on %s", a.name, a.node_name)
            await alloc_ops.modify(
                self.state,
                a.id,
                lambda x: msgspec.structs.replace(
                    x, desired_status="stop", desired_reason="migrated off draining node"
                ),
                event=("alloc.migrated", f"replacement healthy; stopped on {a.node_name}"),
                now=now,
            )
        for a in plan_marks(self.state, now):
            log.info("drain: migrating %s off %s", a.name, a.node_name)
            await alloc_ops.modify(
                self.state,
                a.id,
                lambda x: msgspec.structs.replace(x, migrate=True),
                event=("alloc.migrate", f"migrating off draining node {a.node_name}"),
                now=now,
            )
        for node in list(self.state.nodes.values()):
            if finished(self.state, node):
                log.info("drain of node %s complete", node.name)
                await node_ops.set_drain(
                    self.state, node.id, enable=False, deadline=None, now=now, complete=True
                )
