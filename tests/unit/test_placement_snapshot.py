"""The placement controller's snapshot: built once, then kept change by change, and always
what a fresh build from the cache would give."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from podium.model.types import Allocation, Job, Node
from podium.runtime.clock import FakeClock
from podium.runtime.slices import Slicer
from podium.scheduler import ClusterSnapshot
from podium.server.controllers import placement
from podium.server.controllers.placement import PlacementController
from podium.server.state import ClusterState, encode
from podium.store import keys
from podium.store.base import Delete, Put
from support import builders
from support.state import memory_state


def make_job(name: str, count: int, *, port: bool = False) -> Job:
    return builders.make_job(name, count=count, ports={"http": 0} if port else None)


def make_node(id_: str, *, cpu: int = 1000) -> Node:
    return builders.make_node(id_, cpu=cpu, memory=4096)


async def put(state: ClusterState, key: str, value: bytes | None) -> None:
    op = Put(key, value) if value is not None else Delete(key)
    res = await state.store.txn([], [op])
    await state.wait_for(res.revision)


def usage(snap: ClusterSnapshot) -> dict[str, tuple[int, int, dict[int, int], dict[str, int]]]:
    return {
        s.node.id: (s.cpu_used, s.memory_used, dict(s.ports), dict(s.groups))
        for s in snap.node_states()
    }


def fresh(state: ClusterState) -> ClusterSnapshot:
    return ClusterSnapshot.build(
        list(state.nodes.values()), (a for a in state.allocs.values() if a.live)
    )


async def test_a_round_does_not_rebuild_the_snapshot_from_every_alloc(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with memory_state() as state:
        for i in range(3):
            await put(state, keys.node(f"n{i}"), encode(make_node(f"n{i}")))
        controller = PlacementController(state, FakeClock(1000.0))
        builds = []
        real = placement.cluster_snapshot

        async def counted(*a: Any, **kw: Any) -> ClusterSnapshot:
            builds.append(1)
            return await real(*a, **kw)

        monkeypatch.setattr(placement, "cluster_snapshot", counted)
        for name in ("a", "b", "c"):
            job = make_job(name, 4)
            await put(state, keys.job(job.namespace, job.name), encode(job))
            await controller.evaluate([job.key])
        assert len(state.allocs) == 12
        assert len(builds) == 1, "every round rebuilt the snapshot from all allocs"


async def test_changes_while_the_snapshot_is_built_are_taken_in() -> None:
    async with memory_state() as state:
        for i in range(2):
            await put(state, keys.node(f"n{i}"), encode(make_node(f"n{i}")))
        web = make_job("web", 4)
        await put(state, keys.job(web.namespace, web.name), encode(web))
        await PlacementController(state, FakeClock(1000.0)).evaluate([web.key])
        controller = PlacementController(state, FakeClock(1000.0))
        a = sorted(state.allocs.values(), key=lambda x: x.id)[0]
        ticks = []

        class Changing(Slicer):
            async def tick(self) -> None:  # the build yields: the cluster changes meanwhile
                ticks.append(1)
                if len(ticks) == 1:
                    await put(state, keys.node("n9"), encode(make_node("n9", cpu=2000)))
                    failed = msgspec.structs.replace(a, client_status="failed", revision=0)
                    await put(state, keys.alloc(a.id), encode(failed))

        snap = await controller.snapshot(Changing())
        assert ticks and usage(snap) == usage(fresh(state))


async def test_the_kept_snapshot_matches_a_fresh_build_through_changes() -> None:
    async with memory_state() as state:
        for i in range(4):
            await put(state, keys.node(f"n{i}"), encode(make_node(f"n{i}")))
        controller = PlacementController(state, FakeClock(1000.0))
        web = make_job("web", 6, port=True)
        await put(state, keys.job(web.namespace, web.name), encode(web))
        await controller.evaluate([web.key])
        assert usage(await controller.snapshot()) == usage(fresh(state))
        # An agent reports one copy failed, another is stopped by the server.
        a, b = sorted(state.allocs_of_job("default", "web"), key=lambda x: x.id)[:2]
        failed = msgspec.structs.replace(a, client_status="failed", revision=0)
        await put(state, keys.alloc(a.id), encode(failed))
        stopped = msgspec.structs.replace(b, desired_status="stop", revision=0)
        await put(state, keys.alloc(b.id), encode(stopped))
        assert usage(await controller.snapshot()) == usage(fresh(state))
        # A node goes away and another joins; a node's resources change.
        await put(state, keys.node("n3"), None)
        await put(state, keys.node("n9"), encode(make_node("n9", cpu=2000)))
        await put(state, keys.node("n0"), encode(make_node("n0", cpu=3000)))
        assert usage(await controller.snapshot()) == usage(fresh(state))
        # Garbage collection deletes an alloc.
        await put(state, keys.alloc(a.id), None)
        assert usage(await controller.snapshot()) == usage(fresh(state))
        # Another round (replacements) and a new job.
        api = make_job("api", 5)
        await put(state, keys.job(api.namespace, api.name), encode(api))
        await controller.evaluate([web.key, api.key])
        assert usage(await controller.snapshot()) == usage(fresh(state))


async def test_placements_the_applier_rejects_leave_the_snapshot() -> None:
    async with memory_state() as state:
        for i in range(2):
            await put(state, keys.node(f"n{i}"), encode(make_node(f"n{i}")))
        controller = PlacementController(state, FakeClock(1000.0))
        await controller.snapshot()
        rejected: list[Allocation] = []

        def recheck(a: Allocation, freed: object) -> str:
            if a.index % 2:
                rejected.append(a)
                return "cpu exhausted"
            return ""

        controller.applier._recheck = recheck  # type: ignore[method-assign]
        job = make_job("web", 4)
        await put(state, keys.job(job.namespace, job.name), encode(job))
        await controller.evaluate([job.key])
        assert rejected and len(state.allocs) == 4 - len(rejected)
        assert usage(await controller.snapshot()) == usage(fresh(state))


async def test_a_failed_round_drops_the_snapshot() -> None:
    async with memory_state() as state:
        await put(state, keys.node("n0"), encode(make_node("n0")))
        controller = PlacementController(state, FakeClock(1000.0))
        first = await controller.snapshot()

        async def broken(*a: object, **kw: object) -> object:
            raise RuntimeError("store down")

        controller.applier.apply = broken  # type: ignore[method-assign]
        job = make_job("web", 2)
        await put(state, keys.job(job.namespace, job.name), encode(job))
        with pytest.raises(RuntimeError):
            await controller.evaluate([job.key])
        assert await controller.snapshot() is not first
        assert usage(await controller.snapshot()) == usage(fresh(state))


async def test_a_round_leaves_no_placement_for_a_later_lookup_to_index_at_once() -> None:
    """The snapshot takes a round's placements in unindexed (cheap); the round indexes
    them a slice at a time, so the next lookup of one alloc (a change the watch brings)
    does not index 5,000 of them in one turn of the event loop."""
    async with memory_state() as state:
        for i in range(100):
            await put(state, keys.node(f"n{i}"), encode(make_node(f"n{i}", cpu=100_000)))
        job = make_job("big", 5000)
        await put(state, keys.job(job.namespace, job.name), encode(job))
        controller = PlacementController(state, FakeClock(1000.0))
        await controller.evaluate([job.key])
        snap = await controller.snapshot()
        assert len(state.allocs) == 5000
        assert snap.index_adopted(0) == 0, "placements left for the next lookup to index"
        assert usage(snap) == usage(fresh(state))


async def test_a_changed_job_goes_before_the_rest_of_a_sweep() -> None:
    """At a start every job is swept, a batch at a time; a job submitted meanwhile is
    in the next batch, not behind all the others."""
    async with memory_state() as state:
        for i in range(50):
            job = make_job(f"old{i:02d}", 1)
            await put(state, keys.job(job.namespace, job.name), encode(job))
        controller = PlacementController(
            state, FakeClock(1000.0), placement.PlacementSettings(batch_jobs=2)
        )
        batches: list[list[str]] = []
        first = asyncio.Event()
        go_on = asyncio.Event()

        async def evaluate(job_keys: list[str]) -> None:
            batches.append(sorted(job_keys))
            first.set()
            await go_on.wait()

        controller.evaluate = evaluate  # type: ignore[method-assign]
        task = asyncio.create_task(controller.run())
        try:
            await asyncio.wait_for(first.wait(), 5)
            new = make_job("new", 1)
            await put(state, keys.job(new.namespace, new.name), encode(new))
            go_on.set()
            while len(batches) < 2:
                await asyncio.sleep(0.01)
        finally:
            task.cancel()
        assert batches[0][0].startswith("default/old")
        assert "default/new" in batches[1], batches[:3]
