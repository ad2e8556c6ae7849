"""The periodic controller: cron jobs launch their runs, each exactly once.

    for each cron job (not stopped, not suspended):
      read its cursor (/periodic/NS/NAME: the scheduled time it last handled) and the
        store revision; the cache catches up to that revision before deciding
      each time T the schedules name after the cursor, up to now, oldest first:
        started later than starting_deadline           -> skipped (event)
        concurrency forbid and an earlier run still runs -> skipped (event)
        concurrency replace                              -> earlier runs stopped, then:
        launched: the child job NAME/periodic-<T> created
      one transaction per T: the cursor moves to T (guarded by the revision read) with
        the child created (guarded absent), so a run is never started twice nor lost
      purge finished runs beyond successful_history / failed_history

The cursor starts at the job version's submit time: a new version (a new schedule, or
`suspend: false` again) does not catch up on runs due before it. After downtime (a
restart, a leader change) runs missed meanwhile start late, at most MAX_CATCH_UP of
them (older ones are skipped with one event), unless starting_deadline skips them.
Its writes go through the leader's fenced store, as every controller's do.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from dataclasses import dataclass

import msgspec

from podium.errors import Conflict, NotFound, Problem, ValidationError
from podium.model.cron import next_time, time_zone
from podium.model.types import Job, Periodic
from podium.runtime.clock import Clock
from podium.server import jobs as job_ops
from podium.server.events import event_put
from podium.server.state import ClusterState, encode
from podium.store import keys
from podium.store.base import Compare, Get, Op, Put

log = logging.getLogger(__name__)

MAX_CATCH_UP = 5  # missed runs started after downtime, at most (the newest ones)
_SCAN = 1000  # scheduled times looked at per job and tick (bounded work on the leader)


class Cursor(msgspec.Struct, kw_only=True):
    """What the controller stores per cron job."""

    time: float = 0.0  # the scheduled time last launched or skipped
    child: str = ""  # the last run launched


@dataclass
class PeriodicSettings:
    max_sleep: float = 5.0  # look again at least this often (a missed wake costs this)


def due_times(periodic: Periodic, after: float, now: float) -> list[float]:
    """Scheduled times in (after, now], oldest first (at most _SCAN of them)."""
    out: list[float] = []
    t = after
    while len(out) < _SCAN:
        t = next_time(periodic, t)
        if t > now:
            break
        out.append(t)
    return out


def run_name(job: Job, t: float) -> str:
    return f"{job.name}/periodic-{int(t)}"


class PeriodicController:
    def __init__(
        self, state: ClusterState, clock: Clock, settings: PeriodicSettings | None = None
    ) -> None:
        self.state = state
        self.clock = clock
        self.settings = settings or PeriodicSettings()
        self._wake = asyncio.Event()
        state.add_listener(self._on_change)

    def _on_change(self, prefix: str, old: object | None, new: object | None) -> None:
        obj = new if new is not None else old
        if prefix == keys.JOBS and isinstance(obj, Job) and obj.type == "cron":
            self._wake.set()

    async def run(self) -> None:
        await self.state.ready.wait()
        while True:
            self._wake.clear()
            try:
                wake_at = await self.tick()
            except Exception:
                log.exception("periodic launch failed; will retry")
                wake_at = self.clock.now() + 1.0
            delay = min(self.settings.max_sleep, max(0.0, wake_at - self.clock.now()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def tick(self) -> float:
        """Launch (or skip) every run due now; return when the next one is due."""
        now = self.clock.now()
        wake_at = now + self.settings.max_sleep
        for job in sorted(self.state.jobs.values(), key=lambda j: j.key):
            if job.type != "cron" or job.stop or job.periodic is None:
                continue
            if not job.periodic.suspend:
                wake_at = min(wake_at, await self._job(job, now))
            await self._purge_history(job, now)
        return wake_at

    async def _job(self, job: Job, now: float) -> float:
        assert job.periodic is not None
        key = keys.periodic(job.namespace, job.name)
        for _ in range(5):  # a lost race re-reads; more than a few means something is wrong
            res = await self.state.store.txn([], [Get(key)])
            kv = res.reads[0][0] if res.reads[0] else None
            cursor = msgspec.json.decode(kv.value, type=Cursor) if kv is not None else Cursor()
            # Decide on a cache that holds everything committed up to this read.
            await self.state.wait_for(res.revision)
            current = self.state.jobs.get(job.key)
            if current is None or current.stop or current.periodic is None:
                return now + self.settings.max_sleep
            job, periodic = current, current.periodic
            start = max(cursor.time, job.submit_time)
            due = due_times(periodic, start, now)
            if not due:
                return next_time(periodic, start)
            try:
                await self._handle(job, key, kv.mod_rev if kv else 0, cursor, due, now)
            except Conflict:
                continue
            return now  # handled one step: look again at once
        raise Conflict(f"cron job {job.key}: its launch state keeps changing")

    async def _handle(
        self, job: Job, key: str, rev: int, cursor: Cursor, due: list[float], now: float
    ) -> None:
        """One step: the oldest due run launched or skipped, or an old backlog skipped."""
        assert job.periodic is not None
        periodic = job.periodic
        guards = [Compare(key, "mod_rev", "=", rev)]
        ev = (job, now)
        if len(due) > MAX_CATCH_UP:
            skipped = due[:-MAX_CATCH_UP]
            moved = Cursor(time=skipped[-1], child=cursor.child)
            message = (
                f"{len(skipped)} runs missed while no server launched them skipped "
                f"(the newest {MAX_CATCH_UP} start)"
            )
            await self._commit(guards, [Put(key, encode(moved)), _event("skipped", message, ev)])
            return
        t = due[0]
        late = now - t
        when = _show(t, periodic)
        moved = Cursor(time=t, child=cursor.child)
        if periodic.starting_deadline and late > periodic.starting_deadline:
            message = (
                f"run due at {when} skipped: {late:.1f}s late, more than starting_deadline "
                f"{periodic.starting_deadline:g}s"
            )
            await self._commit(guards, [Put(key, encode(moved)), _event("skipped", message, ev)])
            return
        running = [
            k
            for k in job_ops.children(self.state, job)
            if not k.stop
            and job_ops.status_of(k, self.state.allocs_of_job(k.namespace, k.name), now=now)
            in ("pending", "running")
        ]
        ops: list[Op] = []
        if running and periodic.concurrency == "forbid":
            names = ", ".join(k.name for k in running)
            message = f"run due at {when} skipped: {names} still running (concurrency forbid)"
            await self._commit(guards, [Put(key, encode(moved)), _event("skipped", message, ev)])
            return
        if running and periodic.concurrency == "replace":
            for k in running:
                guards.append(Compare(keys.job(k.namespace, k.name), "mod_rev", "=", k.revision))
                stopped = msgspec.structs.replace(k, stop=True, revision=0)
                ops.append(Put(keys.job(k.namespace, k.name), encode(stopped)))
            names = ", ".join(k.name for k in running)
            ops.append(_event("replaced", f"{names} stopped for the run due at {when}", ev))
        name = run_name(job, t)
        child = job_ops.child_job(job, name, now=now, meta={}, payload="")
        launch_guards, launch = job_ops.launch_ops(
            child, f"{name} launched (due at {when}, {late:.1f}s ago)", now=now
        )
        moved.child = name
        ops = [Put(key, encode(moved)), *ops, *launch]
        if await self._commit(guards + launch_guards, ops, quiet=True):
            return
        # The run may exist already (launched, but the cursor write lost): then only the
        # cursor moves; otherwise the cursor changed under us (Conflict, re-read).
        exists = self.state.jobs.get(child.key) or await self.state.store.get(
            keys.job(child.namespace, child.name)
        )
        if exists is None:
            raise Conflict("cursor changed")
        await self._commit(guards, [Put(key, encode(moved))])

    async def _commit(self, guards: list[Compare], ops: list[Op], *, quiet: bool = False) -> bool:
        res = await self.state.store.txn(guards, ops)
        if res.succeeded:
            await self.state.wait_for(res.revision)
            return True
        if quiet:
            return False
        raise Conflict("lost a race")

    async def _purge_history(self, job: Job, now: float) -> None:
        """Finished runs beyond the job's history limits are purged, oldest first."""
        assert job.periodic is not None
        finished: dict[str, list[Job]] = {"complete": [], "failed": [], "dead": []}
        for k in job_ops.children(self.state, job):
            status = job_ops.status_of(k, self.state.allocs_of_job(k.namespace, k.name))
            if status in finished:
                finished[status].append(k)
        keep = {
            "complete": job.periodic.successful_history,
            "failed": job.periodic.failed_history,
            "dead": job.periodic.failed_history,
        }
        for status, kids in finished.items():
            extra = len(kids) - keep[status]
            for k in kids[: max(0, extra)]:
                with contextlib.suppress(Conflict):
                    await job_ops.stop(self.state, k.namespace, k.name, purge=True, now=now)


async def force(state: ClusterState, namespace: str, name: str, *, now: float) -> Job:
    """`podium job periodic force`: a run now, whatever the schedule and concurrency say.
    It is named NAME/periodic-<time>-force (-force-2... for more in one second), so it
    never takes the name of a scheduled run."""
    job = state.jobs.get(f"{namespace}/{name}")
    if job is None:
        raise NotFound(f"no job {name!r} in namespace {namespace!r}")
    if job.type != "cron" or job.stop:
        raise ValidationError([Problem("name", f"job {name!r} is not a running cron job")])
    for n in range(1, 11):
        suffix = "-force" if n == 1 else f"-force-{n}"
        child = job_ops.child_job(job, run_name(job, now) + suffix, now=now, meta={}, payload="")
        guards, ops = job_ops.launch_ops(child, f"{child.name} launched by force", now=now)
        res = await state.store.txn(guards, ops)
        if res.succeeded:
            await state.wait_for(res.revision)
            return child
    raise Conflict(f"{run_name(job, now)}-force: ten runs forced this second already")


def _event(kind: str, message: str, about: tuple[Job, float]) -> Op:
    job, now = about
    return event_put(f"periodic.{kind}", message, namespace=job.namespace, job=job.name, now=now)


def _show(t: float, periodic: Periodic) -> str:
    zone = time_zone(periodic.time_zone) or datetime.UTC
    return datetime.datetime.fromtimestamp(t, tz=zone).isoformat()
