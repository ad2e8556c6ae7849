"""The event stream: append-only records of what happened, written beside the change itself.

Events are put in the same transaction as the change they describe (so an event
never claims something that did not commit); their order is the store revision.
"""

from __future__ import annotations

import itertools
import logging
import os
import time

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
    now: float | None = None,
) -> Put:
    t = time.time() if now is None else now
    ev = Event(
        time=t, type=type_, namespace=namespace, job=job, alloc=alloc, node=node, message=message
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
