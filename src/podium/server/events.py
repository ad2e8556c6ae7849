"""The event stream: append-only records of what happened, written beside the change itself.

Events are put in the same transaction as the change they describe (so an event
never claims something that did not commit); their order is the store revision.

    writes --event_put--> store /events/<time>-… (a ring: GC prunes by count and age)
    store watch --ClusterState--> EventHub --bounded queue per follower--> SSE streams
    readers filter by topic (first word of the type; task.* is alloc), key, index, time
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import msgspec

from podium.model.types import Event
from podium.store import keys
from podium.store.base import KeyValue, Put

log = logging.getLogger(__name__)
_counter = itertools.count()
_salt = os.getpid() % 10_000


def event_put(
    type_: str,
    message: str,
    *,
    namespace: str = "",
    job: str = "",
    alloc: str = "",
    node: str = "",
    service: str = "",
    now: float | None = None,
) -> Put:
    t = time.time() if now is None else now
    ev = Event(
        time=t,
        type=type_,
        namespace=namespace,
        job=job,
        alloc=alloc,
        node=node,
        service=service,
        message=message,
    )
    # Time first so a prefix listing is roughly chronological; the suffix keeps keys unique.
    key = f"{keys.EVENTS}{int(t * 1e6):017d}-{_salt:04d}-{next(_counter):08d}"
    return Put(key, msgspec.json.encode(ev))


def decode_event(kv: KeyValue) -> Event:
    ev = msgspec.json.decode(kv.value, type=Event)
    ev.seq = kv.mod_rev
    return ev


def readable_event(kv: KeyValue) -> Event | None:
    """The event, or None (logged) when its stored value does not decode."""
    try:
        return decode_event(kv)
    except msgspec.DecodeError as e:
        log.error("stored event %s does not decode, skipped: %s", kv.key, e)
        return None


# ------------------------------------------------------------------ topics and filters

# An event's topic is the first word of its type; a task's events belong to its alloc.
TOPICS = (
    "job",
    "alloc",
    "node",
    "deployment",
    "service",
    "scaling",
    "store",
    "config",
    "secret",
    "keyring",
    "security",
    "tls",
    "namespace",
    "audit",
)
# A copy's task and template events are the alloc's.
_TOPIC_ALIASES = {"task": "alloc", "template": "alloc"}


def topic_of(type_: str) -> str:
    word = type_.partition(".")[0]
    return _TOPIC_ALIASES.get(word, word)


@dataclass(frozen=True)
class EventFilter:
    """Which events a reader wants: topics (empty: all), a key (job or service name, alloc
    id or prefix, node id), a namespace, and a start (after store index `index`, at or after
    wall time `since`)."""

    topics: frozenset[str] = frozenset()
    key: str = ""
    node_ids: frozenset[str] = frozenset()  # node ids the key names (by name or id)
    namespace: str = ""
    index: int = 0
    since: float = 0.0

    def wants(self, ev: Event) -> bool:
        if ev.seq <= self.index or ev.time < self.since:
            return False
        if self.topics and topic_of(ev.type) not in self.topics:
            return False
        if self.namespace and ev.namespace and ev.namespace != self.namespace:
            return False
        k = self.key
        if not k:
            return True
        return (
            ev.job == k
            or ev.service == k
            or (ev.alloc != "" and ev.alloc.startswith(k))
            or ev.node in self.node_ids
        )


# ------------------------------------------------------------------------ live feed


class EventHub:
    """Hands every event the server's cache sees to the streams following them.

    One store watch (the cache's) serves every follower: each has a bounded queue, and
    one that falls `maxsize` events behind is cut off (told `lagged`) rather than let
    memory grow; it reconnects from the last index it saw.
    """

    def __init__(self, *, maxsize: int = 10_000) -> None:
        self.maxsize = maxsize
        self._queues: set[asyncio.Queue[Event | None]] = set()

    @property
    def followers(self) -> int:
        return len(self._queues)

    def publish(self, kv: KeyValue) -> None:
        if not self._queues:
            return
        ev = readable_event(kv)
        if ev is None:
            return
        for q in list(self._queues):
            if q.qsize() >= self.maxsize - 1:
                self._queues.discard(q)
                q.put_nowait(None)  # lagged: the reader stops here
            else:
                q.put_nowait(ev)

    @contextlib.contextmanager
    def follow(self) -> Iterator[asyncio.Queue[Event | None]]:
        q: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=self.maxsize)
        self._queues.add(q)
        try:
            yield q
        finally:
            self._queues.discard(q)


# ------------------------------------------------------------------------ the ring


@dataclass
class EventRing:
    """How many events the store keeps, and for how long (the garbage collector prunes)."""

    max_events: int = 10_000
    max_age: float = 24 * 3600.0  # seconds


def event_time(key: str) -> float:
    """The wall time an event key was written at (its first field, microseconds)."""
    stamp = key[len(keys.EVENTS) :].partition("-")[0]
    return int(stamp) / 1e6 if stamp.isdigit() else 0.0


def prune_keys(event_keys: list[str], ring: EventRing, now: float) -> list[str]:
    """The keys (sorted by time, oldest first) to delete: beyond the newest `max_events`,
    and older than `max_age`."""
    extra = max(0, len(event_keys) - ring.max_events)
    cutoff = now - ring.max_age
    n = extra
    while n < len(event_keys) and event_time(event_keys[n]) < cutoff:
        n += 1
    return event_keys[:n]
