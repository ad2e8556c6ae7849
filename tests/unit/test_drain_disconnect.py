"""Drain marking, the disconnect policies and their spec fields: pure decisions, no I/O."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from podium.agent.disconnect import due
from podium.errors import ValidationError
from podium.model import spec as jobspec
from podium.model.types import DisconnectPolicy, MigrateStrategy
from podium.scheduler import reconcile
from podium.server.controllers.drain import plan_marks, plan_stops
from podium.server.state import ClusterState
from podium.store.memory import MemoryStore
from support.builders import make_alloc, make_job, make_node

NOW = 1_700_000_000.0


def _state(nodes: list[Any], jobs: list[Any], allocs: list[Any]) -> ClusterState:
    state = ClusterState(MemoryStore())
    state.nodes = {n.id: n for n in nodes}
    state.jobs = {j.key: j for j in jobs}
    state.absorb(allocs, 1)
    return state


def test_drain_marks_at_most_max_parallel_per_group() -> None:
    drain, other = make_node("d", drain=True), make_node("o")
    job = make_job("web", count=4, migrate=MigrateStrategy(max_parallel=2))
    allocs = [make_alloc(job, node=drain, index=i, id=f"a{i}") for i in range(3)]
    state = _state([drain, other], [job], allocs)
    assert [a.id for a in plan_marks(state, NOW)] == ["a0", "a1"]

    # a0 is in flight (marked, replacement not yet healthy): one more may go.
    state.allocs["a0"].migrate = True
    assert [a.id for a in plan_marks(state, NOW)] == ["a1"]

    # a0's replacement runs healthy: its move is done, two may go again.
    repl = make_alloc(job, node=other, index=0, id="r0", healthy=True)
    state.absorb([repl], 2)
    state.allocs["a0"].next_alloc = "r0"
    state.allocs["a0"].desired_status = "stop"
    assert [a.id for a in plan_marks(state, NOW)] == ["a1", "a2"]


def test_drain_leaves_batch_until_the_deadline_then_forces_everything() -> None:
    drain = make_node("d", drain=True, drain_deadline=NOW + 60)
    batch = make_job("b", type="batch", count=2)
    web = make_job("web", count=3)
    allocs = [
        make_alloc(batch, node=drain, index=0, id="b0"),
        *(make_alloc(web, node=drain, index=i, id=f"w{i}") for i in range(3)),
    ]
    state = _state([drain], [batch, web], allocs)
    assert [a.id for a in plan_marks(state, NOW)] == ["w0"]
    forced = {a.id for a in plan_marks(state, NOW + 61)}
    assert forced == {"b0", "w0", "w1", "w2"}


def test_drain_ignores_system_jobs_and_nodes_not_draining() -> None:
    drain, ready = make_node("d", drain=True), make_node("r")
    system = make_job("sys", type="system")
    web = make_job("web", count=2)
    allocs = [
        make_alloc(system, node=drain, id="s"),
        make_alloc(web, node=ready, index=0, id="w0"),
    ]
    assert plan_marks(_state([drain, ready], [system, web], allocs), NOW) == []


def test_migration_starts_the_replacement_first_and_stops_the_old_copy_once_healthy() -> None:
    drain, other = make_node("d", drain=True), make_node("o")
    nodes = {drain.id: drain, other.id: other}
    job = make_job("web", count=1)
    old = make_alloc(job, node=drain, id="old", migrate=True, healthy=True)
    rec = reconcile(job, [old], nodes, now=NOW)
    assert rec.stop == [] and [p.reason for p in rec.place] == ["migrate"]

    linked = make_alloc(job, node=drain, id="old", migrate=True, healthy=True, next_alloc="new")
    new = make_alloc(job, node=other, id="new", client="pending", previous_alloc="old")
    rec = reconcile(job, [linked, new], nodes, now=NOW)
    assert rec.empty, "both run while the replacement is not healthy yet"

    new.client_status, new.healthy = "running", True
    rec = reconcile(job, [linked, new], nodes, now=NOW)
    assert [s.alloc_id for s in rec.stop] == ["old"] and rec.place == []


def test_migration_past_the_deadline_stops_at_once() -> None:
    drain = make_node("d", drain=True, drain_deadline=NOW - 1)
    job = make_job("web", count=1)
    old = make_alloc(job, node=drain, id="old", migrate=True)
    rec = reconcile(job, [old], {drain.id: drain}, now=NOW)
    assert [s.alloc_id for s in rec.stop] == ["old"]
    assert [p.reason for p in rec.place] == ["migrate"]


def test_drain_stops_marked_copies_whose_replacement_is_healthy() -> None:
    drain, other = make_node("d", drain=True), make_node("o")
    job = make_job("web", count=2)
    a0 = make_alloc(job, node=drain, index=0, id="a0", migrate=True, next_alloc="r0")
    a1 = make_alloc(job, node=drain, index=1, id="a1", migrate=True, next_alloc="r1")
    r0 = make_alloc(job, node=other, index=0, id="r0", healthy=True)
    r1 = make_alloc(job, node=other, index=1, id="r1", healthy=None, client="pending")
    state = _state([drain, other], [job], [a0, a1, r0, r1])
    assert [a.id for a in plan_stops(state)] == ["a0"]


def test_lost_after_waits_for_a_down_node_before_replacing() -> None:
    down = make_node("n", status="down", status_time=NOW - 1)
    job = make_job(count=1, disconnect=DisconnectPolicy(lost_after=5.0))
    a = make_alloc(job, node=down, id="x")
    rec = reconcile(job, [a], {down.id: down}, now=NOW)
    assert not rec.lost and not rec.place and not rec.stop
    assert rec.reschedule_later == {"x": NOW + 4}
    rec = reconcile(job, [a], {down.id: down}, now=NOW + 5)
    assert [x.id for x in rec.lost] == ["x"]
    assert [(p.reason, p.previous and p.previous.id) for p in rec.place] == [("lost", "x")]
    # Without the policy: replaced at once.
    plain = make_job(count=1)
    rec = reconcile(plain, [make_alloc(plain, node=down, id="y")], {down.id: down}, now=NOW)
    assert [x.id for x in rec.lost] == ["y"]


async def test_stop_after_disconnect_picks_only_groups_that_ask() -> None:
    def runner(after: float, *, finished: bool = False) -> Any:
        ev = asyncio.Event()
        if finished:
            ev.set()
        group = SimpleNamespace(disconnect=DisconnectPolicy(stop_after_disconnect=after))
        return SimpleNamespace(group=group, finished=ev)

    runners = {
        "a": runner(1.0),
        "b": runner(0.0),
        "c": runner(5.0),
        "d": runner(1.0, finished=True),
    }
    assert due(runners, 0.5) == []
    assert due(runners, 1.5) == [runners["a"]]
    assert due(runners, 6.0) == [runners["a"], runners["c"]]


def _job(**group: Any) -> dict[str, Any]:
    return {
        "name": "j",
        "groups": [{"name": "g", "tasks": [{"name": "t", "config": {"command": "x"}}], **group}],
    }


def test_spec_defaults_and_durations_for_migrate_and_disconnect() -> None:
    job = jobspec.validate(jobspec.canonicalize(_job()))
    g = job.groups[0]
    assert g.migrate == MigrateStrategy(max_parallel=1)
    assert g.disconnect == DisconnectPolicy(stop_after_disconnect=0.0, lost_after=0.0)
    job = jobspec.validate(
        jobspec.canonicalize(
            _job(
                migrate={"max_parallel": 3},
                disconnect={"stop_after_disconnect": "1m", "lost_after": "500ms"},
            )
        )
    )
    assert job.groups[0].migrate.max_parallel == 3
    assert job.groups[0].disconnect == DisconnectPolicy(stop_after_disconnect=60.0, lost_after=0.5)


@pytest.mark.parametrize(
    ("group", "path"),
    [
        ({"migrate": {"max_parallel": 0}}, "groups[0].migrate.max_parallel"),
        ({"migrate": {"speed": 1}}, "groups[0].migrate.speed"),
        (
            {"disconnect": {"stop_after_disconnect": "soon"}},
            "groups[0].disconnect.stop_after_disconnect",
        ),
        ({"disconnect": {"lost_after": -1}}, "groups[0].disconnect.lost_after"),
        ({"disconnect": "never"}, "groups[0].disconnect"),
    ],
)
def test_spec_errors_name_the_field(group: dict[str, Any], path: str) -> None:
    with pytest.raises(ValidationError) as e:
        jobspec.validate(jobspec.canonicalize(_job(**group)))
    assert path in [p.path for p in e.value.problems], e.value.problems
