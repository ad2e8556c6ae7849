"""The deployment controller: watches each running deployment and gives its verdict.

    alloc / deployment changes, and a timer for deadlines
      -> count, per group, the copies the deployment placed (placed, unhealthy) and the
         healthy copies of the version (those it placed, and those kept in place)
      -> a copy unhealthy, or no progress before progress_deadline: failed, and with
         auto_revert the job goes back to its last stable version (a new version)
      -> canaries all healthy and auto_promote: promoted
      -> every copy of every group on the new version and healthy: successful, and the
         version is marked stable

A round judges only the deployments whose job, allocs or record changed since, and those
whose next deadline (a copy's healthy_deadline, a group's progress_deadline) has come:
a change to one alloc must not re-read every deployment's copies (100 rollouts of 1,000
copies each held the event loop for 100 ms per alloc change). Every `sweep` seconds it
judges them all, in slices, in case a change was missed.

The placement controller starts deployments and rolls batches; this one only judges.
The agents give each copy's verdict (deployment_healthy) and its reason, which the
failure message quotes; a copy whose agent says nothing by its healthy_deadline (plus
a little) counts as unhealthy here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import msgspec

from podium.model.types import Allocation, Deployment, DeploymentGroup, Job
from podium.runtime.backoff import Backoff
from podium.runtime.clock import Clock
from podium.runtime.ids import short_alloc
from podium.runtime.slices import Slicer
from podium.server import jobs as job_ops
from podium.server.config_rollout import describe_change
from podium.server.deployments import write_ops
from podium.server.state import ClusterState
from podium.store import keys

log = logging.getLogger(__name__)


@dataclass
class DeploymentSettings:
    tick: float = 1.0  # longest sleep between looks for deadlines that came
    agent_grace: float = 1.0  # past a copy's healthy_deadline before the server calls it
    sweep: float = 30.0  # every running deployment judged at least this often


@dataclass
class Verdict:
    deployment: Deployment
    message: str = ""  # the event's text
    kind: str = ""  # the event's type: deployment.progress | promoted | failed | successful
    revert_to: Job | None = None


class DeploymentController:
    def __init__(
        self, state: ClusterState, clock: Clock, settings: DeploymentSettings | None = None
    ) -> None:
        self.state = state
        self.clock = clock
        self.settings = settings or DeploymentSettings()
        self._wake = asyncio.Event()
        self._dirty: set[str] = set()  # job keys whose deployment may have moved
        self._due: dict[str, float] = {}  # job key -> its deployment's next deadline
        state.add_listener(self._on_change)

    def _on_change(self, prefix: str, old: object | None, new: object | None) -> None:
        obj = new if new is not None else old
        if isinstance(obj, Allocation | Deployment):
            # Any copy of the job counts (kept copies too), so any alloc change marks it.
            self._dirty.add(f"{obj.namespace}/{obj.job}")
            self._wake.set()
        elif isinstance(obj, Job) and prefix == keys.JOBS:
            self._dirty.add(obj.key)
            self._wake.set()

    async def run(self) -> None:
        await self.state.ready.wait()
        backoff = Backoff(base=0.25, cap=5.0)
        last_sweep = -float("inf")
        while True:
            timeout = self.settings.tick
            if self._due:
                timeout = max(0.0, min(timeout, min(self._due.values()) - self.clock.now()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(0.01)  # gather changes that arrive together
            sweep = self.clock.monotonic() - last_sweep >= self.settings.sweep
            if sweep:
                last_sweep = self.clock.monotonic()
            try:
                await self.evaluate(everything=sweep)
                self.state.rounds["deployments"] += 1
                backoff.reset()
            except Exception:
                log.exception("deployment evaluation failed; will retry")
                await asyncio.sleep(backoff.next())

    async def evaluate(self, *, everything: bool = True) -> None:
        """Judge the running deployments of the jobs marked since the last round and of
        those whose deadline came (`everything`: all of them)."""
        now = self.clock.now()
        due = [k for k, t in self._due.items() if t <= now]
        keys_ = set(self._dirty) | set(due)
        self._dirty.clear()
        for k in due:
            self._due.pop(k, None)
        if everything:
            found = [d for d in self.state.deployments.values() if d.active]
        else:
            found = [
                d
                for k in keys_
                for d in self.state.deployments_of_job(*k.split("/", 1))
                if d.active
            ]
        slicer = Slicer()
        try:
            while found:
                d = found.pop()
                await self._judge(d, now)
                await slicer.tick()
        except BaseException:
            self._dirty.update(d.key for d in found)  # not judged yet: next round
            raise

    async def _judge(self, d: Deployment, now: float) -> None:
        job = self.state.jobs.get(d.key)
        if job is None or job.version != d.job_version:
            return  # superseded: the placement controller cancels it
        allocs = self.state.allocs_of_job(d.namespace, d.job)
        due = next_deadline(d, job, allocs, now=now, agent_grace=self.settings.agent_grace)
        if due is not None:
            self._due[d.key] = min(due, self._due.get(d.key, due))
        v = judge(d, job, allocs, now=now, agent_grace=self.settings.agent_grace)
        if v is None:
            return
        if v.deployment.status == "failed" and any(
            dg.auto_revert for dg in v.deployment.groups.values()
        ):
            stable = await job_ops.last_stable(self.state, d.namespace, d.job, before=d.job_version)
            if stable is not None:
                v.deployment.reverted_to = stable.version
                v.message += f"; rolling back to version {stable.version}"
                moved = describe_change(stable.config_versions, job.config_versions)
                if moved:
                    v.message += f" (back to {moved})"
                v.revert_to = stable
            else:
                v.message += "; no stable version to roll back to"
            v.deployment.status_description = v.message
        await self._commit(d, v, job, now)

    async def _commit(self, d: Deployment, v: Verdict, job: Job, now: float) -> None:
        compares, ops = write_ops(v.deployment, v.message, create=False, now=now, kind=v.kind)
        res = await self.state.store.txn(compares, ops)
        if not res.succeeded:
            self._dirty.add(d.key)  # read again
            self._wake.set()
            return
        await self.state.wait_for(res.revision)
        if v.deployment.status == "successful":
            await job_ops.mark_stable(self.state, d.namespace, d.job, d.job_version)
        if v.revert_to is not None:
            try:
                await job_ops.revert(
                    self.state,
                    d.namespace,
                    d.job,
                    v.revert_to.version,
                    now=now,
                    submitted_by="podium (auto-revert)",
                    why=f"automatic rollback: deployment {d.id[:8]} failed",
                    check_index=job.revision,
                )
            except Exception as e:  # the job changed meanwhile: the user's word wins
                log.info("auto-revert of %s skipped: %s", d.key, e)


def next_deadline(
    d: Deployment, job: Job, allocs: list[Allocation], *, now: float, agent_grace: float = 1.0
) -> float | None:
    """The next time after `now` at which `judge` could answer differently with nothing
    else changed: a group's progress deadline, or an undecided copy's healthy deadline."""
    times: list[float] = []
    for name, dg in d.groups.items():
        g = job.group(name)
        if g is None:
            continue
        if dg.require_progress_by > now:
            times.append(dg.require_progress_by)
        grace = g.update.healthy_deadline + agent_grace
        times.extend(
            a.create_time + grace
            for a in allocs
            if a.deployment_id == d.id
            and a.group == name
            and a.deployment_healthy is None
            and a.desired_status == "run"
            and a.create_time
            and a.create_time + grace > now
        )
    # judge() compares with `>`: look just after the deadline.
    return min(times) + 0.001 if times else None


def judge(
    d: Deployment, job: Job, allocs: list[Allocation], *, now: float, agent_grace: float = 1.0
) -> Verdict | None:
    """The deployment's next state, or None when nothing changed. Pure."""
    groups: dict[str, DeploymentGroup] = {}
    failure = ""
    done = True
    for name, dg in d.groups.items():
        g = job.group(name)
        if g is None:
            continue
        members = [a for a in allocs if a.deployment_id == d.id and a.group == name]
        healthy = [a for a in members if a.deployment_healthy is True]
        # Copies this version kept (updated in place, e.g. after a count change) are not
        # the deployment's to judge, but they are healthy copies of the version: counted.
        kept = sum(
            1
            for a in allocs
            if a.group == name
            and a.deployment_id != d.id
            and a.job_version == job.version
            and a.live
            and a.client_status == "running"
            and a.healthy is True
        )
        unhealthy = [
            a
            for a in members
            if a.deployment_healthy is False
            or (
                a.deployment_healthy is None
                and a.desired_status == "run"
                and a.create_time
                and now > a.create_time + g.update.healthy_deadline + agent_grace
            )
        ]
        new = msgspec.structs.replace(
            dg, placed=len(members), healthy=len(healthy) + kept, unhealthy=len(unhealthy)
        )
        if new.healthy > dg.healthy and dg.progress_deadline:
            new.require_progress_by = now + dg.progress_deadline
        canaries_healthy = sum(1 for a in healthy if a.canary and a.desired_status == "run")
        if (
            dg.desired_canaries
            and not dg.promoted
            and dg.auto_promote
            and canaries_healthy >= dg.desired_canaries
            and d.status == "running"
        ):
            new.promoted = True
        groups[name] = new
        if unhealthy and not failure:
            a = unhealthy[0]
            if a.deployment_health_description:  # the agent's verdict, with its reason
                why = a.deployment_health_description
            elif a.client_status == "failed":
                why = a.client_description
            else:
                deadline = g.update.healthy_deadline
                why = f"no verdict from its node within healthy_deadline {deadline:g}s"
            failure = f"alloc {short_alloc(a.id)} ({a.name}) unhealthy: {why}"
        if (
            not failure
            and d.status == "running"
            and new.require_progress_by
            and now > new.require_progress_by
            and not _group_done(d, job, name, new, allocs)
        ):
            failure = (
                f"group {name}: no progress within progress_deadline {dg.progress_deadline:g}s"
            )
        done = done and _group_done(d, job, name, new, allocs)
    status, message = d.status, ""
    if failure:
        status, message = "failed", failure
    elif done and d.status == "running":
        status, message = "successful", "every copy on the new version is healthy"
    description = message or d.status_description
    if status == d.status and groups == d.groups and description == d.status_description:
        return None
    kind = f"deployment.{status}"
    if not message and any(
        groups[n].promoted and not d.groups[n].promoted for n in groups if n in d.groups
    ):
        message, kind = "canaries healthy: promoted automatically", "deployment.promoted"
    if not message:
        kind = "deployment.progress"
        changed = [
            f"{n}: {g.healthy}/{g.desired_total} healthy"
            for n, g in groups.items()
            if d.groups.get(n) is None or d.groups[n].healthy != g.healthy
        ]
        message = "; ".join(changed)
        description = d.status_description
    new_d = msgspec.structs.replace(d, status=status, status_description=description, groups=groups)
    if status == "failed":
        new_d.status_description = message
    return Verdict(new_d, message, kind)


def _group_done(
    d: Deployment, job: Job, name: str, dg: DeploymentGroup, allocs: list[Allocation]
) -> bool:
    g = job.group(name)
    if g is None:
        return True
    if dg.desired_canaries and not dg.promoted:
        return False
    mine = [a for a in allocs if a.group == name and a.live]
    current = [a for a in mine if a.job_version == job.version]
    if len(mine) != g.count or len(current) != g.count:
        return False
    return all(
        a.client_status == "running"
        and (a.deployment_healthy is True if a.deployment_id == d.id else a.healthy is not False)
        for a in current
    )
