"""The embedded default store: one SQLite file in WAL mode, with group commit.

    put/txn/lease ──► queue ──► writer task ──► writer thread: judge each queued txn in
                                               order against the batch so far, then ONE
                                               SQLite transaction and ONE fsync
    caller's future ◄── resolved after COMMIT ◄┘ └──► WatchHub: each watcher's queue
    get/list/watch catch-up ──► reader thread, its own connection (WAL: never waits)

Tables: `kv` (the keys), `meta` (rev, oldest revision the log keeps, lease counter),
`leases` (id, ttl, expires_at as of the grant), and `changes`, the log of the last
`history` changes (one row per commit, see `_Change`) that watches catch up from; a
watch from before it gets `Compacted`. A watcher whose queue holds more than
`max_watch_pending` events is cut off with `Compacted` too, and re-lists.

Durability: a write is acknowledged only after its COMMIT returned. With
synchronous=FULL (the default; NORMAL is allowed) the WAL is fsynced on every commit,
so an acknowledged write survives a kill of the process or of the machine.

Leases: deadlines live in memory, judged by the `clock` seam; `leases` keeps id and
ttl. On reopen every lease gets its full ttl again (as etcd does on a leader change).
`start()` (optional: the first call does it) starts the writer and the expiry loop;
`close()` commits what is queued and stops both.

One process owns the file at a time (an flock on `<file>.lock`): the writer trusts
its in-memory revision, so a second writer would corrupt history.

Staying small: the change log is trimmed to `history` changes as it grows (watchers
from before get Compacted and re-list). Every `maintenance_interval` seconds,
`maintain()` (on the writer thread, between batches) gives free pages back to the file
system once they are over a quarter of the file and `_VACUUM_MIN_FREE` bytes
(`incremental_vacuum`; a file made before auto_vacuum was set gets one full VACUUM), and
logs a warning while the disk holding the file has less than `min_free_disk` (fraction)
or `min_free_disk_bytes` free.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import fcntl
import logging
import os
import sqlite3
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec

from podium.errors import Compacted, NotFound, StoreError
from podium.store.base import Delete, KeyValue, Op, Put, TxnResult, WatchEvent
from podium.store.memory import (
    LeaseDeadline,
    Txn,
    TxnFrontend,
    WatchHub,
    apply_txn,
    follow,
    lease_expiry_loop,
    make_kv,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY, value BLOB NOT NULL, mod_rev INTEGER NOT NULL,
    create_rev INTEGER NOT NULL, version INTEGER NOT NULL, lease INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS kv_by_lease ON kv(lease) WHERE lease != 0;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('rev', 0), ('oldest', 1), ('lease_seq', 0);
CREATE TABLE IF NOT EXISTS leases (
    id INTEGER PRIMARY KEY, ttl REAL NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS changes (
    first_rev INTEGER PRIMARY KEY, last_rev INTEGER NOT NULL, count INTEGER NOT NULL,
    events BLOB NOT NULL);
"""
_KV_COLS = "key, value, mod_rev, create_rev, version, lease"  # KeyValue's field order
_UPSERT = (
    f"INSERT INTO kv ({_KV_COLS}) VALUES (?,?,?,?,?,?) ON CONFLICT(key) DO UPDATE SET "
    "value=excluded.value, mod_rev=excluded.mod_rev, create_rev=excluded.create_rev, "
    "version=excluded.version, lease=excluded.lease"
)
# The change log. A commit's changes are ONE row, msgpack-encoded, because a row per
# change (B-tree and index inserts for each) halved the write throughput. A change is
# (rev, type, key, prev_value, create_rev, version, lease), type 0 put / 1 delete. A
# put's value is not logged: it is in `kv` while current, and afterwards it is the
# prev_value of the key's next change, which the log always holds if it holds the put
# (it trims oldest first). Each value is thus written once to `kv` and once to the log
# (as prev_value) instead of twice more; `_r_catch_up` puts the values back.
_Change = tuple[int, int, str, bytes | None, int, int, int]
_PUT, _DELETE = 0, 1
_encode_changes = msgspec.msgpack.Encoder().encode
_decode_changes = msgspec.msgpack.Decoder(builtins.list[_Change]).decode
_MAX_BATCH_TXNS = 20_000  # bounds one commit's latency, memory and log row
_VACUUM_MIN_FREE = 4 * 1024 * 1024  # bytes of free pages worth giving back


@dataclass(slots=True)
class Maintenance:
    """What one `maintain()` pass found and did."""

    pages_before: int
    pages_after: int
    page_size: int
    vacuumed: Literal["", "incremental", "full"]
    disk_free: int  # bytes free on the file system holding the file
    disk_total: int
    disk_low: bool


# ------------------------------------------------------------------ writer requests


@dataclass(slots=True)
class _TxnsReq:
    txns: list[Txn]
    fut: asyncio.Future[Any]


@dataclass(slots=True)
class _GrantReq:
    ttl: float
    fut: asyncio.Future[Any]


@dataclass(slots=True)
class _RevokeReq:
    lease: int
    fut: asyncio.Future[Any]


_Req = _TxnsReq | _GrantReq | _RevokeReq


@dataclass(slots=True)
class _Committed:
    """What one batch did, handed from the writer thread back to the event loop."""

    rev: int
    lease_seq: int
    log_count: int
    outcomes: list[object] = field(default_factory=list)  # per request: result or exception
    events: list[WatchEvent] = field(default_factory=list)
    granted: dict[int, float] = field(default_factory=dict)
    revoked: set[int] = field(default_factory=set)


def _prefix_range(prefix: str) -> tuple[str, list[str]]:
    """SQL condition and params for `key` starting with prefix. SQLite compares TEXT
    as UTF-8 bytes, which orders like Python's code points, so a range is exact."""
    p = prefix
    while p:
        nxt = ord(p[-1]) + 1
        if nxt <= 0x10FFFF:
            if 0xD800 <= nxt <= 0xDFFF:  # surrogates cannot be encoded; skip past them
                nxt = 0xE000
            return "key >= ? AND key < ?", [prefix, p[:-1] + chr(nxt)]
        p = p[:-1]
    return ("key >= ?", [prefix]) if prefix else ("1", [])


class _BatchView:
    """The key space as of the batch so far: this batch's writes over the file's rows."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.read: dict[str, KeyValue | None] = {}  # rows fetched from the file
        self.dirty: dict[str, KeyValue | None] = {}  # this batch's writes (None: deleted)

    def prefetch(self, keys: Iterable[str]) -> None:
        """One query per 500 keys instead of one per key: most of a batch's reads."""
        todo = list(keys)
        for i in range(0, len(todo), 500):
            chunk = todo[i : i + 500]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT {_KV_COLS} FROM kv WHERE key IN ({marks})"
            self.read.update(dict.fromkeys(chunk))
            for row in self.conn.execute(sql, chunk):
                self.read[row[0]] = make_kv(*row)

    def get(self, key: str) -> KeyValue | None:
        if key in self.dirty:
            return self.dirty[key]
        if key not in self.read:
            row = self.conn.execute(f"SELECT {_KV_COLS} FROM kv WHERE key = ?", (key,)).fetchone()
            self.read[key] = make_kv(*row) if row else None
        return self.read[key]

    def range(self, prefix: str) -> list[KeyValue]:
        cond, params = _prefix_range(prefix)
        rows = self.conn.execute(f"SELECT {_KV_COLS} FROM kv WHERE {cond}", params)
        found = {row[0]: make_kv(*row) for row in rows}
        for key, kv in self.dirty.items():
            if key.startswith(prefix):
                if kv is None:
                    found.pop(key, None)
                else:
                    found[key] = kv
        return [found[k] for k in sorted(found)]

    def with_lease(self, lease: int) -> list[str]:
        rows = self.conn.execute("SELECT key FROM kv WHERE lease = ?", (lease,))
        keys = {k for (k,) in rows if k not in self.dirty}
        keys.update(k for k, kv in self.dirty.items() if kv is not None and kv.lease == lease)
        return sorted(keys)

    def set(self, kv: KeyValue) -> None:
        self.dirty[kv.key] = kv

    def remove(self, key: str) -> None:
        self.dirty[key] = None


class SQLiteStore(TxnFrontend):
    """The store in one SQLite file. See the module docstring for the moving parts."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        history: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        lease_check_interval: float = 0.5,
        max_watch_pending: int = 10_000,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        maintenance_interval: float = 300.0,
        min_free_disk: float = 0.05,
        min_free_disk_bytes: int = 500 * 1024 * 1024,
    ) -> None:
        self.path = Path(path)
        self._history = history
        self._maintenance_interval = maintenance_interval
        self._min_free_disk = min_free_disk
        self._min_free_disk_bytes = min_free_disk_bytes
        self._disk_was_low = False
        self._clock = clock
        self._interval = lease_check_interval
        self._hub = WatchHub(max_watch_pending)
        self._lock_fd = _lock(self.path)
        try:
            self._wconn = _connect(self.path, synchronous)
            self._wconn.executescript(_SCHEMA)
            self._rconn = _connect(self.path, synchronous)
            self._rconn.execute("PRAGMA query_only = 1")
            meta = dict(self._wconn.execute("SELECT name, value FROM meta").fetchall())
            leases = self._wconn.execute("SELECT id, ttl FROM leases").fetchall()
            (count,) = self._wconn.execute("SELECT coalesce(sum(count), 0) FROM changes").fetchone()
        except sqlite3.Error as e:
            os.close(self._lock_fd)
            raise StoreError(f"cannot open store {self.path}: {e}") from e
        # Owned by the writer thread; changed only after a successful commit.
        self._w_rev: int = meta["rev"]
        self._w_lease_seq: int = meta["lease_seq"]
        self._w_leases: dict[int, float] = dict(leases)
        self._w_log_count: int = count
        # Owned by the event loop.
        self._rev: int = meta["rev"]
        now = clock()
        self._leases = {lid: LeaseDeadline(ttl, now + ttl) for lid, ttl in leases}
        self._queue: deque[_Req] = deque()
        self._wake = asyncio.Event()
        self._writer_exec = ThreadPoolExecutor(1, thread_name_prefix="podium-sqlite-writer")
        self._reader_exec = ThreadPoolExecutor(1, thread_name_prefix="podium-sqlite-reader")
        self._writer: asyncio.Task[None] | None = None
        self._expiry: asyncio.Task[None] | None = None
        self._maintainer: asyncio.Task[None] | None = None
        self._closed = False

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the writer and the lease expiry loop (optional: the first call does it)."""
        self._ensure_started()

    def _ensure_started(self) -> None:
        if self._closed:
            raise StoreError(f"store {self.path} is closed")
        if self._writer is None:
            loop = asyncio.get_running_loop()
            self._writer = loop.create_task(self._write_loop(), name="sqlite-store-writer")
            self._expiry = loop.create_task(
                lease_expiry_loop(self.expire_leases, self._interval), name="sqlite-store-leases"
            )
            self._maintainer = loop.create_task(self._maintain_loop(), name="sqlite-store-maint")

    async def close(self) -> None:
        """Commit what is queued, stop the tasks, end every watch, close the file."""
        if self._closed:
            return
        self._closed = True
        self._hub.close()
        for task in (self._expiry, self._maintainer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._writer is not None:
            self._wake.set()
            await self._writer  # it drains the queue, then returns
        # Each connection is closed on the thread that uses it, after its last job.
        loop = asyncio.get_running_loop() if self._writer is not None else None
        for ex, conn in ((self._writer_exec, self._wconn), (self._reader_exec, self._rconn)):
            if loop is not None:
                await loop.run_in_executor(ex, conn.close)
            else:
                conn.close()
            ex.shutdown(wait=True)
        os.close(self._lock_fd)

    # ------------------------------------------------------------ reads

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        self._ensure_started()
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._reader_exec, fn, *args)
        except sqlite3.Error as e:
            raise StoreError(f"store {self.path}: read failed: {e}") from e

    async def get(self, key: str) -> KeyValue | None:
        return await self._read(self._r_get, key)

    def _r_get(self, key: str) -> KeyValue | None:
        row = self._rconn.execute(f"SELECT {_KV_COLS} FROM kv WHERE key = ?", (key,)).fetchone()
        return make_kv(*row) if row else None

    async def list(self, prefix: str) -> tuple[builtins.list[KeyValue], int]:
        return await self._read(self._r_list, prefix)

    def _r_list(self, prefix: str) -> tuple[builtins.list[KeyValue], int]:
        cond, params = _prefix_range(prefix)
        with _read_txn(self._rconn) as c:  # one snapshot for the rows and the revision
            (rev,) = c.execute("SELECT value FROM meta WHERE name = 'rev'").fetchone()
            rows = c.execute(f"SELECT {_KV_COLS} FROM kv WHERE {cond} ORDER BY key", params)
            return [make_kv(*r) for r in rows], rev

    async def revision(self) -> int:
        self._ensure_started()
        return self._rev

    # ------------------------------------------------------------ watches

    def watch(self, prefix: str, *, start_rev: int) -> AsyncIterator[WatchEvent]:
        self._ensure_started()
        return follow(self._hub, prefix, start_rev, lambda: self._rev, self._catch_up)

    async def _catch_up(self, prefix: str, start: int, upto: int) -> AsyncIterator[WatchEvent]:
        oldest, events = await self._read(self._r_catch_up, prefix, start, upto)
        if start < oldest:
            raise Compacted(start, oldest)
        for ev in events:
            yield ev

    def _r_catch_up(
        self, prefix: str, start: int, upto: int
    ) -> tuple[int, builtins.list[WatchEvent]]:
        """The logged changes under prefix in [start, upto], values restored. Reads the
        log to its end and `kv` in one snapshot: a put's value is the prev_value of the
        key's next change, or, if there is none, the key's value in `kv`."""
        with _read_txn(self._rconn) as c:
            (oldest,) = c.execute("SELECT value FROM meta WHERE name = 'oldest'").fetchone()
            if start < oldest:
                return oldest, []
            rows = c.execute(
                "SELECT events FROM changes WHERE last_rev >= ? ORDER BY first_rev", (start,)
            )
            changes = [ch for (blob,) in rows for ch in _decode_changes(blob)]
            later: dict[str, bytes | None] = {}  # key -> prev_value of its next change
            picked: builtins.list[tuple[_Change, bytes | None]] = []
            for ch in reversed(changes):
                rev, typ, key, prev = ch[0], ch[1], ch[2], ch[3]
                if rev < start:
                    break
                if not key.startswith(prefix):
                    continue
                if rev <= upto:
                    picked.append((ch, later.get(key) if typ == _PUT else None))
                later[key] = prev
            picked.reverse()
            current = self._r_values(c, {ch[2] for ch, v in picked if ch[1] == _PUT and v is None})
        events = []
        for (rev, typ, key, prev, create_rev, version, lease), value in picked:
            if typ == _DELETE:
                events.append(WatchEvent("delete", KeyValue(key, b"", rev, 0, 0), prev))
                continue
            if value is None:
                kv = current.get(key)
                if kv is None or kv.mod_rev != rev:  # cannot happen unless the file was edited
                    raise StoreError(f"store {self.path}: change log and kv disagree on {key!r}")
                value = kv.value
            events.append(
                WatchEvent("put", KeyValue(key, value, rev, create_rev, version, lease), prev)
            )
        return oldest, events

    @staticmethod
    def _r_values(c: sqlite3.Connection, keys: set[str]) -> dict[str, KeyValue]:
        found: dict[str, KeyValue] = {}
        todo = builtins.list(keys)
        for i in range(0, len(todo), 500):
            chunk = todo[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for row in c.execute(f"SELECT {_KV_COLS} FROM kv WHERE key IN ({marks})", chunk):
                found[row[0]] = make_kv(*row)
        return found

    # ------------------------------------------------------------ writes

    async def _submit(self, req: _Req) -> Any:
        self._ensure_started()
        if self._writer is not None and self._writer.done():  # only a bug ends it early
            raise StoreError(f"store {self.path}: the writer has stopped")
        self._queue.append(req)
        self._wake.set()
        return await req.fut

    async def _run_txns(self, txns: builtins.list[Txn]) -> builtins.list[TxnResult]:
        fut: asyncio.Future[builtins.list[TxnResult]] = asyncio.get_running_loop().create_future()
        result: builtins.list[TxnResult] = await self._submit(_TxnsReq(txns, fut))
        return result

    async def lease_grant(self, ttl: float) -> int:
        if not ttl > 0:
            raise ValueError(f"lease ttl must be > 0 seconds, got {ttl!r}")
        lease: int = await self._submit(_GrantReq(ttl, asyncio.get_running_loop().create_future()))
        return lease

    async def lease_keepalive(self, lease: int) -> None:
        self._ensure_started()
        held = self._leases.get(lease)
        now = self._clock()
        if held is None or held.deadline <= now:
            raise NotFound(f"lease {lease} not found (expired or revoked)")
        held.deadline = now + held.ttl  # in memory only: a reopen renews every lease anyway

    async def lease_revoke(self, lease: int) -> None:
        """Drop the lease and delete its keys (one revision). Unknown lease: no-op."""
        await self._submit(_RevokeReq(lease, asyncio.get_running_loop().create_future()))

    async def expire_leases(self) -> int:
        """Revoke every lease whose deadline has passed on the clock; return how many."""
        now = self._clock()
        expired = {lid: held for lid, held in self._leases.items() if held.deadline <= now}
        for lid in expired:  # from here on a keepalive of it fails
            del self._leases[lid]
        results = await asyncio.gather(
            *(self.lease_revoke(lid) for lid in expired), return_exceptions=True
        )
        failed = [(lid, r) for lid, r in zip(expired, results, strict=True) if r is not None]
        for lid, _ in failed:  # still expired: the next pass tries again
            self._leases[lid] = expired[lid]
        if failed:
            raise failed[0][1]
        return len(expired)

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closed:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch: builtins.list[_Req] = []
            n = 0
            while self._queue and n < _MAX_BATCH_TXNS:
                req = self._queue.popleft()
                if req.fut.done():  # its caller was cancelled before we got to it: drop it
                    continue
                batch.append(req)
                n += len(req.txns) if isinstance(req, _TxnsReq) else 1
            if not batch:
                continue
            try:
                done = await loop.run_in_executor(self._writer_exec, self._commit_batch, batch)
            except Exception as e:  # the whole batch rolled back; every caller may retry
                log.error("store %s: commit failed: %s", self.path, e)
                for req in batch:
                    if not req.fut.done():
                        req.fut.set_exception(StoreError(f"store {self.path}: commit failed: {e}"))
                continue
            self._rev = done.rev
            now = self._clock()
            for lid, ttl in done.granted.items():
                self._leases[lid] = LeaseDeadline(ttl, now + ttl)
            for lid in done.revoked:
                self._leases.pop(lid, None)
            self._hub.publish(done.events)
            for req, outcome in zip(batch, done.outcomes, strict=True):
                if req.fut.done():  # the caller was cancelled mid-commit; its write stands
                    continue
                if isinstance(outcome, BaseException):
                    req.fut.set_exception(outcome)
                else:
                    req.fut.set_result(outcome)

    # ------------------------------------------------------------ staying small

    async def _maintain_loop(self) -> None:
        while True:
            await asyncio.sleep(self._maintenance_interval)
            try:
                await self.maintain()
            except StoreError:
                log.warning("store %s: maintenance failed; next pass retries", self.path)

    async def maintain(self) -> Maintenance:
        """Give free pages back to the file system if many, and check the disk's free space.
        Runs on the writer thread, so it never overlaps a commit."""
        self._ensure_started()
        loop = asyncio.get_running_loop()
        try:
            done = await loop.run_in_executor(self._writer_exec, self._w_maintain)
        except (sqlite3.Error, OSError) as e:
            raise StoreError(f"store {self.path}: maintenance failed: {e}") from e
        if done.disk_low and not self._disk_was_low:
            log.warning(
                "store %s: the disk holding it is nearly full: %d MiB free of %d MiB; "
                "free space before writes fail",
                self.path,
                done.disk_free >> 20,
                done.disk_total >> 20,
            )
        elif self._disk_was_low and not done.disk_low:
            log.info("store %s: disk space is back (%d MiB free)", self.path, done.disk_free >> 20)
        self._disk_was_low = done.disk_low
        return done

    def _w_maintain(self) -> Maintenance:
        c = self._wconn
        (page_size,) = c.execute("PRAGMA page_size").fetchone()
        (before,) = c.execute("PRAGMA page_count").fetchone()
        (free,) = c.execute("PRAGMA freelist_count").fetchone()
        vacuumed: Literal["", "incremental", "full"] = ""
        if free * 4 > before and free * page_size >= _VACUUM_MIN_FREE:
            (mode,) = c.execute("PRAGMA auto_vacuum").fetchone()
            if mode == 2:  # INCREMENTAL
                # executescript steps it to the end; execute() would free one page per call
                c.executescript("PRAGMA incremental_vacuum;")
                vacuumed = "incremental"
            else:  # an older file: one full VACUUM, which also switches it to INCREMENTAL
                c.execute("PRAGMA auto_vacuum = INCREMENTAL")
                c.execute("VACUUM")
                vacuumed = "full"
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the file shrinks at a checkpoint
        (after,) = c.execute("PRAGMA page_count").fetchone()
        disk = os.statvfs(self.path.parent)
        disk_free, disk_total = disk.f_bavail * disk.f_frsize, disk.f_blocks * disk.f_frsize
        low = disk_free < self._min_free_disk_bytes or disk_free < self._min_free_disk * disk_total
        return Maintenance(before, after, page_size, vacuumed, disk_free, disk_total, low)

    # ------------------------------------------------------------ the writer thread

    def _commit_batch(self, batch: builtins.list[_Req]) -> _Committed:
        conn = self._wconn
        conn.execute("BEGIN IMMEDIATE")
        try:
            view, done = self._judge(batch)
            self._write(view, done)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._w_rev = done.rev
        self._w_lease_seq = done.lease_seq
        self._w_log_count = done.log_count
        self._w_leases.update(done.granted)
        for lid in done.revoked:
            del self._w_leases[lid]
        return done

    def _judge(self, batch: builtins.list[_Req]) -> tuple[_BatchView, _Committed]:
        """Run each request in order against the batch so far; nothing is written yet."""
        view = _BatchView(self._wconn)
        wanted: set[str] = set()
        leases = [_scan(req.txns, wanted) if isinstance(req, _TxnsReq) else set() for req in batch]
        view.prefetch(wanted)
        done = _Committed(self._w_rev, self._w_lease_seq, self._w_log_count)

        def live(lid: int) -> bool:
            return lid in done.granted or (lid in self._w_leases and lid not in done.revoked)

        def run(txn: Txn) -> TxnResult:
            res, events = apply_txn(view, txn, done.rev + 1)
            if events:
                done.rev += 1
                done.events.extend(events)
            return res

        for req, used in zip(batch, leases, strict=True):
            if isinstance(req, _TxnsReq):
                # Checked before any of the request runs, so a request fails whole.
                missing = sorted(lid for lid in used if not live(lid))
                if missing:
                    err = NotFound(f"lease {missing[0]} not found (expired or revoked)")
                    done.outcomes.append(err)
                    continue
                done.outcomes.append([run(txn) for txn in req.txns])
            elif isinstance(req, _GrantReq):
                done.lease_seq += 1
                done.granted[done.lease_seq] = req.ttl
                done.outcomes.append(done.lease_seq)
            else:
                if live(req.lease):
                    doomed: builtins.list[Op] = [Delete(k) for k in view.with_lease(req.lease)]
                    if doomed:
                        run(((), doomed, ()))
                    if done.granted.pop(req.lease, None) is None:
                        done.revoked.add(req.lease)
                done.outcomes.append(None)
        return view, done

    def _write(self, view: _BatchView, done: _Committed) -> None:
        conn = self._wconn
        dels = [(k,) for k, kv in view.dirty.items() if kv is None]
        if dels:
            conn.executemany("DELETE FROM kv WHERE key = ?", dels)
        ups = [
            (kv.key, kv.value, kv.mod_rev, kv.create_rev, kv.version, kv.lease)
            for kv in view.dirty.values()
            if kv is not None
        ]
        if ups:
            conn.executemany(_UPSERT, ups)
        if done.events:
            changes = [
                (
                    e.kv.mod_rev,
                    _PUT if e.type == "put" else _DELETE,
                    e.kv.key,
                    e.prev_value,
                    e.kv.create_rev,
                    e.kv.version,
                    e.kv.lease,
                )
                for e in done.events
            ]
            conn.execute(
                "INSERT INTO changes (first_rev, last_rev, count, events) VALUES (?,?,?,?)",
                (changes[0][0], done.rev, len(changes), _encode_changes(changes)),
            )
            conn.execute("UPDATE meta SET value = ? WHERE name = 'rev'", (done.rev,))
            done.log_count += len(changes)
            self._trim(done)
        if done.granted:
            now = self._clock()
            conn.executemany(
                "INSERT INTO leases (id, ttl, expires_at) VALUES (?,?,?)",
                [(lid, ttl, now + ttl) for lid, ttl in done.granted.items()],
            )
            conn.execute("UPDATE meta SET value = ? WHERE name = 'lease_seq'", (done.lease_seq,))
        if done.revoked:
            conn.executemany("DELETE FROM leases WHERE id = ?", [(lid,) for lid in done.revoked])

    def _trim(self, done: _Committed) -> None:
        """Keep the newest `history` changes, in whole commits (so whole revisions).
        Trimmed in steps of a tenth of `history` so the delete is rare and batched."""
        if done.log_count <= self._history + self._history // 10:
            return
        cutoff = 0
        excess = done.log_count - self._history
        rows = self._wconn.execute("SELECT last_rev, count FROM changes ORDER BY first_rev")
        for last_rev, count in rows:
            if excess <= 0:
                break
            cutoff, excess = last_rev, excess - count
            done.log_count -= count
        rows.close()
        self._wconn.execute("DELETE FROM changes WHERE first_rev <= ?", (cutoff,))
        self._wconn.execute("UPDATE meta SET value = ? WHERE name = 'oldest'", (cutoff + 1,))


def _scan(txns: Iterable[Txn], keys: set[str]) -> set[int]:
    """Add the single keys `txns` touch to `keys`; return the leases their Puts name."""
    leases: set[int] = set()
    for compares, success, failure in txns:
        for c in compares:
            keys.add(c.key)
        for ops in (success, failure):
            for op in ops:
                if type(op) is Put:
                    keys.add(op.key)
                    if op.lease:
                        leases.add(op.lease)
                elif not op.prefix:  # type: ignore[union-attr]  # Delete or Get
                    keys.add(op.key)
    return leases


@contextlib.contextmanager
def _read_txn(conn: sqlite3.Connection) -> Any:
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        conn.execute("COMMIT")


def _connect(path: Path, synchronous: str) -> sqlite3.Connection:
    # isolation_level=None: we say BEGIN/COMMIT ourselves; check_same_thread=False:
    # each connection is created here but then used only by its own executor thread.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA page_size = 8192")  # new files only; measured faster than 4 KiB
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # new files only; see maintain()
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        raise sqlite3.OperationalError(f"cannot switch to WAL (journal_mode is {mode})")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA cache_size = -65536")  # 64 MiB: the hot key set stays in memory
    return conn


def _lock(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreError(f"store {path} is in use by another process") from None
    return fd
