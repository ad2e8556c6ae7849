"""One contract for every store backend: the same calls must give the same answers.

Each test runs against MemoryStore, SQLiteStore on a file in tmp_path, and EtcdStore on a
real etcd (one per session, started by tests/support/etcd.py; each test has its own key
prefix). etcd's revisions are cluster-wide, so the etcd store is seen through `Rebased`:
revisions count from the one the test started at, as on a fresh store. Tests that drive
leases by a fake clock or trim history by a count run on memory and sqlite only; their
etcd counterparts are in tests/integration/test_etcd_store.py.
"""

from __future__ import annotations

import asyncio
import builtins
import itertools
import os
import random
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from msgspec.structs import replace

from podium.errors import Compacted, Conflict, NotFound, StoreError
from podium.store import open_store
from podium.store.base import (
    Compare,
    Delete,
    Get,
    KeyValue,
    Op,
    Put,
    Store,
    TxnResult,
    WatchEvent,
)
from podium.store.etcd import EtcdStore
from podium.store.memory import MemoryStore
from podium.store.sqlite import SQLiteStore
from support.etcd import EtcdCluster, etcd_server

Backend = Any  # MemoryStore | SQLiteStore | Rebased: the same calls on each
MakeStore = Callable[..., Backend]
_prefixes = itertools.count()
__all__ = ["etcd_server"]  # the session's etcd, a fixture


class Rebased:
    """An EtcdStore whose revisions count from `base` (the etcd revision when the test
    began): revisions going in are shifted up, coming out shifted down. 0 ("absent")
    stays 0. Everything else passes through to the real store."""

    def __init__(self, store: EtcdStore, base: int) -> None:
        self.store = store
        self.base = base

    def _up(self, rev: Any) -> Any:
        return rev + self.base if isinstance(rev, int) and rev else rev

    def _kv(self, kv: KeyValue) -> KeyValue:
        create = kv.create_rev - self.base if kv.create_rev else 0
        return replace(kv, mod_rev=kv.mod_rev - self.base, create_rev=create)

    def _res(self, r: TxnResult) -> TxnResult:
        reads = [[self._kv(kv) for kv in read] for read in r.reads]
        return TxnResult(r.succeeded, r.revision - self.base, reads)

    def _cmp(self, c: Any) -> Any:
        if isinstance(c, Compare) and c.target in ("mod_rev", "create_rev"):
            return replace(c, value=self._up(c.value))
        return c

    async def start(self) -> None:
        await self.store.start()

    async def get(self, key: str) -> KeyValue | None:
        kv = await self.store.get(key)
        return self._kv(kv) if kv else None

    async def list(self, prefix: str) -> tuple[builtins.list[KeyValue], int]:
        kvs, rev = await self.store.list(prefix)
        return [self._kv(kv) for kv in kvs], rev - self.base

    async def put(
        self, key: str, value: bytes, *, expect_rev: int | None = None, lease: int = 0
    ) -> int:
        return (
            await self.store.put(key, value, expect_rev=self._up(expect_rev), lease=lease)
            - self.base
        )

    async def delete(self, key: str, *, expect_rev: int | None = None) -> int:
        return await self.store.delete(key, expect_rev=self._up(expect_rev)) - self.base

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        return self._res(await self.store.txn([self._cmp(c) for c in compares], success, failure))

    async def txn_many(
        self, txns: Sequence[tuple[Sequence[Compare], Sequence[Op]]]
    ) -> builtins.list[TxnResult]:
        shifted = [([self._cmp(c) for c in cs], ops) for cs, ops in txns]
        return [self._res(r) for r in await self.store.txn_many(shifted)]

    async def revision(self) -> int:
        return await self.store.revision() - self.base

    async def watch(self, prefix: str, *, start_rev: int) -> AsyncIterator[WatchEvent]:
        async for ev in self.store.watch(prefix, start_rev=start_rev + self.base):
            yield replace(ev, kv=self._kv(ev.kv))

    async def lease_grant(self, ttl: float) -> int:
        return await self.store.lease_grant(ttl)

    async def lease_keepalive(self, lease: int) -> None:
        await self.store.lease_keepalive(lease)

    async def lease_revoke(self, lease: int) -> None:
        await self.store.lease_revoke(lease)

    async def close(self) -> None:
        await self.store.close()


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


_ETCD_ONLY_ELSEWHERE = {
    "clock": "etcd's leases run on etcd's clock",
    "lease_check_interval": "etcd's leases run on etcd's clock",
    "history": "etcd keeps history until compacted",
    "max_watch_pending": "gRPC flow control holds a slow etcd watcher back instead",
}


@pytest.fixture(params=["memory", "sqlite", "etcd"])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeStore]:
    made: list[Backend] = []
    etcd: EtcdCluster | None = None
    base = 0
    if request.param == "etcd":
        etcd = request.getfixturevalue("etcd_server")
        base = await EtcdStore(etcd.endpoints, prefix="/none").revision()

    def make(**options: Any) -> Backend:
        store: Backend
        if request.param == "memory":
            store = MemoryStore(**options)
        elif request.param == "sqlite":
            store = SQLiteStore(tmp_path / f"store{len(made)}.db", **options)
        else:
            for option in options:
                pytest.skip(
                    f"{_ETCD_ONLY_ELSEWHERE[option]} (see tests/integration/test_etcd_store.py)"
                )
            assert etcd is not None
            prefix = f"/contract/{next(_prefixes)}"
            store = Rebased(EtcdStore(etcd.endpoints, prefix=prefix), base)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


@pytest.fixture
def store(make_store: MakeStore) -> Backend:
    return make_store()


async def take(events: AsyncIterator[WatchEvent], n: int) -> list[WatchEvent]:
    got: list[WatchEvent] = []
    async with asyncio.timeout(5):
        while len(got) < n:
            got.append(await anext(events))
    return got


def brief(events: list[WatchEvent]) -> list[tuple[str, str, int, bytes]]:
    return [(e.type, e.kv.key, e.kv.mod_rev, e.kv.value) for e in events]


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(5):
        while not await check():
            await asyncio.sleep(0.01)


# ------------------------------------------------------------------ keys and revisions


def test_backends_satisfy_the_protocol(store: Backend) -> None:
    assert isinstance(store, Store)


async def test_get_put_delete(store: Backend) -> None:
    assert await store.get("/a") is None
    rev = await store.put("/a", b"one")
    assert rev == 1
    kv = await store.get("/a")
    assert kv == KeyValue("/a", b"one", mod_rev=1, create_rev=1, version=1)
    assert await store.delete("/a") == 2
    assert await store.get("/a") is None
    # Deleting what is not there writes nothing and returns the current revision.
    assert await store.delete("/a") == 2
    assert await store.revision() == 2


async def test_mod_rev_create_rev_version(store: Backend) -> None:
    await store.put("/a", b"1")  # rev 1
    await store.put("/b", b"x")  # rev 2
    await store.put("/a", b"2")  # rev 3
    a = await store.get("/a")
    assert a is not None
    assert (a.value, a.mod_rev, a.create_rev, a.version) == (b"2", 3, 1, 2)
    await store.delete("/a")  # rev 4
    await store.put("/a", b"3")  # rev 5: a new life
    a = await store.get("/a")
    assert a is not None
    assert (a.mod_rev, a.create_rev, a.version) == (5, 5, 1)
    b = await store.get("/b")
    assert b is not None and (b.mod_rev, b.version) == (2, 1)


async def test_expect_rev_guards(store: Backend) -> None:
    rev = await store.put("/k", b"v1", expect_rev=0)  # 0: must be absent
    with pytest.raises(Conflict):
        await store.put("/k", b"v2", expect_rev=0)
    with pytest.raises(Conflict):
        await store.put("/k", b"v2", expect_rev=rev + 5)
    assert await store.revision() == rev  # failed guards write nothing
    kv = await store.get("/k")
    assert kv is not None and kv.value == b"v1"
    rev2 = await store.put("/k", b"v2", expect_rev=rev)
    assert rev2 == rev + 1
    with pytest.raises(Conflict):
        await store.delete("/k", expect_rev=rev)
    with pytest.raises(Conflict):
        await store.put("/absent", b"x", expect_rev=rev2)
    assert await store.delete("/k", expect_rev=rev2) == rev2 + 1
    assert await store.get("/k") is None


async def test_revision_grows_by_one_per_write(store: Backend) -> None:
    rng = random.Random(7)
    last = await store.revision()
    for i in range(60):
        key = f"/r/{rng.randrange(8)}"
        if rng.random() < 0.7:
            rev = await store.put(key, str(i).encode())
            assert rev == last + 1
        else:
            existed = await store.get(key) is not None
            rev = await store.delete(key)
            assert rev == (last + 1 if existed else last)
        assert await store.revision() == rev
        last = rev


async def test_concurrent_writes_get_distinct_increasing_revisions(store: Backend) -> None:
    revs = await asyncio.gather(*(store.put(f"/c/{i}", b"x") for i in range(200)))
    assert sorted(revs) == list(range(1, 201))
    for i, rev in enumerate(revs):
        kv = await store.get(f"/c/{i}")
        assert kv is not None and kv.mod_rev == rev


async def test_concurrent_compare_and_swap_loses_no_update(store: Backend) -> None:
    await store.put("/counter", b"0")

    async def increment() -> None:
        while True:
            kv = await store.get("/counter")
            assert kv is not None
            try:
                await store.put("/counter", str(int(kv.value) + 1).encode(), expect_rev=kv.mod_rev)
                return
            except Conflict:
                continue

    await asyncio.gather(*(increment() for _ in range(30)))
    kv = await store.get("/counter")
    assert kv is not None and kv.value == b"30" and kv.version == 31


# ------------------------------------------------------------------ transactions


@pytest.mark.parametrize(
    ("compare", "holds"),
    [
        (Compare("/t", "mod_rev", "=", 2), True),
        (Compare("/t", "mod_rev", "=", 1), False),
        (Compare("/t", "mod_rev", "!=", 1), True),
        (Compare("/t", "mod_rev", "<", 3), True),
        (Compare("/t", "mod_rev", "<", 2), False),
        (Compare("/t", "mod_rev", ">", 1), True),
        (Compare("/t", "mod_rev", ">", 2), False),
        (Compare("/t", "create_rev", "=", 1), True),
        (Compare("/t", "version", "=", 2), True),
        (Compare("/t", "version", ">", 2), False),
        (Compare("/t", "value", "=", b"new"), True),
        (Compare("/t", "value", "=", b"old"), False),
        (Compare("/t", "value", "!=", b"old"), True),
        (Compare("/t", "value", "<", b"nev"), False),
        (Compare("/t", "value", ">", b"nev"), True),
        (Compare("/missing", "mod_rev", "=", 0), True),
        (Compare("/missing", "version", "=", 0), True),
        (Compare("/missing", "mod_rev", ">", 0), False),
        (Compare("/missing", "value", "=", b""), False),  # as in etcd: no value to compare
    ],
)
async def test_txn_compare(store: Backend, compare: Compare, holds: bool) -> None:
    await store.put("/t", b"old")
    await store.put("/t", b"new")  # /t: mod_rev 2, create_rev 1, version 2
    res = await store.txn([compare], [Put("/took", b"success")], [Put("/took", b"failure")])
    assert res.succeeded is holds
    kv = await store.get("/took")
    assert kv is not None and kv.value == (b"success" if holds else b"failure")
    assert res.revision == 3


async def test_txn_branches_and_reads(store: Backend) -> None:
    await store.put("/j/a", b"1")
    await store.put("/j/b", b"2")
    res = await store.txn(
        [Compare("/j/a", "value", "=", b"1"), Compare("/j/b", "mod_rev", "=", 2)],
        [
            Put("/j/a", b"10"),
            Put("/j/0", b"0"),
            Get("/j/a"),
            Get("/j/", prefix=True),
            Delete("/j/b"),
        ],
        [Get("/j/a")],
    )
    assert res.succeeded
    assert res.revision == 3  # one revision for the whole transaction
    assert [kv.value for kv in res.reads[0]] == [b"10"]  # ops see earlier ops
    assert [(kv.key, kv.value) for kv in res.reads[1]] == [
        ("/j/0", b"0"),
        ("/j/a", b"10"),
        ("/j/b", b"2"),
    ]
    assert await store.get("/j/b") is None
    a = await store.get("/j/a")
    assert a is not None and a.mod_rev == 3

    res = await store.txn([Compare("/j/a", "value", "=", b"1")], [Put("/j/x", b"")], [Get("/j/a")])
    assert not res.succeeded
    assert res.revision == 3  # the failure branch only read
    assert [kv.value for kv in res.reads[0]] == [b"10"]
    assert await store.get("/j/x") is None


async def test_txn_many_judges_each_in_order(store: Backend) -> None:
    await store.put("/m/taken", b"x")  # rev 1
    results = await store.txn_many(
        [
            ([Compare("/m/a", "mod_rev", "=", 0)], [Put("/m/a", b"1")]),  # rev 2
            ([Compare("/m/taken", "mod_rev", "=", 0)], [Put("/m/taken", b"stolen")]),  # fails
            ([Compare("/m/a", "mod_rev", "=", 2)], [Put("/m/a", b"2")]),  # sees the first: rev 3
            ([Compare("/m/a", "value", "=", b"1")], [Put("/m/a", b"3")]),  # stale read: fails
            ([], [Get("/m/a")]),  # read only
        ]
    )
    assert [r.succeeded for r in results] == [True, False, True, False, True]
    assert [r.revision for r in results] == [2, 2, 3, 3, 3]
    assert [kv.value for kv in results[4].reads[0]] == [b"2"]
    taken = await store.get("/m/taken")
    assert taken is not None and taken.value == b"x"
    assert await store.revision() == 3
    assert await store.txn_many([]) == []


async def test_txn_many_commits_a_large_batch(store: Backend) -> None:
    txns = [
        ([Compare(f"/big/{i:05d}", "mod_rev", "=", 0)], [Put(f"/big/{i:05d}", b"v" * 600)])
        for i in range(2000)
    ]
    results = await store.txn_many(txns)
    assert all(r.succeeded for r in results)
    assert [r.revision for r in results] == list(range(1, 2001))
    kvs, rev = await store.list("/big/")
    assert len(kvs) == 2000 and rev == 2000


# ------------------------------------------------------------------ list and delete


async def test_list_by_prefix_is_sorted_and_has_the_revision(store: Backend) -> None:
    for key in ["/p/b", "/p/a", "/pq", "/p/c/d", "/o", "/p/é", "/p/z"]:
        await store.put(key, key.encode())
    kvs, rev = await store.list("/p/")
    assert [kv.key for kv in kvs] == ["/p/a", "/p/b", "/p/c/d", "/p/z", "/p/é"]
    assert rev == 7 == await store.revision()
    everything, _ = await store.list("")
    assert [kv.key for kv in everything] == sorted(
        ["/p/b", "/p/a", "/pq", "/p/c/d", "/o", "/p/é", "/p/z"]
    )
    assert await store.list("/nothing/") == ([], 7)


async def test_delete_prefix(store: Backend) -> None:
    for key in ["/d/1", "/d/2", "/d/3/x", "/dx", "/e"]:
        await store.put(key, b"v")
    res = await store.txn([], [Delete("/d/", prefix=True)])
    assert res.succeeded and res.revision == 6  # all in one revision
    kvs, _ = await store.list("")
    assert [kv.key for kv in kvs] == ["/dx", "/e"]


async def test_reads_see_acknowledged_writes(store: Backend) -> None:
    for i in range(50):
        rev = await store.put("/seen", str(i).encode())
        kv = await store.get("/seen")
        assert kv is not None and kv.value == str(i).encode() and kv.mod_rev == rev
        kvs, list_rev = await store.list("/seen")
        assert kvs == [kv] and list_rev >= rev


async def test_list_is_one_snapshot_while_writes_land(store: Backend) -> None:
    stop = asyncio.Event()

    async def write() -> None:
        i = 0
        while not stop.is_set():
            await store.txn_many([([], [Put(f"/snap/{i % 50}", b"v" * 100)])] * 20)
            i += 1
            await asyncio.sleep(0)

    writer = asyncio.create_task(write())
    try:
        for _ in range(1000):
            kvs, rev = await store.list("/snap/")
            assert all(kv.mod_rev <= rev for kv in kvs)
            await asyncio.sleep(0)
    finally:
        stop.set()
        await writer


# ------------------------------------------------------------------ watches


async def test_watch_catches_up_then_follows(store: Backend) -> None:
    await store.put("/w/a", b"1")  # 1
    await store.put("/w/b", b"2")  # 2
    await store.put("/w/a", b"3")  # 3
    await store.delete("/w/b")  # 4
    events = store.watch("/w/", start_rev=2)
    got = await take(events, 3)
    assert brief(got) == [
        ("put", "/w/b", 2, b"2"),
        ("put", "/w/a", 3, b"3"),
        ("delete", "/w/b", 4, b""),
    ]
    assert [e.prev_value for e in got] == [None, b"1", b"2"]
    assert got[1].kv.version == 2 and got[1].kv.create_rev == 1

    await store.put("/w/c", b"5")  # live from here on
    await store.txn([], [Put("/w/d", b"6"), Put("/w/a", b"7")])
    await store.txn([], [Delete("/w/", prefix=True)])
    got = await take(events, 6)
    assert brief(got) == [
        ("put", "/w/c", 5, b"5"),
        ("put", "/w/d", 6, b"6"),
        ("put", "/w/a", 6, b"7"),
        ("delete", "/w/a", 7, b""),
        ("delete", "/w/c", 7, b""),
        ("delete", "/w/d", 7, b""),
    ]
    assert got[2].prev_value == b"3"


async def test_watch_filters_by_prefix(store: Backend) -> None:
    await store.put("/x/1", b"a")
    events = store.watch("/x/", start_rev=1)
    await store.put("/y/1", b"b")
    await store.put("/x2", b"c")
    await store.put("/x/2", b"d")
    got = await take(events, 2)
    assert brief(got) == [("put", "/x/1", 1, b"a"), ("put", "/x/2", 4, b"d")]


async def test_watch_from_the_future_waits(store: Backend) -> None:
    joined = asyncio.create_task(take(store.watch("/", start_rev=3), 2))
    await asyncio.sleep(0)  # the watch joins before anything is written: all live
    for i in range(4):
        await store.put(f"/f/{i}", b"v")
    got = await joined
    assert [e.kv.mod_rev for e in got] == [3, 4]


async def test_watch_catch_up_matches_what_was_seen_live(store: Backend) -> None:
    """Catch-up rebuilds events from history; they must equal the live stream."""

    async def collect(events: AsyncIterator[WatchEvent]) -> list[WatchEvent]:
        got: list[WatchEvent] = []
        async with asyncio.timeout(10):
            async for ev in events:
                got.append(ev)
                if ev.kv.key == "/zz/end":
                    break
        return got

    live = asyncio.create_task(collect(store.watch("/", start_rev=1)))
    await asyncio.sleep(0)  # the watch joins before anything is written
    # etcd refuses a txn that writes one key twice; the others are checked doing it too.
    rewrites = not isinstance(store, Rebased)
    rng = random.Random(3)
    for i in range(200):
        key = f"/h/{rng.randrange(6)}"
        roll = rng.random()
        if roll < 0.6:
            await store.put(key, f"{key}={i}".encode())
        elif roll < 0.8:
            await store.delete(key)
        elif roll < 0.9:
            again = key if rewrites else f"/g/{rng.randrange(6)}"
            await store.txn([], [Delete("/h/", prefix=True), Put(again, b"again")])
        else:
            last: list[Op] = [Put(key, b"b"), Delete(key)] if rewrites else [Delete(key)]
            await store.txn_many([([], [Put(key, b"a")]), ([], last)])
    await store.put("/zz/end", b"")
    seen_live = await live
    replayed = await collect(store.watch("/", start_rev=1))
    assert replayed == seen_live
    assert len(seen_live) > 200
    assert sorted({e.kv.mod_rev for e in seen_live}) == list(range(1, await store.revision() + 1))


async def test_watch_batches_are_the_watch_in_lists(store: Backend) -> None:
    """Where a backend offers `watch_batches` (the server's cache uses it), its lists,
    flattened, are exactly what `watch` gives: catch-up and live, in order."""
    batches = getattr(store, "watch_batches", None)
    if batches is None:
        pytest.skip("this backend has no watch_batches (the cache falls back to watch)")
    for i in range(5):
        await store.put(f"/b/{i}", b"old")  # 1..5: catch-up
    one = store.watch("/b/", start_rev=2)
    many = batches("/b/", start_rev=2)
    first = await asyncio.wait_for(anext(many), 5)
    assert [e.kv.mod_rev for e in first] == [2, 3, 4, 5], "history is handed over at once"
    await store.txn_many([([], [Put(f"/b/n{i}", b"new")]) for i in range(40)])  # 6..45
    await store.put("/other", b"x")  # not under the prefix
    await store.txn([], [Delete("/b/", prefix=True)])  # 47: 45 deletes
    flat = list(first)
    async with asyncio.timeout(5):
        while len(flat) < 4 + 40 + 45:
            batch = await anext(many)
            assert batch, "no empty lists"
            flat += batch
    assert flat == await take(one, len(flat))
    assert [e.kv.mod_rev for e in flat][4:44] == list(range(6, 46))


async def test_watch_too_old_is_compacted(make_store: MakeStore) -> None:
    store = make_store(history=10)
    for i in range(40):
        await store.put(f"/old/{i % 3}", str(i).encode())
    with pytest.raises(Compacted):
        await take(store.watch("/", start_rev=1), 1)
    got = await take(store.watch("/old/", start_rev=31), 10)  # the last 10 are kept
    assert [e.kv.mod_rev for e in got] == list(range(31, 41))
    assert [e.kv.value for e in got] == [str(i).encode() for i in range(30, 40)]


async def test_slow_watcher_is_cut_off_with_compacted(make_store: MakeStore) -> None:
    store = make_store(max_watch_pending=5)
    await store.put("/s/0", b"v")
    events = store.watch("/s/", start_rev=1)
    assert len(await take(events, 1)) == 1  # it has joined
    for i in range(1, 30):
        await store.put(f"/s/{i}", b"v")
    with pytest.raises(Compacted):
        await take(events, 29)
    # A fresh watch from where it stopped still works.
    got = await take(store.watch("/s/", start_rev=2), 29)
    assert [e.kv.mod_rev for e in got] == list(range(2, 31))


async def test_close_ends_watches(make_store: MakeStore) -> None:
    store = make_store()
    await store.put("/z", b"v")
    events = store.watch("/", start_rev=1)
    await take(events, 1)
    await store.close()
    with pytest.raises(StoreError):
        await take(events, 1)
    with pytest.raises(StoreError):
        await store.put("/z", b"again")


# ------------------------------------------------------------------ leases


async def test_lease_expiry_deletes_its_keys(make_store: MakeStore) -> None:
    clock = FakeClock()
    store = make_store(clock=clock, lease_check_interval=3600)  # we reap by hand
    lease = await store.lease_grant(10)
    await store.put("/l/a", b"1", lease=lease)
    await store.put("/l/b", b"2", lease=lease)
    await store.put("/l/keep", b"3")
    kv = await store.get("/l/a")
    assert kv is not None and kv.lease == lease
    events = store.watch("/l/", start_rev=await store.revision() + 1)

    clock.advance(9)
    assert await store.expire_leases() == 0
    clock.advance(2)
    assert await store.expire_leases() == 1
    got = await take(events, 2)
    assert brief(got) == [("delete", "/l/a", 4, b""), ("delete", "/l/b", 4, b"")]
    kvs, _ = await store.list("/l/")
    assert [kv.key for kv in kvs] == ["/l/keep"]
    with pytest.raises(NotFound):
        await store.lease_keepalive(lease)
    with pytest.raises(NotFound):
        await store.put("/l/late", b"x", lease=lease)
    assert await store.get("/l/late") is None


async def test_keepalive_keeps_keys(make_store: MakeStore) -> None:
    clock = FakeClock()
    store = make_store(clock=clock, lease_check_interval=3600)
    lease = await store.lease_grant(10)
    await store.put("/k/a", b"1", lease=lease)
    for _ in range(5):
        clock.advance(8)
        await store.lease_keepalive(lease)
        assert await store.expire_leases() == 0
    assert await store.get("/k/a") is not None
    clock.advance(10)
    assert await store.expire_leases() == 1
    assert await store.get("/k/a") is None


async def test_expiry_loop_runs_in_the_background(make_store: MakeStore) -> None:
    clock = FakeClock()
    store = make_store(clock=clock, lease_check_interval=0.01)
    await store.start()
    lease = await store.lease_grant(5)
    await store.put("/bg", b"1", lease=lease)
    clock.advance(6)

    async def gone() -> bool:
        return await store.get("/bg") is None

    await eventually(gone)


async def test_lease_revoke_and_reattach(make_store: MakeStore) -> None:
    clock = FakeClock()
    store = make_store(clock=clock, lease_check_interval=3600)
    one = await store.lease_grant(10)
    two = await store.lease_grant(10)
    assert one != two
    await store.put("/r/a", b"1", lease=one)
    await store.put("/r/b", b"1", lease=one)
    await store.put("/r/b", b"2", lease=two)  # moved to another lease
    await store.put("/r/c", b"1", lease=one)
    await store.put("/r/c", b"2")  # detached
    await store.lease_revoke(one)
    kvs, _ = await store.list("/r/")
    assert [(kv.key, kv.lease) for kv in kvs] == [("/r/b", two), ("/r/c", 0)]
    await store.lease_revoke(one)  # unknown now: a no-op
    with pytest.raises(NotFound):
        await store.lease_keepalive(one)


async def test_unknown_lease_fails_the_whole_request(store: Backend) -> None:
    with pytest.raises(NotFound):
        await store.put("/u", b"x", lease=12345)
    with pytest.raises(NotFound):
        await store.txn_many([([], [Put("/u/1", b"x")]), ([], [Put("/u/2", b"x", lease=999)])])
    assert await store.list("/u") == ([], 0)
    with pytest.raises(ValueError):
        await store.lease_grant(0)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda s: s.put("", b"x"), ValueError),
        (lambda s: s.put("/k", "text"), TypeError),
        (lambda s: s.put("/k\udc80", b"x"), ValueError),
        (lambda s: s.txn([Compare("/k", "value", "=", 1)], []), TypeError),
        (lambda s: s.txn([Compare("/k", "mod_rev", "=", b"1")], []), TypeError),
        (lambda s: s.txn([], ["put /k"]), TypeError),
        (lambda s: s.txn_many([([], [Put("/k", None)])]), TypeError),
    ],
)
async def test_malformed_calls_are_rejected(
    store: Backend, call: Callable[[Backend], Awaitable[object]], error: type[Exception]
) -> None:
    with pytest.raises(error):
        await call(store)
    assert await store.revision() == 0
    assert await store.put("/ok", b"still works") == 1


# ------------------------------------------------------------------ open_store


def test_open_store_picks_the_backend(tmp_path: Path) -> None:
    assert isinstance(open_store("memory://"), MemoryStore)
    for url in (f"sqlite://{tmp_path}/a.db", str(tmp_path / "b.db")):
        store = open_store(url)
        assert isinstance(store, SQLiteStore)
        asyncio.run(store.close())
    assert (tmp_path / "a.db").exists() and (tmp_path / "b.db").exists()
    etcd = open_store("etcd://localhost:2379,127.0.0.1:2380/mine")  # connects on first use
    assert isinstance(etcd, EtcdStore) and etcd.prefix == "/mine"
    assert etcd.endpoints == ["localhost:2379", "127.0.0.1:2380"]
    for bad in ("", "sqlite://", "http://x"):
        with pytest.raises(ValueError, match="memory://"):
            open_store(bad)
    for bad in ("etcd://", "etcd://host", "etcd://h:1,h:x"):
        with pytest.raises(ValueError, match="etcd"):
            open_store(bad)


# ------------------------------------------------------------------ SQLite only: reopening


async def test_sqlite_reopen_keeps_keys_history_and_leases(tmp_path: Path) -> None:
    clock = FakeClock()
    store = SQLiteStore(tmp_path / "re.db", clock=clock, lease_check_interval=3600)
    lease = await store.lease_grant(10)
    await store.put("/o/a", b"1")
    await store.put("/o/a", b"2")
    await store.put("/o/b", b"x", lease=lease)
    await store.delete("/o/a")
    await store.put("/o/a", b"3")
    before = await take(store.watch("/o/", start_rev=1), 5)
    await store.close()

    store = SQLiteStore(tmp_path / "re.db", clock=clock, lease_check_interval=3600)
    try:
        assert await store.revision() == 5
        assert await take(store.watch("/o/", start_rev=1), 5) == before
        clock.advance(9)  # a reopen gives every lease its full ttl again
        await store.lease_keepalive(lease)
        clock.advance(11)
        assert await store.expire_leases() == 1
        assert await store.get("/o/b") is None
        assert await store.put("/o/c", b"y") == 7
        assert await store.lease_grant(5) != lease
    finally:
        await store.close()


async def test_sqlite_file_has_one_owner(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "one.db")
    try:
        with pytest.raises(StoreError, match="in use"):
            SQLiteStore(tmp_path / "one.db")
    finally:
        await store.close()
    again = SQLiteStore(tmp_path / "one.db")  # free once closed
    await again.close()


async def test_sqlite_a_txn_that_only_reads_does_not_wait_for_the_writer(tmp_path: Path) -> None:
    """A read-only txn (a server's first read of everything) is one snapshot of the
    reader connection: it answers while the writer process is busy (here: stopped)."""
    store = SQLiteStore(tmp_path / "r.db")
    try:
        await store.put("/a/1", b"x")
        rev = await store.put("/b/1", b"y")
        assert store._proc is not None
        os.kill(store._proc.pid, signal.SIGSTOP)
        try:
            async with asyncio.timeout(5):
                res = await store.txn([], [Get("/a/", prefix=True), Get("/b/1"), Get("/c")])
        finally:
            os.kill(store._proc.pid, signal.SIGCONT)
        assert res.succeeded and res.revision == rev
        assert [[kv.key for kv in r] for r in res.reads] == [["/a/1"], ["/b/1"], []]
    finally:
        await store.close()


async def test_sqlite_read_batches_is_one_snapshot_a_batch_at_a_time(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "b.db")
    try:
        for i in range(5):
            await store.put(f"/a/{i}", b"x")
        rev = await store.put("/b/0", b"y")
        seen: list[tuple[str, list[str], int]] = []
        async for prefix, rows, at in store.read_batches(["/a/", "/c/", "/b/"], size=2):
            seen.append((prefix, [kv.key for kv in rows], at))
            if len(seen) == 1:  # written while the read is under way: not in it
                await store.put("/a/9", b"late")
                await store.delete("/b/0")
        assert seen == [
            ("/a/", ["/a/0", "/a/1"], rev),
            ("/a/", ["/a/2", "/a/3"], rev),
            ("/a/", ["/a/4"], rev),
            ("/c/", [], rev),
            ("/b/", ["/b/0"], rev),
        ]
        assert [kv.key for kv in (await store.list("/a/"))[0]][-1] == "/a/9"
    finally:
        await store.close()
