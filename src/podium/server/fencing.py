"""Fencing: every write a leader makes as leader holds only while it still leads.

    controllers --> LeaderView (the ClusterState, but .store is fenced)
                      --> FencedStore: each txn gets  Compare(LEADER, create_rev, =, term)
                            --> store (etcd): judged atomically with the write

A term is identified by the create revision of the leader key this server wrote:
a new leader's key has a new create revision, so an old leader that wakes up after
a pause finds its compare false and its write not applied. Before sending, the
store also checks locally that the lease was renewed within its TTL (a process
that was stopped knows it cannot be sure it still leads). A failed fence raises
`NotLeader` and calls `on_lost`, so the leadership steps down.

The controllers are handed a LeaderView and do not know about any of this.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from podium.errors import Conflict, NotLeader
from podium.server.state import ClusterState, Listener
from podium.store import keys
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

log = logging.getLogger(__name__)


class Term:
    """One term of leadership: its fence token and how fresh its lease is."""

    def __init__(self, token: int, *, ttl: float, monotonic: Callable[[], float]) -> None:
        self.token = token  # create_rev of our leader key
        self.ttl = ttl
        self._monotonic = monotonic
        self.renewed = monotonic()  # when the lease was last renewed (start of that call)
        self.ended = False

    def fresh(self) -> bool:
        return not self.ended and self._monotonic() - self.renewed < self.ttl

    def compare(self) -> Compare:
        return Compare(keys.LEADER, "create_rev", "=", self.token)


class FencedStore:
    """A Store whose writes apply only while `term` holds; reads pass through."""

    def __init__(self, inner: Store, on_lost: Callable[[str], None]) -> None:
        self.inner = inner
        self.term: Term | None = None
        self._on_lost = on_lost

    def _fence(self) -> Term:
        term = self.term
        if term is None or term.ended:
            raise NotLeader("this server is not the leader")
        if not term.fresh():
            self._lost("lease not renewed within its TTL")
        return term

    def _lost(self, why: str) -> None:
        log.warning("fenced: a leader write was refused (%s)", why)
        self._on_lost(why)
        raise NotLeader(f"this server no longer leads: {why}")

    async def _check_after_failure(self, term: Term) -> None:
        kv = await self.inner.get(keys.LEADER)
        if kv is None or kv.create_rev != term.token:
            self._lost("the leader key is no longer ours")

    # ---------------------------------------------------------------- writes

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        term = self._fence()
        res = await self.inner.txn(
            [term.compare(), *compares], success, [*failure, Get(keys.LEADER)]
        )
        if res.succeeded:
            return res
        leader = res.reads.pop()
        if not leader or leader[0].create_rev != term.token:
            self._lost("the leader key is no longer ours")
        return res

    async def txn_many(
        self, txns: Sequence[tuple[Sequence[Compare], Sequence[Op]]]
    ) -> builtins.list[TxnResult]:
        term = self._fence()
        fence = term.compare()
        results = await self.inner.txn_many([([fence, *c], ops) for c, ops in txns])
        if not all(r.succeeded for r in results):
            await self._check_after_failure(term)
        return results

    async def put(
        self, key: str, value: bytes, *, expect_rev: int | None = None, lease: int = 0
    ) -> int:
        guard = [] if expect_rev is None else [Compare(key, "mod_rev", "=", expect_rev)]
        res = await self.txn(guard, [Put(key, value, lease)])
        if not res.succeeded:
            raise Conflict(f"{key} changed since revision {expect_rev}")
        return res.revision

    async def delete(self, key: str, *, expect_rev: int | None = None) -> int:
        guard = [] if expect_rev is None else [Compare(key, "mod_rev", "=", expect_rev)]
        res = await self.txn(guard, [Delete(key)])
        if not res.succeeded:
            raise Conflict(f"{key} changed since revision {expect_rev}")
        return res.revision

    # ----------------------------------------------------------------- reads

    async def get(self, key: str) -> KeyValue | None:
        return await self.inner.get(key)

    async def list(self, prefix: str) -> tuple[builtins.list[KeyValue], int]:
        return await self.inner.list(prefix)

    async def revision(self) -> int:
        return await self.inner.revision()

    def watch(self, prefix: str, *, start_rev: int) -> AsyncIterator[WatchEvent]:
        return self.inner.watch(prefix, start_rev=start_rev)

    async def lease_grant(self, ttl: float) -> int:
        return await self.inner.lease_grant(ttl)

    async def lease_keepalive(self, lease: int) -> None:
        await self.inner.lease_keepalive(lease)

    async def lease_revoke(self, lease: int) -> None:
        await self.inner.lease_revoke(lease)

    async def close(self) -> None:
        """The real store belongs to the server, not to a term."""


class LeaderView:
    """The ClusterState as leader-only work sees it: the same cache, a fenced store.

    Everything but `store` and `add_listener` is the shared ClusterState itself.
    Listeners added through the view live for one term: `end_term` drops them, so a
    controller of an old term is never woken again.
    """

    def __init__(self, state: ClusterState, store: FencedStore) -> None:
        self._state = state
        self.store = store
        self._listeners: list[Listener] = []
        state.add_listener(self._forward)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._state, name)

    def add_listener(self, fn: Listener) -> None:
        self._listeners.append(fn)

    def _forward(self, prefix: str, old: object | None, new: object | None) -> None:
        for fn in list(self._listeners):
            try:
                fn(prefix, old, new)
            except Exception:  # as in ClusterState: a listener bug must not stop the feed
                log.exception("state listener failed")

    def end_term(self) -> None:
        self._listeners.clear()
