"""EtcdStore against real etcd processes: what the shared contract cannot drive.

The contract (tests/unit/test_store_contract.py) runs on etcd too; here: leases on etcd's
own clock, compaction, etcd's refusals, an unreachable etcd, and a 3-member cluster
losing the member the store is connected to.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from podium.errors import Compacted, NotFound, StoreUnavailable
from podium.store import open_store
from podium.store.base import Put, WatchEvent
from podium.store.etcd import EtcdStore
from support.etcd import EtcdCluster, etcd_server, start_etcd_cluster

__all__ = ["etcd_server"]  # the session's etcd, a fixture
_prefixes = itertools.count()


@pytest.fixture
async def store(etcd_server: EtcdCluster) -> AsyncIterator[EtcdStore]:
    s = EtcdStore(etcd_server.endpoints, prefix=f"/etcdtest/{next(_prefixes)}")
    await s.start()
    yield s
    await s.close()


async def take(events: AsyncIterator[WatchEvent], n: int, within: float = 10) -> list[WatchEvent]:
    got: list[WatchEvent] = []
    async with asyncio.timeout(within):
        while len(got) < n:
            got.append(await anext(events))
    return got


async def test_leases_expire_on_etcds_clock_unless_kept_alive(store: EtcdStore) -> None:
    kept = await store.lease_grant(2)
    lost = await store.lease_grant(0.2)  # rounded up: etcd counts whole seconds
    await store.put("/kept", b"1", lease=kept)
    await store.put("/lost", b"1", lease=lost)
    kv = await store.get("/kept")
    assert kv is not None and kv.lease == kept
    deadline = time.monotonic() + 15
    while await store.get("/lost") is not None:
        assert time.monotonic() < deadline, "the lease never expired"
        await store.lease_keepalive(kept)
        await asyncio.sleep(0.3)
    assert await store.get("/kept") is not None  # renewed all along
    with pytest.raises(NotFound):
        await store.lease_keepalive(lost)
    with pytest.raises(NotFound):
        await store.put("/late", b"x", lease=lost)
    await store.lease_revoke(kept)
    assert await store.get("/kept") is None
    await store.lease_revoke(kept)  # unknown now: a no-op


async def test_a_compacted_watch_raises_and_a_fresh_one_works(store: EtcdStore) -> None:
    first = await store.put("/c/0", b"0")
    for i in range(1, 20):
        await store.put(f"/c/{i % 3}", str(i).encode())
    last = await store.revision()
    await store.compact(last - 4)
    with pytest.raises(Compacted):
        await take(store.watch("/c/", start_rev=first), 1)
    got = await take(store.watch("/c/", start_rev=last - 4), 5)
    assert [e.kv.mod_rev for e in got] == list(range(last - 4, last + 1))
    assert [e.kv.value for e in got] == [str(i).encode() for i in range(15, 20)]


async def test_etcd_refuses_a_txn_writing_one_key_twice(store: EtcdStore) -> None:
    before = await store.revision()
    with pytest.raises(ValueError, match="twice"):
        await store.txn([], [Put("/d", b"1"), Put("/d", b"2")])
    assert await store.get("/d") is None
    assert await store.revision() == before


async def test_an_unreachable_etcd_is_a_quick_store_unavailable(tmp_path: Path) -> None:
    store = EtcdStore(["127.0.0.1:1"], timeout=1.0)  # nothing listens on port 1
    started = time.monotonic()
    try:
        with pytest.raises(StoreUnavailable, match=r"127\.0\.0\.1:1"):
            await store.get("/x")
        with pytest.raises(StoreUnavailable):
            await store.put("/x", b"v")
    finally:
        await store.close()
    assert time.monotonic() - started < 5


async def test_three_members_lose_the_connected_one(tmp_path: Path) -> None:
    cluster = start_etcd_cluster(tmp_path, members=3)
    store = open_store(cluster.url("/failover"))
    assert isinstance(store, EtcdStore)
    try:
        await store.put("/f/0", b"0")
        events = store.watch("/f/", start_rev=await store.revision())
        assert [e.kv.key for e in await take(events, 1)] == ["/f/0"]
        cluster.kill(0)  # pick_first connected to the first endpoint
        deadline = time.monotonic() + 20
        for i in range(1, 21):  # writes go on through the other two
            while True:
                try:
                    await store.put(f"/f/{i}", str(i).encode())
                    break
                except StoreUnavailable:  # a write in flight when it died: outcome unknown
                    assert time.monotonic() < deadline, "no failover"
        got: list[WatchEvent] = []  # the watch resumed: nothing lost, nothing twice
        async with asyncio.timeout(30):
            while not got or got[-1].kv.key != "/f/20":
                got.append(await anext(events))
        # A put retried after an unknown outcome may land twice; each revision comes once.
        assert list(dict.fromkeys(e.kv.key for e in got)) == [f"/f/{i}" for i in range(1, 21)]
        revs = [e.kv.mod_rev for e in got]
        assert revs == sorted(set(revs))
        cluster.restart(0)
        kvs, _ = await store.list("/f/")
        assert len(kvs) == 21
    finally:
        await store.close()
        cluster.stop()
