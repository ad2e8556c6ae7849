"""The reconciler: what should change for one job, decided as data (no placement).

    reconcile(job, allocs, nodes, now)
      lost        non-terminal allocs on down or unknown nodes -> client_status lost
                  (on a down node only after the group's disconnect.lost_after)
      stop        job stopped/purged, group removed, count lowered (highest index
                  first), duplicate indexes (newest kept), old version (destructive),
                  migrations off draining nodes (copies the drain controller marked:
                  replacement first, the old copy stops once it is healthy)
      in_place    old-version allocs whose group spec is unchanged (e.g. only count
                  changed): job_version bumped, nothing restarted
      place       missing indexes, each with the alloc it replaces and why
      reschedule / reschedule_later / exhausted   failed allocs, by the group's policy
      updates     every alloc the caller should write (lost, in-place, reschedule_after)
      deployment  a new deployment to create for this job version (service jobs), and
                  deployment_updates: older active deployments it supersedes (cancelled)

Deployments (service groups with update.max_parallel > 0): a new version replaces old
copies at most max_parallel at a time; the next batch waits until the copies placed
so far report deployment-healthy. With update.canary = N, N new copies start beside
the old ones first, and the rest wait for promotion; at promotion the old copies whose
index a canary holds stop, and the others roll. canary = count is blue-green: the
whole new set runs beside the old one, and promotion switches over at once. A paused
or failed deployment replaces nothing more (copies that are missing are still placed).

Indexes name the copies of a group (`web.frontend[2]`). Only live allocs of the
current job version (or with the current group spec hash) satisfy an index.
System jobs want one copy per schedulable node, so their placements are pinned
to a node. Cron and parameterized (dispatch) jobs place nothing themselves: their
runs are child batch jobs (server/periodic.py, server/dispatch.py). Batch groups run
at most `parallelism` copies at once, and a failed one (batch.py: backoff_limit,
active_deadline) has its copies stopped and none placed.
The new alloc's id is not known here: the plan applier links `next_alloc`
from `previous_alloc` (or see `Reconciliation.links`).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

import msgspec

from podium.model.data import rolling_refs
from podium.model.types import (
    Allocation,
    Deployment,
    DeploymentGroup,
    DeploymentStatus,
    DisconnectPolicy,
    Group,
    Job,
    MigrateStrategy,
    Node,
    Plan,
    ReschedulePolicy,
    StopRequest,
    UpdateStrategy,
)
from podium.runtime.backoff import exponential
from podium.scheduler import batch


class Placement(msgspec.Struct, frozen=True, kw_only=True):
    """One copy to place: `group[index]`, replacing `previous` if set."""

    group: str
    index: int
    reason: str = "missing"  # missing | lost | reschedule | update | migrate | canary
    previous: Allocation | None = None
    reschedule_count: int = 0
    reschedule_times: tuple[float, ...] = ()  # see Allocation.reschedule_times
    node_id: str = ""  # pinned to this node (system jobs); "" lets the scheduler choose
    deployment_id: str = ""
    canary: bool = False


@dataclass
class Reconciliation:
    place: list[Placement] = field(default_factory=list)
    stop: list[StopRequest] = field(default_factory=list)
    lost: list[Allocation] = field(default_factory=list)  # updated copies
    in_place: list[Allocation] = field(default_factory=list)  # updated copies
    reschedule: list[Allocation] = field(default_factory=list)  # failed, replaced now
    # alloc id (or "deadline:GROUP", a batch group's active_deadline) -> when to look again
    reschedule_later: dict[str, float] = field(default_factory=dict)
    exhausted: list[Allocation] = field(default_factory=list)  # failed, out of attempts
    deployment: Deployment | None = None  # to create
    deployment_updates: list[Deployment] = field(default_factory=list)  # cancelled ones
    _updates: dict[str, Allocation] = field(default_factory=dict)

    @property
    def updates(self) -> list[Allocation]:
        """Allocs to write as they are (one copy per alloc, changes merged)."""
        return list(self._updates.values())

    @property
    def empty(self) -> bool:
        return not (
            self.place or self.stop or self._updates or self.deployment or self.deployment_updates
        )

    def update(self, alloc: Allocation) -> None:
        self._updates[alloc.id] = alloc

    def current(self, alloc: Allocation) -> Allocation:
        """The alloc with this reconciliation's changes, if any."""
        return self._updates.get(alloc.id, alloc)

    def stop_plan(self, namespace: str, job: str) -> Plan:
        """The plan for a job that is gone: only stops, nothing to schedule."""
        return Plan(namespace=namespace, job=job, job_version=0, stops=list(self.stop))

    def links(self, plan: Plan) -> list[Allocation]:
        """Replaced allocs with `next_alloc` set to their replacement in `plan`."""
        by_id = {p.previous.id: p.previous for p in self.place if p.previous is not None}
        out = []
        for a in plan.placements:
            prev = by_id.get(a.previous_alloc)
            if prev is not None:
                out.append(msgspec.structs.replace(self.current(prev), next_alloc=a.id))
        return out


# Why a copy marked lost is stopped; a copy stopped for this reason alone may run on
# when its node comes back (server/reconnect.py).
LOST_REASON = "alloc lost"


def group_hash(job: Job, group: Group) -> str:
    """What a running copy depends on: the group minus its count, spreads, rollout,
    reschedule, migrate, disconnect and scaling settings (the server's and agent's
    business, not the copy's), plus the versions of the configs and secrets it is replaced
    for (`rolling` reads).
    Equal hashes across versions mean an alloc can be updated in place instead of replaced;
    a config read by a `restart`, `signal` or `noop` template changes in place (the agent acts)."""
    spec: tuple[object, ...] = (
        msgspec.structs.replace(
            group,
            count=0,
            spreads=[],
            update=UpdateStrategy(),
            reschedule=ReschedulePolicy(),
            migrate=MigrateStrategy(),
            disconnect=DisconnectPolicy(),
            scaling=None,
        ),
        job.type,
        job.constraints,
        job.meta,
    )
    rolling = rolling_refs(job.type, group)
    if rolling:
        spec = (*spec, {r: job.config_versions.get(r, 0) for r in rolling})
    return hashlib.sha1(msgspec.json.encode(spec, order="sorted")).hexdigest()[:16]


def reschedule_delay(group: Group, attempt: int) -> float:
    """Delay before reschedule number `attempt + 1` under the group's policy."""
    pol = group.reschedule
    if pol.delay_function == "constant":
        return pol.delay
    return exponential(attempt, base=pol.delay, cap=max(pol.max_delay, pol.delay))


def deployment_id(job: Job) -> str:
    """The same job version submitted at the same time always gets the same deployment id."""
    name = f"{job.namespace}/{job.name}/{job.version}/{job.submit_time!r}"
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


def new_deployment(job: Job, now: float) -> Deployment:
    return Deployment(
        id=deployment_id(job),
        namespace=job.namespace,
        job=job.name,
        job_version=job.version,
        config_versions=dict(job.config_versions),
        status="running",
        status_description="deployment is running",
        create_time=now,
        modify_time=now,
    )


def reconcile(
    job: Job | None,
    allocs: list[Allocation],
    nodes: Mapping[str, Node],
    *,
    now: float,
    deployment: Deployment | None = None,
) -> Reconciliation:
    """`deployment` is the job's latest deployment, if any."""
    rec = Reconciliation()
    # A canonical order: the same allocs in any order give the same decisions.
    allocs = sorted(allocs, key=lambda a: a.id)
    lost: dict[str, Allocation] = {}
    for a in allocs:
        if a.terminal:
            continue
        node = nodes.get(a.node_id)
        if node is not None and node.status == "down" and a.desired_status == "run":
            wait = _lost_after(job, a)
            if wait and now < node.status_time + wait:
                # The group waits for its node to come back: the copy still counts.
                rec.reschedule_later[a.id] = node.status_time + wait
                continue
        if node is None or node.status == "down":
            why = f"node {a.node_name or a.node_id} is {'down' if node else 'gone'}"
            copy = msgspec.structs.replace(
                a,
                client_status="lost",
                client_description=why,
                desired_status="stop",
                desired_reason=a.desired_reason or LOST_REASON,
            )
            rec.lost.append(copy)
            rec.update(copy)
            if a.desired_status == "run":
                lost[a.id] = copy

    if job is None or job.stop:
        why = "job purged" if job is None else "job stopped"
        for a in allocs:
            if a.live and a.id not in lost:
                rec.stop.append(StopRequest(alloc_id=a.id, reason=why))
        if deployment is not None and deployment.active:
            rec.deployment_updates.append(_ended(deployment, "cancelled", why, now))
        return rec
    if job.type == "cron" or job.parameterized is not None:
        for a in allocs:  # e.g. a batch job that became a cron job: its runs are children
            if a.live and a.id not in lost:
                rec.stop.append(StopRequest(alloc_id=a.id, reason="runs are child jobs now"))
        return rec

    # The deployment that governs this version: the stored one, or a new one (kept only
    # if this evaluation rolls something out under it).
    dep = deployment if deployment and deployment.job_version == job.version else None
    fresh = None
    if dep is None and job.type == "service":
        fresh = dep = new_deployment(job, now)

    by_group: dict[str, list[Allocation]] = {}
    for a in allocs:
        by_group.setdefault(a.group, []).append(a)
    for name in sorted(by_group):
        if job.group(name) is None:
            for a in by_group[name]:
                if a.live and a.id not in lost:
                    rec.stop.append(StopRequest(alloc_id=a.id, reason="group removed from job"))
    rolled_out = False
    for g in job.groups:
        grp = _Group(rec, job, g, nodes, now, lost, dep)
        mine = by_group.get(g.name, [])
        if job.type == "system":
            grp.system(mine)
        else:
            grp.counted(mine)
        rolled_out = rolled_out or grp.rolled_out
    if fresh is not None:
        if rolled_out:
            rec.deployment = fresh
        else:  # nothing to roll out: the placements (repairs) belong to no deployment
            rec.place = [msgspec.structs.replace(p, deployment_id="") for p in rec.place]
    if deployment is not None and deployment.active and deployment.job_version != job.version:
        why = f"superseded by job version {job.version}"
        rec.deployment_updates.append(_ended(deployment, "cancelled", why, now))
    return rec


def _ended(d: Deployment, status: DeploymentStatus, why: str, now: float) -> Deployment:
    return msgspec.structs.replace(d, status=status, status_description=why, modify_time=now)


def _newest_first(allocs: list[Allocation]) -> list[Allocation]:
    return sorted(allocs, key=lambda a: (a.create_time, a.id), reverse=True)


class _Group:
    """The decisions for one group of the job."""

    def __init__(
        self,
        rec: Reconciliation,
        job: Job,
        group: Group,
        nodes: Mapping[str, Node],
        now: float,
        lost: dict[str, Allocation],
        deployment: Deployment | None = None,
    ) -> None:
        self.rec, self.job, self.group, self.nodes, self.now = rec, job, group, nodes, now
        self.lost = lost
        self.hash = group_hash(job, group)
        self.rolls = (
            deployment is not None and job.type == "service" and group.update.max_parallel > 0
        )
        self.dep = deployment if self.rolls else None
        self.rolled_out = False  # placed or held back something under the deployment
        self.budget: int | None = None  # batch: copies that may still start (parallelism)

    def is_current(self, a: Allocation) -> bool:
        return a.job_version == self.job.version or (
            bool(a.group_hash) and a.group_hash == self.hash
        )

    def split(self, allocs: list[Allocation]) -> tuple[list[Allocation], list[Allocation]]:
        """(live allocs, predecessors): a predecessor is a terminal alloc not yet replaced
        that still wanted to run (or was just lost), i.e. one a new copy would replace."""
        live, heads = [], []
        for a in allocs:
            if a.id in self.lost:
                heads.append(self.lost[a.id])
            elif a.live:
                live.append(a)
            elif (
                a.terminal
                and not a.next_alloc
                and (a.desired_status == "run" or a.client_status == "lost")
            ):
                heads.append(a)
        return live, heads

    def stop(self, a: Allocation, reason: str) -> None:
        self.rec.stop.append(StopRequest(alloc_id=a.id, reason=reason))

    def place(
        self,
        index: int,
        reason: str,
        previous: Allocation | None = None,
        *,
        reschedule_count: int = 0,
        reschedule_times: tuple[float, ...] = (),
        node_id: str = "",
    ) -> None:
        if self.budget is not None:
            if self.budget <= 0:
                return  # parallelism reached: placed when a running copy finishes
            self.budget -= 1
        dep_id = self.dep.id if self.dep is not None else ""
        if dep_id and reason in ("missing", "update", "canary"):
            self.rolled_out = True
        self.rec.place.append(Placement(
            group=self.group.name, index=index, reason=reason, previous=previous,
            reschedule_count=reschedule_count, reschedule_times=reschedule_times,
            node_id=node_id, deployment_id=dep_id,
            canary=reason == "canary",
        ))  # fmt: skip

    def keep_one(self, live: list[Allocation], what: str) -> Allocation:
        """Keep the best copy (current version, then an original over its replacement: a
        copy whose node came back, then newest); stop the others."""
        originals = {a.previous_alloc for a in live if a.previous_alloc}
        ranked = sorted(
            live,
            key=lambda a: (self.is_current(a), a.id in originals, a.create_time, a.id),
            reverse=True,
        )
        for dup in ranked[1:]:
            self.stop(dup, f"duplicate of {what}")
        return ranked[0]

    def update(self, keep: Allocation, *, node_id: str = "") -> bool:
        """Bring `keep` to the job's version. True when it stays (in place or current)."""
        if keep.job_version == self.job.version:
            return True
        if self.is_current(keep):
            copy = msgspec.structs.replace(keep, job_version=self.job.version)
            self.rec.in_place.append(copy)
            self.rec.update(copy)
            return True
        self.stop(keep, f"replaced by job version {self.job.version}")
        self.place(keep.index, "update", keep, node_id=node_id)
        return False

    def replace(self, index: int, prev: Allocation | None, *, node_id: str = "") -> None:
        """Decide about an index with no live copy, given its latest predecessor."""
        if prev is None:
            self.place(index, "missing", node_id=node_id)
        elif prev.client_status == "lost":
            self.place(index, "lost", prev, reschedule_count=prev.reschedule_count,
                       reschedule_times=tuple(prev.reschedule_times), node_id=node_id)  # fmt: skip
        elif prev.client_status == "complete":
            if self.job.type == "batch" and self.is_current(prev):
                return  # done: a batch copy that succeeded never runs again
            self.place(index, "missing", prev, node_id=node_id)
        elif not self.is_current(prev):
            # A failure of an old version says nothing about the new one.
            self.place(index, "update", prev, node_id=node_id)
        else:
            self.reschedule(index, prev, node_id=node_id)

    def reschedule(self, index: int, prev: Allocation, *, node_id: str) -> None:
        pol = self.group.reschedule
        attempts = prev.reschedule_count
        recent = batch.recent(self.group, prev, self.now)  # within the policy's interval
        if not pol.unlimited and len(recent) >= pol.attempts:
            self.rec.exhausted.append(prev)
            return
        when = prev.reschedule_after
        if not when:
            when = _failed_at(prev, self.now) + reschedule_delay(self.group, attempts)
        if self.now >= when:
            if self.budget is not None and self.budget <= 0:
                return  # parallelism reached: tried again when a running copy finishes
            self.rec.reschedule.append(prev)
            self.place(index, "reschedule", prev, reschedule_count=attempts + 1,
                       reschedule_times=(*recent, self.now), node_id=node_id)  # fmt: skip
            return
        self.rec.reschedule_later[prev.id] = when
        if prev.reschedule_after != when:
            # Stored, so the time does not drift with each evaluation.
            self.rec.update(msgspec.structs.replace(prev, reschedule_after=when))

    # ------------------------------------------------------------- job types

    def counted(self, allocs: list[Allocation]) -> None:
        """service and batch: copies 0..count-1, anywhere."""
        count = self.group.count
        live, heads = self.split(allocs)
        if batch.is_batch(self.job) and not self.batch(allocs, live):
            return
        live_at: dict[int, list[Allocation]] = {}
        for a in live:
            live_at.setdefault(a.index, []).append(a)
        heads_at: dict[int, list[Allocation]] = {}
        for a in heads:
            heads_at.setdefault(a.index, []).append(a)
        for index in sorted(live_at, reverse=True):  # count lowered: highest first
            if not 0 <= index < count:
                for a in _newest_first(live_at[index]):
                    self.stop(a, f"count lowered to {count}")
        roll = _Rollout(self, live) if self.rolls else None
        for index in range(count):
            here = live_at.get(index)
            before = heads_at.get(index)
            prev = _newest_first(before) if before else []
            if here:
                moving = [a for a in here if self.migrating(a)]
                if moving:
                    others = [a for a in here if not self.migrating(a)]
                    self.migrate(index, moving, others, prev[0] if prev else None)
                    continue
                if roll is not None:
                    roll.index(index, here)
                    continue
                keep = self.keep_one(here, f"index {index}")
                self.update(keep)
                continue
            self.replace(index, prev[0] if prev else None)

    def batch(self, allocs: list[Allocation], live: list[Allocation]) -> bool:
        """A batch group's limits; False when it failed (its copies stop, none is placed)."""
        g = self.group
        prog = batch.progress(self.job, g, allocs, self.now)
        if prog.verdict:
            for a in live:
                if a.id not in self.lost:
                    self.stop(a, f"job failed: {prog.verdict}")
            return False
        if prog.deadline and not prog.done:
            # Wake the caller when the deadline passes (keyed by group, not alloc).
            self.rec.reschedule_later[f"deadline:{g.name}"] = prog.deadline
        self.budget = (g.parallelism or g.count) - len(live)
        return True

    def migrating(self, a: Allocation) -> bool:
        """Marked by the drain controller (a few at a time: the group's migrate.max_parallel)."""
        node = self.nodes.get(a.node_id)
        return a.migrate and node is not None and node.drain

    def migrate(
        self,
        index: int,
        moving: list[Allocation],
        others: list[Allocation],
        prev: Allocation | None,
    ) -> None:
        """Move copy `index` off its draining node: the replacement starts first, and the
        old copy stops once the replacement runs healthy. Past the drain deadline, and for
        batch copies (marked only then), the old copy stops at once."""
        old = self.keep_one(moving, f"index {index}")
        node = self.nodes[old.node_id]
        forced = self.job.type == "batch" or bool(
            node.drain_deadline and self.now >= node.drain_deadline
        )
        if others:
            new = self.keep_one(others, f"index {index}")
            stays = self.update(new)
            if forced or (stays and new.client_status == "running" and new.healthy is True):
                self.stop(old, "migrated off draining node")
            return
        if forced:
            self.stop(old, "node draining")
        if old.next_alloc and prev is not None and prev.id == old.next_alloc:
            # Its replacement failed: the group's reschedule policy paces the next try.
            self.replace(index, prev)
            return
        self.place(index, "migrate", old, reschedule_count=old.reschedule_count,
                   reschedule_times=tuple(old.reschedule_times))  # fmt: skip

    def system(self, allocs: list[Allocation]) -> None:
        """system: one copy on every schedulable node; count is ignored."""
        live, heads = self.split(allocs)
        live_on: dict[str, list[Allocation]] = {}
        for a in live:
            live_on.setdefault(a.node_id, []).append(a)
        heads_on: dict[str, list[Allocation]] = {}
        for a in heads:
            heads_on.setdefault(a.node_id, []).append(a)
        used: set[int] = set()  # indexes of the copies that stay
        covered: set[str] = set()
        for node_id in sorted(live_on):
            keep = self.keep_one(live_on[node_id], f"node {node_id}")
            node = self.nodes.get(node_id)
            if node is not None and node.drain:
                self.stop(keep, "node draining")
                continue
            covered.add(node_id)
            used.add(keep.index)
            self.update(keep, node_id=node_id)
        next_index = 0
        for node_id in sorted(self.nodes):
            node = self.nodes[node_id]
            if node_id in covered or not node.schedulable:
                continue
            prev_list = _newest_first(heads_on.get(node_id, []))
            prev = prev_list[0] if prev_list else None
            if prev is not None and prev.index not in used:
                index = prev.index
            else:
                while next_index in used:
                    next_index += 1
                index = next_index
            used.add(index)
            self.replace(index, prev, node_id=node_id)


class _Rollout:
    """A deployment's decisions for one group's indexes that have live copies."""

    def __init__(self, grp: _Group, live: list[Allocation]) -> None:
        assert grp.dep is not None
        self.grp, self.dep = grp, grp.dep
        g = grp.group
        dg = self.dep.groups.get(g.name)
        old = sum(1 for a in live if not grp.is_current(a) and 0 <= a.index < g.count)
        if dg is None:  # a new deployment: canaries only when there is an old version
            dg = DeploymentGroup(
                desired_total=g.count,
                desired_canaries=min(g.update.canary, g.count) if old else 0,
                auto_promote=g.update.auto_promote,
                auto_revert=g.update.auto_revert,
                progress_deadline=g.update.progress_deadline,
                require_progress_by=(
                    grp.now + g.update.progress_deadline if g.update.progress_deadline else 0.0
                ),
            )
            self.dep.groups[g.name] = dg
        self.dg = dg
        members = [a for a in live if grp.is_current(a) and a.deployment_id == self.dep.id]
        self.canaries = sum(1 for a in members if a.canary)
        self.canary_phase = dg.desired_canaries > 0 and not dg.promoted
        running = self.dep.status == "running"
        in_flight = sum(1 for a in members if a.deployment_healthy is not True)
        self.budget = g.update.max_parallel - in_flight if running else 0
        self.may_canary = running

    def index(self, index: int, here: list[Allocation]) -> None:
        grp = self.grp
        current = [a for a in here if grp.is_current(a)]
        old = [a for a in here if not grp.is_current(a)]
        if current:
            keep = grp.keep_one(current, f"index {index}")
            grp.update(keep)
            if old and not (keep.canary and self.canary_phase):
                for a in old:
                    grp.stop(a, f"replaced by job version {grp.job.version}")
            return
        keep = grp.keep_one(old, f"index {index}")
        if self.canary_phase:
            if self.may_canary and self.canaries < self.dg.desired_canaries:
                self.canaries += 1
                grp.place(index, "canary")  # beside `keep`, which stays until promotion
            else:
                grp.rolled_out = True
            return
        if self.budget > 0:
            self.budget -= 1
            grp.stop(keep, f"replaced by job version {grp.job.version}")
            grp.place(index, "update", keep)
            return
        grp.rolled_out = True  # held back: the deployment still has work to do


def _lost_after(job: Job | None, a: Allocation) -> float:
    if job is None or job.stop:
        return 0.0
    group = job.group(a.group)
    return group.disconnect.lost_after if group is not None else 0.0


def _failed_at(a: Allocation, now: float) -> float:
    finished = max((t.finished_at for t in a.task_states.values()), default=0.0)
    return finished or a.modify_time or now
