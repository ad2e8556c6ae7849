"""The in-process store backend, and the backend-neutral half that sqlite.py reuses.

`MemoryStore` keeps everything in dicts on the event loop: tests and throwaway
clusters use it. Its data is gone when the process ends.

The rest of this module is shared by every backend that judges transactions itself
(memory, sqlite), so both give the same answers to the same calls:

    validate_txn   reject malformed calls before they reach a writer
    apply_txn      judge one guarded transaction against a `KeyView`; return its events
    TxnFrontend    put / delete / txn / txn_many in terms of one `_run_txns`
    WatchHub       in-process fan-out of committed events to each watcher's queue
    follow         a watch: catch-up from the backend's history, then live events
    LeaseDeadline, lease_expiry_loop   the in-memory side of leases

Leases (both backends): `start()` starts the expiry loop that reaps expired leases
every `lease_check_interval` seconds of real time, judged by the `clock` seam; the
first call that needs it starts it too. `expire_leases()` runs one pass now, so
tests can advance a fake clock and reap without sleeping.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from podium.errors import Compacted, Conflict, NotFound, StoreError
from podium.store.base import Compare, Delete, Get, KeyValue, Op, Put, TxnResult, WatchEvent

log = logging.getLogger(__name__)

Txn = tuple[Sequence[Compare], Sequence[Op], Sequence[Op]]  # compares, success, failure
History = Callable[[str, int, int], AsyncIterator[WatchEvent]]  # prefix, start_rev, upto_rev

# ------------------------------------------------------------------ judging transactions


class KeyView(Protocol):
    """The key space as a transaction sees it, earlier writes of its batch included."""

    def get(self, key: str) -> KeyValue | None: ...

    def range(self, prefix: str) -> list[KeyValue]:
        """Every key under prefix, sorted."""
        ...

    def set(self, kv: KeyValue) -> None: ...

    def remove(self, key: str) -> None: ...


_OPS = frozenset(("=", "!=", "<", ">"))


def validate_txn(compares: Sequence[Compare], ops: Sequence[Op]) -> None:
    """Raise TypeError/ValueError for a malformed call, before a writer (and a batch
    shared with other callers) ever sees it."""
    for c in compares:
        key = c.key if type(c) is Compare else None
        if (  # the common guard, checked in one step: bulk writes carry one per key
            type(key) is str
            and key
            and key.isascii()
            and c.target == "mod_rev"
            and c.op in _OPS
            and type(c.value) is int
        ):
            continue
        if not isinstance(c, Compare):
            raise TypeError(f"expected Compare, got {type(c).__name__}")
        _check_key(c.key)
        if c.op not in ("=", "!=", "<", ">"):
            raise ValueError(f"compare on {c.key!r}: unknown op {c.op!r}")
        if c.target == "value":
            if not isinstance(c.value, bytes):
                raise TypeError(f"compare on {c.key!r}: target 'value' needs bytes")
        elif c.target in ("mod_rev", "version", "create_rev"):
            if not isinstance(c.value, int) or isinstance(c.value, bool):
                raise TypeError(f"compare on {c.key!r}: target {c.target!r} needs an int")
        else:
            raise ValueError(f"compare on {c.key!r}: unknown target {c.target!r}")
    for op in ops:
        if type(op) is Put:
            key = op.key
            if (  # the common put, checked in one step
                type(key) is str
                and key
                and key.isascii()
                and type(op.value) is bytes
                and type(op.lease) is int
                and op.lease >= 0
            ):
                continue
        if isinstance(op, Put):
            _check_key(op.key)
            if not isinstance(op.value, bytes):
                raise TypeError(f"put {op.key!r}: value must be bytes")
            if not isinstance(op.lease, int) or op.lease < 0:
                raise ValueError(f"put {op.key!r}: lease must be an int >= 0")
        elif isinstance(op, Delete | Get):
            if not op.prefix:
                _check_key(op.key)
            elif not isinstance(op.key, str):
                raise TypeError("prefix must be str")
        else:
            raise TypeError(f"expected Put, Delete or Get, got {type(op).__name__}")


def _check_key(key: object) -> None:
    if type(key) is not str or not key:
        raise ValueError(f"key must be a non-empty str, got {key!r}")
    if not key.isascii():
        try:
            key.encode()
        except UnicodeEncodeError:
            raise ValueError(f"key {key!r} is not valid UTF-8 text") from None


def leases_used(txns: Sequence[Txn]) -> set[int]:
    used: set[int] = set()
    for _, success, failure in txns:
        for ops in (success, failure):
            for op in ops:
                if isinstance(op, Put) and op.lease:
                    used.add(op.lease)
    return used


def compare_holds(kv: KeyValue | None, c: Compare) -> bool:
    if c.target == "value":
        if kv is None:  # as in etcd: a missing key's value compares false, whatever the op
            return False
        actual: int | bytes = kv.value
    else:
        actual = getattr(kv, c.target) if kv is not None else 0
    want = c.value
    if c.op == "=":
        return actual == want
    if c.op == "!=":
        return actual != want
    if c.op == "<":
        return actual < want  # type: ignore[operator]  # validate_txn matched the types
    return actual > want  # type: ignore[operator]


def apply_txn(view: KeyView, txn: Txn, rev: int) -> tuple[TxnResult, list[WatchEvent]]:
    """Judge `txn` against `view` and apply the branch taken, writing at revision `rev`
    (the current revision + 1). Ops see the writes of the ops before them."""
    # On the SQLite writer's hot path (every put of a batch): kept lean on purpose.
    compares, success, failure = txn
    ok = True
    for c in compares:
        if not compare_holds(view.get(c.key), c):
            ok = False
            break
    reads: list[list[KeyValue]] = []
    events: list[WatchEvent] = []
    for op in success if ok else failure:
        if isinstance(op, Put):
            prev = view.get(op.key)
            if prev is None:
                new = KeyValue(op.key, op.value, rev, rev, 1, op.lease)
                events.append(WatchEvent("put", new, None))
            else:
                new = KeyValue(op.key, op.value, rev, prev.create_rev, prev.version + 1, op.lease)
                events.append(WatchEvent("put", new, prev.value))
            view.set(new)
        elif isinstance(op, Get):
            if op.prefix:
                reads.append(view.range(op.key))
            else:
                kv = view.get(op.key)
                reads.append([kv] if kv is not None else [])
        else:
            if op.prefix:
                victims = view.range(op.key)
            else:
                one = view.get(op.key)
                victims = [one] if one is not None else []
            for old in victims:
                view.remove(old.key)
                events.append(WatchEvent("delete", KeyValue(old.key, b"", rev, 0, 0, 0), old.value))
    return TxnResult(ok, rev if events else rev - 1, reads), events


# ------------------------------------------------------------------ the write front


class TxnFrontend(ABC):
    """put/delete/txn/txn_many for a backend that runs batches of `Txn`s."""

    @abstractmethod
    async def _run_txns(self, txns: list[Txn]) -> list[TxnResult]:
        """Commit `txns` together, judged in order; NotFound if a Put names no live lease."""

    async def put(
        self, key: str, value: bytes, *, expect_rev: int | None = None, lease: int = 0
    ) -> int:
        res = await self._guarded(key, expect_rev, Put(key, value, lease))
        return res.revision

    async def delete(self, key: str, *, expect_rev: int | None = None) -> int:
        res = await self._guarded(key, expect_rev, Delete(key))
        return res.revision

    async def _guarded(self, key: str, expect_rev: int | None, op: Op) -> TxnResult:
        compares = [] if expect_rev is None else [Compare(key, "mod_rev", "=", expect_rev)]
        validate_txn(compares, [op])
        (res,) = await self._run_txns([(compares, [op], [Get(key)])])
        if not res.succeeded:
            found = res.reads[0][0].mod_rev if res.reads[0] else 0
            raise Conflict(f"{key}: expected mod_rev {expect_rev}, found {found}")
        return res

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        validate_txn(compares, [*success, *failure])
        (res,) = await self._run_txns([(compares, success, failure)])
        return res

    async def txn_many(
        self, txns: Sequence[tuple[Sequence[Compare], Sequence[Op]]]
    ) -> list[TxnResult]:
        batch: list[Txn] = []
        for compares, ops in txns:
            validate_txn(compares, ops)
            batch.append((compares, ops, ()))
        return await self._run_txns(batch) if batch else []


# ------------------------------------------------------------------ watches


class _Watcher:
    __slots__ = ("closed", "overflow_rev", "pending", "prefix", "wake")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.pending: deque[WatchEvent] = deque()
        self.wake = asyncio.Event()
        self.overflow_rev = 0  # set: events from this revision on were dropped
        self.closed = False


class WatchHub:
    """Fans committed events out to every live watcher. A watcher more than
    `max_pending` events behind is cut off (its next step raises Compacted) rather
    than letting one slow consumer hold the server's memory."""

    def __init__(self, max_pending: int) -> None:
        self.max_pending = max_pending
        self._watchers: set[_Watcher] = set()

    def add(self, prefix: str) -> _Watcher:
        w = _Watcher(prefix)
        self._watchers.add(w)
        return w

    def remove(self, w: _Watcher) -> None:
        self._watchers.discard(w)

    def publish(self, events: Sequence[WatchEvent]) -> None:
        for w in self._watchers:
            if w.overflow_rev:
                continue
            mine = [e for e in events if e.kv.key.startswith(w.prefix)] if w.prefix else events
            if not mine:
                continue
            if len(w.pending) + len(mine) > self.max_pending:
                w.overflow_rev = mine[0].kv.mod_rev
                w.pending.clear()
            else:
                w.pending.extend(mine)
            w.wake.set()

    def cut_off(self, rev: int) -> None:
        """Every watcher's next step raises Compacted: changes up to `rev` are lost to it."""
        for w in self._watchers:
            if not w.overflow_rev:
                w.overflow_rev = rev
                w.pending.clear()
                w.wake.set()

    def close(self) -> None:
        for w in self._watchers:
            w.closed = True
            w.wake.set()
        self._watchers.clear()


async def follow(
    hub: WatchHub,
    prefix: str,
    start_rev: int,
    current_rev: Callable[[], int],
    history: History,
) -> AsyncIterator[WatchEvent]:
    """A watch, one event at a time (see `follow_batches`)."""
    async for batch in follow_batches(hub, prefix, start_rev, current_rev, history):
        for ev in batch:
            yield ev


_HISTORY_CHUNK = 10_000  # events of a catch-up handed over at once


async def follow_batches(
    hub: WatchHub,
    prefix: str,
    start_rev: int,
    current_rev: Callable[[], int],
    history: History,
) -> AsyncIterator[list[WatchEvent]]:
    """A watch, as lists of events in revision order: whatever is pending when the
    consumer asks, so a bulk commit of 2,000 allocs is one step, not 2,000. It joins
    `hub` and reads the committed revision in one step (no await between), so history
    covers everything up to that revision and the queue holds everything after:
    nothing is missed or seen twice."""
    w = hub.add(prefix)
    upto = current_rev()
    start = max(start_rev, 1)
    try:
        nxt = start
        if start <= upto:
            batch: list[WatchEvent] = []
            async for ev in history(prefix, start, upto):
                batch.append(ev)
                if len(batch) >= _HISTORY_CHUNK:
                    nxt = ev.kv.mod_rev + 1
                    yield batch
                    batch = []
            if batch:
                nxt = batch[-1].kv.mod_rev + 1
                yield batch
        while True:
            if w.overflow_rev:
                log.warning("watch on %r fell %d events behind; cut off", prefix, hub.max_pending)
                raise Compacted(nxt, w.overflow_rev + 1)
            if w.pending:
                # A watch may start in the future: the queue can hold older revisions.
                batch = [ev for ev in w.pending if ev.kv.mod_rev >= start]
                w.pending.clear()
                if batch:
                    nxt = batch[-1].kv.mod_rev + 1
                    yield batch
                continue
            if w.closed:
                raise StoreError("store is closed")
            w.wake.clear()
            await w.wake.wait()
    finally:
        hub.remove(w)


# ------------------------------------------------------------------ the memory backend


@dataclass(slots=True)
class LeaseDeadline:
    ttl: float
    deadline: float


class _DictView:
    def __init__(self, kv: dict[str, KeyValue]) -> None:
        self.kv = kv

    def get(self, key: str) -> KeyValue | None:
        return self.kv.get(key)

    def range(self, prefix: str) -> list[KeyValue]:
        return [self.kv[k] for k in sorted(k for k in self.kv if k.startswith(prefix))]

    def set(self, kv: KeyValue) -> None:
        self.kv[kv.key] = kv

    def remove(self, key: str) -> None:
        del self.kv[key]


class MemoryStore(TxnFrontend):
    """The whole store in dicts, on the event loop (so every call is atomic as is).

    `history` is how many changes are kept for watches; a watch from before them
    raises Compacted.
    """

    def __init__(
        self,
        *,
        history: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        lease_check_interval: float = 0.5,
        max_watch_pending: int = 10_000,
    ) -> None:
        self._kv: dict[str, KeyValue] = {}
        self._rev = 0
        self._log: deque[WatchEvent] = deque()
        self._oldest = 1  # the oldest revision whose changes `_log` still holds
        self._history = history
        self._leases: dict[int, LeaseDeadline] = {}
        self._lease_seq = 0
        self._clock = clock
        self._interval = lease_check_interval
        self._hub = WatchHub(max_watch_pending)
        self._expiry: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        """Start the lease expiry loop (optional: the first call starts it too)."""
        self._ensure_started()

    def _ensure_started(self) -> None:
        if self._closed:
            raise StoreError("store is closed")
        if self._expiry is None:
            self._expiry = asyncio.get_running_loop().create_task(
                lease_expiry_loop(self.expire_leases, self._interval), name="memory-store-leases"
            )

    async def get(self, key: str) -> KeyValue | None:
        self._ensure_started()
        return self._kv.get(key)

    async def list(self, prefix: str) -> tuple[builtins.list[KeyValue], int]:
        self._ensure_started()
        return _DictView(self._kv).range(prefix), self._rev

    async def revision(self) -> int:
        self._ensure_started()
        return self._rev

    async def _run_txns(self, txns: builtins.list[Txn]) -> builtins.list[TxnResult]:
        self._ensure_started()
        # Yield once, as a real backend would: a loop of writes must not starve the others.
        await asyncio.sleep(0)
        self._ensure_started()  # it may have closed meanwhile
        missing = leases_used(txns) - self._leases.keys()
        if missing:
            raise NotFound(f"lease {min(missing)} not found (expired or revoked)")
        results = []
        for txn in txns:
            res, events = apply_txn(_DictView(self._kv), txn, self._rev + 1)
            if events:
                self._commit(events)
            results.append(res)
        return results

    def _commit(self, events: builtins.list[WatchEvent]) -> None:
        self._rev += 1
        self._log.extend(events)
        # Trim whole revisions so a watch never gets half of one.
        while len(self._log) > self._history:
            oldest = self._log[0].kv.mod_rev
            while self._log and self._log[0].kv.mod_rev == oldest:
                self._log.popleft()
            self._oldest = oldest + 1
        self._hub.publish(events)

    def watch(self, prefix: str, *, start_rev: int) -> AsyncIterator[WatchEvent]:
        self._ensure_started()
        return follow(self._hub, prefix, start_rev, lambda: self._rev, self._history_events)

    def watch_batches(
        self, prefix: str, *, start_rev: int
    ) -> AsyncIterator[builtins.list[WatchEvent]]:
        """watch(), a list of events at a time."""
        self._ensure_started()
        return follow_batches(self._hub, prefix, start_rev, lambda: self._rev, self._history_events)

    async def _history_events(
        self, prefix: str, start: int, upto: int
    ) -> AsyncIterator[WatchEvent]:
        if start < self._oldest:
            raise Compacted(start, self._oldest)
        # Copied first: the log may be trimmed while the caller consumes.
        kept = [
            e for e in self._log if start <= e.kv.mod_rev <= upto and e.kv.key.startswith(prefix)
        ]
        for e in kept:
            yield e

    async def lease_grant(self, ttl: float) -> int:
        self._ensure_started()
        if not ttl > 0:
            raise ValueError(f"lease ttl must be > 0 seconds, got {ttl!r}")
        self._lease_seq += 1
        self._leases[self._lease_seq] = LeaseDeadline(ttl, self._clock() + ttl)
        return self._lease_seq

    async def lease_keepalive(self, lease: int) -> None:
        self._ensure_started()
        held = self._leases.get(lease)
        now = self._clock()
        if held is None or held.deadline <= now:
            raise NotFound(f"lease {lease} not found (expired or revoked)")
        held.deadline = now + held.ttl

    async def lease_revoke(self, lease: int) -> None:
        """Drop the lease and delete its keys (one revision). Unknown lease: no-op."""
        self._ensure_started()
        if self._leases.pop(lease, None) is None:
            return
        doomed: builtins.list[Op] = [Delete(k) for k, kv in self._kv.items() if kv.lease == lease]
        if doomed:
            _, events = apply_txn(_DictView(self._kv), ((), doomed, ()), self._rev + 1)
            self._commit(events)

    async def expire_leases(self) -> int:
        """Revoke every lease whose deadline has passed on the clock; return how many."""
        now = self._clock()
        expired = [lid for lid, held in self._leases.items() if held.deadline <= now]
        for lid in expired:
            await self.lease_revoke(lid)
        return len(expired)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._hub.close()
        if self._expiry is not None:
            self._expiry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry


async def lease_expiry_loop(expire: Callable[[], Awaitable[int]], interval: float) -> None:
    """Reap expired leases every `interval` seconds until cancelled. A store error is
    retryable (the next tick tries again); anything else is a bug and ends the loop."""
    while True:
        await asyncio.sleep(interval)
        try:
            await expire()
        except StoreError:
            log.warning("lease expiry failed; retrying", exc_info=True)
