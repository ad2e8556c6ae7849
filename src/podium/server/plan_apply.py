"""The plan applier: the one serial place where plans become committed allocs.

    scheduler plans (computed on a snapshot) --> re-check against the current state
        (node still schedulable, cpu/memory/ports still free) --> one batched commit
        (each alloc write guarded by its revision; new allocs guarded by "absent")

Many plans are committed in one `txn_many`, so placing thousands of allocs costs
a handful of fsyncs. A placement that no longer fits is dropped, not forced: the
job stays dirty and the next evaluation places it on fresh data.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec

from podium.model.types import Allocation, Plan
from podium.server.events import event_put
from podium.server.state import ClusterState, encode
from podium.store import keys
from podium.store.base import Compare, Op, Put


@dataclass
class ApplyResult:
    placed: int = 0
    stopped: int = 0
    updated: int = 0
    rejected: list[tuple[Allocation, str]] = field(default_factory=list)
    conflicts: int = 0
    revision: int = 0


class _Usage:
    """cpu, memory and ports in use on one node, from the state plus this batch's placements."""

    def __init__(self, allocs: Iterable[Allocation], freed: set[str]) -> None:
        self.cpu = 0
        self.memory = 0
        self.ports: set[int] = set()
        for a in allocs:
            if not a.live:
                continue
            if a.id in freed:
                # Stopping frees cpu and memory for the plan, but its port stays bound
                # until the old task has actually exited.
                self.ports.update(a.ports.values())
            else:
                self.add(a)

    def add(self, a: Allocation) -> None:
        self.cpu += a.resources.cpu
        self.memory += a.resources.memory
        self.ports.update(a.ports.values())


class PlanApplier:
    def __init__(self, state: ClusterState, *, max_ops: int = 5000) -> None:
        self.state = state
        self.max_ops = max_ops
        self._last_revision = 0

    async def apply(
        self, plans: list[Plan], updates: Iterable[Allocation] = (), *, now: float
    ) -> ApplyResult:
        """Re-check and commit `plans` plus server-side alloc `updates` (e.g. marked lost)."""
        # Re-check against a cache that includes our own previous commit; callers may then
        # overlap scheduling the next plans with this commit instead of waiting for it.
        await self.state.wait_for(self._last_revision, timeout=60)
        result = ApplyResult()
        usage: dict[str, _Usage] = {}
        # Merge every change to an existing alloc by id so one txn writes each alloc once.
        changed: dict[str, Allocation] = {a.id: a for a in updates}
        creates: list[Allocation] = []
        events: list[Op] = []
        # What this batch stops frees its room for what this batch places (a replacement
        # on a full node reuses the space of the alloc it replaces).
        freed = {s.alloc_id for plan in plans for s in plan.stops}
        for plan in plans:
            for stop in plan.stops:
                cur = changed.get(stop.alloc_id) or self.state.allocs.get(stop.alloc_id)
                if cur is None or cur.desired_status == "stop":
                    continue
                changed[cur.id] = msgspec.structs.replace(
                    cur, desired_status="stop", desired_reason=stop.reason
                )
                result.stopped += 1
            placed = 0
            for a in plan.placements:
                why = self._recheck(a, usage, freed)
                if why:
                    result.rejected.append((a, why))
                    continue
                usage[a.node_id].add(a)
                creates.append(a)
                placed += 1
                if a.previous_alloc:
                    prev = changed.get(a.previous_alloc) or self.state.allocs.get(a.previous_alloc)
                    if prev is not None:
                        changed[prev.id] = msgspec.structs.replace(prev, next_alloc=a.id)
            result.placed += placed
            n_stop = len(plan.stops)
            if placed or n_stop:
                events.append(
                    event_put(
                        "job.plan_applied",
                        f"placed {placed}, stopped {n_stop} (version {plan.job_version})",
                        namespace=plan.namespace,
                        job=plan.job,
                        now=now,
                    )
                )
        txns: list[tuple[list[Compare], list[Op]]] = []
        for a in creates:
            a.modify_time = now  # fresh objects of this plan: no copy needed
            txns.append(
                ([Compare(keys.alloc(a.id), "mod_rev", "=", 0)], [Put(keys.alloc(a.id), encode(a))])
            )
        for a in changed.values():
            rev = self.state.allocs[a.id].revision if a.id in self.state.allocs else a.revision
            body = encode(msgspec.structs.replace(a, modify_time=now, revision=0))
            txns.append(
                ([Compare(keys.alloc(a.id), "mod_rev", "=", rev)], [Put(keys.alloc(a.id), body)])
            )
        if events:
            txns.append(([], events))
        for i in range(0, len(txns), self.max_ops):
            for r in await self.state.store.txn_many(txns[i : i + self.max_ops]):
                result.revision = max(result.revision, r.revision)
                if not r.succeeded:
                    result.conflicts += 1
        result.updated = len(changed)
        self._last_revision = max(self._last_revision, result.revision)
        return result

    def _recheck(self, a: Allocation, usage: dict[str, _Usage], freed: set[str]) -> str:
        node = self.state.nodes.get(a.node_id)
        if node is None:
            return "node is gone"
        if not node.schedulable:
            return f"node is {node.status}{'' if node.eligible else ', ineligible'}"
        u = usage.get(a.node_id)
        if u is None:
            u = usage[a.node_id] = _Usage(self.state.allocs_of_node(a.node_id), freed)
        r = node.resources
        if u.cpu + a.resources.cpu > r.cpu:
            return "cpu exhausted"
        if u.memory + a.resources.memory > r.memory:
            return "memory exhausted"
        if u.ports.intersection(a.ports.values()):
            return "port collision"
        return ""
