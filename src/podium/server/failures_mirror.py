"""Placement failures on every server, not just the leader.

The placement controller keeps why a job could not be placed in the leader's
`ClusterState.placement_failures` (memory: it is derived, not desired state). With
several servers a follower answers `GET /v1/job/NAME` too, and `podium job run`
stops on those failures, so the leader publishes them and the others mirror them:

    leader     publish(): every `interval`, write what changed since the last pass
               to /placementfailures/<ns>/<job> (fenced, like all leader writes)
    followers  follow():  watch /placementfailures/ into their placement_failures

In steady state nothing is written; a job that cannot be placed costs one write when
its reasons change and one delete when it is placed. One server on SQLite needs none
of this.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import msgspec

from podium.errors import Compacted, PodiumError
from podium.model.types import PlacementFailure
from podium.runtime.backoff import Backoff
from podium.server.state import ClusterState
from podium.store import keys
from podium.store.base import Compare, Delete, Op, Put

log = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(list[PlacementFailure]).decode


async def publish(state: ClusterState, *, interval: float = 0.25) -> None:
    """Leader-only: keep the store's copy equal to this server's placement failures."""
    kvs, _ = await state.store.list(keys.PLACEMENT_FAILURES)
    published = {kv.key[len(keys.PLACEMENT_FAILURES) :]: kv.value for kv in kvs}
    while True:
        current = {k: _encode(v) for k, v in state.placement_failures.items()}
        ops: list[Op] = [
            Put(keys.placement_failures(k), body)
            for k, body in current.items()
            if published.get(k) != body
        ]
        ops += [Delete(keys.placement_failures(k)) for k in published if k not in current]
        if ops:
            txns: list[tuple[list[Compare], list[Op]]] = [([], [op]) for op in ops]
            await state.store.txn_many(txns)  # fenced: only while this server leads
            published = current
        await asyncio.sleep(interval)


async def follow(state: ClusterState, leading: Callable[[], bool]) -> None:
    """Every server: mirror the published failures while it does not lead."""
    backoff = Backoff(base=0.25, cap=5.0)
    while True:
        try:
            kvs, rev = await state.store.list(keys.PLACEMENT_FAILURES)
            backoff.reset()
            if not leading():
                fresh = {kv.key[len(keys.PLACEMENT_FAILURES) :]: _decode(kv.value) for kv in kvs}
                state.placement_failures.clear()
                state.placement_failures.update(fresh)
            async for ev in state.store.watch(keys.PLACEMENT_FAILURES, start_rev=rev + 1):
                if leading():
                    continue  # the leader's own controller is the source
                key = ev.kv.key[len(keys.PLACEMENT_FAILURES) :]
                if ev.type == "put":
                    state.placement_failures[key] = _decode(ev.kv.value)
                else:
                    state.placement_failures.pop(key, None)
        except Compacted:
            log.info("placement failure watch compacted; re-listing")
        except (PodiumError, OSError, msgspec.DecodeError) as e:
            log.warning("placement failure watch failed (%s); retrying", e)
            await asyncio.sleep(backoff.next())
