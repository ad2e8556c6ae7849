"""The plan applier: the one serial place where plans become committed allocs.

    scheduler plans (computed on a snapshot) --> re-check against the current state
        (node still schedulable, cpu/memory/ports still free) --> one batched commit
        (each alloc write guarded by its revision; new allocs guarded by "absent")

Many plans are committed in one `txn_many`, so placing thousands of allocs costs
a handful of fsyncs. A placement that no longer fits is dropped, not forced: the
job stays dirty and the next evaluation places it on fresh data.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec

from podium.model.types import Allocation, Plan, Preemption
from podium.server.events import event_put
from podium.server.metrics import ServerMetrics
from podium.server.state import ClusterState, NodeUsage, encode
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


def _freed(state: ClusterState, stops: set[str]) -> dict[str, tuple[int, int]]:
    """cpu and memory that the stops of a batch free, per node, for what the batch places.
    Ports stay bound until the old task has actually exited, so those are not freed."""
    freed: dict[str, tuple[int, int]] = {}
    for alloc_id in stops:
        a = state.allocs.get(alloc_id)
        if a is not None and a.live:
            cpu, memory = freed.get(a.node_id, (0, 0))
            freed[a.node_id] = (cpu + a.resources.cpu, memory + a.resources.memory)
    return freed


class _Pending:
    """One apply's placements that passed the re-check and that the cache does not hold
    yet, and what they hold per node."""

    __slots__ = ("allocs", "usage")

    def __init__(self) -> None:
        self.allocs: dict[str, Allocation] = {}
        self.usage: dict[str, NodeUsage] = defaultdict(NodeUsage)

    def add(self, a: Allocation) -> None:
        self.allocs[a.id] = a
        self.usage[a.node_id].add(a, 1)

    def cached(self, alloc_id: str) -> bool:
        """The cache holds `alloc_id` now: stop counting it here (if it is one of ours)."""
        a = self.allocs.pop(alloc_id, None)
        if a is None:
            return False
        self.usage[a.node_id].add(a, -1)
        return True


def _preemption_events(plan: Plan, pre: Preemption, now: float) -> list[Op]:
    """One event on each side: the job whose alloc stops, and the job that needed room."""
    who = f"{plan.namespace}/{plan.job} (priority {plan.priority})"
    whom = f"{pre.alloc_name} of {pre.namespace}/{pre.job} (priority {pre.priority})"
    return [
        event_put(
            "alloc.preempted",
            f"{pre.alloc_name} (priority {pre.priority}) preempted on {pre.node_name} "
            f"by {who} to place {pre.for_name}",
            namespace=pre.namespace,
            job=pre.job,
            alloc=pre.alloc_id,
            node=pre.node_id,
            now=now,
        ),
        event_put(
            "job.preempted",
            f"{pre.for_name} preempted {whom} on {pre.node_name}",
            namespace=plan.namespace,
            job=plan.job,
            alloc=pre.for_alloc,
            node=pre.node_id,
            now=now,
        ),
    ]


class PlanApplier:
    def __init__(
        self, state: ClusterState, *, max_ops: int = 5000, metrics: ServerMetrics | None = None
    ) -> None:
        self.state = state
        self.max_ops = max_ops
        self.metrics = metrics or ServerMetrics(None)
        # Per apply under way, its placements the cache does not hold yet: a re-check
        # counts them, so a caller may apply the next plans while these are committed,
        # and the placements of one batch see each other. Each apply's table is dropped
        # whole when it ends (its placements are in the cache by then, or not committed).
        self._pending: list[_Pending] = []
        state.add_listener(self._on_change)

    def _on_change(self, prefix: str, old: object | None, new: object | None) -> None:
        # A placement can reach the cache by the watch before its commit is acknowledged
        # (etcd): from then on the cache counts it, so the apply must not count it too.
        # What `_absorb` installs is not told here (quiet): its apply ends right after (but
        # for the rare one-by-one retry of a clashing chunk, which only over-counts a while).
        if old is None and self._pending and prefix == keys.ALLOCS:
            alloc_id = new.id  # type: ignore[union-attr]
            for p in self._pending:
                if p.cached(alloc_id):
                    return

    async def apply(
        self, plans: list[Plan], updates: Iterable[Allocation] = (), *, now: float
    ) -> ApplyResult:
        """Re-check and commit `plans` plus server-side alloc `updates` (e.g. marked lost)."""
        mine = _Pending()
        self._pending.append(mine)
        t0 = time.perf_counter()
        try:
            result = await self._apply(plans, updates, now, mine)
        finally:
            self._pending = [p for p in self._pending if p is not mine]
        m = self.metrics
        if m.on:
            m.applied(
                placed=result.placed,
                batch=result.placed + result.updated + len(result.rejected),
                seconds=time.perf_counter() - t0,
                conflicts=result.conflicts,
            )
            for _, why in result.rejected:
                m.rejected(why)
        return result

    def _absorb(self, allocs: list[Allocation], revision: int) -> None:
        self.state.absorb(allocs, revision, quiet=self._on_change)

    async def _apply(
        self,
        plans: list[Plan],
        updates: Iterable[Allocation],
        now: float,
        mine: _Pending,
    ) -> ApplyResult:
        # The re-check below sees this applier's previous commits without waiting for the
        # watch: `absorb` installed them in the cache the moment the store acknowledged,
        # and those still in flight are counted from `_pending`.
        result = ApplyResult()
        # Merge every change to an existing alloc by id so one txn writes each alloc once.
        changed: dict[str, Allocation] = {a.id: a for a in updates}
        creates: list[Allocation] = []
        events: list[Op] = []
        # What this batch stops frees its room for what this batch places (a replacement
        # on a full node reuses the space of the alloc it replaces).
        freed = _freed(self.state, {s.alloc_id for plan in plans for s in plan.stops})
        for plan in plans:
            stopped: set[str] = set()
            for stop in plan.stops:
                cur = changed.get(stop.alloc_id) or self.state.allocs.get(stop.alloc_id)
                if cur is None or cur.desired_status == "stop":
                    continue
                changed[cur.id] = msgspec.structs.replace(
                    cur, desired_status="stop", desired_reason=stop.reason
                )
                stopped.add(cur.id)
                result.stopped += 1
            for pre in plan.preemptions:
                if pre.alloc_id in stopped:
                    events.extend(_preemption_events(plan, pre, now))
            placed = 0
            for a in plan.placements:
                why = self._recheck(a, freed)
                if why:
                    result.rejected.append((a, why))
                    continue
                mine.add(a)
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
        # New allocs have fresh ids, so a clash is all but impossible: guard a whole chunk
        # in one transaction (one revision, little overhead) and redo a chunk one by one
        # only if it does clash.
        chunks = [creates[i : i + 1000] for i in range(0, len(creates), 1000)]
        txns: list[tuple[list[Compare], list[Op]]] = []
        for chunk in chunks:
            guards: list[Compare] = []
            puts: list[Op] = []
            for a in chunk:
                a.modify_time = now  # fresh objects of this plan: no copy needed
                key = keys.ALLOCS + a.id
                guards.append(Compare(key, "mod_rev", "=", 0))
                puts.append(Put(key, encode(a)))
            txns.append((guards, puts))
        updated = [msgspec.structs.replace(a, modify_time=now) for a in changed.values()]
        for a in updated:
            cur = self.state.allocs.get(a.id)
            rev = cur.revision if cur is not None else a.revision
            txns.append(
                (
                    [Compare(keys.alloc(a.id), "mod_rev", "=", rev)],
                    [Put(keys.alloc(a.id), encode(a))],
                )
            )
        if events:
            txns.append(([], events))
        return await self._commit(txns, chunks, updated, result)

    async def _commit(
        self,
        txns: list[tuple[list[Compare], list[Op]]],
        chunks: list[list[Allocation]],
        updated: list[Allocation],
        result: ApplyResult,
    ) -> ApplyResult:
        store = self.state.store
        results = []
        for i in range(0, len(txns), self.max_ops):
            results.extend(await store.txn_many(txns[i : i + self.max_ops]))
        retry: list[Allocation] = []
        for chunk, r in zip(chunks, results, strict=False):
            if r.succeeded:
                self._absorb(chunk, r.revision)
            else:
                retry.extend(chunk)
        for a, r in zip(updated, results[len(chunks) :], strict=False):
            if r.succeeded:
                self._absorb([a], r.revision)
            else:
                result.conflicts += 1
        for a in retry:
            r = await store.txn(
                [Compare(keys.alloc(a.id), "mod_rev", "=", 0)], [Put(keys.alloc(a.id), encode(a))]
            )
            results.append(r)
            if r.succeeded:
                self._absorb([a], r.revision)
            else:
                result.conflicts += 1
                result.placed -= 1
        result.revision = max((r.revision for r in results), default=0)
        result.updated = len(updated)
        return result

    def _recheck(self, a: Allocation, freed: dict[str, tuple[int, int]]) -> str:
        node_id = a.node_id
        node = self.state.nodes.get(node_id)
        if node is None:
            return "node is gone"
        if node.status != "ready" or not node.eligible or node.drain:  # Node.schedulable
            return f"node is {node.status}{'' if node.eligible else ', ineligible'}"
        held = self.state.usage.get(node_id)
        cpu, memory = (held.cpu, held.memory) if held is not None else (0, 0)
        for pending in self._pending:
            u = pending.usage.get(node_id)
            if u is not None:
                cpu += u.cpu
                memory += u.memory
        if freed and node_id in freed:
            cpu -= freed[node_id][0]
            memory -= freed[node_id][1]
        r = node.resources
        res = a.resources
        if cpu + res.cpu > r.cpu:
            return "cpu exhausted"
        if memory + res.memory > r.memory:
            return "memory exhausted"
        if a.ports:
            for p in a.ports.values():
                if held is not None and p in held.ports:
                    return "port collision"
                for pending in self._pending:
                    u = pending.usage.get(node_id)
                    if u is not None and p in u.ports:
                        return "port collision"
        return ""
