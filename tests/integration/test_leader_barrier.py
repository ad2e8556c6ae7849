"""A new leader places nothing twice (issue 19, item 1): its controllers start only once
its cache has seen the store's revision at the moment of its election.

On a real etcd, the previous leader's last commits (a job's 40 allocs) land while the
next server's cache is behind (its feed is held back, as a busy or slow follower's is),
and then the old leader goes. The new leader must not place the job a second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import msgspec
import pytest

from podium.model.types import Allocation
from podium.scheduler import group_hash
from podium.server.runtime import Server, ServerConfig
from podium.server.state import encode
from podium.store import keys
from podium.store.base import WatchEvent
from podium.store.etcd import EtcdStore
from support.builders import make_alloc, make_job, make_node
from support.etcd import EtcdCluster, etcd_server

__all__ = ["etcd_server"]

pytestmark = pytest.mark.integration

COUNT = 40


class LaggingStore(EtcdStore):
    """etcd, but the server cache's feed (the watch of everything) holds its events while
    `flowing` is clear."""

    def __init__(self, endpoints: list[str], *, prefix: str) -> None:
        super().__init__(endpoints, prefix=prefix)
        self.flowing = asyncio.Event()
        self.flowing.set()

    def watch(self, prefix: str, *, start_rev: int) -> AsyncIterator[WatchEvent]:
        inner = super().watch(prefix, start_rev=start_rev)
        return self._held(inner) if prefix == "/" else inner

    async def _held(self, inner: AsyncIterator[WatchEvent]) -> AsyncIterator[WatchEvent]:
        async for ev in inner:
            await self.flowing.wait()
            yield ev


async def _job_allocs(store: EtcdStore, job: str) -> list[Allocation]:
    kvs, _ = await store.list(keys.ALLOCS)
    allocs = [msgspec.json.decode(kv.value, type=Allocation) for kv in kvs]
    return [a for a in allocs if a.job == job]


async def test_a_new_leader_waits_for_its_cache_before_placing(etcd_server: EtcdCluster) -> None:
    store = LaggingStore(etcd_server.endpoints, prefix=f"/barrier-{uuid.uuid4().hex[:8]}")
    await store.start()
    # The previous leader holds the key while the server starts (and follows).
    old_lease = await store.lease_grant(30)
    await store.put(keys.LEADER, b'{"id":"old","address":"http://old","since":0}', lease=old_lease)
    job = make_job("big", type="batch", count=COUNT, cpu=10, memory=10)
    for n in ("n1", "n2", "n3"):
        await store.put(keys.node(n), encode(make_node(n)))
    await store.put(keys.job("default", "big"), encode(job))
    await store.put(keys.job_version("default", "big", 0), encode(job))
    srv = Server(
        ServerConfig(
            store_url="etcd://" + ",".join(etcd_server.endpoints),
            port=0,
            elect=True,
            heartbeat_ttl=600.0,  # the simulated nodes never heartbeat
            leader_ttl=2.0,
        ),
        store=store,
    )
    task = asyncio.get_running_loop().create_task(srv.run())
    try:
        async with asyncio.timeout(20):
            await srv.started.wait()
        assert srv.ctx is not None and srv.ctx.leadership is not None
        lead, state = srv.ctx.leadership, srv.ctx.state
        # The old leader's last commits: every copy placed. This server's cache is behind.
        store.flowing.clear()
        hashed = group_hash(job, job.groups[0])
        for i in range(COUNT):
            a = make_alloc(job, index=i, node=f"n{i % 3 + 1}", client="pending", id=f"old-{i:03d}")
            a.group_hash = hashed
            await store.put(keys.alloc(a.id), encode(a))
        await store.lease_revoke(old_lease)  # the old leader is gone

        async def placed_before_catching_up() -> bool:
            """Wait until the new leader is held at its barrier (False) or has placed
            copies on its stale cache (True)."""
            while True:
                if lead.is_leader and getattr(lead, "barrier", 0) > state.revision:
                    return False
                if len(await _job_allocs(store, "big")) > COUNT:
                    return True
                await asyncio.sleep(0.02)

        async with asyncio.timeout(20):
            placed = await placed_before_catching_up()
            assert not placed, "the new leader placed copies on a cache that had not caught up"
            store.flowing.set()
            # Its first placement round, on a cache that has caught up, places nothing.
            while state.rounds["placement"] < 1:
                await asyncio.sleep(0.02)
            assert state.revision >= lead.barrier
        allocs = await _job_allocs(store, "big")
        extra = [a for a in allocs if not a.id.startswith("old-")]
        assert not extra, f"{len(extra)} copies placed again by the new leader"
        assert len(allocs) == COUNT
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
