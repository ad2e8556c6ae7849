"""The store interface, modelled on etcd v3.

Keys are str, values bytes. Every key carries `mod_rev` (the cluster revision of
its last write), `create_rev` and `version` (writes since creation). The cluster
revision grows by one per committed transaction. Writes may be guarded by the
revision the writer read (compare-and-swap); a failed guard is a `Conflict`
for single puts/deletes and a `succeeded=False` result for `txn`.

Watches deliver every change under a prefix after a start revision, in order.
A watcher asking for history the store no longer keeps gets `Compacted` and
must re-list. Leases expire keys that were attached to them.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Sequence
from typing import Literal, Protocol, runtime_checkable

import msgspec

# The value types are msgspec Structs: bulk writes and their watch events make several
# per key, and a Struct is built in a fifth of a frozen dataclass's time. gc=False: they
# hold only atoms (and a WatchEvent a KeyValue), so they can never be part of a cycle.


class KeyValue(msgspec.Struct, frozen=True, gc=False):
    key: str
    value: bytes
    mod_rev: int
    create_rev: int
    version: int
    lease: int = 0


class Compare(msgspec.Struct, frozen=True, gc=False):
    """A guard in a transaction.

    target "mod_rev": the key's mod_rev must relate to `value` by `op`
    (a missing key has mod_rev 0, so `Compare(key, "mod_rev", "=", 0)` means
    "does not exist"). target "value": compares bytes; target "version" likewise.
    """

    key: str
    target: Literal["mod_rev", "version", "value", "create_rev"] = "mod_rev"
    op: Literal["=", "!=", "<", ">"] = "="
    value: int | bytes = 0


class Put(msgspec.Struct, frozen=True, gc=False):
    key: str
    value: bytes
    lease: int = 0


class Delete(msgspec.Struct, frozen=True, gc=False):
    key: str
    prefix: bool = False  # delete every key under `key`


class Get(msgspec.Struct, frozen=True, gc=False):
    key: str
    prefix: bool = False


Op = Put | Delete | Get


class TxnResult(msgspec.Struct):
    succeeded: bool
    revision: int  # the cluster revision after the transaction (unchanged if it wrote nothing)
    # For each Get op in the branch taken, the key-values it read (in order).
    reads: list[list[KeyValue]] = msgspec.field(default_factory=list)


class WatchEvent(msgspec.Struct, frozen=True, gc=False):
    type: Literal["put", "delete"]
    kv: KeyValue  # for a delete: value b"", mod_rev = the delete's revision
    prev_value: bytes | None = None


@runtime_checkable
class Store(Protocol):
    """What every backend (memory, sqlite, etcd) implements."""

    async def get(self, key: str) -> KeyValue | None: ...

    async def list(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Every key under prefix, sorted by key, and the revision it was read at."""
        ...

    async def put(
        self, key: str, value: bytes, *, expect_rev: int | None = None, lease: int = 0
    ) -> int:
        """Write; with expect_rev, only if the key's mod_rev equals it (0 = absent).
        Returns the new revision. Raises Conflict when the guard fails."""
        ...

    async def delete(self, key: str, *, expect_rev: int | None = None) -> int:
        """Delete; Conflict when the guard fails; NotFound is not raised for an absent key
        without a guard (returns the current revision)."""
        ...

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        """All compares hold -> run `success`, else `failure`; atomically."""
        ...

    async def txn_many(
        self, txns: Sequence[tuple[Sequence[Compare], Sequence[Op]]]
    ) -> builtins.list[TxnResult]:  # `list` is a method here
        """Several independent guarded transactions, committed together (few fsyncs).
        Each is judged on its own, in order, seeing the writes of those before it."""
        ...

    async def revision(self) -> int: ...

    def watch(self, prefix: str, *, start_rev: int) -> AsyncIterator[WatchEvent]:
        """Changes under prefix with mod_rev >= start_rev, then live ones, forever.
        Raises Compacted if start_rev is older than what the store keeps."""
        ...

    async def lease_grant(self, ttl: float) -> int: ...

    async def lease_keepalive(self, lease: int) -> None:
        """Renew; NotFound if it already expired."""
        ...

    async def lease_revoke(self, lease: int) -> None: ...

    async def close(self) -> None: ...
