"""The placement controller's round gives the event loop turns while it works (issue 19,
item 4): the leader's lease keepalive and the heartbeats run on the same loop. With a zero
slice budget every slice boundary is a turn, so the boundaries can be counted; the time a
slice takes is measured by benchmarks/scheduler.py (`max_loop_stall_ms`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import msgspec
import pytest
import yaml

from podium.runtime import slices
from podium.runtime.clock import FakeClock
from podium.scheduler.simulate import simulated_cluster, simulated_jobs
from podium.server.app import create_app
from podium.server.controllers.placement import PlacementController, PlacementSettings
from podium.server.nodes import Heartbeats
from podium.server.runtime import ServerContext
from podium.server.state import ClusterState, encode
from podium.store import keys
from podium.store.base import Put
from podium.store.memory import MemoryStore

NOW = 1_700_000_000.0
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "web.yaml"


class Turns:
    """A task that counts the turns the event loop gives it."""

    def __init__(self) -> None:
        self.count = 0

    async def run(self) -> None:
        while True:
            self.count += 1
            await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def counting() -> AsyncIterator[Turns]:
    turns = Turns()
    task = asyncio.create_task(turns.run())
    await asyncio.sleep(0)
    turns.count = 0
    try:
        yield turns
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def cluster() -> AsyncIterator[tuple[MemoryStore, ClusterState]]:
    store = MemoryStore()
    nodes = simulated_cluster(300, seed=1)
    await store.txn_many([([], [Put(keys.node(n.id), encode(n))]) for n in nodes])
    state = ClusterState(store)
    feed = asyncio.create_task(state.run())
    try:
        await state.ready.wait()
        yield store, state
    finally:
        feed.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feed


async def test_a_round_gives_the_loop_a_turn_per_job_and_per_thousand_allocs(
    cluster: tuple[MemoryStore, ClusterState],
) -> None:
    store, state = cluster
    jobs = simulated_jobs(8000, seed=2)
    done = await store.txn_many(
        [([], [Put(keys.job(j.namespace, j.name), encode(j))]) for j in jobs]
    )
    await state.wait_for(done[-1].revision)
    settings = PlacementSettings(batch_jobs=len(jobs), commit_every=100_000, slice=0.0)
    controller = PlacementController(state, FakeClock(NOW), settings)
    async with counting() as turns:
        await controller.evaluate([j.key for j in jobs])
    placed = len(state.allocs)
    assert placed > 7000
    # Each job is decided and then scheduled with a turn after it (one commit at the end:
    # without the slices, a turn or two in all).
    assert turns.count >= 2 * len(jobs), (turns.count, len(jobs))

    # The controller keeps its snapshot from then on; a new one (a new leader's) reads the
    # whole cluster into it at its first round: a turn after every thousand allocs.
    controller = PlacementController(state, FakeClock(NOW), settings)
    job = jobs[0]
    group = job.groups[0]
    grown = msgspec.structs.replace(
        job, groups=[msgspec.structs.replace(group, count=group.count + 5)]
    )
    await state.wait_for(await store.put(keys.job(job.namespace, job.name), encode(grown)))
    async with counting() as turns:
        await controller.evaluate([job.key])
    assert len(state.allocs) == placed + 5
    assert turns.count >= placed // 1000, (turns.count, placed)


async def test_job_plan_gives_the_loop_a_turn_per_thousand_allocs(
    cluster: tuple[MemoryStore, ClusterState], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`job plan` is a user's request on the leader's loop: it reads the whole cluster
    into a snapshot a slice at a time too."""
    store, state = cluster
    jobs = simulated_jobs(8000, seed=2)
    done = await store.txn_many(
        [([], [Put(keys.job(j.namespace, j.name), encode(j))]) for j in jobs]
    )
    await state.wait_for(done[-1].revision)
    settings = PlacementSettings(batch_jobs=len(jobs), commit_every=100_000)
    await PlacementController(state, FakeClock(NOW), settings).evaluate([j.key for j in jobs])
    placed = len(state.allocs)
    clock = FakeClock(NOW)
    ctx = ServerContext(
        state=state,
        heartbeats=Heartbeats(clock),
        clock=clock,
        store_url="memory://",
        heartbeat_ttl=10.0,
        insecure=True,  # plain ASGI calls, no TLS: callers are not told apart
    )
    doc = {"job": yaml.safe_load(EXAMPLE.read_text())}
    monkeypatch.setattr(slices, "SLICE", 0.0)  # every slice boundary is a turn
    transport = httpx.ASGITransport(app=create_app(ctx))
    client = httpx.AsyncClient(transport=transport, base_url="http://podium")
    async with client, counting() as turns:
        r = await client.post("/v1/jobs/plan", json=doc)
    assert r.status_code == 200, r.text
    assert r.json()["create"] == 3
    assert turns.count >= placed // 1000, (turns.count, placed)
