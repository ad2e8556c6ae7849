"""The scheduler: snapshot, filters, scorers, failures, determinism, reconcile."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import msgspec
import pytest

from podium.model.types import (
    Allocation,
    Constraint,
    DriverInfo,
    Job,
    Node,
    Plan,
    ReschedulePolicy,
    Spread,
    UpdateStrategy,
)
from podium.scheduler import (
    ClusterSnapshot,
    Reconciliation,
    default_registry,
    group_hash,
    reconcile,
    schedule,
)
from podium.scheduler.plugins.constraints import compile_constraint, version_matcher
from podium.scheduler.reconcile import Placement
from podium.scheduler.simulate import simulated_cluster, simulated_jobs
from support.builders import c, make_alloc, make_group, make_job, make_node

NOW = 1000.0


def plan_for(
    nodes: list[Node],
    job: Job,
    allocs: list[Allocation] = (),  # type: ignore[assignment]
    *,
    eval_id: str = "e1",
    now: float = NOW,
    snapshot: ClusterSnapshot | None = None,
) -> Plan:
    allocs = list(allocs)
    snap = snapshot or ClusterSnapshot.build(nodes, (a for a in allocs if a.live))
    mine = [a for a in allocs if a.job == job.name]
    rec = reconcile(job, mine, {n.id: n for n in nodes}, now=now)
    return schedule(snap, job, rec, eval_id=eval_id, now=now)


def nodes_of(plan: Plan) -> list[str]:
    return [a.node_id for a in plan.placements]


# ------------------------------------------------------------------ snapshot


def test_snapshot_counts_live_allocs_and_applies_plans() -> None:
    n = make_node("n1", cpu=1000, memory=1000)
    live = make_alloc("a", node=n, cpu=100, memory=200, ports={"http": 20001})
    done = make_alloc("b", node=n, cpu=500, client="complete")
    snap = ClusterSnapshot.build([n], [live, done])
    st = snap.get("n1")
    assert st is not None
    assert (st.cpu_used, st.memory_used, st.ports) == (100, 200, {20001: 1})
    assert st.groups == {"default\x00a\x00web": 1}

    plan = plan_for([n], make_job("z", count=2, cpu=50, memory=10), snapshot=snap)
    assert st.cpu_used == 100, "schedule() must not mutate the snapshot"
    snap.apply(plan)
    assert st.cpu_used == 200
    snap.remove_alloc(live)
    assert (st.cpu_used, st.ports) == (100, {})
    snap.add_alloc(msgspec.structs.replace(plan.placements[0], client_status="failed"))
    assert st.cpu_used == 50, "an alloc that is no longer live frees its resources"


def test_snapshot_node_changes_and_orphans() -> None:
    early = make_alloc("a", node="n2", cpu=300)
    snap = ClusterSnapshot.build([make_node("n1")], [early])
    assert len(snap) == 1
    snap.upsert_node(make_node("n2", cpu=1000))
    n2 = snap.get("n2")
    assert n2 is not None and n2.cpu_used == 300, (
        "allocs seen before their node count once it joins"
    )
    snap.upsert_node(make_node("n2", cpu=2000))
    assert n2.cpu_total == 2000 and n2.cpu_used == 300
    snap.remove_node("n2")
    assert snap.get("n2") is None and [s.node.id for s in snap.node_states()] == ["n1"]
    snap.upsert_node(make_node("n2"))
    n2b = snap.get("n2")
    assert n2b is not None and n2b.cpu_used == 300


def test_stops_in_the_plan_free_room_for_its_placements() -> None:
    n = make_node("n1", cpu=1000, memory=1000)
    old = make_alloc("app", node=n, version=0, cpu=800, memory=100)
    job = make_job(version=1, cpu=900, memory=100)
    plan = plan_for([n], job, [old])
    assert [s.alloc_id for s in plan.stops] == [old.id]
    assert nodes_of(plan) == ["n1"] and plan.placements[0].previous_alloc == old.id


# ------------------------------------------------------------------- filters


def test_node_status_filter() -> None:
    bad = [
        make_node("down", status="down"),
        make_node("init", status="initializing"),
        make_node("inel", eligible=False),
        make_node("drain", drain=True),
    ]
    plan = plan_for([*bad, make_node("ok")], make_job(count=2))
    assert nodes_of(plan) == ["ok", "ok"] and not plan.failures
    [f] = plan_for(bad, make_job(count=2)).failures
    assert (f.unplaced, f.nodes_evaluated, f.nodes_filtered) == (2, 4, {"node-status": 4})
    assert f.message == "0/4 nodes fit: 4 filtered by node-status (e.g. node is down)"


def test_driver_filter_needs_detected_and_healthy() -> None:
    nodes = [
        make_node("none", drivers=("process",)),
        make_node("sick", drivers={"docker": DriverInfo(healthy=False)}),
        make_node("undetected", drivers={"docker": DriverInfo(detected=False)}),
        make_node("ok", drivers=("process", "docker")),
    ]
    plan = plan_for(nodes, make_job(driver="docker"))
    assert nodes_of(plan) == ["ok"]
    plan = plan_for(nodes[:3], make_job(driver="docker"))
    assert plan.failures[0].nodes_filtered == {"driver": 3}


def test_resources_filter_counts_existing_allocs_and_names_the_resource() -> None:
    a = make_node("a", cpu=1000, memory=4000)
    b = make_node("b", cpu=4000, memory=1000)
    busy = make_alloc("other", node=a, cpu=600, memory=100)
    plan = plan_for([a, b], make_job(cpu=500, memory=2000), [busy])
    [f] = plan.failures
    assert f.nodes_exhausted == {"cpu": 1, "memory": 1}
    assert f.message == "0/2 nodes fit: 1 exhausted on cpu, 1 exhausted on memory"
    assert plan_for([a, b], make_job(cpu=400, memory=2000), [busy]).placements[0].node_id == "a"


def test_failure_message_orders_reasons_by_count() -> None:
    nodes = [make_node(f"m{i}", memory=100, labels={"zone": "a"}) for i in range(4)]
    nodes.append(make_node("z", labels={"zone": "b"}))
    job = make_job(memory=500, constraints=[c("${node.labels.zone}", "!=", "b")])
    [f] = plan_for(nodes, job).failures
    assert f.message == (
        "0/5 nodes fit: 4 exhausted on memory, "
        "1 filtered by constraints (constraint ${node.labels.zone} != b failed)"
    )
    assert (f.nodes_exhausted, f.nodes_filtered) == ({"memory": 4}, {"constraints": 1})


def test_static_ports_and_reserved_ports() -> None:
    a = make_node("a", reserved_ports=[8080])
    b = make_node("b")
    c_ = make_node("c")
    holder = make_alloc("other", node=b, ports={"http": 8080})
    plan = plan_for([a, b, c_], make_job(ports={"http": 8080}, count=2), [holder])
    assert nodes_of(plan) == ["c"]
    [f] = plan.failures
    assert f.nodes_filtered == {"ports": 1} and f.nodes_exhausted["ports"] == 2
    assert plan.placements[0].ports == {"http": 8080}


def test_dynamic_ports_avoid_used_and_reserved_and_run_out() -> None:
    n = make_node("n", port_min=30000, port_max=30004, reserved_ports=[30001])
    holder = make_alloc("other", node=n, ports={"x": 30000})
    plan = plan_for([n], make_job(ports={"a": 0, "b": 0}, count=2), [holder])
    # 5 ports, 1 reserved, 1 used: room for one copy with two dynamic ports.
    assert len(plan.placements) == 1
    ports = plan.placements[0].ports
    assert set(ports) == {"a", "b"} and set(ports.values()) <= {30002, 30003, 30004}
    assert len(set(ports.values())) == 2
    assert plan.failures[0].nodes_exhausted == {"dynamic ports": 1}


def test_dynamic_ports_differ_between_copies_on_one_node() -> None:
    n = make_node("n", port_min=40000, port_max=40009)
    plan = plan_for([n], make_job(ports={"http": 0}, count=10))
    ports = [a.ports["http"] for a in plan.placements]
    assert sorted(ports) == list(range(40000, 40010))


def test_distinct_hosts_on_group_and_on_job() -> None:
    nodes = [make_node("a"), make_node("b")]
    job = make_job(count=3, constraints=None)
    job.groups[0].constraints.append(c("", "distinct_hosts", "true"))
    plan = plan_for(nodes, job)
    assert sorted(nodes_of(plan)) == ["a", "b"]
    assert plan.failures[0].nodes_filtered == {"distinct-hosts": 2}

    two = make_job(
        groups=[make_group("x"), make_group("y")],
        constraints=[c("", "distinct_hosts", "true")],
    )
    plan = plan_for(nodes[:1], two)
    assert len(plan.placements) == 1 and plan.failures[0].group == "y"


# --------------------------------------------------------------- constraints


def one_node(**kw: object) -> list[Node]:
    return [make_node("the-node", name="web-1", **kw)]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("constraint", "fits"),
    [
        (c("${node.labels.zone}", "=", "a"), True),
        (c("${node.labels.zone}", "=", "b"), False),
        (c("${node.labels.zone}", "!=", "b"), True),
        (c("${node.labels.missing}", "!=", "b"), True),
        (c("${node.labels.missing}", "=", "b"), False),
        (c("${node.name}", "regexp", "^web-[0-9]+$"), True),
        (c("${node.name}", "regexp", "^db"), False),
        (c("${node.id}", "=", "the-node"), True),
        (c("${node.datacenter}", "=", "dc1"), True),
        (c("${node.datacenter}-${node.labels.zone}", "=", "dc1-a"), True),
        (c("${node.attributes.kernel.version}", "version", ">= 1.2, < 2"), True),
        (c("${node.attributes.kernel.version}", "version", ">= 1.10"), False),
        (c("${node.attributes.kernel.version}", "version", "~> 1.4"), True),
        (c("${node.attributes.features}", "set_contains", "ssd, gpu"), True),
        (c("${node.attributes.features}", "set_contains", "ssd,tpu"), False),
        (c("${node.labels.zone}", "regexp", "(unclosed"), False),
    ],
)
def test_constraint_operators(constraint: object, fits: bool) -> None:
    nodes = one_node(
        labels={"zone": "a"},
        attributes={"kernel.version": "1.4.2", "features": "gpu,ssd,avx"},
    )
    job = make_job(constraints=[constraint])  # type: ignore[list-item]
    assert bool(plan_for(nodes, job).placements) is fits


def test_regexp_constraint_cannot_stall_the_scheduler() -> None:
    """`^(a+)+$` against 40 a's and a "!" backtracks ~2^40 steps in Python's `re` (the
    scheduler would hang on the leader's loop); RE2 answers in linear time. Run in a child
    so that a hang fails the test instead of stopping the suite."""
    code = (
        "from podium.model.types import Constraint, Node\n"
        "from podium.scheduler.plugins.constraints import compile_constraint\n"
        "check = compile_constraint(Constraint('${node.name}', 'regexp', '^(a+)+$'))\n"
        "assert check is not None\n"
        "assert not check(Node(id='n', name='a' * 40 + '!'))\n"
        "assert check(Node(id='n', name='a' * 40))\n"
    )
    try:
        subprocess.run([sys.executable, "-c", code], check=True, timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail("a catastrophic regexp constraint stalled the scheduler for 10 s")


def test_group_constraints_combine_with_job_constraints() -> None:
    nodes = [
        make_node("a1", labels={"zone": "a", "disk": "ssd"}),
        make_node("a2", labels={"zone": "a", "disk": "hdd"}),
        make_node("b1", labels={"zone": "b", "disk": "ssd"}),
    ]
    job = make_job(
        constraints=[c("${node.labels.zone}", "=", "a")],
        groups=[make_group(constraints=[c("${node.labels.disk}", "=", "ssd")])],
    )
    assert nodes_of(plan_for(nodes, job)) == ["a1"]


@pytest.mark.parametrize(
    ("spec", "value", "ok"),
    [
        (">= 1.2, < 2", "1.2", True),
        (">= 1.2, < 2", "1.10.0", True),
        (">= 1.2, < 2", "2.0", False),
        ("= 1.2", "1.2.0", True),
        ("!= 1.2", "1.3", True),
        ("> 6.0", "6.1.2-generic", True),
        ("~> 1.4.2", "1.4.9", True),
        ("~> 1.4.2", "1.5.0", False),
        ("<= v2", "v2.0.0", True),
        (">= nonsense", "1.0", False),
        (">= 1", "garbage", False),
    ],
)
def test_version_matcher(spec: str, value: str, ok: bool) -> None:
    assert version_matcher(spec)(value) is ok


def test_version_matcher_answers_the_same_for_a_value_it_has_seen() -> None:
    match = version_matcher(">= 6.0")
    assert [match(v) for v in ("6.1.2", "5.15.0", "6.1.2", "5.15.0", "x", "x")] == [
        True, False, True, False, False, False,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("attribute", "operator", "value", "labels", "ok"),
    [
        ("${node.labels.zone}", "=", "a", {"zone": "a"}, True),
        ("${node.labels.zone}", "=", "a", {"zone": "b"}, False),
        ("${node.labels.zone}", "=", "a", {}, False),  # missing: not equal
        ("${node.labels.zone}", "!=", "a", {}, True),  # missing: not equal, as in Nomad
        ("${node.labels.zone}", "!=", "a", {"zone": "a"}, False),
        ("${node.labels.zone}", "=", "${node.labels.home}", {"zone": "a", "home": "a"}, True),
        ("${node.labels.zone}", "=", "${node.labels.home}", {"zone": "a"}, False),
        ("${node.labels.zone}", "!=", "${node.labels.home}", {"zone": "a"}, True),
        ("x-${node.labels.zone}", "=", "x-a", {"zone": "a"}, True),
    ],
)
def test_equality_constraints(
    attribute: str, operator: str, value: str, labels: dict[str, str], ok: bool
) -> None:
    check = compile_constraint(Constraint(attribute=attribute, operator=operator, value=value))
    assert check is not None
    assert check(make_node("n", labels=labels)) is ok


# ------------------------------------------------------------------- scorers


def test_anti_affinity_spreads_copies_over_nodes() -> None:
    nodes = [make_node(f"n{i}") for i in range(3)]
    plan = plan_for(nodes, make_job(count=3))
    assert sorted(nodes_of(plan)) == ["n0", "n1", "n2"]


def test_binpack_fills_one_node_first_for_different_jobs() -> None:
    nodes = [make_node(f"n{i}") for i in range(3)]
    snap = ClusterSnapshot.build(nodes, [])
    used = []
    for name in ("a", "b", "c", "d"):
        plan = plan_for(nodes, make_job(name, cpu=500, memory=512), snapshot=snap, eval_id=name)
        snap.apply(plan)
        used += nodes_of(plan)
    assert len(set(used)) == 1


def test_binpack_prefers_the_fuller_node() -> None:
    nodes = [make_node("empty"), make_node("busy")]
    busy = make_alloc("other", node="busy", cpu=2000, memory=4000)
    assert nodes_of(plan_for(nodes, make_job(), [busy])) == ["busy"]


def test_spread_prefers_the_emptier_node() -> None:
    nodes = [make_node("empty"), make_node("busy")]
    busy = make_alloc("other", node="busy", cpu=2000, memory=4000)
    assert nodes_of(plan_for(nodes, make_job(spread=True), [busy])) == ["empty"]


def test_registry_builds_profiles_and_rejects_unknown_plugins() -> None:
    reg = default_registry()
    assert "binpack" in reg.scorer_names and "constraints" in reg.filter_names
    with pytest.raises(ValueError, match="nope"):
        reg.profile("x", filters=["nope"], scorers={})
    only_status = reg.profile("x", filters=["node-status"], scorers={"spread": 1})
    n = [make_node("tiny", cpu=1, memory=1)]
    job = make_job(cpu=100)
    rec = reconcile(job, [], {"tiny": n[0]}, now=NOW)
    plan = schedule(ClusterSnapshot.build(n, []), job, rec, eval_id="e", now=NOW,
                    profile=only_status)  # fmt: skip
    assert nodes_of(plan) == ["tiny"], "the profile decides which filters run"


def test_candidate_limit() -> None:
    p = default_registry().profile("x", filters=[], scorers={})
    assert [p.candidate_limit(n) for n in (1, 3, 16, 17, 5000, 10**9)] == [1, 3, 16, 5, 13, 16]


def test_the_walk_passes_over_full_nodes_without_checking_them_further() -> None:
    """On a full cluster most nodes the walk meets have no room: it skips them before any
    other filter, so a placement's cost does not grow as the cluster fills."""
    nodes = [make_node(f"n{i:03d}", cpu=1000, memory=1024) for i in range(500)]
    full = [make_alloc("other", index=i, node=f"n{i:03d}", cpu=1000) for i in range(495)]
    reg = default_registry()
    asked: list[str] = []
    constraints = reg.profile("x", filters=["node-status"], scorers={}).filters[0]

    class Counting:
        name, static = "counting", True

        def applies(self, ctx: Any, group: Any) -> bool:
            return True

        def signature(self, ctx: Any, group: Any) -> str:
            return "counting"

        def filter(self, ctx: Any, node: Any, group: Any) -> Any:
            asked.append(node.node.id)
            return constraints.filter(ctx, node, group)

    reg.add_filter(Counting())
    profile = reg.profile(
        "x", filters=["counting", "resources"], scorers={"binpack": 1}, max_candidates=4
    )
    job = make_job(count=3, cpu=300)
    snap = ClusterSnapshot.build(nodes, full)
    rec = reconcile(job, [], {n.id: n for n in nodes}, now=NOW)
    plan = schedule(snap, job, rec, eval_id="e", now=NOW, profile=profile)
    assert len(plan.placements) == 3 and set(nodes_of(plan)) <= {f"n{i}" for i in range(495, 500)}
    assert sorted(set(asked)) == [f"n{i}" for i in range(495, 500)], "only nodes with room"


# --------------------------------------------------------------- determinism


def test_same_inputs_same_plan_and_ids_follow_eval_id() -> None:
    nodes = [make_node(f"n{i}", labels={"zone": "ab"[i % 2]}) for i in range(50)]
    job = make_job(count=20, ports={"http": 0})
    one, two = plan_for(nodes, job), plan_for(list(reversed(nodes)), job)
    assert msgspec.json.encode(one) == msgspec.json.encode(two)
    other = plan_for(nodes, job, eval_id="e2")
    assert {a.id for a in one.placements}.isdisjoint(a.id for a in other.placements)
    assert len({a.id[:8] for a in one.placements}) == 20, "short ids tell copies apart"


def test_new_allocs_carry_what_the_agent_and_applier_need() -> None:
    n = make_node("n1")
    job = make_job(version=3, cpu=120, memory=96, count=1)
    [a] = plan_for([n], job).placements
    assert (a.desired_status, a.client_status) == ("run", "pending")
    assert (a.job, a.job_version, a.group, a.index) == ("app", 3, "web", 0)
    assert (a.resources.cpu, a.resources.memory, a.node_name) == (120, 96, "n1")
    assert a.create_time == NOW and a.group_hash == group_hash(job, job.groups[0])


def test_schedule_accounts_for_its_own_placements() -> None:
    nodes = [make_node(f"n{i}", cpu=1000) for i in range(2)]
    plan = plan_for(nodes, make_job(count=3, cpu=600))
    assert sorted(nodes_of(plan)) == ["n0", "n1"]
    assert plan.failures[0].unplaced == 1
    assert plan.failures[0].message == "0/2 nodes fit: 2 exhausted on cpu"


def test_large_cluster_places_all_and_balances_copies() -> None:
    nodes = [make_node(f"n{i:03d}", cpu=2000, memory=4096) for i in range(200)]
    plan = plan_for(nodes, make_job(count=300, cpu=100, memory=64))
    assert len(plan.placements) == 300 and not plan.failures
    per_node: dict[str, int] = {}
    for a in plan.placements:
        per_node[a.node_id] = per_node.get(a.node_id, 0) + 1
    assert max(per_node.values()) <= 3, "anti-affinity keeps copies apart"


# ----------------------------------------------------------------- reconcile


def nodes_map(*nodes: Node) -> dict[str, Node]:
    return {n.id: n for n in nodes} or {"node-0001": make_node("node-0001")}


def indexes(rec: Reconciliation) -> list[int]:
    return [p.index for p in rec.place]


def test_reconcile_places_missing_indexes() -> None:
    job = make_job(count=3)
    have = [make_alloc(job, index=1)]
    rec = reconcile(job, have, nodes_map(), now=NOW)
    assert indexes(rec) == [0, 2] and not rec.stop
    assert all(p.reason == "missing" and p.previous is None for p in rec.place)


def test_reconcile_scale_down_stops_highest_indexes_first() -> None:
    job = make_job(count=1)
    have = [make_alloc(job, index=i, id=f"a{i}") for i in range(4)]
    rec = reconcile(job, have, nodes_map(), now=NOW)
    assert [s.alloc_id for s in rec.stop] == ["a3", "a2", "a1"]
    assert rec.stop[0].reason == "count lowered to 1" and not rec.place


def test_reconcile_duplicate_index_keeps_newest() -> None:
    job = make_job(count=1)
    old = make_alloc(job, id="old", create_time=1)
    new = make_alloc(job, id="new", create_time=2)
    rec = reconcile(job, [new, old], nodes_map(), now=NOW)
    assert [s.alloc_id for s in rec.stop] == ["old"] and not rec.place


def test_reconcile_job_stopped_and_purged() -> None:
    job = make_job(count=2, stop=True)
    have = [make_alloc(job, index=0, id="x"), make_alloc(job, index=1, id="y", client="failed")]
    rec = reconcile(job, have, nodes_map(), now=NOW)
    assert [(s.alloc_id, s.reason) for s in rec.stop] == [("x", "job stopped")]
    rec = reconcile(None, have, nodes_map(), now=NOW)
    assert [(s.alloc_id, s.reason) for s in rec.stop] == [("x", "job purged")]
    plan = rec.stop_plan("default", "app")
    assert plan.stops == rec.stop and not plan.placements


def test_reconcile_group_removed() -> None:
    job = make_job(groups=[make_group("new")])
    rec = reconcile(job, [make_alloc(job, group="gone", id="g")], nodes_map(), now=NOW)
    assert [(s.alloc_id, s.reason) for s in rec.stop] == [("g", "group removed from job")]
    assert [p.group for p in rec.place] == ["new"]


def test_reconcile_lost_on_down_or_missing_node() -> None:
    down, up = make_node("down", status="down"), make_node("up")
    job = make_job(count=2)
    a = make_alloc(job, index=0, node=down, id="a", reschedule_count=2)
    b = make_alloc(job, index=1, node="vanished", id="b")
    rec = reconcile(job, [a, b], nodes_map(down, up), now=NOW)
    assert {x.id: (x.client_status, x.desired_status) for x in rec.lost} == {
        "a": ("lost", "stop"),
        "b": ("lost", "stop"),
    }
    assert {u.id for u in rec.updates} == {"a", "b"}
    assert [(p.index, p.reason, p.previous and p.previous.id) for p in rec.place] == [
        (0, "lost", "a"),
        (1, "lost", "b"),
    ]
    assert rec.place[0].reschedule_count == 2, "a lost alloc is not a failed attempt"
    plan = schedule(ClusterSnapshot.build([down, up], []), job, rec, eval_id="e", now=NOW)
    assert nodes_of(plan) == ["up", "up"]
    links = rec.links(plan)
    assert {x.id: x.next_alloc for x in links} == {
        "a": plan.placements[0].id,
        "b": plan.placements[1].id,
    }
    assert all(x.client_status == "lost" for x in links)


def failed(job: Job, **kw: object) -> Allocation:
    return make_alloc(job, client="failed", modify_time=NOW - 1, id="f", **kw)  # type: ignore[arg-type]


def test_reconcile_reschedule_waits_for_backoff() -> None:
    job = make_job(reschedule=ReschedulePolicy(delay=5, max_delay=60))
    rec = reconcile(job, [failed(job)], nodes_map(), now=NOW)
    assert not rec.place and rec.reschedule_later == {"f": NOW - 1 + 5}
    [u] = rec.updates
    assert u.reschedule_after == NOW + 4, "the time is stored so it does not drift"
    rec = reconcile(job, [u], nodes_map(), now=NOW + 4)
    [p] = rec.place
    assert (p.reason, p.reschedule_count, p.previous) == ("reschedule", 1, u)
    assert rec.reschedule == [u]
    [a] = schedule(ClusterSnapshot.build([make_node("n")], []), job, rec, eval_id="e",
                   now=NOW + 4).placements  # fmt: skip
    assert (a.previous_alloc, a.reschedule_count) == ("f", 1)


def test_reconcile_reschedule_delay_grows_and_caps() -> None:
    job = make_job(reschedule=ReschedulePolicy(delay=5, max_delay=30))
    for count, delay in ((1, 10), (2, 20), (3, 30), (10, 30)):
        rec = reconcile(job, [failed(job, reschedule_count=count)], nodes_map(), now=NOW)
        assert rec.reschedule_later == {"f": NOW - 1 + delay}
    constant = make_job(reschedule=ReschedulePolicy(delay=5, delay_function="constant"))
    rec = reconcile(constant, [failed(constant, reschedule_count=4)], nodes_map(), now=NOW)
    assert rec.reschedule_later == {"f": NOW + 4}


def test_reconcile_reschedule_attempts_run_out() -> None:
    policy = ReschedulePolicy(attempts=2, unlimited=False, delay=0)
    job = make_job(reschedule=policy)
    once = failed(job, reschedule_count=1, reschedule_times=[NOW - 5])
    rec = reconcile(job, [once], nodes_map(), now=NOW)
    assert [(p.reschedule_count, p.reschedule_times) for p in rec.place] == [(2, (NOW - 5, NOW))]
    [a] = schedule(ClusterSnapshot.build([make_node("n")], []), job, rec, eval_id="e",
                   now=NOW).placements  # fmt: skip
    assert a.reschedule_times == (NOW - 5, NOW), "the new copy carries its line's reschedules"
    twice = failed(job, reschedule_count=2, reschedule_times=[NOW - 5, NOW - 2])
    rec = reconcile(job, [twice], nodes_map(), now=NOW)
    assert not rec.place and [a.id for a in rec.exhausted] == ["f"]


def test_reconcile_reschedule_attempts_count_within_the_interval_only() -> None:
    policy = ReschedulePolicy(attempts=1, interval=60, unlimited=False, delay=0)
    job = make_job(reschedule=policy)
    recent = failed(job, reschedule_count=1, reschedule_times=[NOW - 30])
    assert [a.id for a in reconcile(job, [recent], nodes_map(), now=NOW).exhausted] == ["f"]
    old = failed(job, reschedule_count=1, reschedule_times=[NOW - 90])  # outside the window
    rec = reconcile(job, [old], nodes_map(), now=NOW)
    assert [(p.reschedule_count, p.reschedule_times) for p in rec.place] == [(2, (NOW,))]


def test_reconcile_replaced_failures_are_left_alone() -> None:
    job = make_job()
    first = failed(job, next_alloc="second")
    second = make_alloc(job, id="second")
    rec = reconcile(job, [first, second], nodes_map(), now=NOW)
    assert rec.empty


def test_reconcile_batch_complete_is_done_but_service_complete_is_replaced() -> None:
    batch = make_job(type="batch", count=2)
    have = [make_alloc(batch, index=0, client="complete"), failed(batch, index=1)]
    rec = reconcile(batch, have, nodes_map(), now=NOW + 100)
    assert [(p.index, p.reason) for p in rec.place] == [(1, "reschedule")]
    service = make_job(count=1)
    rec = reconcile(service, [make_alloc(service, client="complete")], nodes_map(), now=NOW)
    assert [p.reason for p in rec.place] == ["missing"] and rec.place[0].previous is not None


def test_reconcile_new_version_replaces_destructively() -> None:
    # max_parallel 0: no deployment, every copy replaced at once.
    no_rollout = UpdateStrategy(max_parallel=0)
    v0 = make_job(count=2, cpu=100, update=no_rollout)
    have = [make_alloc(v0, index=i, id=f"a{i}") for i in range(2)]
    v1 = msgspec.structs.replace(make_job(count=2, cpu=200, update=no_rollout), version=1)
    rec = reconcile(v1, have, nodes_map(), now=NOW)
    assert [s.alloc_id for s in rec.stop] == ["a0", "a1"]
    assert [(p.index, p.reason, p.previous and p.previous.id) for p in rec.place] == [
        (0, "update", "a0"),
        (1, "update", "a1"),
    ]


def test_reconcile_count_only_change_updates_in_place() -> None:
    v0 = make_job(count=2)
    have = [
        make_alloc(v0, index=i, id=f"a{i}", group_hash=group_hash(v0, v0.groups[0]))
        for i in range(2)
    ]
    v1 = make_job(count=3, version=1)
    rec = reconcile(v1, have, nodes_map(), now=NOW)
    assert not rec.stop and indexes(rec) == [2]
    assert [(a.id, a.job_version) for a in rec.in_place] == [("a0", 1), ("a1", 1)]


def test_reconcile_old_version_failure_is_not_a_reschedule() -> None:
    v0 = make_job()
    v1 = make_job(version=1, cpu=300)
    rec = reconcile(v1, [failed(v0, reschedule_count=5)], nodes_map(), now=NOW)
    [p] = rec.place
    assert (p.reason, p.reschedule_count) == ("update", 0)


def test_reconcile_draining_node_migrates_services_not_batch() -> None:
    draining = make_node("d", drain=True)
    service = make_job()
    marked = make_alloc(service, node=draining, id="s")
    marked.migrate = True
    assert reconcile(service, [make_alloc(service, node=draining)], nodes_map(draining),
                     now=NOW).empty, "unmarked copies wait for the drain controller"  # fmt: skip
    rec = reconcile(service, [marked], nodes_map(draining),
                    now=NOW)  # fmt: skip
    assert rec.stop == [], "the old copy runs until its replacement is healthy"
    assert [(p.reason, p.previous and p.previous.id) for p in rec.place] == [("migrate", "s")]
    batch = make_job(type="batch")
    rec = reconcile(batch, [make_alloc(batch, node=draining)], nodes_map(draining), now=NOW)
    assert rec.empty


def test_system_job_runs_once_per_schedulable_node() -> None:
    nodes = [
        make_node("a"),
        make_node("b", labels={"zone": "x"}),
        make_node("c", status="down"),
        make_node("d", drain=True),
    ]
    job = make_job(type="system", constraints=[c("${node.labels.zone}", "!=", "x")])
    have = [
        make_alloc(job, node="a", index=0, id="on-a"),
        make_alloc(job, node="d", index=1, id="on-d"),
    ]
    rec = reconcile(job, have, nodes_map(*nodes), now=NOW)
    assert [s.alloc_id for s in rec.stop] == ["on-d"]
    assert [(p.node_id, p.index) for p in rec.place] == [("b", 1)]
    plan = schedule(ClusterSnapshot.build(nodes, have), job, rec, eval_id="e", now=NOW)
    assert not plan.placements and not plan.failures, "a filtered node is not a failure"

    fresh = make_node("e")
    rec = reconcile(job, have[:1], nodes_map(*nodes, fresh), now=NOW)
    plan = schedule(ClusterSnapshot.build([*nodes, fresh], have[:1]), job, rec, eval_id="e",
                    now=NOW)  # fmt: skip
    # Index 1 went to node b in reconcile (it cannot see constraints); b is filtered out.
    assert nodes_of(plan) == ["e"] and plan.placements[0].index == 2


def test_system_job_reports_full_nodes() -> None:
    full = make_node("full", cpu=50)
    job = make_job(type="system", cpu=100)
    rec = reconcile(job, [], nodes_map(full), now=NOW)
    plan = schedule(ClusterSnapshot.build([full], []), job, rec, eval_id="e", now=NOW)
    [f] = plan.failures
    assert f.unplaced == 1 and f.message == "0/1 nodes fit: 1 exhausted on cpu"


# ------------------------------------------------------------------ simulate


def test_simulated_workload_places_everything_within_capacity() -> None:
    nodes = simulated_cluster(300, seed=7)
    assert nodes == simulated_cluster(300, seed=7), "seeded: same nodes every time"
    jobs = simulated_jobs(3000, seed=7)
    assert sum(g.count for j in jobs for g in j.groups) == 3000
    snap = ClusterSnapshot.build(nodes, [])
    by_id = {n.id: n for n in nodes}
    placed: list[Allocation] = []
    for i, job in enumerate(jobs):
        plan = schedule(snap, job, reconcile(job, [], by_id, now=NOW), eval_id=f"s{i}", now=NOW)
        assert not plan.failures, plan.failures
        snap.apply(plan)
        placed += plan.placements
    assert len(placed) == 3000
    for state in snap.node_states():
        assert state.cpu_used <= state.cpu_total and state.memory_used <= state.memory_total
        assert state.node.schedulable or not state.groups


# ------------------------------------------------------------- spread over values


def _zone_nodes(per_zone: dict[str, int]) -> list[Node]:
    return [
        make_node(f"{zone}-{i}", labels={"zone": zone})
        for zone, n in per_zone.items()
        for i in range(n)
    ]


def _zones_of(plan: Plan, nodes: list[Node]) -> dict[str, int]:
    zone = {n.id: n.labels["zone"] for n in nodes}
    out: dict[str, int] = {}
    for a in plan.placements:
        out[zone[a.node_id]] = out.get(zone[a.node_id], 0) + 1
    return out


def _spread_plan(nodes: list[Node], count: int, **spread: Any) -> Plan:
    job = make_job(count=count, spreads=[Spread(attribute="${node.labels.zone}", **spread)])
    snap = ClusterSnapshot.build(nodes, [])
    rec = reconcile(job, [], {n.id: n for n in nodes}, now=0.0)
    return schedule(snap, job, rec, eval_id="spread", now=0.0)


def test_spread_with_targets_places_copies_in_those_shares() -> None:
    nodes = _zone_nodes({"a": 2, "b": 2})
    plan = _spread_plan(nodes, 10, targets={"a": 70, "b": 30})
    assert _zones_of(plan, nodes) == {"a": 7, "b": 3}
    # The bigger zone does not win by size: three nodes in b, one in a, 50/50.
    nodes = _zone_nodes({"a": 1, "b": 3})
    assert _zones_of(_spread_plan(nodes, 8, targets={"a": 50, "b": 50}), nodes) == {
        "a": 4,
        "b": 4,
    }


def test_spread_without_targets_is_even_over_the_values() -> None:
    nodes = _zone_nodes({"a": 1, "b": 2, "c": 3})
    assert _zones_of(_spread_plan(nodes, 9), nodes) == {"a": 3, "b": 3, "c": 3}


def test_spread_counts_the_copies_already_running() -> None:
    nodes = _zone_nodes({"a": 2, "b": 2})
    job = make_job(
        count=4,
        spreads=[Spread(attribute="${node.labels.zone}", targets={"a": 50, "b": 50})],
    )
    have = [make_alloc(job, index=i, node=nodes[0], id=f"x{i}") for i in range(2)]  # both in a
    snap = ClusterSnapshot.build(nodes, have)
    rec = reconcile(job, have, {n.id: n for n in nodes}, now=0.0)
    plan = schedule(snap, job, rec, eval_id="spread2", now=0.0)
    assert _zones_of(plan, nodes) == {"b": 2}


def test_spread_spec_errors_name_the_field() -> None:
    from podium.errors import ValidationError
    from podium.model import spec

    doc = {
        "name": "x",
        "groups": [
            {
                "name": "g",
                "spread": [{"attribute": "zone", "targets": {"a": 80, "b": 30}, "weight": 0}],
                "tasks": [{"name": "t", "config": {"command": "sleep"}}],
            }
        ],
    }
    with pytest.raises(ValidationError) as e:
        spec.validate(spec.canonicalize(doc))
    assert sorted(p.path for p in e.value.problems) == [
        "groups[0].spread[0].attribute",
        "groups[0].spread[0].targets",
        "groups[0].spread[0].weight",
    ]


def test_each_placement_carries_its_own_lineage_deployment_and_canary_flag() -> None:
    nodes = [make_node(f"n{i}", cpu=1000, memory=1000) for i in range(4)]
    job = make_job("web", groups=[make_group("g", count=5, cpu=10, memory=10)])
    old = make_alloc(job, index=3, node=nodes[0], id="old")
    places = [
        Placement(group="g", index=0, deployment_id="d1"),
        Placement(group="g", index=1, deployment_id="d1", canary=True, reason="canary"),
        Placement(group="g", index=2, deployment_id="d2"),
        Placement(group="g", index=3, previous=old, reschedule_count=2, reason="reschedule"),
        Placement(group="g", index=4, deployment_id="d1"),
    ]
    snap = ClusterSnapshot.build(nodes, [])
    plan = schedule(snap, job, Reconciliation(place=places), eval_id="e", now=NOW)
    got = [
        (a.index, a.deployment_id, a.canary, a.previous_alloc, a.reschedule_count)
        for a in plan.placements
    ]
    assert got == [
        (0, "d1", False, "", 0),
        (1, "d1", True, "", 0),
        (2, "d2", False, "", 0),
        (3, "", False, "old", 2),
        (4, "d1", False, "", 0),
    ]
    assert all(a.task_states == {} and a.checks == () for a in plan.placements)
