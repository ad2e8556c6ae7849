"""The store: podium's only durable state, behind one small etcd-like interface.

    base.py    the interface (get, list, guarded put/delete, txn, watch, leases)
    memory.py  in-process backend for tests
    sqlite.py  the embedded default: one file, WAL, batched commits
    etcd.py    the HA backend: an etcd v3 cluster over gRPC

Nothing above the store knows which backend it runs on. `open_store(url)` picks one.
"""

from typing import Any

from podium.store.base import Compare, Delete, Get, KeyValue, Op, Put, Store, TxnResult, WatchEvent

__all__ = [
    "Compare",
    "Delete",
    "Get",
    "KeyValue",
    "Op",
    "Put",
    "Store",
    "TxnResult",
    "WatchEvent",
    "open_store",
]


def open_store(url: str, *, etcd_security: Any = None) -> Store:
    """`memory://` -> MemoryStore; `sqlite:///abs/file.db`, `sqlite://rel/file.db` or a
    plain path -> SQLiteStore (the file and its folder are created if missing);
    `etcd://h1:p1,h2:p2[/prefix]` -> EtcdStore (keys under /podium unless a prefix;
    `etcd_security`: a store.etcd.EtcdSecurity for TLS and user/password)."""
    # Imported here so that importing the interface never drags in a backend.
    from podium.store.memory import MemoryStore
    from podium.store.sqlite import SQLiteStore

    if url.startswith("etcd://"):
        from podium.store.etcd import EtcdStore

        return EtcdStore.from_url(url, security=etcd_security)
    if url.startswith("memory://"):
        return MemoryStore()
    if url.startswith("sqlite://"):
        path = url.removeprefix("sqlite://")
        if path:
            return SQLiteStore(path)
    elif url and "://" not in url:
        return SQLiteStore(url)
    raise ValueError(
        f"unsupported store url {url!r}: expected memory://, sqlite:///path/to/file.db, "
        "etcd://host:port[,host:port...] or a plain file path"
    )
