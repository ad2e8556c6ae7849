"""What a server caches per alloc leaves the garbage collector nothing to walk: a full
collection over a million cached allocs must not hold the event loop for a second."""

from __future__ import annotations

import gc

import msgspec

from podium.model.types import Allocation, CheckStatus, TaskState
from podium.server.state import encode
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
