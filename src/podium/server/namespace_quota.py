"""Namespace quotas at admission: a job version whose copies would take its namespace past
its quota is refused (403) before anything is written, as Kubernetes' ResourceQuota does;
running copies are never touched.

    job register / revert / scale / dispatch ─► admit(state, job)
        used: live allocs of the namespace's OTHER jobs (cpu, memory, count) and its jobs
        asked: the job's groups, count x resources (system jobs: x ready nodes)
        used + asked > quota (any figure) ─► Forbidden naming the quota, the request, the use

`usage` is what `podium namespace status` shows; the autoscaler's limit
(server/quotas.py) asks `room_for`.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from podium.errors import Forbidden
from podium.model.tenancy import Namespace, Quota
from podium.model.types import Group, Job, PlacementFailure
from podium.scheduler.reconcile import Placement, Reconciliation
from podium.server.state import ClusterState
from podium.store import keys


@dataclass(frozen=True)
class Usage:
    cpu: int = 0
    memory: int = 0
    allocs: int = 0
    jobs: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.cpu + other.cpu,
            self.memory + other.memory,
            self.allocs + other.allocs,
            self.jobs + other.jobs,
        )


FIGURES = (("cpu", "MHz"), ("memory", "MB"), ("allocs", "allocations"), ("jobs", "jobs"))


def usage(state: ClusterState, namespace: str, *, excluding: str = "") -> Usage:
    """What a namespace's live allocs and running jobs hold (but the job `excluding`)."""
    cpu = memory = allocs = 0
    for a in state.allocs.values():
        if a.live and a.namespace == namespace and f"{a.namespace}/{a.job}" != excluding:
            cpu += a.resources.cpu
            memory += a.resources.memory
            allocs += 1
    jobs = sum(
        1
        for j in state.jobs.values()
        if j.namespace == namespace and not j.stop and j.key != excluding
    )
    return Usage(cpu, memory, allocs, jobs)


def _copies(state: ClusterState, job: Job, group: Group) -> int:
    if job.type == "system":
        return sum(1 for n in state.nodes.values() if n.status == "ready") or 1
    return group.count


def asked(state: ClusterState, job: Job) -> Usage:
    """What a job's version holds once every copy runs."""
    if job.stop:
        return Usage()
    cpu = memory = allocs = 0
    for g in job.groups:
        n = _copies(state, job, g)
        r = g.resources()
        cpu, memory, allocs = cpu + n * r.cpu, memory + n * r.memory, allocs + n
    return Usage(cpu, memory, allocs, 1)


async def quota_of(state: ClusterState, namespace: str) -> Quota | None:
    kv = await state.store.get(keys.namespace(namespace))
    if kv is None:
        return None
    return msgspec.json.decode(kv.value, type=Namespace).quota


def excess(quota: Quota, used: Usage, want: Usage) -> list[str]:
    """Each figure the quota would be passed on, said with what was asked and what is used."""
    out = []
    for field, unit in FIGURES:
        limit = getattr(quota, field)
        if limit and getattr(used, field) + getattr(want, field) > limit:
            out.append(
                f"{field}: quota {limit} {unit}, {getattr(used, field)} in use by other jobs, "
                f"this job asks {getattr(want, field)}"
            )
    return out


async def admit(state: ClusterState, job: Job, *, current: Job | None = None) -> None:
    """Refuse `job` (this version, whole) when it would take its namespace past its quota.
    Only what grows is held to it: a version asking no more than `current` (the version it
    replaces) passes, so a namespace over a lowered quota can still shrink."""
    quota = await quota_of(state, job.namespace)
    if quota is None or job.stop:
        return
    want = asked(state, job)
    if current is not None and not current.stop:
        before = asked(state, current)
        quota = msgspec.structs.replace(
            quota,
            **{
                f: 0
                for f, _ in FIGURES
                if getattr(want, f) <= getattr(before, f)  # not growing: no limit on it
            },
        )
    over = excess(quota, usage(state, job.namespace, excluding=job.key), want)
    if over:
        raise Forbidden(
            f"job {job.name!r} would exceed the quota of namespace {job.namespace!r}: "
            + "; ".join(over)
        )


def room_for(state: ClusterState, quota: Quota | None, job: Job, group: Group) -> int | None:
    """The most copies `group` may have under `quota` with everything else as it is (None:
    no limit), for the autoscaler."""
    if quota is None:
        return None
    others = usage(state, job.namespace, excluding=job.key)
    rest = asked(
        state, msgspec.structs.replace(job, groups=[g for g in job.groups if g.name != group.name])
    )
    used = others + rest
    r = group.resources()
    limits = []
    for limit, have, each in (
        (quota.cpu, used.cpu, r.cpu),
        (quota.memory, used.memory, r.memory),
        (quota.allocs, used.allocs, 1),
    ):
        if limit and each:
            limits.append(max(0, (limit - have) // each))
    return min(limits) if limits else None


class QuotaGate:
    """The placement controller's side: copies a round would add beyond a namespace's quota
    (a reschedule, a replacement, a scale the autoscaler made) are held back, pending, with
    the reason as a placement failure (`job status`) and a `job.quota_held` event."""

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self.quotas: dict[str, Quota] = {}
        self._used: dict[str, Usage] = {}
        self.held: set[str] = set()  # job keys held back in the last round

    async def load(self) -> None:
        """The quotas, read once per round (and the round's running sums reset)."""
        kvs, _ = await self.state.store.list(keys.NAMESPACES)
        self.quotas = {}
        for kv in kvs:
            try:
                ns = msgspec.json.decode(kv.value, type=Namespace)
            except msgspec.DecodeError:
                continue
            if ns.quota is not None:
                self.quotas[ns.name] = ns.quota
        self.state.quotas = dict(self.quotas)
        self._used = {}

    def hold(self, job: Job, rec: Reconciliation) -> list[PlacementFailure]:
        """Trim `rec.place` to what the quota leaves; one failure per group held back."""
        quota = self.quotas.get(job.namespace)
        if quota is None or not rec.place:
            return []
        ns = job.namespace
        used = self._used.get(ns) or usage(self.state, ns)
        kept: list[Placement] = []
        held: dict[str, int] = {}
        why = ""
        for p in rec.place:
            if p.previous is not None and p.previous.live:
                kept.append(p)  # takes a live copy's place: the namespace holds no more
                continue
            g = job.group(p.group)
            r = g.resources() if g is not None else None
            would = used + Usage(r.cpu if r else 0, r.memory if r else 0, 1, 0)
            over = [
                f"{field} quota {getattr(quota, field)} {unit}, {getattr(used, field)} in use"
                for field, unit in FIGURES[:3]
                if getattr(quota, field) and getattr(would, field) > getattr(quota, field)
            ]
            if over:
                held[p.group] = held.get(p.group, 0) + 1
                why = why or over[0]
                continue
            used = would
            kept.append(p)
        self._used[ns] = used
        rec.place = kept
        return [
            PlacementFailure(
                group=group,
                unplaced=n,
                message=f"held by the quota of namespace {ns!r}: {why}",
            )
            for group, n in held.items()
        ]
