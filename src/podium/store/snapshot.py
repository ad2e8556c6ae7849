"""Snapshots: every key and value of a store in one portable file, and back again.

    save:    store.list("") (one consistent read) ──► header line + one line per key
    restore: file ──► parse + check ──► (--force: delete what is there) ──► puts in chunks

The file is JSON lines, readable by anything: first a header
`{"format": "podium-snapshot", "version": 1, "revision": R, "keys": N, "leased": M}`,
then `{"key": "/jobs/default/web", "value": "<base64>"}` per key, sorted by key. It is
the same for every backend, so a SQLite cluster can move to etcd and back.

The cluster's trust (`/tls/`: its CA, join tokens, node secrets) is never in a snapshot,
and a file that carries such keys is refused: restoring must not swap a cluster's CA.
Every value is checked against its kind, and every id or name in a key against
`[a-z0-9-]`, before anything is written; each problem names its key.

Keys attached to a lease (leadership, liveness) are left out: they belong to the
processes that hold the lease and would outlive them if restored. Revisions are not
carried over either: restored keys get new ones from the target store (etcd's are
cluster-wide and cannot be set), which is why `revision` in the header is for reading.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from podium.errors import Conflict, Problem, ValidationError
from podium.model.types import Allocation, Deployment, Event, Job, Node
from podium.store import keys
from podium.store.base import Delete, Op, Put, Store

FORMAT = "podium-snapshot"
VERSION = 1
MEDIA_TYPE = "application/x-ndjson"
_CHUNK_OPS = 100  # per txn: under etcd's default --max-txn-ops (128)
_CHUNK_BYTES = 1024 * 1024  # per txn: under etcd's default --max-request-bytes (1.5 MiB)


class Header(msgspec.Struct, forbid_unknown_fields=True):
    format: str
    version: int
    revision: int
    keys: int
    leased: int = 0


class Entry(msgspec.Struct, forbid_unknown_fields=True):
    key: str
    value: bytes


_encode = msgspec.json.Encoder().encode
_decode_header = msgspec.json.Decoder(Header).decode
_decode_entry = msgspec.json.Decoder(Entry).decode


_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,127}")
_RUN = re.compile(r"(?:periodic|dispatch)-[a-z0-9-]{1,48}")  # a job's run: web/periodic-17...
# prefix -> (the kind its values decode to, ids before the job name, a version at the end)
_KINDS: dict[str, tuple[type[Any], bool, bool]] = {
    keys.JOBS: (Job, True, False),
    keys.JOB_VERSIONS: (Job, True, True),
    keys.ALLOCS: (Allocation, False, False),
    keys.NODES: (Node, False, False),
    keys.DEPLOYMENTS: (Deployment, True, True),
}


def _kept(key: str, lease: int) -> bool:
    return not lease and not key.startswith(keys.TLS)


def _key_ok(segs: list[str], *, namespaced: bool, versioned: bool) -> bool:
    """ns/job[/run][/version] (namespaced kinds) or a single id, every part safe."""
    if versioned:
        if not segs or not segs[-1].isdigit():
            return False
        segs = segs[:-1]
    if not namespaced:
        return len(segs) == 1 and bool(_ID.fullmatch(segs[0]))
    if len(segs) == 3 and _RUN.fullmatch(segs[2]):
        segs = segs[:2]
    return len(segs) == 2 and all(_ID.fullmatch(x) for x in segs)


def check_entry(key: str, value: bytes) -> str | None:
    """What is wrong with one key and its value, or None."""
    if key.startswith(keys.TLS):
        return "the cluster's CA and credentials are never restored from a snapshot"
    for prefix, (kind, namespaced, versioned) in _KINDS.items():
        if not key.startswith(prefix):
            continue
        if not _key_ok(key[len(prefix) :].split("/"), namespaced=namespaced, versioned=versioned):
            shape = "NAMESPACE/NAME[/RUN]" if namespaced else "ID"
            return f"expected {prefix}{shape}{'/VERSION' if versioned else ''}, ids of [a-z0-9-]"
        try:
            msgspec.json.decode(value, type=kind)
        except msgspec.DecodeError as e:  # includes ValidationError
            return f"value is not a valid {kind.__name__}: {e}"
        return None
    if key.startswith(keys.EVENTS):
        try:
            msgspec.json.decode(value, type=Event)
        except msgspec.DecodeError as e:
            return f"value is not a valid Event: {e}"
    if ".." in key.split("/"):
        return "a key may not contain '..'"
    return None


async def dump(store: Store) -> tuple[bytes, Header]:
    """The whole store (leased keys and the cluster's trust left out) as a snapshot file."""
    kvs, rev = await store.list("")
    kept = [kv for kv in kvs if _kept(kv.key, kv.lease)]
    header = Header(FORMAT, VERSION, rev, len(kept), len(kvs) - len(kept))
    lines = [_encode(header)]
    lines.extend(_encode(Entry(kv.key, kv.value)) for kv in kept)
    return b"\n".join(lines) + b"\n", header


def parse(data: bytes) -> tuple[Header, list[Entry]]:
    """Check a snapshot file whole before anything is written; every problem has its line."""
    lines = data.splitlines()
    if not lines:
        raise ValidationError([Problem("line 1", "empty file: not a podium snapshot")])
    try:
        header = _decode_header(lines[0])
    except msgspec.DecodeError as e:
        raise ValidationError([Problem("line 1", f"not a podium snapshot header: {e}")]) from None
    if header.format != FORMAT or header.version != VERSION:
        raise ValidationError(
            [
                Problem(
                    "line 1",
                    f"expected {FORMAT} version {VERSION}, got {header.format} "
                    f"version {header.version}",
                )
            ]
        )
    problems: list[Problem] = []
    entries: list[Entry] = []
    seen: set[str] = set()
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            entry = _decode_entry(line)
        except msgspec.DecodeError as e:
            problems.append(Problem(f"line {n}", str(e)))
            continue
        if not entry.key or entry.key in seen:
            problems.append(Problem(f"line {n}", f"empty or repeated key {entry.key!r}"))
        elif (why := check_entry(entry.key, entry.value)) is not None:
            problems.append(Problem(f"line {n}: {entry.key}", why))
        seen.add(entry.key)
        entries.append(entry)
    if len(entries) != header.keys and not problems:
        problems.append(
            Problem("line 1", f"header says {header.keys} keys, file has {len(entries)}")
        )
    if problems:
        raise ValidationError(problems[:20])
    return header, entries


async def restore(store: Store, data: bytes, *, force: bool = False) -> dict[str, Any]:
    """Write a snapshot's keys into `store`. The store must hold no unleased key, or with
    `force` those are deleted first. Returns what was done, for the CLI to print."""
    header, entries = parse(data)
    kvs, _ = await store.list("")
    there = [kv.key for kv in kvs if _kept(kv.key, kv.lease)]
    if there and not force:
        raise Conflict(
            f"the store is not empty ({len(there)} keys, e.g. {there[0]}); "
            "restore into an empty store, or use --force to delete them first"
        )
    for i in range(0, len(there), _CHUNK_OPS):
        await store.txn([], [Delete(k) for k in there[i : i + _CHUNK_OPS]])
    chunk: list[Op] = []
    size = 0
    for e in entries:
        if chunk and (len(chunk) >= _CHUNK_OPS or size + len(e.key) + len(e.value) > _CHUNK_BYTES):
            await store.txn([], chunk)
            chunk, size = [], 0
        chunk.append(Put(e.key, e.value))
        size += len(e.key) + len(e.value)
    if chunk:
        await store.txn([], chunk)
    return {
        "restored": len(entries),
        "deleted": len(there),
        "snapshot_revision": header.revision,
        "revision": await store.revision(),
    }
