"""What a server caches per alloc leaves the garbage collector nothing to walk: a full
collection over a million cached allocs must not hold the event loop for a second."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import msgspec

from podium.model.types import Allocation, CheckStatus, TaskState
from podium.server.state import ClusterState, encode
from podium.store import keys
from podium.store.sqlite import SQLiteStore
from support.builders import make_alloc


def test_a_cached_alloc_holds_no_object_the_collector_tracks() -> None:
    fresh = make_alloc("web", client="pending")
    running = msgspec.structs.replace(
        make_alloc("web", index=1),
        task_states={"main": TaskState(state="running", pid=7)},
        checks=(CheckStatus(name="http", status="passing"),),
        reschedule_times=(10.0, 20.0),
    )
    decoder = msgspec.json.Decoder(Allocation)  # as the cache decodes what the store holds
    for a in (decoder.decode(encode(fresh)), decoder.decode(encode(running))):
        gc.collect()  # a tuple of plain values is untracked at the first collection
        held = [a, a.checks, a.reschedule_times, a.task_states, a.ports, *a.checks]
        held += a.task_states.values()
        assert [x for x in held if gc.is_tracked(x)] == []


async def test_allocs_loaded_at_a_start_share_what_they_hold_alike(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    try:
        for i in range(3):
            a = make_alloc("web", index=i, id=f"web-{i}", node="node-1")
            await store.put(keys.alloc(a.id), encode(a))
        state = ClusterState(store)
        feed = asyncio.create_task(state.run())
        try:
            await asyncio.wait_for(state.ready.wait(), 10)
        finally:
            feed.cancel()
        one, two, three = (state.allocs[f"web-{i}"] for i in range(3))
        for field in ("job", "group", "node_id", "group_hash", "resources"):
            assert getattr(one, field) is getattr(two, field) is getattr(three, field), field
        assert one.id is not two.id
    finally:
        await store.close()
