"""Job writes: register a new version, stop, purge, launch a child run; and the job
summary the CLI shows.

Every write states the revision it read; a lost race is a Conflict (409). A cron or
dispatch run is a child job NAME/periodic-<time> or NAME/dispatch-<time>-<id>: a batch
job of its own (`parent` names the job it came from), created once (its key guarded
absent), stopped and purged with its parent.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import msgspec

from podium.errors import Conflict, NotFound, Problem, ValidationError
from podium.model import spec as jobspec
from podium.model.cron import next_time
from podium.model.types import Allocation, Job
from podium.scheduler import batch
from podium.server import namespace_quota
from podium.server.events import event_put
from podium.server.state import ClusterState, encode
from podium.store import keys
from podium.store.base import Compare, Delete, Op, Put

log = logging.getLogger(__name__)


def spec_of(job: Job) -> dict[str, Any]:
    """The user's part of a job: what decides whether a submit is a change."""
    return jobspec.user_spec(job)


def keep_scaled_counts(current: Job | None, job: Job) -> Job:
    """`job` with the count each autoscaled group has now (within its new min..max): a new
    version of the job does not undo what the autoscaler did; `count` in a job file is
    where an autoscaled group starts."""
    if current is None or current.stop:
        return job
    groups = []
    for g in job.groups:
        now = current.group(g.name)
        if g.scaling is not None and now is not None and now.scaling is not None:
            count = max(g.scaling.min, min(g.scaling.max, now.count))
            g = msgspec.structs.replace(g, count=count)
        groups.append(g)
    return msgspec.structs.replace(job, groups=groups)


async def register(
    state: ClusterState,
    job: Job,
    *,
    now: float,
    check_index: int | None = None,
    submitted_by: str = "",
    why: str = "",
    guards: Sequence[Compare] = (),
    also: Sequence[Op] = (),
    counts: bool = False,
) -> tuple[Job, bool]:
    """Store `job` as a new version unless it equals the current one. Returns (job, changed).

    An autoscaled group keeps its count unless `counts` (a scale: the counts are the
    change). `guards` and `also` join the same transaction (the autoscaler's record and
    event)."""
    current = state.jobs.get(job.key)
    if not counts:
        job = keep_scaled_counts(current, job)
    read_rev = current.revision if current is not None else 0
    version = current.version + 1 if current is not None else 0
    bad = state.bad_values.get(keys.job(job.namespace, job.name))
    if current is None and bad is not None:
        # The stored record does not decode: this submit replaces it, as the next version.
        read_rev = bad[0]
        version = await _next_version(state, job.namespace, job.name)
    if check_index is not None and check_index != read_rev:
        raise Conflict(
            f"job {job.name!r} changed since the plan (plan index {check_index}, "
            f"current index {read_rev}); run `podium job plan` again"
        )
    if (
        current is not None
        and not current.stop
        and spec_of(current) == spec_of(job)
        and current.config_versions == job.config_versions
    ):
        return current, False
    await namespace_quota.admit(state, job, current=current)
    new = msgspec.structs.replace(
        job,
        version=version,
        stop=False,
        submit_time=now,
        submitted_by=submitted_by,
        stable=False,
        parent="",
        payload="",
        revision=0,
    )
    body = encode(new)
    ops: list[Op] = [
        Put(keys.job(job.namespace, job.name), body),
        Put(keys.job_version(job.namespace, job.name, version), body),
        event_put(
            "job.registered",
            f"version {version} registered" + (f": {why}" if why else ""),
            namespace=job.namespace,
            job=job.name,
            now=now,
        ),
        *also,
    ]
    res = await state.store.txn(
        [Compare(keys.job(job.namespace, job.name), "mod_rev", "=", read_rev), *guards], ops
    )
    if not res.succeeded:
        raise Conflict(f"job {job.name!r} was changed concurrently; read it again and retry")
    await state.wait_for(res.revision)
    return state.jobs.get(job.key, new), True


async def _next_version(state: ClusterState, namespace: str, name: str) -> int:
    kvs, _ = await state.store.list(keys.job_versions(namespace, name))
    numbers = [int(kv.key.rsplit("/", 1)[1]) for kv in kvs if kv.key.rsplit("/", 1)[1].isdigit()]
    return max(numbers, default=-1) + 1


async def stop(state: ClusterState, namespace: str, name: str, *, purge: bool, now: float) -> int:
    """Mark the job stopped (its allocs stop), or purge it from the store entirely."""
    current = state.jobs.get(f"{namespace}/{name}")
    if current is None:
        raise NotFound(f"no job {name!r} in namespace {namespace!r}")
    key = keys.job(namespace, name)
    ops: list[Op]
    guards = [Compare(key, "mod_rev", "=", current.revision)]
    # A parent's runs go with it (purged, or stopped if they still run).
    kids = children(state, current)
    if purge:
        ops = [
            Delete(key),
            Delete(keys.job_versions(namespace, name), prefix=True),
            Delete(keys.periodic(namespace, name)),
            Delete(keys.scaling(namespace, name)),
            event_put("job.purged", "job purged", namespace=namespace, job=name, now=now),
        ]
        for kid in kids:
            guards.append(Compare(keys.job(namespace, kid.name), "mod_rev", "=", kid.revision))
            ops += [
                Delete(keys.job(namespace, kid.name)),
                Delete(keys.job_versions(namespace, kid.name), prefix=True),
            ]
    else:
        stopped = msgspec.structs.replace(current, stop=True, revision=0)
        ops = [
            Put(key, encode(stopped)),
            event_put("job.stopped", "job stopped", namespace=namespace, job=name, now=now),
        ]
        for kid in kids:
            if not kid.stop:
                guards.append(Compare(keys.job(namespace, kid.name), "mod_rev", "=", kid.revision))
                kid_stopped = msgspec.structs.replace(kid, stop=True, revision=0)
                ops.append(Put(keys.job(namespace, kid.name), encode(kid_stopped)))
    res = await state.store.txn(guards, ops)
    if not res.succeeded:
        raise Conflict(f"job {name!r} was changed concurrently; retry")
    await state.wait_for(res.revision)
    return res.revision


async def revert(
    state: ClusterState,
    namespace: str,
    name: str,
    version: int,
    *,
    now: float,
    submitted_by: str = "",
    why: str = "",
    check_index: int | None = None,
) -> tuple[Job, bool]:
    """Submit version `version`'s spec again, as a new version."""
    current = state.jobs.get(f"{namespace}/{name}")
    if current is None:
        raise NotFound(f"no job {name!r} in namespace {namespace!r}")
    kv = await state.store.get(keys.job_version(namespace, name, version))
    if kv is None:
        raise NotFound(f"job {name!r} has no version {version}")
    old = msgspec.json.decode(kv.value, type=Job)
    return await register(
        state,
        old,
        now=now,
        check_index=current.revision if check_index is None else check_index,
        submitted_by=submitted_by,
        why=why or f"revert to version {version}",
    )


async def scale(
    state: ClusterState,
    namespace: str,
    name: str,
    group: str,
    count: int,
    *,
    now: float,
    submitted_by: str = "",
) -> tuple[Job, bool]:
    """A new version with one group's count changed (applied in place: nothing restarts)."""
    current = state.jobs.get(f"{namespace}/{name}")
    if current is None or current.stop:
        raise NotFound(f"no running job {name!r} in namespace {namespace!r}")
    found = current.group(group)
    if found is None:
        names = ", ".join(g.name for g in current.groups)
        raise NotFound(f"job {name!r} has no group {group!r} (groups: {names})")
    bounds = found.scaling
    if bounds is not None and not bounds.min <= count <= bounds.max:
        raise ValidationError(
            [
                Problem(
                    "count",
                    f"group {group!r} scales itself between {bounds.min} and {bounds.max}; "
                    f"expected a count in that range, got {count}",
                )
            ]
        )
    groups = [
        msgspec.structs.replace(g, count=count) if g.name == group else g for g in current.groups
    ]
    return await register(
        state,
        msgspec.structs.replace(current, groups=groups),
        now=now,
        check_index=current.revision,
        submitted_by=submitted_by,
        why=f"scale {group} to {count}",
        counts=True,
    )


async def mark_stable(state: ClusterState, namespace: str, name: str, version: int) -> None:
    """Record that `version` deployed healthy: the version an automatic rollback returns to."""
    vkey = keys.job_version(namespace, name, version)
    kv = await state.store.get(vkey)
    if kv is None:
        return
    stored = msgspec.json.decode(kv.value, type=Job)
    if stored.stable:
        return
    # Only the version record: the job's own key (and so a plan's index) does not change.
    await state.store.txn(
        [Compare(vkey, "mod_rev", "=", kv.mod_rev)],
        [Put(vkey, encode(msgspec.structs.replace(stored, stable=True)))],
    )  # lost a race: the next evaluation tries again


async def last_stable(state: ClusterState, namespace: str, name: str, *, before: int) -> Job | None:
    for j in await versions(state, namespace, name):
        if j.version < before and j.stable:
            return j
    return None


async def versions(state: ClusterState, namespace: str, name: str) -> list[Job]:
    kvs, _ = await state.store.list(keys.job_versions(namespace, name))
    out = []
    for kv in kvs:
        try:
            j = msgspec.json.decode(kv.value, type=Job)
        except msgspec.DecodeError as e:
            log.error("stored job version %s does not decode, skipped: %s", kv.key, e)
            continue
        j.revision = kv.mod_rev
        out.append(j)
    if not out:
        raise NotFound(f"no job {name!r} in namespace {namespace!r}")
    return sorted(out, key=lambda j: -j.version)


def children(state: ClusterState, parent: Job) -> list[Job]:
    """The runs a cron or dispatch job launched, oldest first."""
    if parent.type != "cron" and parent.parameterized is None:
        return []
    prefix = parent.key + "/"
    kids = [j for k, j in state.jobs.items() if k.startswith(prefix) and j.parent == parent.name]
    return sorted(kids, key=lambda j: (j.submit_time, j.name))


def child_job(parent: Job, name: str, *, now: float, meta: dict[str, str], payload: str) -> Job:
    """A run of `parent`: a batch job of its own, version 0, launched now."""
    return msgspec.structs.replace(
        parent,
        name=name,
        type="batch",
        schedule="",
        periodic=None,
        parameterized=None,
        meta={**parent.meta, **meta},
        version=0,
        stop=False,
        submit_time=now,
        stable=False,
        parent=parent.name,
        payload=payload,
        revision=0,
    )


def launch_ops(child: Job, message: str, *, now: float) -> tuple[list[Compare], list[Op]]:
    """The guarded writes that create a run: only if no job of that name exists yet, so a
    run launched twice (a retry, two leaders) is created once."""
    body = encode(child)
    key = keys.job(child.namespace, child.name)
    return (
        [Compare(key, "mod_rev", "=", 0)],
        [
            Put(key, body),
            Put(keys.job_version(child.namespace, child.name, 0), body),
            event_put(
                "job.launched", message, namespace=child.namespace, job=child.parent, now=now
            ),
        ],
    )


def status_of(job: Job, allocs: list[Allocation], *, now: float = 0.0) -> str:
    """Derived, never stored: pending | running | complete | failed | dead (a batch job
    fails per batch.progress); a cron or dispatch parent is running (or suspended); a
    service whose groups all scaled themselves to 0 is sleeping (a request wakes it)."""
    if job.stop:
        return "dead"
    if job.periodic is not None and job.periodic.suspend:
        return "suspended"
    if job.type == "cron" or job.parameterized is not None:
        return "running"
    current = [a for a in allocs if a.job_version == job.version]
    if job.type == "batch":
        progs = [batch.progress(job, g, _of(allocs, g.name), now) for g in job.groups]
        if progs and all(p.done for p in progs):
            return "complete"
        if any(p.verdict for p in progs):
            return "failed"
    if any(a.client_status == "running" for a in current):
        return "running"
    if job.groups and all(g.count == 0 and g.scaling is not None for g in job.groups):
        return "sleeping"
    return "pending"


def _of(allocs: list[Allocation], group: str) -> list[Allocation]:
    return [a for a in allocs if a.group == group]


def summary(
    state: ClusterState, job: Job, *, now: float = 0.0, rows: RowCache | None = None
) -> dict[str, Any]:
    """The job, its groups' counts, its allocs and its latest deployment (their rows
    from `rows` when given).

    A group's pending/running/healthy/unhealthy count every live copy, whatever its
    version (during a rollout the old copies serve too); `versions` splits them by
    version. complete/failed/lost count the current version's copies. `settled` counts
    the current version's copies healthy without a break for min_healthy_time."""
    allocs = state.allocs_of_job(job.namespace, job.name)
    groups: dict[str, dict[str, Any]] = {}
    parent = job.type == "cron" or job.parameterized is not None  # runs nothing itself
    for g in job.groups:
        mine = _of(allocs, g.name)
        wanted = [a for a in mine if a.desired_status == "run"]
        current = [a for a in wanted if a.job_version == job.version]
        serving = [a for a in wanted if a.client_status in ("pending", "running")]
        counts = {s: 0 for s in ("pending", "running", "complete", "failed", "lost")}
        for a in serving:
            counts[a.client_status] += 1
        for a in current:
            if a.client_status not in ("pending", "running"):
                counts[a.client_status] += 1
        versions: dict[int, dict[str, int]] = {}
        for a in serving:
            v = versions.setdefault(a.job_version, {"pending": 0, "running": 0, "healthy": 0})
            v[a.client_status] += 1
            v["healthy"] += a.client_status == "running" and a.healthy is True
        groups[g.name] = {
            "desired": 0 if job.stop or parent else g.count,
            **counts,
            "healthy": sum(1 for a in serving if a.healthy and a.client_status == "running"),
            "unhealthy": sum(1 for a in serving if a.healthy is False),
            "settled": sum(
                1
                for a in current
                if a.client_status == "running"
                and a.healthy_since
                and now - a.healthy_since >= g.update.min_healthy_time
            ),
            "restarts": sum(ts.restarts for a in serving for ts in a.task_states.values()),
            "versions": {str(v): c for v, c in sorted(versions.items(), reverse=True)},
        }
        if batch.is_batch(job):
            prog = batch.progress(job, g, mine, now)
            groups[g.name] |= {
                "completions": prog.completions,
                "parallelism": g.parallelism or g.count,
                "progress": prog.line(),
                "failed_reason": prog.verdict,
            }
    failures = state.placement_failures.get(job.key, [])
    dep = state.latest_deployment(job.namespace, job.name)
    kids = [
        {
            "name": k.name,
            "status": status_of(k, state.allocs_of_job(k.namespace, k.name), now=now),
            "submit_time": k.submit_time,
        }
        for k in children(state, job)
    ]
    return {
        "deployment": msgspec.to_builtins(dep) if dep is not None else None,
        "job": msgspec.to_builtins(job),
        "status": status_of(job, allocs, now=now),
        "children": kids,
        "next_run": _next_run(job, now),
        "groups": groups,
        "allocations": rows.get(state, job) if rows else [alloc_row(a) for a in allocs],
        "placement_failures": msgspec.to_builtins(failures),
    }


def _next_run(job: Job, now: float) -> float | None:
    """When a cron job's next run is due (None: not a running cron job)."""
    p = job.periodic
    if p is None or job.stop or p.suspend:
        return None
    return next_time(p, max(now, job.submit_time))


class RowCache:
    """Each job's alloc rows, encoded, as of the last change to one of its allocs
    (ClusterState.job_index): a job status read many times between two changes of its
    allocs builds and encodes its thousand rows once (that was two thirds of a read).
    Bounded by `max_bytes`, the job read least recently dropped first."""

    def __init__(self, *, max_bytes: int = 64 << 20) -> None:
        self.max_bytes = max_bytes
        self._rows: OrderedDict[str, tuple[int, msgspec.Raw]] = OrderedDict()
        self._bytes = 0

    def get(self, state: ClusterState, job: Job) -> msgspec.Raw:
        key = job.key
        index = state.job_index.get(key, 0)
        hit = self._rows.get(key)
        if hit is not None and hit[0] == index:
            self._rows.move_to_end(key)
            return hit[1]
        rows = [alloc_row(a) for a in state.allocs_of_job(job.namespace, job.name)]
        raw = msgspec.Raw(encode(rows))
        self._drop(key)
        self._rows[key] = (index, raw)
        self._bytes += len(raw)
        while self._bytes > self.max_bytes and len(self._rows) > 1:
            self._drop(next(iter(self._rows)))
        return raw

    def _drop(self, key: str) -> None:
        gone = self._rows.pop(key, None)
        if gone is not None:
            self._bytes -= len(gone[1])


def alloc_row(a: Allocation) -> dict[str, Any]:
    # Runs once per alloc of a job status (a thousand a call): the sums only when there
    # is something to sum.
    ts = a.task_states
    return {
        "id": a.id,
        "namespace": a.namespace,
        "job": a.job,
        "group": a.group,
        "name": f"{a.job}.{a.group}[{a.index}]",  # Allocation.name
        "node_id": a.node_id,
        "node_name": a.node_name,
        "job_version": a.job_version,
        "desired_status": a.desired_status,
        "desired_reason": a.desired_reason,
        "migrate": a.migrate,
        "client_status": a.client_status,
        "client_description": a.client_description,
        "healthy": a.healthy,
        "healthy_since": a.healthy_since,
        "deployment_id": a.deployment_id,
        "ports": a.ports,
        "restarts": sum(t.restarts for t in ts.values()) if ts else 0,
        "pids": {name: t.pid for name, t in ts.items()} if ts else {},
        "previous_alloc": a.previous_alloc,
        "next_alloc": a.next_alloc,
        "create_time": a.create_time,
        "modify_time": a.modify_time,
    }
