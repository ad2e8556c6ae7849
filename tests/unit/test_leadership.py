"""Leader election, fencing, shared heartbeats and idempotency keys, on the in-memory store."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from podium.errors import NotLeader
from podium.runtime.clock import SystemClock
from podium.server.heartbeat_leases import HeartbeatLeases
from podium.server.idempotency import Idempotency
from podium.server.leader import Leadership, LeadershipConfig
from podium.server.state import ClusterState
from podium.store import keys
from podium.store.base import Compare, Put
from podium.store.memory import MemoryStore

TTL = 1.0  # short for speed, long enough for a loaded 2-core box


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    s = MemoryStore(lease_check_interval=0.05)
    await s.start()
    yield s
    await s.close()


class Member:
    """One server's leadership with a work loop that records what it saw."""

    def __init__(self, store: MemoryStore, name: str, *, elect: bool = True) -> None:
        self.state = ClusterState(store)
        self.lead = Leadership(
            store,
            self.state,
            LeadershipConfig(name, f"http://{name}", ttl=TTL, elect=elect),
            clock=SystemClock(),
        )
        self.terms: list[ClusterState] = []
        self.task: asyncio.Task[None] | None = None
        self.feed: asyncio.Task[None] | None = None

    async def work(self, state: ClusterState) -> None:
        self.terms.append(state)
        await asyncio.Event().wait()  # a controller: runs until cancelled

    def start(self) -> Member:
        # The cache follows the store as on a server: a term's work waits for it to reach
        # the election's revision.
        loop = asyncio.get_running_loop()
        self.feed = loop.create_task(self.state.run())
        self.task = loop.create_task(self.lead.run(self.work))
        return self

    async def stop(self) -> None:
        assert self.task is not None
        for task in (self.task, self.feed):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def until(pred: object, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not pred():  # type: ignore[operator]
            await asyncio.sleep(0.02)


async def test_exactly_one_leads_and_another_takes_over(store: MemoryStore) -> None:
    a, b = Member(store, "a").start(), Member(store, "b").start()
    # Both have campaigned: each knows who leads (one itself, the other from the key).
    await until(lambda: a.lead.leader is not None and b.lead.leader is not None)
    assert a.lead.is_leader != b.lead.is_leader
    first, second = (a, b) if a.lead.is_leader else (b, a)
    assert len(first.terms) == 1 and not second.terms
    assert second.lead.leader is not None and second.lead.leader.id == first.lead.member.id
    members = await second.lead.members()
    assert [(m["id"], m["leader"]) for m in members] == [("a", a is first), ("b", b is first)]
    await first.stop()  # dies without a word: its lease runs out
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await until(lambda: second.lead.is_leader)
    assert loop.time() - t0 < TTL * 4
    assert len(second.terms) == 1
    await second.stop()


async def test_a_stale_leaders_writes_are_fenced_and_it_steps_down(store: MemoryStore) -> None:
    a = Member(store, "a").start()
    await until(lambda: a.lead.is_leader)
    view = a.terms[0]
    assert await view.store.put("/jobs/x", b"1") > 0  # while leading, writes apply
    # The pause: its lease lapses and someone else takes the key.
    kv = await store.get(keys.LEADER)
    assert kv is not None
    await store.lease_revoke(kv.lease)
    other = await store.lease_grant(60)
    res = await store.txn(
        [Compare(keys.LEADER, "mod_rev", "=", 0)],
        [Put(keys.LEADER, b'{"id":"z","address":"http://z","since":0}', other)],
    )
    assert res.succeeded
    with pytest.raises(NotLeader):
        await view.store.put("/jobs/x", b"stale")
    with pytest.raises(NotLeader):
        await view.store.txn_many([([], [Put("/jobs/y", b"stale")])])
    got = await store.get("/jobs/x")
    assert got is not None and got.value == b"1"
    assert await store.get("/jobs/y") is None
    await until(lambda: not a.lead.is_leader)
    await a.stop()


async def test_a_lease_not_renewed_in_time_refuses_writes_locally(store: MemoryStore) -> None:
    a = Member(store, "a").start()
    await until(lambda: a.lead.is_leader)
    view = a.terms[0]
    term = a.lead.fenced.term
    assert term is not None
    term.renewed -= TTL * 2  # as if the process had been stopped for two TTLs
    with pytest.raises(NotLeader, match="not renewed"):
        await view.store.put("/jobs/x", b"late")
    assert await store.get("/jobs/x") is None
    # It stepped down, gave up its lease and, healthy again, won the next election.
    await until(lambda: len(a.terms) == 2 and a.lead.is_leader)
    assert a.lead.fenced.term is not term
    await a.stop()


async def test_listeners_of_an_ended_term_are_dropped(store: MemoryStore) -> None:
    a = Member(store, "a").start()
    await until(lambda: a.lead.is_leader)
    seen: list[str] = []
    a.terms[0].add_listener(lambda prefix, old, new: seen.append(prefix))
    a.lead.view._forward(keys.JOBS, None, None)
    assert seen == [keys.JOBS]
    a.lead._lose("test")
    await until(lambda: len(a.terms) == 2)
    a.lead.view._forward(keys.JOBS, None, None)
    assert seen == [keys.JOBS]
    await a.stop()


async def test_without_election_the_only_server_leads_unfenced(store: MemoryStore) -> None:
    a = Member(store, "solo", elect=False).start()
    await until(lambda: a.lead.is_leader)
    assert a.terms[0] is a.state  # the plain state: no fence, no lease
    assert await store.get(keys.LEADER) is None
    members = await a.lead.members()
    assert [(m["id"], m["leader"]) for m in members] == [("solo", True)]
    await a.stop()


async def test_heartbeat_leases_are_shared_and_expire(store: MemoryStore) -> None:
    clock = SystemClock()
    one = HeartbeatLeases(store, clock, ttl=TTL, startup_grace=0)
    two = HeartbeatLeases(store, clock, ttl=TTL, startup_grace=0)
    watcher = asyncio.get_running_loop().create_task(two.run())
    await two.ready.wait()
    await one.record("n1")
    await until(lambda: "n1" in two._present)
    assert clock.monotonic() - two.last("n1") < 0.1
    await two.record("n1")  # the agent moved servers: the same lease is renewed
    kvs, _ = await store.list(keys.HEARTBEATS)
    assert len(kvs) == 1 and two._leases["n1"] == one._leases["n1"]
    await until(lambda: "n1" not in two._present, timeout=TTL * 4)  # silence: expired
    assert clock.monotonic() - two.last("n1") >= TTL
    watcher.cancel()


async def test_an_idempotency_key_applies_a_write_once(store: MemoryStore) -> None:
    calls = 0

    async def write(req: Request) -> Response:
        nonlocal calls
        calls += 1
        return JSONResponse({"n": calls})

    once = Idempotency(store)
    app = Starlette(routes=[Route("/w", once.wrap(write), methods=["POST"])])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        h = {"Idempotency-Key": "key-00000001"}
        r1, r2 = await asyncio.gather(c.post("/w", headers=h), c.post("/w", headers=h))
        r3 = await c.post("/w", headers=h)
        assert r1.json() == r2.json() == r3.json() == {"n": 1}
        assert (await c.post("/w", headers={"Idempotency-Key": "key-00000002"})).json() == {"n": 2}
        assert (await c.post("/w")).json() == {"n": 3}  # no key: no memory
    assert calls == 3
