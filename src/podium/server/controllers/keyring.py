"""The keyring controller (leader only): a full rotation, carried out and reported.

    /keyring/rotation {key_id, status: running} (written by `keyring rotate --full`)
      -> every stored secret version (heads and history) not sealed under key_id:
         opened, sealed again under key_id with a fresh data key, written back guarded
         by its revision (a concurrent put wins; that record is read again)
      -> progress (done/total) written after each batch; status done at the end

Safe to run again after a crash or a leader change: what is sealed under the new key
already is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import msgspec

from podium.errors import StoreError
from podium.model.types import Secret
from podium.runtime.clock import Clock
from podium.server.configs import aad
from podium.server.events import event_put
from podium.server.keyring import Keyring, KeyringError, Rotation
from podium.server.state import ClusterState, encode
from podium.store import keys
from podium.store.base import Compare, KeyValue, Put

log = logging.getLogger(__name__)

BATCH = 50  # secret versions re-sealed per transaction
POLL = 0.5  # seconds between looks for a rotation to carry out


class KeyringController:
    def __init__(self, state: ClusterState, keyring: Keyring, clock: Clock) -> None:
        self.state = state
        self.keyring = keyring
        self.clock = clock

    async def run(self) -> None:
        await self.state.ready.wait()
        while True:
            with contextlib.suppress(StoreError, KeyringError):
                rotation, rev = await self.keyring.rotation()
                if rotation is not None and rotation.status == "running":
                    await self.rotate(rotation, rev)
            await asyncio.sleep(POLL)

    async def rotate(self, rotation: Rotation, rev: int) -> None:
        store = self.state.store
        todo = [kv for kv in await self._all() if self._key_of(kv) != rotation.key_id]
        rotation.total = rotation.done + len(todo)
        rev = await self._save(rotation, rev)
        for i in range(0, len(todo), BATCH):
            done = 0
            for kv in todo[i : i + BATCH]:
                done += await self._reseal(kv, rotation.key_id)
            rotation.done += done
            rev = await self._save(rotation, rev)
        left = [kv for kv in await self._all() if self._key_of(kv) != rotation.key_id]
        if left:  # written meanwhile under an older key (a put racing the rotation start)
            return
        rotation.status, rotation.finished = "done", self.clock.now()
        rotation.message = f"{rotation.done} secret versions sealed under key {rotation.key_id}"
        ev = event_put(
            "keyring.rotated", f"full rotation done: {rotation.message}", now=self.clock.now()
        )
        res = await store.txn(
            [Compare(keys.KEYRING_ROTATION, "mod_rev", "=", rev)],
            [Put(keys.KEYRING_ROTATION, msgspec.json.encode(rotation)), ev],
        )
        if res.succeeded:
            log.info("keyring: %s", rotation.message)

    async def _all(self) -> list[KeyValue]:
        heads, _ = await self.state.store.list(keys.SECRETS)
        versions, _ = await self.state.store.list(keys.SECRET_VERSIONS)
        return heads + versions

    @staticmethod
    def _key_of(kv: KeyValue) -> str:
        try:
            secret = msgspec.json.decode(kv.value, type=Secret)
        except msgspec.DecodeError:
            return ""
        return secret.sealed.key_id if secret.sealed else ""

    async def _reseal(self, kv: KeyValue, key_id: str) -> int:
        """1 when re-sealed (or gone meanwhile), 0 when a newer write must be looked at again."""
        store = self.state.store
        for _ in range(5):
            secret = msgspec.json.decode(kv.value, type=Secret)
            if secret.sealed is None or secret.sealed.key_id == key_id:
                return 1
            bound = aad(secret.namespace, secret.path, secret.version)
            plain = await self.keyring.open(secret.sealed, bound)
            sealed = await self.keyring.seal(plain, bound, key_id=key_id)
            new = msgspec.structs.replace(secret, sealed=sealed, revision=0)
            res = await store.txn(
                [Compare(kv.key, "mod_rev", "=", kv.mod_rev)], [Put(kv.key, encode(new))]
            )
            if res.succeeded:
                return 1
            fresh = await store.get(kv.key)
            if fresh is None:
                return 1
            kv = fresh
        return 0

    async def _save(self, rotation: Rotation, rev: int) -> int:
        res = await self.state.store.txn(
            [Compare(keys.KEYRING_ROTATION, "mod_rev", "=", rev)],
            [Put(keys.KEYRING_ROTATION, msgspec.json.encode(rotation))],
        )
        if not res.succeeded:
            raise StoreError("the rotation record changed under the keyring controller")
        return res.revision
