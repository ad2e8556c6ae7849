"""Properties of the scheduler over random clusters and jobs (hypothesis).

never overcommits a node's cpu, memory or ports (existing allocs included)
never places on a down, initializing, ineligible or draining node
same inputs, same plan; the snapshot is left as it was
snapshot.apply(plan) agrees with a snapshot rebuilt from scratch, and so does
schedule_into() (the plan schedule() gives, taken in place), before and after removing allocs
"""

from __future__ import annotations

import random
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podium.model.types import Allocation, Constraint, Job, Node, Plan
from podium.scheduler import ClusterSnapshot, reconcile, schedule, schedule_into
from podium.scheduler.snapshot import NodeState
from support.builders import make_alloc, make_group, make_job, make_node

NOW = 500.0
PORT_MIN = 30000


@st.composite
def nodes(draw: st.DrawFn) -> list[Node]:
    out = []
    for i in range(draw(st.integers(1, 8))):
        width = draw(st.integers(0, 5))
        out.append(
            make_node(
                f"n{i}",
                cpu=draw(st.sampled_from([0, 150, 500, 1000, 4000])),
                memory=draw(st.sampled_from([0, 100, 512, 2048])),
                labels={"zone": draw(st.sampled_from("ab"))},
                status=draw(st.sampled_from(["ready", "ready", "ready", "down", "initializing"])),
                eligible=draw(st.booleans()) or draw(st.booleans()),
                drain=draw(st.integers(0, 4)) == 0,
                port_min=PORT_MIN,
                port_max=PORT_MIN + width,
                reserved_ports=draw(st.lists(st.integers(PORT_MIN, PORT_MIN + 5), max_size=2)),
            )
        )
    return out


@st.composite
def jobs(draw: st.DrawFn) -> Job:
    groups = []
    for g in range(draw(st.integers(1, 2))):
        ports = {
            label: draw(st.sampled_from([0, 0, PORT_MIN + 1, 8080]))
            for label in draw(st.lists(st.sampled_from(["http", "grpc", "admin"]), max_size=2,
                                       unique=True))
        }  # fmt: skip
        constraints = []
        if draw(st.booleans()):
            op: Any = draw(st.sampled_from(["=", "!=", "distinct_hosts"]))
            constraints.append(Constraint(attribute="${node.labels.zone}", operator=op, value="a"))
        groups.append(
            make_group(
                f"g{g}",
                count=draw(st.integers(0, 6)),
                cpu=draw(st.sampled_from([1, 100, 300])),
                memory=draw(st.sampled_from([1, 64, 256])),
                ports=ports,
                constraints=constraints,
                spread=draw(st.booleans()),
            )
        )
    return make_job("app", version=draw(st.integers(0, 2)), groups=groups)


@st.composite
def existing(draw: st.DrawFn, cluster: list[Node]) -> list[Allocation]:
    out = []
    for i in range(draw(st.integers(0, 10))):
        node = draw(st.sampled_from(cluster))
        out.append(
            make_alloc(
                draw(st.sampled_from(["app", "other"])),
                id=f"x{i}",
                group=draw(st.sampled_from(["g0", "g1"])),
                index=draw(st.integers(0, 6)),
                version=draw(st.integers(0, 2)),
                node=node,
                cpu=draw(st.sampled_from([0, 100, 400])),
                memory=draw(st.sampled_from([0, 64, 300])),
                ports={"p": draw(st.integers(PORT_MIN, PORT_MIN + 5))}
                if draw(st.booleans())
                else {},
                client=draw(st.sampled_from(["pending", "running", "failed", "complete"])),
                desired=draw(st.sampled_from(["run", "run", "stop"])),
                create_time=float(i),
            )
        )
    return out


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[Node], Job, list[Allocation]]:
    cluster = draw(nodes())
    return cluster, draw(jobs()), draw(existing(cluster))


def plan_of(cluster: list[Node], job: Job, allocs: list[Allocation], eval_id: str = "e") -> Plan:
    snap = ClusterSnapshot.build(cluster, (a for a in allocs if a.live))
    rec = reconcile(job, [a for a in allocs if a.job == job.name], {n.id: n for n in cluster},
                    now=NOW)  # fmt: skip
    return schedule(snap, job, rec, eval_id=eval_id, now=NOW)


def usage(state: NodeState) -> tuple[object, ...]:
    return (
        state.cpu_used,
        state.memory_used,
        sorted(state.ports.items()),
        sorted(state.groups.items()),
        state.dynamic_free,
    )


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(worlds())
def test_never_overcommits_and_only_uses_schedulable_nodes(
    world: tuple[list[Node], Job, list[Allocation]],
) -> None:
    cluster, job, allocs = world
    plan = plan_of(cluster, job, allocs)
    by_id = {n.id: n for n in cluster}
    stopped = {s.alloc_id for s in plan.stops}
    kept = [a for a in allocs if a.live and a.id not in stopped]
    for node_id in {a.node_id for a in plan.placements}:
        node = by_id[node_id]
        assert node.status == "ready" and node.eligible and not node.drain
        here = [a for a in plan.placements if a.node_id == node_id]
        before = [a for a in kept if a.node_id == node_id]
        r = node.resources
        assert sum(a.resources.cpu for a in before + here) <= r.cpu
        assert sum(a.resources.memory for a in before + here) <= r.memory
        new_ports = [p for a in here for p in a.ports.values()]
        assert len(new_ports) == len(set(new_ports)), "two new allocs share a port"
        assert not set(new_ports) & {p for a in before for p in a.ports.values()}
        assert not set(new_ports) & set(r.reserved_ports)
        for a in here:
            group = job.group(a.group)
            assert group is not None
            for label, spec in group.network.ports.items():
                port = a.ports[label]
                assert port == spec.static if spec.static else r.port_min <= port <= r.port_max


@SETTINGS
@given(worlds(), st.randoms(use_true_random=False))
def test_same_inputs_same_plan_and_snapshot_untouched(
    world: tuple[list[Node], Job, list[Allocation]], rnd: random.Random
) -> None:
    cluster, job, allocs = world
    snap = ClusterSnapshot.build(cluster, (a for a in allocs if a.live))
    before = {s.node.id: usage(s) for s in snap.node_states()}
    rec = reconcile(job, [a for a in allocs if a.job == job.name], {n.id: n for n in cluster},
                    now=NOW)  # fmt: skip
    one = schedule(snap, job, rec, eval_id="same", now=NOW)
    assert {s.node.id: usage(s) for s in snap.node_states()} == before
    shuffled = list(cluster)
    rnd.shuffle(shuffled)
    two = plan_of(shuffled, job, list(reversed(allocs)), eval_id="same")
    assert msgspec.json.encode(one) == msgspec.json.encode(two)


@SETTINGS
@given(worlds())
def test_apply_agrees_with_a_rebuilt_snapshot(
    world: tuple[list[Node], Job, list[Allocation]],
) -> None:
    cluster, job, allocs = world
    snap = ClusterSnapshot.build(cluster, (a for a in allocs if a.live))
    plan = plan_of(cluster, job, allocs)
    snap.apply(plan)
    stopped = {s.alloc_id for s in plan.stops}
    after = [a for a in allocs if a.live and a.id not in stopped] + plan.placements
    fresh = ClusterSnapshot.build(cluster, after)
    assert [usage(s) for s in snap.node_states()] == [usage(s) for s in fresh.node_states()]


@SETTINGS
@given(worlds(), st.randoms(use_true_random=False))
def test_schedule_into_plans_as_schedule_and_leaves_the_snapshot_as_apply(
    world: tuple[list[Node], Job, list[Allocation]], rnd: random.Random
) -> None:
    cluster, job, allocs = world
    live = [a for a in allocs if a.live]
    rec = reconcile(job, [a for a in allocs if a.job == job.name], {n.id: n for n in cluster},
                    now=NOW)  # fmt: skip
    applied = ClusterSnapshot.build(cluster, live)
    before = [usage(s) for s in applied.node_states()]
    expected = schedule(applied, job, rec, eval_id="e", now=NOW)
    assert [usage(s) for s in applied.node_states()] == before, "schedule() wrote the snapshot"
    snap = ClusterSnapshot.build(cluster, live)
    plan = schedule_into(snap, job, rec, eval_id="e", now=NOW)
    assert msgspec.json.encode(plan) == msgspec.json.encode(expected)
    assert msgspec.json.encode(plan) == msgspec.json.encode(plan_of(cluster, job, allocs))
    applied.apply(expected)
    assert [usage(s) for s in snap.node_states()] == [usage(s) for s in applied.node_states()]
    ids = [a.id for a in allocs + plan.placements]
    assert [i in snap for i in ids] == [i in applied for i in ids]
    # The snapshot knows each alloc's usage as apply() records it: removing any of them
    # (placed or kept) leaves both snapshots alike.
    stopped = {s.alloc_id for s in plan.stops}
    after = [a for a in live if a.id not in stopped] + plan.placements
    for a in rnd.sample(after, len(after)):
        snap.remove_alloc_id(a.id)
        applied.remove_alloc_id(a.id)
        assert a.id not in snap
        assert [usage(s) for s in snap.node_states()] == [usage(s) for s in applied.node_states()]
