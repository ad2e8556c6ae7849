"""Config and Secret writes and reads: versions, history, deletes, and who reads them.

    put(kind, ns, path, data)  ─ cas? merge? ─► txn: head + version (+ the 101st-oldest
                                version pruned) + event, guarded by the head's revision
    secrets: the values are sealed by the keyring before anything is written; `reveal`
             opens them (for read-secret callers, the agent of a task that reads them, and
             `job plan`'s renders); listings, history and events carry only key names
    delete: refused while a job that is not stopped reads it, unless forced

Heads and versions live at keys.data_head / keys.data_version (see store/keys.py).
A change is rolled out to the jobs that read it by config_rollout.py.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from podium.errors import Conflict, NotFound, ValidationError
from podium.model import data as datamodel
from podium.model.types import Config, Job, Secret
from podium.server.events import event_put
from podium.server.keyring import Keyring
from podium.server.state import ClusterState, encode
from podium.store import keys
from podium.store.base import Compare, Delete, KeyValue, Op, Put

log = logging.getLogger(__name__)

Record = Config | Secret


def aad(namespace: str, path: str, version: int) -> bytes:
    """What a secret version's ciphertext is bound to: it opens under no other name."""
    return f"podium-secret|{namespace}|{path}|{version}".encode()


def decode(kind: datamodel.Kind, kv: KeyValue) -> Record:
    record: Record = msgspec.json.decode(kv.value, type=Config if kind == "config" else Secret)
    record.revision = kv.mod_rev
    return record


def check_path(path: str) -> None:
    problem = datamodel.path_problem(path)
    if problem is not None:
        raise ValidationError([problem])


async def head(state: ClusterState, kind: datamodel.Kind, ns: str, path: str) -> Record | None:
    kv = await state.store.get(keys.data_head(kind, ns, path))
    return decode(kind, kv) if kv is not None else None


async def get(
    state: ClusterState, kind: datamodel.Kind, ns: str, path: str, version: int | None = None
) -> Record:
    check_path(path)
    if version is None:
        found = await head(state, kind, ns, path)
        if found is None:
            raise NotFound(f"no {kind} {path!r} in namespace {ns!r}")
        return found
    kv = await state.store.get(keys.data_version(kind, ns, path, version))
    if kv is None:
        raise NotFound(f"{kind} {path!r} in namespace {ns!r} has no version {version}")
    return decode(kind, kv)


async def history(state: ClusterState, kind: datamodel.Kind, ns: str, path: str) -> list[Record]:
    check_path(path)
    kvs, _ = await state.store.list(keys.data_versions(kind, ns, path))
    if not kvs:
        raise NotFound(f"no {kind} {path!r} in namespace {ns!r}")
    return sorted((decode(kind, kv) for kv in kvs), key=lambda r: -r.version)


async def listing(
    state: ClusterState, kind: datamodel.Kind, ns: str | None, prefix: str = ""
) -> list[Record]:
    base = keys.data_heads(kind)
    kvs, _ = await state.store.list(f"{base}{ns}/{prefix}" if ns else base)
    out = [decode(kind, kv) for kv in kvs]
    if not ns and prefix:
        out = [r for r in out if r.path.startswith(prefix)]
    return out


def users(state: ClusterState, kind: datamodel.Kind, ns: str, path: str) -> list[Job]:
    """The jobs of `ns` that are not stopped and read this config or secret."""
    ref = datamodel.ref(kind, path)
    return sorted(
        (
            j
            for j in state.jobs.values()
            if j.namespace == ns and not j.stop and ref in j.config_versions
        ),
        key=lambda j: j.name,
    )


async def reveal(keyring: Keyring, secret: Secret) -> dict[str, str]:
    """A secret version's values (the caller is allowed to see them)."""
    if secret.sealed is None:
        return {}
    plain = await keyring.open(secret.sealed, aad(secret.namespace, secret.path, secret.version))
    return msgspec.json.decode(plain, type=dict[str, str])


async def put(
    state: ClusterState,
    keyring: Keyring,
    kind: datamodel.Kind,
    ns: str,
    path: str,
    data: Any,
    *,
    now: float,
    by: str = "",
    cas: int | None = None,
    merge: bool = False,
) -> tuple[Record, bool]:
    """A new version of `path` holding `data` (with `merge`, over the current keys).
    Returns (the head's metadata, whether anything changed); a put of the same values
    makes no new version."""
    check_path(path)
    problems = (
        datamodel.check_data(data) if not (merge and isinstance(data, dict) and not data) else []
    )
    if problems:
        raise ValidationError(problems)
    current = await head(state, kind, ns, path)
    at = current.version if current is not None else 0
    if cas is not None and cas != at:
        now_is = f"at version {at}" if current is not None else "absent"
        raise Conflict(f"{kind} {path!r} is {now_is}, not {cas}: read it again (--cas)")
    old: dict[str, str] = {}
    if current is not None:
        old = current.data if isinstance(current, Config) else await reveal(keyring, current)
    new_data = {**old, **data} if merge else dict(data)
    if merge:
        problems = datamodel.check_data(new_data)
        if problems:
            raise ValidationError(problems)
    if current is not None and new_data == old:
        return current, False
    version = at + 1
    record: Record
    if kind == "config":
        record = Config(namespace=ns, path=path, version=version, data=new_data)
    else:
        sealed = await keyring.seal(msgspec.json.encode(new_data), aad(ns, path, version))
        record = Secret(
            namespace=ns, path=path, version=version, keys=sorted(new_data), sealed=sealed
        )
    record.create_time, record.created_by = now, by[:128]
    body = encode(record)
    head_key = keys.data_head(kind, ns, path)
    ops: list[Op] = [
        Put(head_key, encode(msgspec.structs.replace(record, rolled_out=False))),
        Put(keys.data_version(kind, ns, path, version), body),
        event_put(
            f"{kind}.updated",
            f"{kind} {path} version {version} (keys: {', '.join(sorted(new_data))})"
            + (f" by {by}" if by else ""),
            namespace=ns,
            now=now,
        ),
    ]
    if version > datamodel.MAX_HISTORY:
        ops.append(Delete(keys.data_version(kind, ns, path, version - datamodel.MAX_HISTORY)))
    res = await state.store.txn(
        [Compare(head_key, "mod_rev", "=", current.revision if current else 0)], ops
    )
    if not res.succeeded:
        raise Conflict(f"{kind} {path!r} was changed concurrently; read it again and retry")
    record.revision = res.revision
    return record, True


async def delete(
    state: ClusterState, kind: datamodel.Kind, ns: str, path: str, *, force: bool, now: float
) -> int:
    """Remove the object and its history; refused while a job that runs reads it."""
    current = await get(state, kind, ns, path)
    readers = users(state, kind, ns, path)
    if readers and not force:
        names = ", ".join(j.name for j in readers)
        raise Conflict(
            f"{kind} {path!r} is read by job(s) {names}: stop them first, or delete with "
            "--force (their copies fail when they next render it)"
        )
    head_key = keys.data_head(kind, ns, path)
    res = await state.store.txn(
        [Compare(head_key, "mod_rev", "=", current.revision)],
        [
            Delete(head_key),
            Delete(keys.data_versions(kind, ns, path), prefix=True),
            event_put(
                f"{kind}.deleted",
                f"{kind} {path} deleted" + (" (forced: read by a job)" if readers else ""),
                namespace=ns,
                now=now,
            ),
        ],
    )
    if not res.succeeded:
        raise Conflict(f"{kind} {path!r} was changed concurrently; retry")
    return res.revision


def metadata(record: Record) -> dict[str, Any]:
    """What listings and history show: never a secret's values (nor its ciphertext)."""
    out: dict[str, Any] = {
        "kind": "config" if isinstance(record, Config) else "secret",
        "namespace": record.namespace,
        "path": record.path,
        "version": record.version,
        "create_time": record.create_time,
        "created_by": record.created_by,
        "index": record.revision,
    }
    if isinstance(record, Config):
        out["keys"] = sorted(record.data)
        out["data"] = record.data
    else:
        out["keys"] = record.keys
        out["key_id"] = record.sealed.key_id if record.sealed else ""
    return out


async def pinned_data(
    state: ClusterState, keyring: Keyring, ns: str, versions: dict[str, int], *, secrets: bool
) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    """(configs, secrets) by path, at the versions a job version pins; secrets opened only
    when `secrets` (the caller may see them). NotFound names what is gone."""
    configs: dict[str, dict[str, str]] = {}
    opened: dict[str, dict[str, str]] = {}
    for ref, version in sorted(versions.items()):
        kind, path = datamodel.parse_ref(ref)
        record = await get(state, kind, ns, path, version)
        if isinstance(record, Config):
            configs[path] = record.data
        elif secrets:
            opened[path] = await reveal(keyring, record)
    return configs, opened
