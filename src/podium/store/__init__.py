"""The store: podium's only durable state, behind one small etcd-like interface.

    base.py    the interface (get, list, guarded put/delete, txn, watch, leases)
    memory.py  in-process backend for tests
    sqlite.py  the embedded default: one file, WAL, batched commits
    etcd.py    (later) the HA backend

Nothing above the store knows which backend it runs on. `open_store(url)` picks one.
"""

from podium.store.base import Compare, Delete, Get, KeyValue, Op, Put, Store, TxnResult, WatchEvent

__all__ = [
    "Compare", "Delete", "Get", "KeyValue", "Op", "Put", "Store", "TxnResult", "WatchEvent",
]
