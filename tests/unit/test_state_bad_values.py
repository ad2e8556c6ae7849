"""A stored value that does not decode is skipped by the server's cache, counted, and told as
an event; the feed goes on (issue 19, item 3)."""

from __future__ import annotations

import asyncio
import contextlib

from podium.model.types import Job
from podium.runtime.clock import FakeClock
from podium.scheduler import group_hash
from podium.server import jobs
from podium.server.controllers.placement import PlacementController
from podium.server.events import decode_event
from podium.server.state import ClusterState, encode
from podium.store import keys
from podium.store.memory import MemoryStore
from support.builders import make_alloc, make_job, make_node


async def _events(store: MemoryStore, type_: str) -> list[str]:
    kvs, _ = await store.list(keys.EVENTS)
    return [e.message for e in map(decode_event, kvs) if e.type == type_]


async def test_a_bad_value_at_load_is_skipped_counted_and_told() -> None:
    store = MemoryStore()
    await store.put(keys.node("n1"), encode(make_node("n1")))
    await store.put(keys.alloc("bad"), b"{not json")
    await store.put(keys.job("default", "broken"), b'{"name": 5}')
    await store.put(keys.job("default", "web"), encode(make_job("web")))
    state = ClusterState(store)
    feed = asyncio.create_task(state.run())
    try:
        async with asyncio.timeout(5):
            await state.ready.wait()
            while len(await _events(store, "store.bad_value")) < 2:
                await asyncio.sleep(0.01)
        assert set(state.jobs) == {"default/web"}
        assert "bad" not in state.allocs and set(state.nodes) == {"n1"}
        assert state.bad_value_count == 2
        assert set(state.bad_values) == {keys.alloc("bad"), keys.job("default", "broken")}
        told = await _events(store, "store.bad_value")
        assert any(keys.alloc("bad") in m for m in told), told
        # The cache still follows the store.
        rev = await store.put(keys.alloc("a1"), encode(make_alloc(id="a1", node="n1")))
        await state.wait_for(rev)
        assert "a1" in state.allocs
    finally:
        feed.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feed


async def test_a_bad_value_in_the_watch_is_skipped_and_a_good_one_heals_it() -> None:
    store = MemoryStore()
    state = ClusterState(store)
    feed = asyncio.create_task(state.run())
    try:
        async with asyncio.timeout(5):
            await state.ready.wait()
        rev = await store.put(keys.alloc("a1"), encode(make_alloc(id="a1", node="n1")))
        await state.wait_for(rev)
        # A value this version cannot read arrives through the watch: the old copy goes
        # (nothing may act on what it no longer knows), the feed goes on.
        rev = await store.put(keys.alloc("a1"), b'{"id": "a1", "index": "zero"}')
        await state.wait_for(rev)
        assert "a1" not in state.allocs and "a1" not in state.allocs_of_node("n1")
        assert state.bad_value_count == 1 and keys.alloc("a1") in state.bad_values
        rev = await store.put(keys.job("default", "web"), encode(make_job("web")))
        await state.wait_for(rev)
        assert isinstance(state.jobs["default/web"], Job)
        rev = await store.put(keys.alloc("a1"), encode(make_alloc(id="a1", node="n1")))
        await state.wait_for(rev)
        assert "a1" in state.allocs and not state.bad_values
        assert state.bad_value_count == 1  # a counter: it never goes back
    finally:
        feed.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feed


async def test_a_job_whose_record_is_bad_keeps_its_allocs_until_submitted_again() -> None:
    store = MemoryStore()
    job = make_job("web", count=1)
    await store.put(keys.node("n1"), encode(make_node("n1")))
    await store.put(keys.job("default", "web"), encode(job))
    await store.put(keys.job_version("default", "web", 0), encode(job))
    await store.put(
        keys.alloc("a1"),
        encode(make_alloc(job, id="a1", node="n1", group_hash=group_hash(job, job.groups[0]))),
    )
    await store.put(keys.job("default", "web"), b"\x00not a job")
    state = ClusterState(store)
    feed = asyncio.create_task(state.run())
    try:
        async with asyncio.timeout(5):
            await state.ready.wait()
        controller = PlacementController(state, FakeClock(1000.0))
        await controller.evaluate(["default/web"])
        # Not read as a purge: the copy still runs.
        assert state.allocs["a1"].desired_status == "run"
        # Submitting the job again replaces the unreadable record, as the next version.
        stored, changed = await jobs.register(state, make_job("web", count=1), now=1001.0)
        assert changed and stored.version == 1
        assert not state.bad_values
        await controller.evaluate(["default/web"])
        assert state.allocs["a1"].desired_status == "run"
    finally:
        feed.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feed
