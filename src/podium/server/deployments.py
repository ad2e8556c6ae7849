"""Deployment writes: new and superseded ones (placement), progress and verdicts
(the deployment controller), and the operator's promote / fail / pause / resume.

Every write is guarded by the revision it read; its event goes in the same transaction.
"""

from __future__ import annotations

import msgspec

from podium.errors import Conflict, NotFound, PodiumError
from podium.model.types import Deployment, DeploymentStatus
from podium.server import jobs as job_ops
from podium.server.events import event_put
from podium.server.state import ClusterState, encode
from podium.store import keys
from podium.store.base import Compare, Op, Put


class InvalidState(PodiumError):
    """The request is well formed but not allowed in the deployment's current state."""

    status_code = 409


def write_ops(
    d: Deployment, message: str, *, create: bool, now: float, kind: str = ""
) -> tuple[list[Compare], list[Op]]:
    """The guarded write of `d` and, with a message, its event: `kind`, or by default
    deployment.created / deployment.<status>."""
    key = keys.deployment(d.namespace, d.job, d.job_version)
    guard = Compare(key, "mod_rev", "=", 0 if create else d.revision)
    body = encode(msgspec.structs.replace(d, modify_time=now, revision=0))
    ops: list[Op] = [Put(key, body)]
    if message:
        kind = kind or ("deployment.created" if create else f"deployment.{d.status}")
        ops.append(event_put(kind, message, namespace=d.namespace, job=d.job, now=now))
    return [guard], ops


def find(state: ClusterState, namespace: str, ref: str) -> Deployment:
    """By job name (its latest deployment), deployment id, or a unique id prefix."""
    latest = state.latest_deployment(namespace, ref)
    if latest is not None:
        return latest
    found = [d for d in state.deployments.values() if d.id.startswith(ref)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise NotFound(f"no deployment {ref!r} (give a job name or a deployment id)")
    raise NotFound(f"deployment id prefix {ref!r} is ambiguous ({len(found)} match)")


def listing(state: ClusterState, namespace: str | None = None) -> list[Deployment]:
    out = [d for d in state.deployments.values() if namespace is None or d.namespace == namespace]
    return sorted(out, key=lambda d: -d.create_time)


async def save(state: ClusterState, d: Deployment, message: str, *, now: float) -> int:
    compares, ops = write_ops(d, message, create=False, now=now)
    res = await state.store.txn(compares, ops)
    if not res.succeeded:
        raise Conflict(f"deployment {d.id[:8]} changed concurrently; retry")
    await state.wait_for(res.revision)
    return res.revision


async def promote(
    state: ClusterState, namespace: str, ref: str, *, groups: list[str] | None, now: float
) -> Deployment:
    d = find(state, namespace, ref)
    if not d.active:
        raise InvalidState(f"deployment {d.id[:8]} is {d.status}; only a running one is promoted")
    waiting = [g for g, dg in d.groups.items() if dg.desired_canaries and not dg.promoted]
    if not waiting:
        raise InvalidState(f"deployment {d.id[:8]} has no canaries waiting for promotion")
    chosen = groups or waiting
    unknown = [g for g in chosen if g not in d.groups]
    if unknown:
        raise NotFound(f"deployment {d.id[:8]} has no group {unknown[0]!r}")
    new_groups = {
        g: msgspec.structs.replace(dg, promoted=True) if g in chosen else dg
        for g, dg in d.groups.items()
    }
    new = msgspec.structs.replace(d, groups=new_groups, status_description="promoted")
    msg = f"canaries of {', '.join(sorted(chosen))} promoted"
    compares, ops = write_ops(new, msg, create=False, now=now, kind="deployment.promoted")
    res = await state.store.txn(compares, ops)
    if not res.succeeded:
        raise Conflict(f"deployment {d.id[:8]} changed concurrently; retry")
    await state.wait_for(res.revision)
    return state.deployments.get(_cache_key(d), new)


async def set_status(
    state: ClusterState,
    namespace: str,
    ref: str,
    status: DeploymentStatus,
    *,
    why: str,
    now: float,
) -> Deployment:
    """fail | pause | resume (status "running") by an operator."""
    d = find(state, namespace, ref)
    if not d.active:
        raise InvalidState(f"deployment {d.id[:8]} is already {d.status}")
    if d.status == status:
        return d
    new = msgspec.structs.replace(d, status=status, status_description=why)
    stable = None
    if status == "failed" and any(dg.auto_revert for dg in d.groups.values()):
        stable = await job_ops.last_stable(state, d.namespace, d.job, before=d.job_version)
        if stable is not None:
            new.reverted_to = stable.version
            why += f"; rolling back to version {stable.version}"
    await save(state, new, why, now=now)
    job = state.jobs.get(d.key)
    if stable is not None and job is not None and job.version == d.job_version:
        await job_ops.revert(
            state, d.namespace, d.job, stable.version, now=now,
            submitted_by="podium (auto-revert)",
            why=f"rollback: deployment {d.id[:8]} failed", check_index=job.revision,
        )  # fmt: skip
    return state.deployments.get(_cache_key(d), new)


def _cache_key(d: Deployment) -> str:
    return keys.deployment(d.namespace, d.job, d.job_version)[len(keys.DEPLOYMENTS) :]
