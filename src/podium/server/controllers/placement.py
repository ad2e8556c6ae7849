"""The placement controller: for each job whose world changed, decide and commit.

    state listener marks jobs dirty (job, its allocs, or a node they use changed)
      -> reconcile(job, allocs, nodes)  what should change, as data (pure)
      -> schedule(snapshot, job, rec)   where new allocs go, or why not (pure); a copy that
                                      fits nowhere may preempt lower-priority allocs
      -> PlanApplier                    re-check and commit, batched across jobs

It also wakes on its own for delayed work (a failed alloc's reschedule time) and
sweeps every job periodically, so a missed notification costs seconds, not forever.
Jobs marked by a change go before those a sweep marked (all of them at a server's
start): a job submitted while a large cluster is swept waits for one round, not for
the sweep (on a million allocs, that was ten rounds).

A round is seconds of work on a large cluster, on the event loop that also renews the
leader's lease and takes heartbeats: it runs in slices (runtime/slices.py), giving the
loop a turn every 10 ms of work (benchmarks/scheduler.py measures the longest hold).

The cluster snapshot the scheduler places on is built once, at the first round (in
slices too), and then kept by the same listener, change by change: a round costs what
it places, not what the cluster holds (rebuilding it from a million allocs took a
second a round). Changes that arrive while it is being built are taken in once it is.
Each round takes its plans into it before they are committed, so the next jobs see
them; at the round's end what was not committed after all (rejected by the applier,
lost a race) is taken back out, and a round that fails drops the snapshot whole.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

from podium.model.types import Allocation, Deployment, Job, Node, Plan
from podium.runtime.backoff import Backoff
from podium.runtime.clock import Clock
from podium.runtime.slices import Slicer
from podium.scheduler import ClusterSnapshot, Reconciliation, reconcile, schedule_into
from podium.scheduler.preempt import Candidate
from podium.server.deployments import write_ops
from podium.server.events import event_put
from podium.server.metrics import ServerMetrics
from podium.server.namespace_quota import QuotaGate
from podium.server.plan_apply import ApplyResult, PlanApplier
from podium.server.state import ClusterState
from podium.store import keys
from podium.store.base import Compare, Op

log = logging.getLogger(__name__)

_SNAPSHOT_STEP = 1000  # nodes or allocs added to a round's snapshot between looks at the clock


@dataclass
class PlacementSettings:
    debounce: float = 0.01  # gather changes that arrive together into one evaluation round
    sweep_interval: float = 5.0
    batch_jobs: int = 200
    # Within a round, plans are committed every `commit_every` placements, and that
    # commit overlaps scheduling the rest of the round (the store writes on its own core).
    commit_every: int = 2000
    max_inflight: int = 2
    # Seconds of a round's work between turns given to the rest of the event loop
    # (None: runtime.slices.SLICE).
    slice: float | None = None


async def cluster_snapshot(state: ClusterState, slicer: Slicer) -> ClusterSnapshot:
    """The cluster as of one moment (one copy of the cache's nodes and allocs; allocs no
    longer live are left out) read into a scheduling snapshot a thousand at a time, the
    event loop given its turns by `slicer`: on a large cluster this alone takes a good
    part of a second."""
    nodes = list(state.nodes.values())
    allocs = list(state.allocs.values())
    snapshot = ClusterSnapshot()
    for i in range(0, len(nodes), _SNAPSHOT_STEP):
        for n in nodes[i : i + _SNAPSHOT_STEP]:
            snapshot.upsert_node(n)
        await slicer.tick()
    for i in range(0, len(allocs), _SNAPSHOT_STEP):
        for a in allocs[i : i + _SNAPSHOT_STEP]:
            snapshot.add_alloc(a)
        await slicer.tick()
    return snapshot


class PlacementController:
    def __init__(
        self,
        state: ClusterState,
        clock: Clock,
        settings: PlacementSettings | None = None,
        *,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self.state = state
        self.clock = clock
        self.settings = settings or PlacementSettings()
        self.metrics = metrics or ServerMetrics(None)
        self.applier = PlanApplier(state, metrics=self.metrics)
        self.quotas = QuotaGate(state)  # namespaces' quotas hold back what would pass them
        self._dirty: set[str] = set()
        self._swept: set[str] = set()  # marked by a sweep only: after the changed ones
        self._wake = asyncio.Event()
        self._later: dict[str, float] = {}  # job key -> earliest time it has delayed work
        self._placing: set[str] = set()  # the job keys of the round under way
        self._retry = Backoff(base=0.25, cap=5.0)  # after a failed evaluation
        # Nodes and live allocs as the scheduler sees them, kept by _on_change once built
        # (None: built at the next round); while it is being built, the changes that
        # arrive wait in _missed.
        self._snapshot: ClusterSnapshot | None = None
        self._missed: list[tuple[str, object | None, object | None]] | None = None
        state.add_listener(self._on_change)

    def _on_change(self, prefix: str, old: object | None, new: object | None) -> None:
        if self._snapshot is not None:
            self._take_in(self._snapshot, prefix, old, new)
        elif self._missed is not None:  # being built: taken in once it is
            self._missed.append((prefix, old, new))
        obj = new if new is not None else old
        if prefix == keys.ALLOCS and isinstance(obj, Allocation):  # the common case first
            if old is None:
                key = f"{obj.namespace}/{obj.job}"
                # A new alloc of a job this controller is placing right now is one of its
                # own placements: the decision that made it already counts it.
                if key not in self._placing:
                    self._mark(key)
            elif _alloc_matters(old, new):  # type: ignore[arg-type]
                self._mark(f"{obj.namespace}/{obj.job}")
                if isinstance(old, Allocation) and old.live and not obj.live and new is not None:
                    # Room freed: jobs that could not be placed (or were preempted) may fit.
                    for key in self.state.placement_failures:
                        self._mark(key)
        elif prefix == keys.JOBS and isinstance(obj, Job):
            self._mark(obj.key)
        elif prefix == keys.DEPLOYMENTS and isinstance(obj, Deployment):
            self._mark(obj.key)  # promoted, paused, resumed, failed: the rollout moves
        elif prefix == keys.NODES and isinstance(obj, Node) and _node_changed(old, new):
            for a in self.state.allocs_of_node(obj.id):
                self._mark(f"{a.namespace}/{a.job}")
            # New capacity may unblock jobs that could not be placed.
            for key in self.state.placement_failures:
                self._mark(key)
            # A node that joins (or becomes schedulable) is owed a copy of each system job.
            for job in self.state.jobs.values():
                if job.type == "system":
                    self._mark(job.key)

    def _take_in(
        self, snap: ClusterSnapshot, prefix: str, old: object | None, new: object | None
    ) -> None:
        """Keep the snapshot as the cache: one change of an alloc or a node."""
        obj = new if new is not None else old
        if prefix == keys.ALLOCS and isinstance(obj, Allocation):
            if old is None:
                # A new alloc of a job this controller is placing right now is one of its
                # own placements: the snapshot holds it already.
                if f"{obj.namespace}/{obj.job}" not in self._placing:
                    snap.add_alloc(obj)
            elif new is None:
                snap.remove_alloc(obj)
            elif old.live or obj.live:  # type: ignore[attr-defined]
                snap.add_alloc(obj)  # an alloc no longer live is taken out
        elif prefix == keys.NODES and isinstance(obj, Node):
            if new is None:
                snap.remove_node(obj.id)
            else:
                snap.upsert_node(obj)

    def victims(self, node_id: str) -> list[Candidate]:
        return victims(self.state, node_id)

    def _mark(self, job_key: str) -> None:
        self._dirty.add(job_key)
        self._wake.set()

    async def run(self) -> None:
        await self.state.ready.wait()
        self._swept.update(self.state.jobs)
        self._swept.update(k for k, ids in self.state.by_job.items() if ids)  # purged jobs
        self._wake.set()
        last_sweep = self.clock.monotonic()
        while True:
            timeout = self.settings.sweep_interval
            if self._later:
                timeout = max(0.0, min(timeout, min(self._later.values()) - self.clock.now()))
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass
            await asyncio.sleep(self.settings.debounce)
            self._wake.clear()
            now = self.clock.now()
            for key, t in list(self._later.items()):
                if t <= now:
                    self._later.pop(key)
                    self._dirty.add(key)
            if self.clock.monotonic() - last_sweep >= self.settings.sweep_interval:
                last_sweep = self.clock.monotonic()
                self._swept.update(self.state.jobs)
            self.metrics.pending_jobs.set(len(self._dirty) + len(self._swept))
            if self._dirty or self._swept:
                await self.evaluate_dirty()
                self.metrics.pending_jobs.set(len(self._dirty) + len(self._swept))

    def _next_batch(self) -> list[str]:
        """Up to `batch_jobs` jobs to evaluate: those a change marked first."""
        size, dirty, swept = self.settings.batch_jobs, self._dirty, self._swept
        batch = [dirty.pop() for _ in range(min(len(dirty), size))]
        swept.difference_update(batch)
        batch += [swept.pop() for _ in range(min(len(swept), size - len(batch)))]
        return batch

    async def evaluate_dirty(self) -> None:
        while self._dirty or self._swept:
            batch = self._next_batch()
            try:
                await self.evaluate(batch)
                self._retry.reset()
            except Exception:
                # Retryable by construction: put the work back and let the next round try.
                log.exception("evaluation of %d jobs failed; will retry", len(batch))
                self._dirty.update(batch)
                await asyncio.sleep(self._retry.next())
                return

    async def snapshot(self, slicer: Slicer | None = None) -> ClusterSnapshot:
        """The controller's snapshot of the cluster, read from the cache in slices if it
        has none (the changes that arrive meanwhile are taken in after)."""
        if self._snapshot is None:
            self._missed = []
            try:
                snap = await cluster_snapshot(self.state, slicer or Slicer())
                for prefix, old, new in self._missed:
                    self._take_in(snap, prefix, old, new)
            finally:
                self._missed = None
            self._snapshot = snap
        return self._snapshot

    async def evaluate(self, job_keys: list[str]) -> None:
        await self.quotas.load()
        now = self.clock.now()
        # The round works in slices, giving the event loop a turn every `slice` seconds:
        # the leader's lease keepalive and the heartbeats share it, and a round over a
        # large cluster is seconds of work.
        slicer = Slicer(budget=self.settings.slice)
        # Each plan is taken into the snapshot, so the plans still in flight to the store
        # are counted when the next jobs are placed.
        snapshot = await self.snapshot(slicer)
        round_ = _Round(job_keys)
        self._placing = set(job_keys)
        try:
            await self._evaluate(round_, snapshot, now, slicer)
        except BaseException:
            for task in round_.inflight:  # their outcome no longer matters: the jobs
                task.add_done_callback(_ignore)  # go back to dirty
            self._snapshot = None  # it may hold plans never committed: build it anew
            raise
        finally:
            self._placing = set()
        self._settle_snapshot(snapshot, round_)
        if round_.revision:
            await self.state.wait_for(round_.revision)
        self.state.rounds["placement"] += 1

    def _settle_snapshot(self, snapshot: ClusterSnapshot, round_: _Round) -> None:
        """Take back out of the snapshot what the round's plans did not commit: placements
        the cache does not hold, stops of allocs still live."""
        allocs = self.state.allocs
        for plan in round_.plans:
            for a in plan.placements:
                if a.id not in allocs:
                    snapshot.remove_alloc_id(a.id)
            for stop in plan.stops:
                cur = allocs.get(stop.alloc_id)
                if cur is not None and cur.live:
                    snapshot.add_alloc(cur)

    async def _evaluate(
        self, round_: _Round, snapshot: ClusterSnapshot, now: float, slicer: Slicer
    ) -> None:
        # Decide every job first; the deployments those decisions start or end are written
        # in one commit, before any alloc names them and before scheduling begins.
        decided: list[tuple[str, Job | None, Reconciliation]] = []
        for key in round_.job_keys:
            ns, _, name = key.partition("/")
            job = self.state.jobs.get(key)
            if job is None and keys.job(ns, name) in self.state.bad_values:
                # Its record does not decode: not a purge. Its copies are left alone until
                # the job is readable again (submitted anew).
                continue
            allocs = self.state.allocs_of_job(ns, name)
            deployment = self.state.latest_deployment(ns, name)
            rec = reconcile(job, allocs, self.state.nodes, now=now, deployment=deployment)
            decided.append((key, job, rec))
            await slicer.tick()
        lost = await self._write_deployments(decided, now)
        plans: list[Plan] = []
        updates: list[Allocation] = []
        quota_events: list[Op] = []
        placements = 0
        timing = self.metrics.scheduling if self.metrics.on else None
        for key, job, rec in decided:
            t0 = time.perf_counter()
            if key in lost:
                self._dirty.add(key)  # lost a race: decide again on fresh data
                continue
            updates.extend(rec.updates)
            if rec.reschedule_later:
                self._later[key] = min(rec.reschedule_later.values())
            ns, _, name = key.partition("/")
            held = self.quotas.hold(job, rec) if job is not None else []
            if job is not None:
                eval_id = f"{key}@{uuid.uuid4()}"
                # Taken into the round's snapshot at once: the plans in flight count for
                # the next jobs.
                plan = schedule_into(
                    snapshot, job, rec, eval_id=eval_id, now=now, preempt=self.victims
                )
            else:
                plan = rec.stop_plan(ns, name)
                snapshot.apply(plan)
            if held:
                plan.failures.extend(held)
                if key not in self.quotas.held:
                    quota_events.append(
                        event_put(
                            "job.quota_held",
                            "; ".join(f.message for f in held),
                            namespace=ns,
                            job=name,
                            now=now,
                        )
                    )
                self.quotas.held.add(key)
            else:
                self.quotas.held.discard(key)
            while snapshot.index_adopted(_SNAPSHOT_STEP):  # a lookup would do it at once
                await slicer.tick()
            if plan.failures:
                self.state.placement_failures[key] = plan.failures
            else:
                self.state.placement_failures.pop(key, None)
            if timing is not None:
                timing.observe(time.perf_counter() - t0)
            if not plan.empty:
                plans.append(plan)
                placements += len(plan.placements)
            if placements >= self.settings.commit_every:
                await self._commit(round_, plans, updates, now)
                plans, updates, placements = [], [], 0
            else:
                await slicer.tick()
        await self._commit(round_, plans, updates, now)
        while round_.inflight:
            await self._settle(round_)
        if quota_events:
            await self.state.store.txn([], quota_events)

    async def _commit(
        self, round_: _Round, plans: list[Plan], updates: list[Allocation], now: float
    ) -> None:
        """Start committing `plans` and return as soon as the store has them, so the caller
        schedules on while they are written. Up to `max_inflight` commits are under way
        (the store writes one while the next waits its turn); beyond that, the oldest is
        waited for."""
        while len(round_.inflight) >= self.settings.max_inflight:
            await self._settle(round_)
        if not plans and not updates:
            return
        round_.plans.extend(plans)
        round_.inflight.append(asyncio.create_task(self.applier.apply(plans, updates, now=now)))
        await asyncio.sleep(0)  # the applier re-checks and hands the batch to the store now

    async def _settle(self, round_: _Round) -> None:
        """Wait for the oldest commit in flight and note what it could not place."""
        result = await round_.inflight.popleft()
        for a, why in result.rejected:
            log.info("placement of %s on %s rejected: %s", a.name, a.node_name, why)
            self._dirty.add(f"{a.namespace}/{a.job}")
        if result.conflicts:
            self._dirty.update(round_.job_keys)
        round_.revision = max(round_.revision, result.revision)

    async def _write_deployments(
        self, decided: list[tuple[str, Job | None, Reconciliation]], now: float
    ) -> set[str]:
        """Create each job version's deployment (and cancel those it supersedes), all in
        one commit. Returns the jobs whose writes lost a race (a guard failed)."""
        txns: list[tuple[list[Compare], list[Op]]] = []
        owner: list[str] = []
        for key, _, rec in decided:
            for d in rec.deployment_updates:
                txns.append(write_ops(d, d.status_description, create=False, now=now))
                owner.append(key)
            new = rec.deployment
            if new is not None:
                groups = ", ".join(
                    f"{g}: {dg.desired_total} copies"
                    + (f", {dg.desired_canaries} canaries" if dg.desired_canaries else "")
                    for g, dg in new.groups.items()
                )
                msg = f"deployment {new.id[:8]} for version {new.job_version} ({groups})"
                txns.append(write_ops(new, msg, create=True, now=now))
                owner.append(key)
        if not txns:
            return set()
        results = await self.state.store.txn_many(txns)
        await self.state.wait_for(max(r.revision for r in results))
        return {key for key, r in zip(owner, results, strict=True) if not r.succeeded}


def victims(state: ClusterState, node_id: str) -> list[Candidate]:
    """The live allocs on a node with their jobs' priorities (what preemption may stop)."""
    jobs = state.jobs
    out = []
    for a in state.allocs_of_node(node_id):
        if a.live:
            job = jobs.get(f"{a.namespace}/{a.job}")
            out.append(Candidate(a, job.priority if job is not None else 0))
    return out


@dataclass
class _Round:
    """One evaluation round's commits: those in flight, oldest first, and the newest
    revision committed."""

    job_keys: list[str]
    inflight: deque[asyncio.Task[ApplyResult]] = field(default_factory=deque)
    revision: int = 0
    plans: list[Plan] = field(default_factory=list)  # every plan sent to the applier


def _ignore(task: asyncio.Task[ApplyResult]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log it as never retrieved


def _alloc_matters(old: Allocation | None, new: Allocation | None) -> bool:
    """Only changes that can alter a decision wake the controller (not check flaps)."""
    if old is None or new is None:
        return True
    return (
        old.client_status != new.client_status
        or old.desired_status != new.desired_status
        or old.node_id != new.node_id
        or old.next_alloc != new.next_alloc
        or old.deployment_healthy != new.deployment_healthy
    )


def _node_changed(old: object | None, new: object | None) -> bool:
    if not isinstance(old, Node) or not isinstance(new, Node):
        return True
    return (
        old.status != new.status
        or old.eligible != new.eligible
        or old.drain != new.drain
        or old.resources != new.resources
        or old.drivers != new.drivers
        or old.labels != new.labels
    )
