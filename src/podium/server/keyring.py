"""The cluster keyring: secrets sealed with AES-256-GCM envelope encryption.

    root key (32 bytes; <data-dir>/keyring.key 0600, --keyring-file, or PODIUM_KEYRING_KEY)
      └─ seals the keyring's keys, kept in the store (/keyring/keys/<id>); one is active
           └─ wraps a fresh data key for every secret version
                └─ encrypts that version's values (bound to its namespace, path, version)

So a dump of the store (etcd, the SQLite file, a snapshot) holds only ciphertext, and the
servers sharing a store need the same root key (copy the file, or set the variable).
`rotate()` makes a new key active for new writes; with `full`, the leader's
KeyringController (controllers/keyring.py) then re-seals every stored secret version under
it, with progress in /keyring/rotation. The `cryptography` package does the cryptography.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import stat
import time
import uuid

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from podium.errors import Conflict, PodiumError
from podium.model.types import Sealed
from podium.server.events import event_put
from podium.store import keys
from podium.store.base import Compare, Put, Store

log = logging.getLogger(__name__)

ENV_KEY = "PODIUM_KEYRING_KEY"  # the root key itself, base64: wins over any file
_NONCE = 12


class KeyringError(PodiumError):
    """The root key is missing, unreadable, or does not open the store's keyring (503)."""

    status_code = 503


class KeyRecord(msgspec.Struct):
    id: str
    sealed: bytes  # nonce + the key under the root key
    create_time: float = 0.0


class Active(msgspec.Struct):
    id: str


class Rotation(msgspec.Struct):
    """A full re-encryption: every stored secret version re-sealed under `key_id`."""

    key_id: str
    status: str = "running"  # running | done
    total: int = 0
    done: int = 0
    started: float = 0.0
    finished: float = 0.0
    message: str = ""


def load_root_key(path: str) -> tuple[bytes, str]:
    """(root key, where it came from): PODIUM_KEYRING_KEY, else the file at `path`, made
    (0600) when it does not exist. KeyringError when it is unreadable or open to others."""
    raw = os.environ.get(ENV_KEY)
    if raw:
        return _decode_key(raw, ENV_KEY), ENV_KEY
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(base64.b64encode(AESGCM.generate_key(bit_length=256)).decode() + "\n")
            f.flush()
            os.fsync(f.fileno())
        log.info("made a new keyring root key at %s (back it up: secrets need it)", path)
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        raise KeyringError(
            f"keyring file {path} is readable by others (mode {mode:04o}): chmod 600 {path}"
        )
    with open(path, encoding="ascii", errors="replace") as f:
        return _decode_key(f.read(), path), path


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise KeyringError(f"{where} does not hold a keyring key (32 bytes, base64)")
    return key


def _seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(_NONCE)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def _open(key: bytes, sealed: bytes, aad: bytes) -> bytes:
    return AESGCM(key).decrypt(sealed[:_NONCE], sealed[_NONCE:], aad)


class Keyring:
    """The keyring of one store, opened with this server's root key."""

    def __init__(self, store: Store, root: bytes | None, *, source: str, problem: str = "") -> None:
        """`root` None: no usable root key (`problem` says why); every use raises that."""
        self.store = store
        self._root = root or b""
        self.source = source
        self.problem = "" if root else problem or "this server has no keyring root key"
        self._keys: dict[str, bytes] = {}  # id -> key, opened

    async def start(self, *, now: float) -> None:
        """Check this root key opens the keyring (making its first key on an empty store)."""
        await self.active_id(now=now)

    async def active_id(self, *, now: float = 0.0) -> str:
        """The active key's id; the first key is made here when the store has none."""
        self._usable()
        kv = await self.store.get(keys.KEYRING_ACTIVE)
        if kv is None:
            await self._add_key(now=now or time.time(), first=True)
            kv = await self.store.get(keys.KEYRING_ACTIVE)
            if kv is None:
                raise KeyringError("the keyring has no active key")
        key_id = msgspec.json.decode(kv.value, type=Active).id
        await self._key(key_id)
        return key_id

    async def key_ids(self) -> list[KeyRecord]:
        kvs, _ = await self.store.list(keys.KEYRING_KEYS)
        return [msgspec.json.decode(kv.value, type=KeyRecord) for kv in kvs]

    def _usable(self) -> None:
        if self.problem:
            raise KeyringError(self.problem)

    async def _key(self, key_id: str) -> bytes:
        self._usable()
        key = self._keys.get(key_id)
        if key is not None:
            return key
        kv = await self.store.get(keys.keyring_key(key_id))
        if kv is None:
            raise KeyringError(f"keyring key {key_id} is not in the store")
        record = msgspec.json.decode(kv.value, type=KeyRecord)
        try:
            key = _open(self._root, record.sealed, b"podium-keyring|" + key_id.encode())
        except InvalidTag:
            raise KeyringError(
                f"the root key from {self.source} does not open keyring key {key_id}: "
                "every server of a cluster needs the same root key (copy the keyring file "
                "from a server that works, or set PODIUM_KEYRING_KEY)"
            ) from None
        self._keys[key_id] = key
        return key

    async def _add_key(self, *, now: float, first: bool = False) -> str:
        self._usable()
        key_id = uuid.uuid4().hex[:12]
        key = AESGCM.generate_key(bit_length=256)
        record = KeyRecord(
            key_id, _seal(self._root, key, b"podium-keyring|" + key_id.encode()), create_time=now
        )
        guard = [Compare(keys.KEYRING_ACTIVE, "create_rev", "=", 0)] if first else []
        ops = [
            Put(keys.keyring_key(key_id), msgspec.json.encode(record)),
            Put(keys.KEYRING_ACTIVE, msgspec.json.encode(Active(key_id))),
            event_put(
                "keyring.created" if first else "keyring.rotated",
                f"keyring key {key_id} is active" + ("" if first else ": new secrets use it"),
                now=now,
            ),
        ]
        res = await self.store.txn(guard, ops)
        if res.succeeded:
            self._keys[key_id] = key
            log.info("keyring key %s is active", key_id)
        return key_id

    async def rotate(self, *, full: bool, now: float) -> str:
        """A new active key; with `full`, a re-encryption of every secret under it begins."""
        kv = await self.store.get(keys.KEYRING_ROTATION)
        if kv is not None and msgspec.json.decode(kv.value, type=Rotation).status == "running":
            raise Conflict("a full keyring rotation is under way; wait for it to finish")
        key_id = await self._add_key(now=now)
        if full:
            rotation = Rotation(key_id=key_id, started=now)
            await self.store.put(keys.KEYRING_ROTATION, msgspec.json.encode(rotation))
        return key_id

    async def rotation(self) -> tuple[Rotation | None, int]:
        kv = await self.store.get(keys.KEYRING_ROTATION)
        if kv is None:
            return None, 0
        return msgspec.json.decode(kv.value, type=Rotation), kv.mod_rev

    async def seal(self, plaintext: bytes, aad: bytes, *, key_id: str | None = None) -> Sealed:
        """`plaintext` under a fresh data key, wrapped by the active key (or `key_id`)."""
        kid = key_id or await self.active_id()
        kek = await self._key(kid)
        data_key = AESGCM.generate_key(bit_length=256)
        return Sealed(
            key_id=kid,
            data_key=_seal(kek, data_key, kid.encode() + b"|" + aad),
            ciphertext=_seal(data_key, plaintext, aad),
        )

    async def open(self, sealed: Sealed, aad: bytes) -> bytes:
        kek = await self._key(sealed.key_id)
        try:
            data_key = _open(kek, sealed.data_key, sealed.key_id.encode() + b"|" + aad)
            return _open(data_key, sealed.ciphertext, aad)
        except InvalidTag:
            # Tampered with, or moved to another name: never decrypted as something else.
            raise KeyringError("a stored secret does not decrypt (damaged or moved)") from None
