"""A config or secret change, rolled out like a deploy: each job that reads it gets a new
version pinning the new one, and the usual machinery does the rest.

    job submit ──► resolve(): the current version of everything the job reads, pinned in
                   `config_versions` (a missing one is a validation error, with its path)
    put ──► roll_out(kind, ns, path) ──► each job of ns (not stopped) that reads it:
              job_ops.register(the same spec, config_versions[ref] = the new version)
                ─ groups that read it through a `rolling` template (or env, in a service)
                  get a new spec hash: a deployment under their `update` policy, health
                  gated; auto_revert returns to the last stable job version, and so to the
                  config version it pinned
                ─ other groups are updated in place: the agent re-renders and restarts,
                  signals or leaves the task (change_mode)
            ──► the head marked rolled_out; a put whose rollout a crash cut short is
                finished by RolloutController on the leader
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import msgspec

from podium.errors import Conflict, NotFound, Problem, StoreError, ValidationError
from podium.model import data as datamodel
from podium.model.types import Job
from podium.runtime.clock import Clock
from podium.scheduler.reconcile import deployment_id, group_hash
from podium.server import configs
from podium.server import jobs as job_ops
from podium.server.state import ClusterState, encode
from podium.store import keys
from podium.store.base import Compare, Put
from podium.templates.jobs import path_of, sites

log = logging.getLogger(__name__)

SWEEP_EVERY = 5.0  # seconds between the leader's looks for rollouts a crash cut short


async def resolve(state: ClusterState, job: Job) -> Job:
    """`job` with `config_versions` pinning the current version of each thing it reads."""
    wanted: dict[str, str] = {}  # ref -> where it is read (for errors)
    for at, template in sites(job):
        for r in template.reads:
            if datamodel.is_data_ref(r):
                wanted.setdefault(r, path_of(at))
    for gi, g in enumerate(job.groups):
        for ti, t in enumerate(g.tasks):
            for name, r in datamodel.env_refs(t).items():
                wanted.setdefault(r, f"groups[{gi}].tasks[{ti}].env.{name}")
    versions: dict[str, int] = {}
    problems: list[Problem] = []
    for r, where in sorted(wanted.items()):
        kind, path = datamodel.parse_ref(r)
        found = await configs.head(state, kind, job.namespace, path)
        if found is None:
            problems.append(
                Problem(
                    where,
                    f"{kind} {path!r} does not exist in namespace {job.namespace!r} "
                    f"(podium {kind} put {path} ...)",
                )
            )
        else:
            versions[r] = found.version
    if problems:
        raise ValidationError(problems)
    return msgspec.structs.replace(job, config_versions=versions)


async def roll_out(
    state: ClusterState, kind: datamodel.Kind, ns: str, path: str, *, now: float
) -> list[dict[str, Any]]:
    """Move every job that reads `path` to its current version; mark the head rolled out.
    Returns, per job moved: {job, version, deployment_id}."""
    head = await configs.head(state, kind, ns, path)
    if head is None:
        return []
    ref = datamodel.ref(kind, path)
    moved: list[dict[str, Any]] = []
    for job in configs.users(state, kind, ns, path):
        for _ in range(5):
            current = state.jobs.get(job.key)
            if (
                current is None
                or current.stop
                or current.config_versions.get(ref) in (None, head.version)
            ):
                break
            pinned = {**current.config_versions, ref: head.version}
            try:
                stored, changed = await job_ops.register(
                    state,
                    msgspec.structs.replace(current, config_versions=pinned),
                    now=now,
                    check_index=current.revision,
                    submitted_by=f"podium ({kind} {path})",
                    why=f"{kind} {path} version {head.version}",
                )
            except Conflict:
                await asyncio.sleep(0.05)  # the job changed meanwhile: read it again
                continue
            if changed:
                moved.append(_moved(current, stored))
            break
    done = msgspec.structs.replace(head, rolled_out=True, revision=0)
    head_key = keys.data_head(kind, ns, path)
    await state.store.txn(
        [Compare(head_key, "mod_rev", "=", head.revision)], [Put(head_key, encode(done))]
    )
    return moved


def _moved(old: Job, new: Job) -> dict[str, Any]:
    """What a new version does: the groups replaced (as a deployment, for a service with a
    rolling update policy, whose id is known before the placement controller makes it)."""
    replaced = [
        g.name
        for g in new.groups
        if (before := old.group(g.name)) is not None
        and group_hash(old, before) != group_hash(new, g)
    ]
    rolls = new.type == "service" and any(
        g.update.max_parallel > 0 for g in new.groups if g.name in replaced
    )
    return {
        "job": new.name,
        "version": new.version,
        "replaced_groups": replaced,
        "deployment_id": deployment_id(new) if rolls else "",
    }


def describe_change(old: dict[str, int], new: dict[str, int]) -> str:
    """ "config:db/settings 5 -> 4" for each pin that differs (for rollback events)."""
    return ", ".join(
        f"{r} {new.get(r, '-')} -> {old.get(r, '-')}"
        for r in sorted(set(old) | set(new))
        if old.get(r) != new.get(r)
    )


class RolloutController:
    """Leader-only: finishes the rollout of any put whose rollout did not complete."""

    def __init__(self, state: ClusterState, clock: Clock, *, every: float = SWEEP_EVERY) -> None:
        self.state = state
        self.clock = clock
        self.every = every

    async def run(self) -> None:
        await self.state.ready.wait()
        while True:
            with contextlib.suppress(StoreError, NotFound):
                await self.sweep()
            await asyncio.sleep(self.every)

    async def sweep(self) -> None:
        for kind in datamodel.KINDS:
            kvs, _ = await self.state.store.list(keys.data_heads(kind))
            for kv in kvs:
                if b'"rolled_out":true' in kv.value:
                    continue  # the usual case, told without decoding
                record = configs.decode(kind, kv)
                if not record.rolled_out:
                    log.info(
                        "finishing the rollout of %s %s version %d",
                        kind,
                        record.path,
                        record.version,
                    )
                    await roll_out(
                        self.state, kind, record.namespace, record.path, now=self.clock.now()
                    )
