"""The embedded default store: one SQLite file in WAL mode, with group commit.

    put/txn/lease ──► queue ──► writer task ──► writer process (sqlite_writer.py): judge
                                               each queued txn in order against the batch
                                               so far, then ONE SQLite transaction, ONE fsync
    caller's future ◄── resolved after COMMIT ◄┘ └──► WatchHub: each watcher's queue
    get/list/watch catch-up ──► reader thread, its own connection (WAL: never waits)

The writer runs in a process of its own so that committing a large batch and the event
loop's work (scheduling the next one, say) use two cores instead of taking turns on one
GIL; the event loop only hands it a batch (a memfd and an 8-byte header, see
`sqlite_writer.Mailbox`) and reads the answer when the header arrives. A batch goes at
once when the writer is idle; what queues while it works goes as the next batch. A writer
process that dies is started again by the next batch; the callers of the batch it died
in get a StoreError (their writes may or may not have happened), and the watch events
it committed without reporting are read back from the change log and published.

Tables: `kv` (the keys), `meta` (rev, oldest revision the log keeps, lease counter),
`leases` (id, ttl, expires_at as of the grant), and `changes`, the log of the last
`history` changes (one row per commit, see `sqlite_writer.Change`) that watches catch up
from; a watch from before it gets `Compacted`. A watcher whose queue holds more than
`max_watch_pending` events is cut off with `Compacted` too, and re-lists.

Durability: a write is acknowledged only after its COMMIT returned. With
synchronous=FULL (the default; NORMAL is allowed) the WAL is fsynced on every commit,
so an acknowledged write survives a kill of the process or of the machine.

Leases: deadlines live in memory, judged by the `clock` seam; `leases` keeps id and
ttl. On reopen every lease gets its full ttl again (as etcd does on a leader change).
`start()` (optional: the first call does it) starts the writer task and the expiry loop;
`close()` commits what is queued and stops both, and the writer process with them.

One server owns the file at a time (an flock on `<file>.lock`): the writer trusts
its in-memory revision, so a second writer would corrupt history. The writer process
holds `<file>.writer.lock` as well, so one left behind by a killed server finishes
before the next one reads the revision.

Staying small: the change log is trimmed to `history` changes as it grows (watchers
from before get Compacted and re-list). Every `maintenance_interval` seconds,
`maintain()` (in the writer process, between batches) gives free pages back to the file
system once they are over a quarter of the file and 4 MiB
(`incremental_vacuum`; a file made before auto_vacuum was set gets one full VACUUM), and
logs a warning while the disk holding the file has less than `min_free_disk` (fraction)
or `min_free_disk_bytes` free.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import fcntl
import functools
import logging
import os
import sqlite3
import subprocess
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec

import podium
from podium.errors import Compacted, NotFound, StoreError
from podium.runtime.backoff import Backoff
from podium.store.base import Compare, Get, KeyValue, Op, TxnResult, WatchEvent
from podium.store.memory import (
    LeaseDeadline,
    Txn,
    TxnFrontend,
    WatchHub,
    follow,
    follow_batches,
    lease_expiry_loop,
    validate_txn,
)
from podium.store.sqlite_writer import (
    DELETE,
    HEADER_SIZE,
    KV_COLS,
    PUT,
    Change,
    Mailbox,
    Maintenance,
    Request,
    commit_request,
    committed_from_wire,
    decode_changes,
    hello_from_wire,
    maintain_request,
    maintenance_from_wire,
    prefix_range,
    read_exactly,
    write_all,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

_MAX_BATCH_TXNS = 20_000  # bounds one commit's latency, memory and frame


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


@dataclass(slots=True)
class _MaintainReq:
    fut: asyncio.Future[Any]


_Req = _TxnsReq | _GrantReq | _RevokeReq | _MaintainReq


class _WriterGone(Exception):
    """The writer process exited or its pipe broke."""


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
        self._synchronous = synchronous
        self._proc: subprocess.Popen[bytes] | None = None
        self._requests = self._replies = Mailbox(-1)  # set by _spawn
        self._inflight: builtins.list[_Req] | None = None  # the batch the writer has now
        self._lock_fd = _lock(self.path)
        try:
            rev, leases = self._spawn()  # it creates the file and its tables if new
            self._rconn = _connect_reader(self.path)
        except (StoreError, _WriterGone, OSError, sqlite3.Error) as e:
            self._stop_writer()
            os.close(self._lock_fd)
            if isinstance(e, StoreError):
                raise
            raise StoreError(f"cannot open store {self.path}: {e}") from e
        # Owned by the event loop.
        self._rev: int = rev
        now = clock()
        self._leases = {lid: LeaseDeadline(ttl, now + ttl) for lid, ttl in leases.items()}
        self._writer_gone = False  # set when the process died; the next batch restarts it
        self._queue: deque[_Req] = deque()
        self._wake = asyncio.Event()
        # starts and stops writer processes (blocking) off the event loop
        self._writer_exec = ThreadPoolExecutor(1, thread_name_prefix="podium-sqlite-spawn")
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
        # The writer process exits once its stdin closes; the reader connection is closed
        # on the thread that uses it, after its last job.
        loop = asyncio.get_running_loop() if self._writer is not None else None
        if loop is not None:
            await loop.run_in_executor(self._writer_exec, self._stop_writer)
            await loop.run_in_executor(self._reader_exec, self._rconn.close)
        else:
            self._stop_writer()
            self._rconn.close()
        self._writer_exec.shutdown(wait=True)
        self._reader_exec.shutdown(wait=True)
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
        row = self._rconn.execute(f"SELECT {KV_COLS} FROM kv WHERE key = ?", (key,)).fetchone()
        return KeyValue(*row) if row else None

    async def list(self, prefix: str) -> tuple[builtins.list[KeyValue], int]:
        return await self._read(self._r_list, prefix)

    def _r_list(self, prefix: str) -> tuple[builtins.list[KeyValue], int]:
        cond, params = prefix_range(prefix)
        with _read_txn(self._rconn) as c:  # one snapshot for the rows and the revision
            (rev,) = c.execute("SELECT value FROM meta WHERE name = 'rev'").fetchone()
            rows = c.execute(f"SELECT {KV_COLS} FROM kv WHERE {cond} ORDER BY key", params)
            return [KeyValue(*r) for r in rows], rev

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        """A transaction that only reads (no compares, only Gets) is answered from one
        read transaction of the reader connection: the same snapshot, without the writer
        process reading every row and sending it down its pipe (a server's first read
        of a million allocs took twice as long through the writer, which also held them
        all in its memory meanwhile)."""
        if not compares and success and all(type(op) is Get for op in success):
            validate_txn(compares, [*success, *failure])
            return await self._read(self._r_reads, success)
        return await super().txn(compares, success, failure)

    def _r_reads(self, gets: Sequence[Get]) -> TxnResult:
        reads: builtins.list[builtins.list[KeyValue]] = []
        with _read_txn(self._rconn) as c:  # one snapshot for the rows and the revision
            (rev,) = c.execute("SELECT value FROM meta WHERE name = 'rev'").fetchone()
            for g in gets:
                if g.prefix:
                    cond, params = prefix_range(g.key)
                    q = f"SELECT {KV_COLS} FROM kv WHERE {cond} ORDER BY key"
                    rows = c.execute(q, params)
                else:
                    rows = c.execute(f"SELECT {KV_COLS} FROM kv WHERE key = ?", (g.key,))
                reads.append([KeyValue(*r) for r in rows])
        return TxnResult(succeeded=True, revision=rev, reads=reads)

    async def read_batches(
        self, prefixes: Sequence[str], *, size: int = 10_000
    ) -> AsyncIterator[tuple[str, builtins.list[KeyValue], int]]:
        """Every key under each prefix, from one snapshot, `size` rows at a time:
        (prefix, rows, the snapshot's revision), at least one (maybe empty) per prefix.
        A server's first read of a million allocs then never holds all their values at
        once (a gigabyte beside the objects decoded from them). Read on a connection of
        its own, so the snapshot held open between batches is no other reader's."""
        self._ensure_started()
        loop = asyncio.get_running_loop()
        run = functools.partial(loop.run_in_executor, self._reader_exec)
        conn = await run(_connect_reader, self.path)
        try:
            rev = await run(_begin_snapshot, conn)
            for prefix in prefixes:
                cursor = await run(_open_prefix, conn, prefix)
                rows = await run(_fetch_kvs, cursor, size)
                yield prefix, rows, rev  # one batch per prefix at least, maybe empty
                while rows := await run(_fetch_kvs, cursor, size):
                    yield prefix, rows, rev
        except sqlite3.Error as e:
            raise StoreError(f"store {self.path}: read failed: {e}") from e
        finally:
            await run(_end_snapshot, conn)

    async def revision(self) -> int:
        self._ensure_started()
        return self._rev

    # ------------------------------------------------------------ watches

    def watch(self, prefix: str, *, start_rev: int) -> AsyncIterator[WatchEvent]:
        self._ensure_started()
        return follow(self._hub, prefix, start_rev, lambda: self._rev, self._catch_up)

    def watch_batches(
        self, prefix: str, *, start_rev: int
    ) -> AsyncIterator[builtins.list[WatchEvent]]:
        """watch(), a list of events at a time."""
        self._ensure_started()
        return follow_batches(self._hub, prefix, start_rev, lambda: self._rev, self._catch_up)

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
            changes = [ch for (blob,) in rows for ch in decode_changes(blob)]
            later: dict[str, bytes | None] = {}  # key -> prev_value of its next change
            picked: builtins.list[tuple[Change, bytes | None]] = []
            for ch in reversed(changes):
                rev, typ, key, prev = ch[0], ch[1], ch[2], ch[3]
                if rev < start:
                    break
                if not key.startswith(prefix):
                    continue
                if rev <= upto:
                    picked.append((ch, later.get(key) if typ == PUT else None))
                later[key] = prev
            picked.reverse()
            current = self._r_values(c, {ch[2] for ch, v in picked if ch[1] == PUT and v is None})
        events = []
        for (rev, typ, key, prev, create_rev, version, lease), value in picked:
            if typ == DELETE:
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
            for row in c.execute(f"SELECT {KV_COLS} FROM kv WHERE key IN ({marks})", chunk):
                found[row[0]] = KeyValue(*row)
        return found

    # ------------------------------------------------------------ writes

    async def _submit(self, req: _Req) -> Any:
        self._ensure_started()
        if self._writer is not None and self._writer.done():  # only a bug ends it early
            raise StoreError(f"store {self.path}: the writer has stopped")
        self._queue.append(req)
        if self._inflight is None and not self._writer_gone:
            self._send_next()  # the writer is idle: hand it this batch now, not next turn
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

    def _send_next(self) -> None:
        """Take the next batch off the queue and send it to the writer process.
        A maintenance request goes alone."""
        batch: builtins.list[_Req] = []
        n = 0
        while self._queue and n < _MAX_BATCH_TXNS:
            req = self._queue[0]
            if isinstance(req, _MaintainReq) and batch:
                break
            self._queue.popleft()
            if req.fut.done():  # its caller was cancelled before we got to it: drop it
                continue
            batch.append(req)
            if isinstance(req, _MaintainReq):
                break
            n += len(req.txns) if isinstance(req, _TxnsReq) else 1
        if not batch:
            return
        try:
            if isinstance(batch[0], _MaintainReq):
                body = maintain_request(self._min_free_disk, self._min_free_disk_bytes)
            else:
                body = commit_request(_requests(batch), self._clock())
            proc = self._proc
            if proc is None or proc.stdin is None:
                raise _WriterGone("no writer process")
            header = self._requests.put(body)
        except BaseException as e:  # nothing was sent: fail the batch, keep the writer
            self._fail(batch, f"cannot send the batch to the writer: {e}")
            return
        try:
            # 8 bytes: a pipe takes them whole or not at all (EPIPE, the writer is dead)
            write_all(proc.stdin.fileno(), header)
        except OSError as e:
            # The writer died while idle and never saw this batch: it goes again, first,
            # to the writer the loop starts next.
            log.error("store %s: the writer process (pid %d) is gone: %s", self.path, proc.pid, e)
            self._queue.extendleft(reversed(batch))
            self._writer_gone = True
            self._wake.set()
            return
        self._inflight = batch

    async def _write_loop(self) -> None:
        restarts = Backoff(base=0.25, cap=5.0)  # when a writer process cannot be started
        while True:
            if self._inflight is None:
                if not self._queue:
                    if self._closed:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                if self._writer_gone:
                    try:
                        await self._restart_writer()
                    except Exception as e:  # cannot start one: fail what waits, retry later
                        log.error("store %s: %s", self.path, e)
                        self._fail(builtins.list(self._queue), f"no writer process: {e}")
                        self._queue.clear()
                        await asyncio.sleep(restarts.next())
                        continue
                    restarts.reset()
                self._send_next()
                if self._inflight is None:
                    continue
            batch = self._inflight
            try:
                proc = self._proc
                assert proc is not None and proc.stdout is not None
                body = self._reply(await _read_header(proc.stdout.fileno(), proc.pid))
            except _WriterGone as e:
                # Killed mid-batch: the batch may or may not have committed. The callers
                # are told so; the next batch starts a new writer, which catches up.
                self._writer_gone = True
                log.error("store %s: %s", self.path, e)
                self._fail(batch, f"{e}; the write may not have happened")
                continue
            except Exception as e:  # the whole batch rolled back; every caller may retry
                log.error("store %s: commit failed: %s", self.path, e)
                self._fail(batch, f"commit failed: {e}")
                continue
            finally:
                self._inflight = None
            if isinstance(batch[0], _MaintainReq):
                if not batch[0].fut.done():
                    batch[0].fut.set_result(maintenance_from_wire(body))
                continue
            done = committed_from_wire(body, _requests(batch))
            self._rev = done.rev
            now = self._clock()
            for lid, ttl in done.granted.items():
                self._leases[lid] = LeaseDeadline(ttl, now + ttl)
            for lid in done.revoked:
                self._leases.pop(lid, None)
            if self._queue and not self._writer_gone:
                self._send_next()  # group commit: what queued meanwhile goes at once
            for req, outcome in zip(batch, done.outcomes, strict=True):
                if req.fut.done():  # the caller was cancelled mid-commit; its write stands
                    continue
                if isinstance(outcome, BaseException):
                    req.fut.set_exception(outcome)
                else:
                    req.fut.set_result(outcome)
            # Published after the callers are resolved, so they run first: a writer that
            # installs its own commit in a cache (ClusterState.absorb) spares the watch
            # feed from decoding it again.
            self._hub.publish(done.events)

    def _fail(self, batch: builtins.list[_Req], why: str) -> None:
        for req in batch:
            if not req.fut.done():
                req.fut.set_exception(StoreError(f"store {self.path}: {why}"))

    async def _restart_writer(self) -> None:
        """Start a new writer process after the last one died; publish what the dead one
        committed but never reported (its watch events), so no watcher misses a change."""
        loop = asyncio.get_running_loop()

        def respawn() -> tuple[int, dict[int, float]]:
            self._stop_writer()
            return self._spawn()

        rev, leases = await loop.run_in_executor(self._writer_exec, respawn)
        self._writer_gone = False
        if rev > self._rev:
            oldest, missed = await self._read(self._r_catch_up, "", self._rev + 1, rev)
            if self._rev + 1 < oldest:  # trimmed already: watchers must re-list
                self._hub.cut_off(rev)
            else:
                self._hub.publish(missed)
            self._rev = rev
        now = self._clock()
        for lid, ttl in leases.items():
            self._leases.setdefault(lid, LeaseDeadline(ttl, now + ttl))
        for lid in set(self._leases) - set(leases):
            del self._leases[lid]
        log.warning("store %s: writer process restarted at revision %d", self.path, rev)

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
        Runs in the writer process between batches, so it never overlaps a commit."""
        fut: asyncio.Future[Maintenance] = asyncio.get_running_loop().create_future()
        try:
            done: Maintenance = await self._submit(_MaintainReq(fut))
        except StoreError as e:
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

    # ------------------------------------------------------------ the writer process

    def _spawn(self) -> tuple[int, dict[int, float]]:
        """Start a writer process and wait for its hello: (revision, {lease: ttl}).
        Blocking: called at open, and on an executor thread for a restart."""
        root = str(Path(podium.__file__).resolve().parents[1])  # where `podium` imports from
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        req_fd = os.memfd_create("podium-sqlite-requests")
        rep_fd = os.memfd_create("podium-sqlite-replies")
        self._requests, self._replies = Mailbox(req_fd), Mailbox(rep_fd)
        args = [str(self.path), self._synchronous, str(self._history), str(req_fd), str(rep_fd)]
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "podium.store.sqlite_writer", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            pass_fds=(req_fd, rep_fd),
        )
        assert self._proc.stdout is not None
        out = self._proc.stdout.fileno()
        try:
            header = read_exactly(out, HEADER_SIZE)
        except (EOFError, OSError) as e:
            raise _WriterGone(f"the writer process exited at start ({e})") from e
        rev, leases = hello_from_wire(self._reply(header))
        os.set_blocking(out, False)  # from here on the event loop reads it
        return rev, leases

    def _reply(self, header: bytes) -> msgspec.Raw:
        status, payload = self._replies.take(header)
        if status != "ok":
            raise StoreError(f"store {self.path}: {msgspec.msgpack.decode(payload, type=str)}")
        return payload

    def _stop_writer(self) -> None:
        """Close the writer's stdin (it commits nothing more and exits) and reap it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for box in (self._requests, self._replies):
            with contextlib.suppress(OSError):
                os.close(box.fd)


def _requests(batch: builtins.list[_Req]) -> builtins.list[Request]:
    reqs: builtins.list[Request] = []
    for req in batch:
        if isinstance(req, _TxnsReq):
            reqs.append(("txns", req.txns))
        elif isinstance(req, _GrantReq):
            reqs.append(("grant", req.ttl))
        elif isinstance(req, _RevokeReq):
            reqs.append(("revoke", req.lease))
    return reqs


async def _read_header(fd: int, pid: int) -> bytes:
    """The next reply header from the writer's stdout (non-blocking), read by the loop."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[bytes] = loop.create_future()
    buf = bytearray()

    def readable() -> None:
        if fut.done():
            return
        try:
            part = os.read(fd, HEADER_SIZE - len(buf))
        except BlockingIOError:
            return
        except OSError as e:
            fut.set_exception(_WriterGone(f"the writer process (pid {pid}) is gone: {e}"))
            return
        if not part:
            fut.set_exception(_WriterGone(f"the writer process (pid {pid}) exited"))
            return
        buf.extend(part)
        if len(buf) == HEADER_SIZE:
            fut.set_result(bytes(buf))

    loop.add_reader(fd, readable)
    try:
        return await fut
    finally:
        loop.remove_reader(fd)


@contextlib.contextmanager
def _read_txn(conn: sqlite3.Connection) -> Any:
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        conn.execute("COMMIT")


def _begin_snapshot(conn: sqlite3.Connection) -> int:
    conn.execute("BEGIN")
    (rev,) = conn.execute("SELECT value FROM meta WHERE name = 'rev'").fetchone()
    return int(rev)


def _open_prefix(conn: sqlite3.Connection, prefix: str) -> sqlite3.Cursor:
    cond, params = prefix_range(prefix)
    return conn.execute(f"SELECT {KV_COLS} FROM kv WHERE {cond} ORDER BY key", params)


def _fetch_kvs(cursor: sqlite3.Cursor, size: int) -> list[KeyValue]:
    return [KeyValue(*r) for r in cursor.fetchmany(size)]


def _end_snapshot(conn: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        conn.execute("COMMIT")
    conn.close()


def _connect_reader(path: Path) -> sqlite3.Connection:
    # check_same_thread=False: created here, then used only by the reader's executor thread.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA query_only = 1")
    conn.execute("PRAGMA cache_size = -65536")
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
