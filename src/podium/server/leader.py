"""Leadership: which server runs the leader-only work (scheduler and controllers).

    every server   a lease (TTL) kept alive; /members/<id> lives on it (who is up)
    campaign       txn: /leader absent -> put /leader {id, address, since} on our lease
                   else follow: watch /leader until it is deleted, then campaign again
    a term         TaskGroup: work(LeaderView), once the cache has seen the election's
                   revision (barrier: nothing the last leader committed is missed) | watch /leader
                   ends when the lease is not renewed within its TTL, the key is no longer
                   ours, or a fenced write fails (fencing.py); then the work is cancelled,
                   the lease is given up (so others need not wait out its TTL) and we follow

A new leader rebuilds nothing by hand: the ClusterState is fed by the store watch on
every server, and each controller starts from that state (level-triggered).

With one server on SQLite there is nobody to elect: `elect=False` makes the server
leader from its start, and its work writes to the store without a fence.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, cast

import msgspec

from podium.errors import Compacted, NotFound, NotLeader, PodiumError
from podium.runtime.backoff import Backoff
from podium.runtime.clock import Clock
from podium.server.fencing import FencedStore, LeaderView, Term
from podium.server.state import ClusterState
from podium.store import keys
from podium.store.base import Compare, Get, KeyValue, Put, Store

log = logging.getLogger(__name__)

Work = Callable[[ClusterState], Coroutine[Any, Any, None]]


class MemberInfo(msgspec.Struct):
    id: str
    address: str
    started: float  # wall time the server started
    insecure: bool = False  # --insecure: TLS off, callers not told apart


class LeaderInfo(msgspec.Struct):
    id: str
    address: str
    since: float  # wall time this term began


@dataclass
class LeadershipConfig:
    server_id: str
    address: str
    ttl: float = 3.0  # seconds a silent leader keeps the lead
    elect: bool = True  # False: the only server, leader from the start (SQLite)
    insecure: bool = False  # shown in `podium server members`


class _Lost(Exception):
    pass


_STORE_TROUBLE = (PodiumError, OSError, TimeoutError)


class Leadership:
    def __init__(
        self, store: Store, state: ClusterState, config: LeadershipConfig, *, clock: Clock
    ) -> None:
        self.store = store
        self.state = state
        self.config = config
        self.clock = clock
        self.fenced = FencedStore(store, self._lose)
        self.view = LeaderView(state, self.fenced)
        self.member = MemberInfo(
            config.server_id, config.address, clock.now(), insecure=config.insecure
        )
        self._leader: LeaderInfo | None = None  # who leads, as last seen
        self.leader_changes = 0  # times `leader` named a different server (metrics)
        self.terms = 0  # terms this server has led
        # The store revision at the current term's election: its work starts once the
        # cache has seen it (the previous leader's last commits are below it).
        self.barrier = 0
        self.changed = asyncio.Event()  # set (and replaced) whenever `is_leader` flips
        self._term: Term | None = None
        self._lease = 0
        self._renewed = 0.0
        self._lost = asyncio.Event()
        self._lost_why = ""
        self._lease_lock = asyncio.Lock()

    @property
    def leader(self) -> LeaderInfo | None:
        return self._leader

    @leader.setter
    def leader(self, info: LeaderInfo | None) -> None:
        if info is not None and (self._leader is None or self._leader.id != info.id):
            self.leader_changes += 1
        self._leader = info

    @property
    def is_leader(self) -> bool:
        return self._term is not None and not self._term.ended

    # -------------------------------------------------------------------- run

    async def run(self, work: Work) -> None:
        """Lead when elected and run `work` for each term; follow otherwise. Forever."""
        if not self.config.elect:
            self.leader = LeaderInfo(self.member.id, self.member.address, self.clock.now())
            self._term = Term(0, ttl=float("inf"), monotonic=self.clock.monotonic)
            self.terms = 1
            self._flip()
            await work(self.state)
            return
        async with asyncio.TaskGroup() as tg:
            await self._ensure_lease()
            tg.create_task(self._keepalive(), name="leader-lease")
            while True:
                term = await self._campaign()
                await self._lead(term, work)

    async def _lead(self, term: Term, work: Work) -> None:
        self._term = term
        self._lost = asyncio.Event()
        self.fenced.term = term
        self.terms += 1
        self.barrier = term.token
        self._flip()
        log.info("this server leads now (term %d, fence %d)", self.terms, term.token)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._work(term, work), name="leader-work")
                tg.create_task(self._watch_own_key(term), name="leader-key")
                await self._lost.wait()
                raise _Lost(self._lost_why)
        except* (_Lost, NotLeader):
            pass
        except* PodiumError as group:
            # A controller gave up on the store (it is down): step down; whoever can
            # reach it next leads, us again perhaps, with fresh controllers.
            self._lost_why = f"leader work failed: {group.exceptions[0]}"
        finally:
            term.ended = True
            self.fenced.term = None
            self.view.end_term()
            self._flip()
        log.warning("this server stepped down: %s", self._lost_why)
        await self._give_up_lease()

    async def _work(self, term: Term, work: Work) -> None:
        """The term's work, once the cache has seen everything written before the election.

        Every write of the previous leader committed below our key's create revision (its
        later ones fail its fence), but the watch may not have brought them here yet: a
        controller deciding on that cache could place a job a second time."""
        if self.state.revision < term.token:
            log.info("waiting for the cache to reach revision %d before leading", term.token)
            await self.state.wait_for(term.token, timeout=None)
        await work(cast(ClusterState, self.view))

    def _lose(self, why: str) -> None:
        """Called by the fence, the lease watchdog and the key watch: the term is over."""
        if self.is_leader and not self._lost.is_set():
            self._lost_why = why
            self._lost.set()

    def _flip(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    # -------------------------------------------------------------- campaign

    async def _campaign(self) -> Term:
        backoff = Backoff(base=0.1, cap=self.config.ttl / 2)
        while True:
            await self._ensure_lease()
            me = LeaderInfo(self.member.id, self.member.address, self.clock.now())
            try:
                res = await self.store.txn(
                    [Compare(keys.LEADER, "mod_rev", "=", 0)],
                    [Put(keys.LEADER, msgspec.json.encode(me), self._lease)],
                    [Get(keys.LEADER)],
                )
                if res.succeeded:
                    kv = await self.store.get(keys.LEADER)
                    if kv is not None and kv.lease == self._lease:
                        self.leader = me
                        term = Term(kv.create_rev, ttl=self.config.ttl, monotonic=self._mono)
                        term.renewed = self._renewed
                        return term
                    continue
                current = res.reads[0][0] if res.reads and res.reads[0] else None
                if current is None:
                    continue
                self.leader = _decode_leader(current)
                if self.leader.id == self.member.id and current.lease != self._lease:
                    # Ours from a lease we gave up: clear it rather than wait out its TTL.
                    await self.store.delete(keys.LEADER, expect_rev=current.mod_rev)
                    continue
                await self._follow(res.revision)
                backoff.reset()
            except NotFound:  # our lease is gone: get a new one
                self._lease = 0
            except _STORE_TROUBLE as e:
                delay = backoff.next()
                log.warning("campaign failed (%s); retrying in %.1fs", e, delay)
                await asyncio.sleep(delay)

    async def _follow(self, revision: int) -> None:
        """Return when the leader key is deleted (or the watch broke: look again)."""
        try:
            async for ev in self.store.watch(keys.LEADER, start_rev=revision + 1):
                if ev.kv.key != keys.LEADER:
                    continue
                if ev.type == "delete":
                    self.leader = None
                    return
                self.leader = _decode_leader(ev.kv)
        except Compacted:
            return

    async def _watch_own_key(self, term: Term) -> None:
        backoff = Backoff(base=self.config.ttl / 10, cap=self.config.ttl / 4)
        while True:
            try:
                async for ev in self.store.watch(keys.LEADER, start_rev=term.token):
                    if ev.kv.key != keys.LEADER:
                        continue
                    if ev.type == "delete" or ev.kv.create_rev != term.token:
                        self._lose("the leader key was deleted or taken over")
                        return
            except _STORE_TROUBLE as e:  # the lease watchdog judges store trouble
                log.info("watch of the leader key broke (%s); watching again", e)
                await asyncio.sleep(backoff.next())

    # ----------------------------------------------------------------- lease

    def _mono(self) -> float:
        return self.clock.monotonic()

    async def _ensure_lease(self) -> None:
        """Hold a live lease with our member key on it (retrying while the store is down)."""
        async with self._lease_lock:
            await self._grant_lease()

    async def _grant_lease(self) -> None:
        backoff = Backoff(base=0.1, cap=self.config.ttl / 2)
        while not self._lease:
            try:
                started = self._mono()
                lease = await self.store.lease_grant(self.config.ttl)
                await self.store.put(
                    keys.member(self.member.id), msgspec.json.encode(self.member), lease=lease
                )
                self._lease, self._renewed = lease, started
            except _STORE_TROUBLE as e:
                delay = backoff.next()
                log.warning("cannot register with the store (%s); retrying in %.1fs", e, delay)
                await asyncio.sleep(delay)

    async def _keepalive(self) -> None:
        ttl = self.config.ttl
        pause = ttl / 4
        while True:
            await asyncio.sleep(pause)
            # After a failure try again soon: an etcd election stalls renewals for a
            # second or so, and every moment lost to waiting eats into the TTL.
            pause = min(ttl / 4, 0.1)
            lease = self._lease
            if not lease:
                await self._ensure_lease()
                continue
            started = self._mono()
            try:
                async with asyncio.timeout(ttl / 4):
                    await self.store.lease_keepalive(lease)
            except NotFound:
                self._lose("the lease expired")
                if self._lease == lease:
                    self._lease = 0
                continue
            except _STORE_TROUBLE as e:
                silent = self._mono() - self._renewed
                log.warning("lease keepalive failed (%r); not renewed for %.1fs", e, silent)
                if silent >= ttl:
                    self._lose(f"the lease was not renewed for {silent:.1f}s")
                continue
            pause = ttl / 4
            if self._lease == lease:
                self._renewed = started
                term = self._term
                if term is not None and not term.ended:
                    term.renewed = started

    async def _give_up_lease(self) -> None:
        """Revoke our lease so the leader key goes at once; a fresh one follows."""
        lease, self._lease = self._lease, 0
        if lease:
            try:
                async with asyncio.timeout(self.config.ttl / 4):
                    await self.store.lease_revoke(lease)
            except _STORE_TROUBLE as e:
                log.info("could not revoke the old lease (%r); it will expire", e)
        await self._ensure_lease()

    async def close(self) -> None:
        """Leave quietly: revoke the lease so the others need not wait out its TTL."""
        if self._lease:
            try:
                async with asyncio.timeout(1.0):
                    await self.store.lease_revoke(self._lease)
            except _STORE_TROUBLE:
                pass

    # --------------------------------------------------------------- members

    async def members(self) -> list[dict[str, Any]]:
        """Every server up now, which one leads and since when."""
        if not self.config.elect:
            since = self.leader.since if self.leader else self.member.started
            return [_row(self.member, leader=True, since=since)]
        kvs, _ = await self.store.list(keys.MEMBERS)
        kv = await self.store.get(keys.LEADER)
        leader = _decode_leader(kv) if kv is not None else None
        rows = []
        for m in kvs:
            info = msgspec.json.decode(m.value, type=MemberInfo)
            lead = leader is not None and leader.id == info.id
            rows.append(_row(info, leader=lead, since=leader.since if lead and leader else None))
        return sorted(rows, key=lambda r: r["address"])


def _row(m: MemberInfo, *, leader: bool, since: float | None) -> dict[str, Any]:
    return {
        "id": m.id,
        "address": m.address,
        "started": m.started,
        "leader": leader,
        "leader_since": since,
        "insecure": m.insecure,
    }


def _decode_leader(kv: KeyValue) -> LeaderInfo:
    try:
        return msgspec.json.decode(kv.value, type=LeaderInfo)
    except msgspec.DecodeError:  # written by something else: still a leader, just unnamed
        return LeaderInfo(id="?", address="", since=0.0)
