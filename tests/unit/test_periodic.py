"""Cron jobs: next times (zones, DST), and the periodic controller's launches on the
in-memory store with a fake clock: each run once, concurrency, deadlines, history."""

from __future__ import annotations

import asyncio
import datetime
import zoneinfo
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from podium.model import spec
from podium.model.cron import next_time
from podium.model.types import Allocation, Job, Periodic, Resources
from podium.runtime.clock import FakeClock
from podium.server import jobs
from podium.server.controllers.periodic import PeriodicController, force
from podium.server.state import ClusterState, encode
from podium.store import keys
from support.state import memory_state

T0 = 1_700_000_000.0  # a multiple of 10 s
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def at(*args: int) -> float:
    return datetime.datetime(*args, tzinfo=BERLIN).timestamp()  # type: ignore[misc]


def local(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, tz=BERLIN).isoformat()


def test_dst_spring_forward_runs_once_after_the_gap() -> None:
    p = Periodic(schedule=["30 2 * * *"], time_zone="Europe/Berlin")
    first = next_time(p, at(2024, 3, 30, 12))
    assert local(first) == "2024-03-31T03:00:00+02:00"  # 02:30 does not exist that night
    assert local(next_time(p, first)) == "2024-04-01T02:30:00+02:00"


def test_dst_fall_back_runs_a_fixed_time_once_and_an_hourly_job_in_both_hours() -> None:
    daily = Periodic(schedule=["30 2 * * *"], time_zone="Europe/Berlin")
    first = next_time(daily, at(2024, 10, 26, 12))
    assert local(first) == "2024-10-27T02:30:00+02:00"
    assert local(next_time(daily, first)) == "2024-10-28T02:30:00+01:00"
    hourly = Periodic(schedule=["0 * * * *"], time_zone="Europe/Berlin")
    t, seen = at(2024, 10, 27, 1, 30), []
    for _ in range(3):
        t = next_time(hourly, t)
        seen.append(local(t))
    assert seen == [
        "2024-10-27T02:00:00+02:00",
        "2024-10-27T02:00:00+01:00",
        "2024-10-27T03:00:00+01:00",
    ]


def test_several_schedules_and_a_zone() -> None:
    p = Periodic(schedule=["0 9 * * *", "0 12 * * *"], time_zone="Europe/Berlin")
    t = next_time(p, at(2024, 6, 3, 10))
    assert local(t) == "2024-06-03T12:00:00+02:00"
    assert local(next_time(p, t)) == "2024-06-04T09:00:00+02:00"
    utc = Periodic(schedule=["0 9 * * *"])
    nine_utc = datetime.datetime(2024, 6, 3, 9, tzinfo=datetime.UTC).timestamp()
    assert next_time(utc, at(2024, 6, 3, 10)) == nine_utc  # 10:00 in Berlin is 08:00 UTC


# --------------------------------------------------------------- controller


@pytest.fixture
async def state() -> AsyncIterator[ClusterState]:
    async with memory_state() as st:
        yield st


def cron(schedule: str = "*/10 * * * * *", **periodic: Any) -> Job:
    doc = {
        "name": "report",
        "type": "cron",
        "periodic": {"schedule": schedule, **periodic},
        "groups": [{"name": "g", "tasks": [{"name": "t", "config": {"command": "true"}}]}],
    }
    return spec.validate(spec.canonicalize(doc))


async def settle(ctl: PeriodicController) -> None:
    """Tick until nothing more is due now."""
    for _ in range(50):
        if await ctl.tick() > ctl.clock.now():
            return
    raise AssertionError("the controller kept finding work")


def runs(state: ClusterState) -> list[str]:
    return sorted(k for k, j in state.jobs.items() if j.parent == "report")


async def events(state: ClusterState, kind: str) -> list[str]:
    kvs, _ = await state.store.list(keys.EVENTS)
    evs = [msgspec.json.decode(kv.value) for kv in kvs]
    return [e["message"] for e in evs if e["type"] == kind]


async def finish(state: ClusterState, child: str, status: str = "complete") -> None:
    """The run's one copy ended (as its agent would report)."""
    a = Allocation(
        id=f"alloc-{child.replace('/', '-')}",
        namespace="default",
        job=child,
        job_version=0,
        group="g",
        index=0,
        node_id="n1",
        resources=Resources(),
        client_status=status,  # type: ignore[arg-type]
        reschedule_count=1 if status == "failed" else 0,  # its one reschedule used up
        reschedule_times=[T0] if status == "failed" else [],
        modify_time=T0 + 1,
    )
    res = await state.store.put(keys.alloc(a.id), encode(a))
    await state.wait_for(res)


async def test_each_due_run_is_launched_once_by_two_controllers_at_once(
    state: ClusterState,
) -> None:
    clock = FakeClock(T0 + 1)
    await jobs.register(state, cron(), now=T0 + 1)
    clock.advance(34)  # due: T0+10, +20, +30
    # Two leaders' worth of controllers (a restart, a takeover): the cursor's guard and
    # the child key's decide; the cache only follows.
    a, b = PeriodicController(state, clock), PeriodicController(state, clock)
    await asyncio.gather(settle(a), settle(b))
    assert runs(state) == [f"default/report/periodic-{int(T0) + s}" for s in (10, 20, 30)]
    child = state.jobs[f"default/report/periodic-{int(T0) + 10}"]
    assert (child.type, child.parent, child.periodic, child.version) == ("batch", "report", None, 0)
    clock.advance(10)
    await settle(PeriodicController(state, clock))  # a fresh one (restart) goes on from there
    assert len(runs(state)) == 4
    assert len(await events(state, "job.launched")) == 4


async def test_concurrency_forbid_skips_a_run_while_the_last_one_runs(state: ClusterState) -> None:
    clock = FakeClock(T0 + 1)
    await jobs.register(state, cron(concurrency="forbid"), now=T0 + 1)
    ctl = PeriodicController(state, clock)
    clock.advance(10)
    await settle(ctl)
    first = runs(state)
    assert len(first) == 1
    clock.advance(10)  # the first still runs (no alloc finished)
    await settle(ctl)
    assert runs(state) == first
    skipped = await events(state, "periodic.skipped")
    assert len(skipped) == 1 and "still running (concurrency forbid)" in skipped[0]
    await finish(state, first[0].partition("/")[2])
    clock.advance(10)
    await settle(ctl)
    assert len(runs(state)) == 2


async def test_concurrency_replace_stops_the_last_run(state: ClusterState) -> None:
    clock = FakeClock(T0 + 1)
    await jobs.register(state, cron(concurrency="replace"), now=T0 + 1)
    ctl = PeriodicController(state, clock)
    clock.advance(10)
    await settle(ctl)
    clock.advance(10)
    await settle(ctl)
    names = runs(state)
    assert len(names) == 2
    assert state.jobs[names[0]].stop and not state.jobs[names[1]].stop
    assert len(await events(state, "periodic.replaced")) == 1


async def test_starting_deadline_skips_a_late_run_with_an_event(state: ClusterState) -> None:
    clock = FakeClock(T0 + 1)
    await jobs.register(state, cron(starting_deadline="3s"), now=T0 + 1)
    clock.advance(14)  # T0+10 is due, 5 s late
    await settle(PeriodicController(state, clock))
    assert runs(state) == []
    [msg] = await events(state, "periodic.skipped")
    assert "5.0s late, more than starting_deadline 3s" in msg


async def test_after_long_downtime_only_the_newest_missed_runs_start(state: ClusterState) -> None:
    clock = FakeClock(T0 + 1)
    await jobs.register(state, cron(), now=T0 + 1)
    clock.advance(100)  # ten runs missed
    await settle(PeriodicController(state, clock))
    assert runs(state) == [f"default/report/periodic-{int(T0) + s}" for s in (60, 70, 80, 90, 100)]
    assert len(await events(state, "periodic.skipped")) == 1


async def test_history_limits_purge_the_oldest_finished_runs(state: ClusterState) -> None:
    clock = FakeClock(T0 + 1)
    await jobs.register(state, cron(successful_history=2, failed_history=1), now=T0 + 1)
    ctl = PeriodicController(state, clock)
    for _ in range(5):
        clock.advance(10)
        await settle(ctl)
    names = [n.partition("/")[2] for n in runs(state)]
    for n in names[:3]:
        await finish(state, n)
    for n in names[3:]:
        await finish(state, n, "failed")
    await settle(ctl)
    kept = [n.partition("/")[2] for n in runs(state)]
    assert kept == [names[1], names[2], names[4]]  # 2 complete, 1 failed: the newest


async def test_suspend_launches_nothing_and_stop_and_purge_take_the_runs_along(
    state: ClusterState,
) -> None:
    clock = FakeClock(T0 + 1)
    await jobs.register(state, cron(suspend=True), now=T0 + 1)
    clock.advance(30)
    await settle(PeriodicController(state, clock))
    assert runs(state) == []
    await jobs.register(state, cron(), now=clock.now())
    clock.advance(10)
    await settle(PeriodicController(state, clock))
    assert len(runs(state)) == 1  # from the resume on, no backlog
    forced = await force(state, "default", "report", now=clock.now() + 0.5)
    assert forced.name == f"report/periodic-{int(clock.now())}-force" and len(runs(state)) == 2
    again = await force(state, "default", "report", now=clock.now() + 0.7)
    assert again.name == f"report/periodic-{int(clock.now())}-force-2"
    await jobs.stop(state, "default", "report", purge=False, now=clock.now())
    assert all(state.jobs[k].stop for k in runs(state)) and len(runs(state)) == 3
    await jobs.stop(state, "default", "report", purge=True, now=clock.now())
    assert runs(state) == [] and await state.store.get(keys.periodic("default", "report")) is None
