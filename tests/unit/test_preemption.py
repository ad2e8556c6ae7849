"""Preemption: a copy that fits nowhere stops the fewest lower-priority allocs (pure)."""

from __future__ import annotations

import msgspec

from podium.model.types import Allocation, Job, Node, Plan
from podium.scheduler import ClusterSnapshot, reconcile, schedule, schedule_into
from podium.scheduler.preempt import Candidate
from support.builders import make_alloc, make_job, make_node

NOW = 1000.0


def plan_with(
    nodes: list[Node],
    job: Job,
    others: list[tuple[Allocation, int]],
    *,
    preempt: bool = True,
    into: bool = False,
) -> Plan:
    """Place `job` on `nodes` running `others` (alloc, its job's priority)."""
    snap = ClusterSnapshot.build(nodes, (a for a, _ in others))
    by_node: dict[str, list[Candidate]] = {}
    for a, prio in others:
        by_node.setdefault(a.node_id, []).append(Candidate(a, prio))
    rec = reconcile(job, [], {n.id: n for n in nodes}, now=NOW)
    source = (lambda node_id: by_node.get(node_id, [])) if preempt else None
    place = schedule_into if into else schedule
    return place(snap, job, rec, eval_id="e", now=NOW, preempt=source)


def low(job: str, node: str, *, cpu: int = 100, created: float = 0.0, index: int = 0) -> Allocation:
    return make_alloc(job, group="g", node=node, cpu=cpu, memory=10, create_time=created,
                      index=index, id=f"{job}-{index}")  # fmt: skip


def test_a_full_node_gives_up_exactly_what_the_copy_needs_lowest_priority_then_newest() -> None:
    node = make_node("n1", cpu=1000, memory=10_000)
    others = [(low("batch", "n1", created=float(i), index=i), 20) for i in range(5)]
    others += [(low("web", "n1", created=float(i), index=i), 50) for i in range(5)]
    big = msgspec.structs.replace(make_job("big", cpu=300, memory=10), priority=90)
    plan = plan_with([node], big, others)
    assert [a.node_id for a in plan.placements] == ["n1"] and not plan.failures
    # Three of the priority-20 job, newest first; none of the priority-50 one.
    assert [p.alloc_id for p in plan.preemptions] == ["batch-4", "batch-3", "batch-2"]
    assert [s.alloc_id for s in plan.stops] == ["batch-4", "batch-3", "batch-2"]
    assert plan.stops[0].reason == "preempted by default/big (priority 90) to place big.web[0]"
    first = plan.preemptions[0]
    assert (first.priority, first.for_name, first.node_name) == (20, "big.web[0]", "n1")


def test_without_a_victim_source_or_a_lower_priority_it_fails_as_before() -> None:
    node = make_node("n1", cpu=1000, memory=10_000)
    others = [(low("web", "n1", index=i), 50) for i in range(10)]
    big = msgspec.structs.replace(make_job("big", cpu=300, memory=10), priority=90)
    unsourced = plan_with([node], big, others, preempt=False)
    assert not unsourced.placements and unsourced.failures[0].unplaced == 1
    equal = msgspec.structs.replace(big, priority=50)
    plan = plan_with([node], equal, others)
    assert not plan.placements and not plan.preemptions and plan.failures


def test_never_its_own_job_and_never_more_than_needed() -> None:
    node = make_node("n1", cpu=1000, memory=10_000)
    # A small new alloc and a large old one: greedy order takes the small one first,
    # but only the large one is needed, so the small one is given back.
    others = [
        (low("tiny", "n1", cpu=100, created=5.0), 10),
        (low("large", "n1", cpu=600, created=1.0), 20),
        (make_alloc("big", group="web", node="n1", cpu=300, memory=10, id="own"), 90),
    ]
    big = msgspec.structs.replace(make_job("big", cpu=600, memory=10, count=2), priority=90)
    plan = plan_with([node], big, others)
    assert [p.alloc_id for p in plan.preemptions] == ["large-0"]
    assert len(plan.placements) == 1 and plan.failures[0].unplaced == 1  # own copy kept


def test_the_node_needing_the_fewest_victims_wins() -> None:
    a, b = make_node("a", cpu=1000, memory=10_000), make_node("b", cpu=1000, memory=10_000)
    others = [(low("x", "a", cpu=100, index=i), 10) for i in range(10)]
    others += [(low("y", "b", cpu=500, index=i), 40) for i in range(2)]
    big = msgspec.structs.replace(make_job("big", cpu=400, memory=10), priority=90)
    plan = plan_with([a, b], big, others)
    assert [p.node_id for p in plan.preemptions] == ["b"] and len(plan.preemptions) == 1


def test_each_copy_preempts_for_itself_and_the_snapshot_takes_the_stops() -> None:
    node = make_node("n1", cpu=1000, memory=10_000)
    others = [(low("batch", "n1", cpu=250, index=i, created=float(i)), 10) for i in range(4)]
    big = msgspec.structs.replace(make_job("big", cpu=250, memory=10, count=3), priority=90)
    plan = plan_with([node], big, others, into=True)
    assert len(plan.placements) == 3 and not plan.failures
    assert [p.alloc_id for p in plan.preemptions] == ["batch-3", "batch-2", "batch-1"]


def test_system_copy_preempts_on_its_own_node() -> None:
    n1, n2 = make_node("n1", cpu=1000, memory=10_000), make_node("n2", cpu=1000, memory=10_000)
    others = [(low("web", "n1", cpu=500, index=i, created=float(i)), 50) for i in range(2)]
    system = make_job("agent", type="system", cpu=200, memory=10)
    system = msgspec.structs.replace(system, priority=100)
    plan = plan_with([n1, n2], system, others)
    assert sorted(a.node_id for a in plan.placements) == ["n1", "n2"]
    assert [(p.alloc_id, p.node_id) for p in plan.preemptions] == [("web-1", "n1")]
