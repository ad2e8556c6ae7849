"""Server write paths on the in-memory store: job versions, revision guards, the plan applier."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
import pytest

from podium.errors import Conflict
from podium.model.types import (
    Allocation,
    Group,
    Job,
    Node,
    NodeResources,
    Plan,
    Resources,
    StopRequest,
    Task,
)
from podium.server import jobs
from podium.server.plan_apply import PlanApplier
from podium.server.state import ClusterState, encode
from podium.store import keys
from support.state import memory_state


def make_job(name: str = "web", count: int = 2, memory: int = 64) -> Job:
    return Job(
        name=name,
        groups=[
            Group(
                name="g",
                count=count,
                tasks=[
                    Task(
                        name="t",
                        config={"command": "true"},
                        resources=Resources(cpu=100, memory=memory),
                    )
                ],
            )
        ],
    )


def make_node(
    id_: str = "n1", *, cpu: int = 1000, memory: int = 1000, status: str = "ready"
) -> Node:
    return Node(id=id_, name=id_, resources=NodeResources(cpu=cpu, memory=memory), status=status)  # type: ignore[arg-type]


def make_alloc(
    id_: str,
    node: str = "n1",
    *,
    memory: int = 100,
    ports: dict[str, int] | None = None,
    index: int = 0,
) -> Allocation:
    return Allocation(
        id=id_,
        namespace="default",
        job="web",
        job_version=0,
        group="g",
        index=index,
        node_id=node,
        node_name=node,
        resources=Resources(cpu=100, memory=memory),
        ports=ports or {},
    )


@pytest.fixture
async def state() -> AsyncIterator[ClusterState]:
    async with memory_state() as st:
        yield st


async def test_register_versions_only_on_change(state: ClusterState) -> None:
    j, changed = await jobs.register(state, make_job(), now=1.0)
    assert (j.version, changed) == (0, True)
    j2, changed = await jobs.register(state, make_job(), now=2.0)
    assert (j2.version, changed) == (0, False)
    j3, changed = await jobs.register(state, make_job(count=3), now=3.0)
    assert (j3.version, changed) == (1, True)
    vs = await jobs.versions(state, "default", "web")
    assert [v.version for v in vs] == [1, 0]


async def test_register_with_stale_check_index_is_refused(state: ClusterState) -> None:
    j, _ = await jobs.register(state, make_job(), now=1.0)
    await jobs.register(state, make_job(count=5), now=2.0)
    with pytest.raises(Conflict, match="changed since the plan"):
        await jobs.register(state, make_job(count=7), now=3.0, check_index=j.revision)
    current = state.jobs["default/web"]
    assert current.groups[0].count == 5


async def test_stop_then_resubmit_makes_a_new_version(state: ClusterState) -> None:
    await jobs.register(state, make_job(), now=1.0)
    await jobs.stop(state, "default", "web", purge=False, now=2.0)
    assert state.jobs["default/web"].stop
    j, changed = await jobs.register(state, make_job(), now=3.0)
    assert changed and not j.stop and j.version == 1


async def _put_node(state: ClusterState, node: Node) -> None:
    rev = await state.store.put(keys.node(node.id), encode(node))
    await state.wait_for(rev)


async def test_applier_commits_placements_and_rejects_what_no_longer_fits(
    state: ClusterState,
) -> None:
    await _put_node(state, make_node("n1", memory=250))
    await _put_node(state, make_node("down", status="down"))
    applier = PlanApplier(state)
    plan = Plan(
        namespace="default",
        job="web",
        job_version=0,
        placements=[
            make_alloc("a1", memory=100, index=0),
            make_alloc("a2", memory=100, index=1),
            make_alloc("a3", memory=100, index=2),  # 300 > 250: exhausted
            make_alloc("a4", node="down", index=3),  # node down
        ],
    )
    res = await applier.apply([plan], now=10.0)
    assert res.placed == 2
    assert sorted(why for _, why in res.rejected) == ["memory exhausted", "node is down"]
    await state.wait_for(res.revision)
    assert sorted(state.allocs) == ["a1", "a2"]


async def test_applier_rejects_port_collisions_and_applies_stops(state: ClusterState) -> None:
    """A stop in the same batch frees memory at once, but not the port: it is still bound."""
    await _put_node(state, make_node("n1"))
    applier = PlanApplier(state)
    first = Plan(
        namespace="default",
        job="web",
        job_version=0,
        placements=[make_alloc("a1", ports={"http": 20001})],
    )
    await state.wait_for((await applier.apply([first], now=1.0)).revision)
    second = Plan(
        namespace="default",
        job="web",
        job_version=0,
        placements=[make_alloc("a2", ports={"http": 20001}, index=1)],
        stops=[StopRequest(alloc_id="a1", reason="count lowered")],
    )
    res = await applier.apply([second], now=2.0)
    assert [why for _, why in res.rejected] == ["port collision"]
    await state.wait_for(res.revision)
    assert state.allocs["a1"].desired_status == "stop"
    assert state.allocs["a1"].desired_reason == "count lowered"


async def test_applier_counts_a_batch_still_in_flight_when_it_rechecks_the_next(
    state: ClusterState,
) -> None:
    """Two applies under way at once (the controller commits one batch while it hands the
    store the next): the second re-check sees what the first is committing."""
    await _put_node(state, make_node("n1", memory=250))
    applier = PlanApplier(state)

    def plan(*allocs: Allocation) -> Plan:
        return Plan(namespace="default", job="web", job_version=0, placements=list(allocs))

    first = asyncio.create_task(
        applier.apply([plan(make_alloc("a1", memory=200, ports={"http": 20001}))], now=1.0)
    )
    await asyncio.sleep(0)  # the first is re-checked and sent; its commit is not absorbed yet
    assert "a1" not in state.allocs
    second = await applier.apply(
        [
            plan(
                make_alloc("a2", memory=100, index=1),  # 200 + 100 > 250
                make_alloc("a3", memory=10, index=2, ports={"http": 20001}),  # a1's port
                make_alloc("a4", memory=10, index=3),  # fits beside a1
            )
        ],
        now=1.0,
    )
    assert sorted(why for _, why in second.rejected) == ["memory exhausted", "port collision"]
    assert (await first).placed == 1 and second.placed == 1
    await state.wait_for(second.revision)
    assert sorted(state.allocs) == ["a1", "a4"]


async def test_a_placement_the_watch_delivers_before_its_commit_returns_counts_once(
    state: ClusterState,
) -> None:
    """On etcd the watch can bring a placement into the cache before the store answers
    its commit: from then on only the cache counts it, so a re-check beside it does not
    see the node fuller than it is."""
    await _put_node(state, make_node("n1", memory=250))
    applier = PlanApplier(state)
    release = asyncio.Event()
    txn_many = state.store.txn_many

    async def slow_txn_many(txns):  # type: ignore[no-untyped-def]
        results = await txn_many(txns)  # committed (and published) at once ...
        await release.wait()  # ... but answered only later
        return results

    state.store.txn_many = slow_txn_many  # type: ignore[method-assign]

    def plan(*allocs: Allocation) -> Plan:
        return Plan(namespace="default", job="web", job_version=0, placements=list(allocs))

    first = asyncio.create_task(applier.apply([plan(make_alloc("a1", memory=150))], now=1.0))
    async with asyncio.timeout(5):
        while "a1" not in state.allocs:  # the watch delivers it; the commit is not answered
            await asyncio.sleep(0.01)
    assert not first.done()
    assert applier._recheck(make_alloc("a2", memory=100, index=1), {}) == ""  # 150 + 100
    assert applier._recheck(make_alloc("a3", memory=101, index=2), {}) == "memory exhausted"
    release.set()
    assert (await first).placed == 1


async def test_applier_guards_updates_by_revision(state: ClusterState) -> None:
    await _put_node(state, make_node("n1"))
    applier = PlanApplier(state)
    await state.wait_for(
        (
            await applier.apply(
                [
                    Plan(
                        namespace="default", job="web", job_version=0, placements=[make_alloc("a1")]
                    )
                ],
                now=1.0,
            )
        ).revision
    )
    stale = state.allocs["a1"]
    # Someone else (an agent report) writes the alloc first.
    newer = msgspec.structs.replace(stale, client_status="running", revision=0)
    rev = await state.store.put(keys.alloc("a1"), encode(newer))
    # The cache has not seen that write yet, so the applier's guard names the old revision.
    res = await applier.apply([], [msgspec.structs.replace(stale, client_status="lost")], now=2.0)
    assert res.conflicts == 1
    await state.wait_for(max(rev, res.revision))
    assert state.allocs["a1"].client_status == "running", "the newer write was not overwritten"


async def test_stop_in_the_same_batch_frees_memory_for_its_replacement(state: ClusterState) -> None:
    await _put_node(state, make_node("n1", memory=150))
    applier = PlanApplier(state)
    await state.wait_for(
        (
            await applier.apply(
                [
                    Plan(
                        namespace="default",
                        job="web",
                        job_version=0,
                        placements=[make_alloc("old")],
                    )
                ],
                now=1.0,
            )
        ).revision
    )
    swap = Plan(
        namespace="default",
        job="web",
        job_version=1,
        placements=[make_alloc("new", memory=100)],
        stops=[StopRequest(alloc_id="old", reason="update")],
    )
    res = await applier.apply([swap], now=2.0)
    assert res.placed == 1 and not res.rejected
