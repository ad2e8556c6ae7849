"""The event ring and filters: topics, keys, index and time, pruning by count and age, and
the live feed's bound; the ring's default (10,000) kept across a restart of the store."""

from __future__ import annotations

from pathlib import Path

import msgspec

from podium.model.types import Event
from podium.runtime.clock import FakeClock
from podium.server.controllers.gc import GarbageCollector, GCSettings
from podium.server.events import (
    EventFilter,
    EventHub,
    EventRing,
    event_put,
    event_time,
    prune_keys,
    readable_event,
    topic_of,
)
from podium.server.state import ClusterState
from podium.store import keys
from podium.store.base import KeyValue
from podium.store.sqlite import SQLiteStore

NOW = 1_000_000.0


def ev(type_: str, *, seq: int = 10, t: float = NOW, **kw: str) -> Event:
    return Event(seq=seq, time=t, type=type_, **kw)


def test_topics_are_the_first_word_and_task_events_belong_to_the_alloc() -> None:
    assert topic_of("alloc.healthy") == "alloc"
    assert topic_of("task.restarting") == "alloc"
    assert topic_of("node.down") == "node"
    assert topic_of("deployment.created") == "deployment"
    assert topic_of("service.endpoint_healthy") == "service"


def test_filter_by_topic_key_index_and_time() -> None:
    f = EventFilter(topics=frozenset({"alloc"}), key="web")
    assert f.wants(ev("task.started", job="web"))
    assert not f.wants(ev("job.registered", job="web"))
    assert not f.wants(ev("task.started", job="api"))
    by_alloc = EventFilter(key="ab12")
    assert by_alloc.wants(ev("task.started", alloc="ab12cd34"))
    assert not by_alloc.wants(ev("job.registered"))  # an empty alloc matches no prefix
    assert EventFilter(key="api").wants(ev("service.endpoint_healthy", service="api"))
    by_node = EventFilter(key="dev", node_ids=frozenset({"n-1"}))
    assert by_node.wants(ev("node.down", node="n-1"))
    assert not EventFilter(index=10).wants(ev("job.registered", seq=10))
    assert EventFilter(index=9).wants(ev("job.registered", seq=10))
    assert not EventFilter(since=NOW + 1).wants(ev("job.registered"))
    assert not EventFilter(namespace="ops").wants(ev("job.registered", namespace="default"))


def test_prune_by_count_then_by_age() -> None:
    ks = [event_put("x", "m", now=NOW + i).key for i in range(10)]
    assert event_time(ks[3]) == NOW + 3
    assert prune_keys(ks, EventRing(max_events=7, max_age=100), NOW + 9) == ks[:3]
    assert prune_keys(ks, EventRing(max_events=100, max_age=4.5), NOW + 9) == ks[:5]
    assert prune_keys(ks, EventRing(max_events=100, max_age=100), NOW + 9) == []


def test_a_follower_that_falls_behind_is_cut_off_not_buffered_forever() -> None:
    hub = EventHub(maxsize=4)
    put = event_put("job.registered", "m", now=NOW)
    kv = KeyValue(put.key, put.value, mod_rev=5, create_rev=5, version=1)
    with hub.follow() as slow, hub.follow() as fast:
        for _ in range(3):
            hub.publish(kv)
            fast.get_nowait()
        hub.publish(kv)  # the slow one holds 3 already: it is told it lagged
        items = [slow.get_nowait() for _ in range(slow.qsize())]
        assert items[-1] is None and len(items) == 4
        assert hub.followers == 1 and fast.get_nowait() == readable_event(kv)


async def test_the_ring_keeps_the_newest_ten_thousand_across_a_restart(tmp_path: Path) -> None:
    db = str(tmp_path / "podium.db")
    store = SQLiteStore(db)
    puts = [event_put("job.registered", f"event {i}", now=NOW + i / 1000) for i in range(10_050)]
    for i in range(0, len(puts), 1000):
        await store.txn_many([([], [p]) for p in puts[i : i + 1000]])
    clock = FakeClock(NOW + 20)
    gc = GarbageCollector(ClusterState(store), clock, GCSettings(events=EventRing()))
    assert GCSettings().events == EventRing(max_events=10_000, max_age=86_400.0)
    assert await gc.collect() == 50
    await store.close()
    reopened = SQLiteStore(db)
    kvs, _ = await reopened.list(keys.EVENTS)
    messages = [msgspec.json.decode(kv.value, type=Event).message for kv in kvs]
    assert len(messages) == 10_000
    assert messages[0] == "event 50" and messages[-1] == "event 10049"
    clock.advance(86_400 + 5)  # a day later: only what is younger than 24 h stays
    gc2 = GarbageCollector(ClusterState(reopened), clock, GCSettings())
    assert await gc2.collect() == 10_000
    await reopened.close()
