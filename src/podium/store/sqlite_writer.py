"""The SQLite store's writer: one process of its own that owns every write to the file.

    SQLiteStore (server process)                  writer process (this module's main)
      queue -> batch --frame on stdin-->  judge each txn in order against the batch so
                                          far, ONE SQLite transaction, ONE fsync
      futures, watch hub <--frame on stdout--  revision, outcomes, watch events

Why a process and not a thread: a batch costs the writer seconds of CPU (judging
compares, building rows, SQLite's own work), and sqlite3 gives the GIL back and takes it
again for every row it steps. On a thread that competes with the event loop for one GIL,
so committing and scheduling add up; in a process they run side by side on two cores.

A request or reply is a msgpack body in a memfd (`Mailbox`) and an 8-byte header (its
length) through the pipe (stdin for requests, stdout for replies). The process starts by taking
`<file>.writer.lock` (so a writer left over from a killed server finishes its last
commit before a new one reads the file), opens the file, and answers `hello` with
the revision and the live leases. It ignores SIGINT and SIGTERM and exits when its stdin
closes, i.e. when the server that started it closes the store or dies: a kill of the
server never cuts a commit in half (SQLite would roll it back anyway). Nothing but
headers is written to stdout: fd 1 is pointed at stderr at start.
"""

from __future__ import annotations

import builtins
import fcntl
import os
import signal
import sqlite3
import struct
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec

from podium.errors import NotFound
from podium.store.base import Compare, Delete, Get, KeyValue, Op, Put, TxnResult, WatchEvent
from podium.store.memory import Txn, apply_txn

SCHEMA = """
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
KV_COLS = "key, value, mod_rev, create_rev, version, lease"  # KeyValue's field order
_UPSERT = (
    f"INSERT INTO kv ({KV_COLS}) VALUES (?,?,?,?,?,?) ON CONFLICT(key) DO UPDATE SET "
    "value=excluded.value, mod_rev=excluded.mod_rev, create_rev=excluded.create_rev, "
    "version=excluded.version, lease=excluded.lease"
)
# The change log. A commit's changes are ONE row, msgpack-encoded, because a row per
# change (B-tree and index inserts for each) halved the write throughput. A change is
# (rev, type, key, prev_value, create_rev, version, lease), type 0 put / 1 delete. A
# put's value is not logged: it is in `kv` while current, and afterwards it is the
# prev_value of the key's next change, which the log always holds if it holds the put
# (it trims oldest first). Each value is thus written once to `kv` and once to the log
# (as prev_value) instead of twice more; catch-up reads put the values back.
Change = tuple[int, int, str, bytes | None, int, int, int]
PUT, DELETE = 0, 1
_encode_changes = msgspec.msgpack.Encoder().encode
decode_changes = msgspec.msgpack.Decoder(builtins.list[Change]).decode
VACUUM_MIN_FREE = 4 * 1024 * 1024  # bytes of free pages worth giving back
_CHECKPOINT_CHANGES = 25_000  # ~ 40 MiB of WAL for alloc-sized values
_CHECKPOINT_COMMITS = 500


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


@dataclass(slots=True)
class Committed:
    """What one batch did."""

    rev: int
    lease_seq: int
    log_count: int
    # Per request: list[TxnResult] | NotFound (a txn request), int (grant), None (revoke).
    outcomes: list[object] = field(default_factory=list)
    events: list[WatchEvent] = field(default_factory=list)
    granted: dict[int, float] = field(default_factory=dict)
    revoked: set[int] = field(default_factory=set)
    # Per request, per txn (one entry for a revoke): its events, or None when they are
    # exactly "each Put of the branch taken created its key" (a bulk placement): the
    # server rebuilds those from the Puts it sent, so they do not cross the wire.
    groups: list[list[list[WatchEvent] | None]] = field(default_factory=list)


# A request of a batch: ("txns", [Txn, ...]) | ("grant", ttl) | ("revoke", lease)
Request = tuple[str, Any]


def connect(path: Path, synchronous: str) -> sqlite3.Connection:
    # isolation_level=None: we say BEGIN/COMMIT ourselves; check_same_thread=False:
    # a reader connection is created on one thread and then used only by its executor's.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA page_size = 8192")  # new files only; measured faster than 4 KiB
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # new files only; see maintain()
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        raise sqlite3.OperationalError(f"cannot switch to WAL (journal_mode is {mode})")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA cache_size = -65536")  # 64 MiB: the hot key set stays in memory
    return conn


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
            sql = f"SELECT {KV_COLS} FROM kv WHERE key IN ({marks})"
            self.read.update(dict.fromkeys(chunk))
            for row in self.conn.execute(sql, chunk):
                self.read[row[0]] = KeyValue(*row)

    def get(self, key: str) -> KeyValue | None:
        if key in self.dirty:
            return self.dirty[key]
        if key not in self.read:
            row = self.conn.execute(f"SELECT {KV_COLS} FROM kv WHERE key = ?", (key,)).fetchone()
            self.read[key] = KeyValue(*row) if row else None
        return self.read[key]

    def range(self, prefix: str) -> list[KeyValue]:
        cond, params = prefix_range(prefix)
        rows = self.conn.execute(f"SELECT {KV_COLS} FROM kv WHERE {cond}", params)
        found = {row[0]: KeyValue(*row) for row in rows}
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


def prefix_range(prefix: str) -> tuple[str, list[str]]:
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


class Writer:
    """Owns the write connection and what it implies: the revision, the lease table
    and the size of the change log. Changed only by a successful commit."""

    def __init__(self, path: Path, synchronous: str, history: int) -> None:
        self.path = path
        self.history = history
        self.conn = connect(path, synchronous)
        self.conn.execute("PRAGMA wal_autocheckpoint = 0")  # see checkpoint_if_due
        self.unchecked_changes = self.unchecked_commits = 0
        self.conn.executescript(SCHEMA)
        meta = dict(self.conn.execute("SELECT name, value FROM meta").fetchall())
        self.rev: int = meta["rev"]
        self.lease_seq: int = meta["lease_seq"]
        self.leases: dict[int, float] = dict(self.conn.execute("SELECT id, ttl FROM leases"))
        (self.log_count,) = self.conn.execute(
            "SELECT coalesce(sum(count), 0) FROM changes"
        ).fetchone()

    def checkpoint_if_due(self, changes: int) -> None:
        """Copy the WAL back into the file every `_CHECKPOINT_CHANGES` changes or
        `_CHECKPOINT_COMMITS` commits, whichever comes first. SQLite's own automatic
        checkpoint runs inside COMMIT, every 1,000 pages: with bulk writes that is every
        commit or two, on the caller's clock, and pages written again in the next batch
        are copied again. Here it runs after the answer has gone, and less often."""
        self.unchecked_changes += changes
        self.unchecked_commits += 1
        if (
            self.unchecked_changes >= _CHECKPOINT_CHANGES
            or self.unchecked_commits >= _CHECKPOINT_COMMITS
        ):
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self.unchecked_changes = self.unchecked_commits = 0

    def commit(self, batch: builtins.list[Request], now: float) -> Committed:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            view, done = self._judge(batch)
            self._write(view, done, now)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self.rev = done.rev
        self.lease_seq = done.lease_seq
        self.log_count = done.log_count
        self.leases.update(done.granted)
        for lid in done.revoked:
            del self.leases[lid]
        return done

    def _judge(self, batch: builtins.list[Request]) -> tuple[_BatchView, Committed]:
        """Run each request in order against the batch so far; nothing is written yet."""
        view = _BatchView(self.conn)
        wanted: set[str] = set()
        leases = [_scan(arg, wanted) if kind == "txns" else set() for kind, arg in batch]
        view.prefetch(wanted)
        done = Committed(self.rev, self.lease_seq, self.log_count)

        def live(lid: int) -> bool:
            return lid in done.granted or (lid in self.leases and lid not in done.revoked)

        def run(txn: Txn, group: builtins.list[builtins.list[WatchEvent] | None]) -> TxnResult:
            res, events = apply_txn(view, txn, done.rev + 1)
            if events:
                done.rev += 1
                done.events.extend(events)
            branch = txn[1] if res.succeeded else txn[2]
            creates = len(events) == len(branch) and all(
                type(op) is Put and ev.kv.version == 1
                for op, ev in zip(branch, events, strict=True)
            )
            group.append(None if creates and events else events)
            return res

        for (kind, arg), used in zip(batch, leases, strict=True):
            group: builtins.list[builtins.list[WatchEvent] | None] = []
            done.groups.append(group)
            if kind == "txns":
                # Checked before any of the request runs, so a request fails whole.
                missing = sorted(lid for lid in used if not live(lid))
                if missing:
                    err = NotFound(f"lease {missing[0]} not found (expired or revoked)")
                    done.outcomes.append(err)
                    continue
                done.outcomes.append([run(txn, group) for txn in arg])
            elif kind == "grant":
                done.lease_seq += 1
                done.granted[done.lease_seq] = arg
                done.outcomes.append(done.lease_seq)
            else:
                if live(arg):
                    doomed: builtins.list[Op] = [Delete(k) for k in view.with_lease(arg)]
                    if doomed:
                        run(((), doomed, ()), group)
                    if done.granted.pop(arg, None) is None:
                        done.revoked.add(arg)
                done.outcomes.append(None)
        return view, done

    def _write(self, view: _BatchView, done: Committed, now: float) -> None:
        conn = self.conn
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
                    PUT if e.type == "put" else DELETE,
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
            conn.executemany(
                "INSERT INTO leases (id, ttl, expires_at) VALUES (?,?,?)",
                [(lid, ttl, now + ttl) for lid, ttl in done.granted.items()],
            )
            conn.execute("UPDATE meta SET value = ? WHERE name = 'lease_seq'", (done.lease_seq,))
        if done.revoked:
            conn.executemany("DELETE FROM leases WHERE id = ?", [(lid,) for lid in done.revoked])

    def _trim(self, done: Committed) -> None:
        """Keep the newest `history` changes, in whole commits (so whole revisions).
        Trimmed in steps of a tenth of `history` so the delete is rare and batched."""
        if done.log_count <= self.history + self.history // 10:
            return
        cutoff = 0
        excess = done.log_count - self.history
        rows = self.conn.execute("SELECT last_rev, count FROM changes ORDER BY first_rev")
        for last_rev, count in rows:
            if excess <= 0:
                break
            cutoff, excess = last_rev, excess - count
            done.log_count -= count
        rows.close()
        self.conn.execute("DELETE FROM changes WHERE first_rev <= ?", (cutoff,))
        self.conn.execute("UPDATE meta SET value = ? WHERE name = 'oldest'", (cutoff + 1,))

    def maintain(self, min_free: float, min_free_bytes: int) -> Maintenance:
        c = self.conn
        (page_size,) = c.execute("PRAGMA page_size").fetchone()
        (before,) = c.execute("PRAGMA page_count").fetchone()
        (free,) = c.execute("PRAGMA freelist_count").fetchone()
        vacuumed: Literal["", "incremental", "full"] = ""
        if free * 4 > before and free * page_size >= VACUUM_MIN_FREE:
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
        low = disk_free < min_free_bytes or disk_free < min_free * disk_total
        return Maintenance(before, after, page_size, vacuumed, disk_free, disk_total, low)


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


# ------------------------------------------------------------------ the wire
#
# Bodies are msgpack, written and read by msgspec straight from and into the store's own
# dataclasses (Compare, Put, Delete, Get, TxnResult, KeyValue, WatchEvent): no Python
# loop per key on either side beyond what judging needs.
#
# request  ["commit", [now, [[kind, arg], ...]]]   kind "txns": arg a list of
#            [compares, success, failure], each branch [kinds, puts, deletes, gets] where
#            kinds is b"" when every op is a Put (the bulk case) or one byte per op, P, D
#            or G, giving the order; kind "grant": arg the ttl; "revoke": the lease
#          ["maintain", [min_free, min_free_bytes]]
# reply    ["ok", body] | ["error", message]   (the batch rolled back)
#          hello body: [rev, {lease: ttl}]
#          commit body: [rev, outcomes, groups, granted, revoked]
#            outcome [0, [TxnResult, ...]] | [1, message] (lease not found)
#            | [2, lease] (granted) | [3, null] (revoked)
#            groups: per request, per txn, its WatchEvents or null (see Committed.groups)
#          maintain body: a Maintenance

_HEADER = struct.Struct(">Q")  # the body's length; the body is in the mailbox
_enc = msgspec.msgpack.Encoder()
_SHRINK_OVER = 64 << 20  # a mailbox grown past this by one big batch is truncated after

_Branch = tuple[bytes, list[Put], list[Delete], list[Get]]
_WireTxn = tuple[list[Compare], _Branch, _Branch]
_envelope = msgspec.msgpack.Decoder(tuple[str, msgspec.Raw])
_commit_request = msgspec.msgpack.Decoder(
    tuple[float, list[tuple[str, list[_WireTxn] | int | float]]]
)
_maintain_request = msgspec.msgpack.Decoder(tuple[float, int])
_hello = msgspec.msgpack.Decoder(tuple[int, dict[int, float]])
_commit_reply = msgspec.msgpack.Decoder(
    tuple[
        int,
        list[tuple[int, msgspec.Raw]],
        list[list[list[WatchEvent] | None]],
        dict[int, float],
        list[int],
    ]
)
_results = msgspec.msgpack.Decoder(list[TxnResult])
_maintenance = msgspec.msgpack.Decoder(Maintenance)
_NO_OPS: _Branch = (b"", [], [], [])


class Mailbox:
    """One direction of the wire: bodies go through a memfd (one pwrite, one pread,
    whatever their size), and only an 8-byte header through the pipe. Through the pipe
    alone, a body of megabytes crosses in 64 KiB steps, and a thread doing that blocking
    I/O takes the GIL back at every step, each time waiting for a busy event loop."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.size = 0

    def put(self, body: object) -> bytes:
        """Store `body`; return the header to send through the pipe."""
        data = _enc.encode(body)
        if self.size > _SHRINK_OVER and len(data) < self.size // 4:
            os.ftruncate(self.fd, 0)
            self.size = 0
        view = memoryview(data)
        done = 0
        while done < len(data):
            done += os.pwrite(self.fd, view[done:], done)
        self.size = max(self.size, len(data))
        return _HEADER.pack(len(data))

    def take(self, header: bytes) -> tuple[str, msgspec.Raw]:
        """The body the header announces: its status or kind, and the rest undecoded."""
        (n,) = _HEADER.unpack(header)
        parts: list[bytes] = []
        got = 0
        while got < n:
            part = os.pread(self.fd, n - got, got)
            if not part:
                raise EOFError("mailbox shorter than its header says")
            parts.append(part)
            got += len(part)
        return _envelope.decode(parts[0] if len(parts) == 1 else b"".join(parts))


HEADER_SIZE = _HEADER.size


def read_exactly(fd: int, n: int) -> bytes:
    """Blocking read of n bytes from a pipe; EOFError if it closes first."""
    buf = b""
    while len(buf) < n:
        part = os.read(fd, n - len(buf))
        if not part:
            raise EOFError("pipe closed")
        buf += part
    return buf


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


_ONLY_PUTS = {Put}


def _branch(ops: Sequence[Op]) -> _Branch:
    if not ops:
        return _NO_OPS
    if set(map(type, ops)) == _ONLY_PUTS:  # in C: a generator costs 3x more per op
        return (b"", ops, [], [])  # type: ignore[return-value]  # a sequence of Puts
    kinds = bytearray()
    puts: list[Put] = []
    deletes: list[Delete] = []
    gets: list[Get] = []
    for op in ops:
        if type(op) is Put:
            kinds += b"P"
            puts.append(op)
        elif type(op) is Delete:
            kinds += b"D"
            deletes.append(op)
        else:
            kinds += b"G"
            gets.append(op)  # type: ignore[arg-type]
    return (bytes(kinds), puts, deletes, gets)


def commit_request(batch: Iterable[Request], now: float) -> list[Any]:
    reqs: list[list[Any]] = []
    for kind, arg in batch:
        if kind == "txns":
            reqs.append([kind, [(cmp, _branch(s), _branch(f)) for cmp, s, f in arg]])
        else:
            reqs.append([kind, arg])
    return ["commit", (now, reqs)]


def maintain_request(min_free: float, min_free_bytes: int) -> list[Any]:
    return ["maintain", (min_free, min_free_bytes)]


def _ops(branch: _Branch) -> Sequence[Op]:
    kinds, puts, deletes, gets = branch
    if not kinds:
        return puts
    by_kind: dict[int, Iterator[Op]] = {
        ord("P"): iter(puts),
        ord("D"): iter(deletes),
        ord("G"): iter(gets),
    }
    return [next(by_kind[k]) for k in kinds]


def _batch_from_wire(reqs: list[tuple[str, Any]]) -> list[Request]:
    batch: list[Request] = []
    for kind, arg in reqs:
        if kind == "txns":
            batch.append((kind, [(cmp, _ops(s), _ops(f)) for cmp, s, f in arg]))
        else:
            batch.append((kind, arg))
    return batch


def _committed_to_wire(done: Committed) -> list[Any]:
    outcomes: list[tuple[int, object]] = []
    for o in done.outcomes:
        if isinstance(o, list):
            outcomes.append((0, o))
        elif isinstance(o, NotFound):
            outcomes.append((1, str(o)))
        elif isinstance(o, int):
            outcomes.append((2, o))
        else:
            outcomes.append((3, None))
    return [done.rev, outcomes, done.groups, done.granted, sorted(done.revoked)]


def hello_from_wire(body: msgspec.Raw) -> tuple[int, dict[int, float]]:
    return _hello.decode(body)


def maintenance_from_wire(body: msgspec.Raw) -> Maintenance:
    return _maintenance.decode(body)


def committed_from_wire(body: msgspec.Raw, batch: Sequence[Request]) -> Committed:
    """The server's side of a commit reply for `batch`: results, errors and watch events
    as objects (the events of bulk creates rebuilt from the batch's own Puts)."""
    rev, outcomes, groups, granted, revoked = _commit_reply.decode(body)
    done = Committed(rev, 0, 0, granted=granted, revoked=set(revoked))
    events = done.events
    for (kind, raw), (req_kind, arg), group in zip(outcomes, batch, groups, strict=True):
        if kind == 0:
            results = _results.decode(raw)
            done.outcomes.append(results)
            for txn, res, evs in zip(arg, results, group, strict=True):
                if evs is not None:
                    events.extend(evs)
                    continue
                r = res.revision
                for op in txn[1] if res.succeeded else txn[2]:
                    kv = KeyValue(op.key, op.value, r, r, 1, op.lease)
                    events.append(WatchEvent("put", kv, None))
            continue
        if req_kind == "revoke":
            for evs in group:
                events.extend(evs or ())
        if kind == 1:
            done.outcomes.append(NotFound(msgspec.msgpack.decode(raw, type=str)))
        elif kind == 2:
            done.outcomes.append(msgspec.msgpack.decode(raw, type=int))
        else:
            done.outcomes.append(None)
    return done


def main(argv: list[str]) -> int:
    path, synchronous, history = Path(argv[0]), argv[1], int(argv[2])
    requests, replies = Mailbox(int(argv[3])), Mailbox(int(argv[4]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when we stop:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # by closing our stdin
    inp, out = os.dup(0), os.dup(1)
    os.dup2(2, 1)  # a stray print must not corrupt the headers

    def reply(status: str, body: object) -> None:
        write_all(out, replies.put([status, body]))

    lock = os.open(f"{path}.writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + 30
    while True:  # a writer left from a killed server ends after its current commit
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                reply("error", f"store {path}: an old writer still holds the file")
                return 1
            time.sleep(0.02)
    try:
        writer = Writer(path, synchronous, history)
    except sqlite3.Error as e:
        reply("error", f"cannot open store {path}: {e}")
        return 1
    reply("ok", [writer.rev, writer.leases])
    while True:
        try:
            kind, body = requests.take(read_exactly(inp, HEADER_SIZE))
        except EOFError:
            break
        try:
            if kind == "commit":
                now, reqs = _commit_request.decode(body)
                done = writer.commit(_batch_from_wire(reqs), now)
                reply("ok", _committed_to_wire(done))
                writer.checkpoint_if_due(len(done.events))  # while the server reads the reply
            elif kind == "maintain":
                reply("ok", writer.maintain(*_maintain_request.decode(body)))
            else:
                reply("error", f"unknown request {kind!r}")
        except BrokenPipeError:  # the server is gone
            break
        except Exception as e:  # the batch rolled back; the server fails its callers
            reply("error", f"{type(e).__name__}: {e}")
    writer.conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
