"""A server's certificate authority: join tokens, certificates for joiners, renewal, rotation.

    first server:  no /tls/ca in the store -> make a CA, seal its key with a new
                   key-encryption key (KEK, <data-dir>/tls/kek, 0600), write both
    every server:  unseal the CA key with its KEK; keep its own server certificate and the
                   management (CLI) certificate in <data-dir>/tls, renewed at 2/3 of life
    a joiner:      token (one use, short-lived, pins the CA digest) + CSR -> certificate
                   naming its role and node id; a joining *server* also gets the KEK
    rotation:      new CA, cross-signed by the old; roots = old + new; every node renews
                   (it follows `epoch` in its heartbeat answer); when all ready nodes hold
                   a certificate from the new CA, roots = new only, the cross-cert goes

The CA record lives in the store so that servers sharing etcd share one CA; the key in it
is sealed (AES-GCM) under the KEK only servers hold.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import re
import secrets
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from cryptography import x509
from cryptography.exceptions import InvalidTag

from podium.errors import Conflict, Forbidden, PodiumError, Problem, Unavailable, ValidationError
from podium.store import keys
from podium.store.base import Compare, Delete, Put, Store
from podium.tls import pki
from podium.tls.files import Credentials, epoch_path, read_text, write_private, write_public
from podium.tls.identity import Identity

log = logging.getLogger(__name__)

TOKEN_PREFIX = "podium1"
_ROLE_CODE = {"agent": "a", "server": "s", "operator": "o"}
HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.:-]{0,252}$")  # an IP (v4/v6) or a DNS name
_CODE_ROLE = {v: k for k, v in _ROLE_CODE.items()}
ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class CAState(msgspec.Struct):
    epoch: int
    roots: list[str]  # PEM of every trusted root (two while rotating)
    signer_cert: str  # PEM of the CA that issues now
    signer_key: bytes  # its key, sealed under the KEK
    chain: list[str] = msgspec.field(default_factory=list)  # sent with each leaf (cross-cert)
    rotating: bool = False
    rotated_at: float = 0.0


class TokenRecord(msgspec.Struct):
    role: str
    expires: float


class NodeCert(msgspec.Struct):
    epoch: int
    serial: str
    not_after: float


@dataclass
class AuthorityConfig:
    tls_dir: str
    server_id: str
    lifetime: float = pki.DEFAULT_LIFETIME
    hosts: list[str] = field(default_factory=list)
    check_every: float = 1.0  # seconds between looks at the CA record and own certificates


def parse_token(token: str) -> tuple[str, str, str]:
    """(role, CA digest, secret) of a join token, or ValidationError naming what is wrong."""
    parts = token.strip().split("-")
    if len(parts) != 4 or parts[0] != TOKEN_PREFIX or parts[1] not in _CODE_ROLE:
        raise ValidationError([Problem("token", "expected a podium join token (podium1-...)")])
    if not re.fullmatch(r"[0-9a-f]{64}", parts[2]) or not re.fullmatch(r"[0-9a-f]{40}", parts[3]):
        raise ValidationError([Problem("token", "malformed join token")])
    return _CODE_ROLE[parts[1]], parts[2], parts[3]


def _secret_key(secret: str) -> str:
    return keys.tls_token(hashlib.sha256(secret.encode()).hexdigest())


class Authority:
    def __init__(self, store: Store, config: AuthorityConfig) -> None:
        self.store = store
        self.config = config
        self.server_creds = Credentials.in_dir(config.tls_dir, "server")
        self.cli_creds = Credentials.in_dir(config.tls_dir, "cli")
        self.kek_path = os.path.join(config.tls_dir, "kek")
        self.state: CAState | None = None
        self._signer: tuple[x509.Certificate, pki.PrivateKey] | None = None
        self._kek: bytes | None = None
        self.on_change: list[Callable[[], None]] = []  # called after own files change
        self.revoked: set[str] = set()  # node ids
        self._to_revoke: set[str] = set()  # purged nodes, revoked here, written by run()

    # ------------------------------------------------------------------ start

    async def start(self) -> None:
        """Load (or, on an empty store, create) the CA; make sure own certificates are good."""
        os.makedirs(self.config.tls_dir, exist_ok=True)
        self._kek = self._read_kek()
        kv = await self.store.get(keys.TLS_CA)
        if kv is None:
            if self._kek is None:
                self._kek = pki.new_kek()
                write_private(self.kek_path, self._kek)
            cert, key = pki.create_ca()
            state = CAState(
                epoch=1,
                roots=[pki.cert_pem(cert)],
                signer_cert=pki.cert_pem(cert),
                signer_key=pki.seal(self._kek, pki.key_pem(key).encode()),
            )
            res = await self.store.txn(
                [Compare(keys.TLS_CA, "create_rev", "=", 0)],
                [Put(keys.TLS_CA, msgspec.json.encode(state))],
            )
            if res.succeeded:
                log.info("created the cluster CA (sha256 %s)", pki.digest(cert))
            kv = await self.store.get(keys.TLS_CA)
            assert kv is not None
        if self._kek is None:
            raise Unavailable(
                "this store already has a cluster CA and this server does not hold its key: "
                "join it with `podium server --join ADDR --join-token TOKEN` "
                "(a token from `podium server join-token --role server`)"
            )
        self._adopt(msgspec.json.decode(kv.value, type=CAState))
        await self._load_revoked()
        self._ensure_own(force=False)

    def _read_kek(self) -> bytes | None:
        try:
            with open(self.kek_path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def _adopt(self, state: CAState) -> None:
        assert self._kek is not None
        try:
            key = pki.load_key(pki.unseal(self._kek, state.signer_key))
        except InvalidTag:
            raise Unavailable(
                f"the key-encryption key in {self.kek_path} does not open this store's CA key "
                "(a data dir from another cluster?)"
            ) from None
        self._signer = (pki.load_certs(state.signer_cert)[0], key)
        self.state = state

    async def _load_revoked(self) -> None:
        kvs, _ = await self.store.list(keys.TLS_REVOKED)
        self.revoked = {kv.key[len(keys.TLS_REVOKED) :] for kv in kvs} | self._to_revoke

    @property
    def ca_pem(self) -> str:
        assert self.state is not None
        return "".join(self.state.roots)

    @property
    def epoch(self) -> int:
        return self.state.epoch if self.state else 0

    def root_digest(self) -> str:
        """What a join token pins: the digest of the oldest trusted root."""
        assert self.state is not None
        return pki.digest(pki.load_certs(self.state.roots[0])[0])

    # ---------------------------------------------------------------- issuing

    def _issue(
        self, public_key: Any, *, role: str, name: str, hosts: list[str] | None = None
    ) -> tuple[x509.Certificate, str]:
        assert self._signer is not None and self.state is not None
        ca_cert, ca_key = self._signer
        cert = pki.issue(
            ca_cert,
            ca_key,
            public_key,
            role=role,
            name=name,
            lifetime=self.config.lifetime,
            hosts=hosts or (),
        )
        return cert, pki.cert_pem(cert) + "".join(self.state.chain)

    def _server_hosts(self) -> list[str]:
        hosts = ["localhost", "127.0.0.1", *self.config.hosts]
        name = socket.gethostname()
        if name:
            hosts.append(name)
        return [h for h in dict.fromkeys(hosts) if h and h != "0.0.0.0"]

    def _ensure_own(self, *, force: bool) -> bool:
        """Renew this server's certificate and the management one when due (or `force`)."""
        changed = False
        for creds, role, name, hosts in (
            (self.server_creds, "server", self.config.server_id, self._server_hosts()),
            (self.cli_creds, "management", "admin", []),
        ):
            if force or self._due(creds):
                key = pki.make_key()
                _, chain = self._issue(key.public_key(), role=role, name=name, hosts=hosts)
                creds.save(chain_pem=chain, key=key, ca_pem=self.ca_pem)
                changed = True
            elif read_text(creds.ca) != self.ca_pem:
                creds.save(chain_pem=read_text(creds.cert), key=None, ca_pem=self.ca_pem)
                changed = True
        return changed

    def _due(self, creds: Credentials) -> bool:
        assert self._signer is not None
        if not creds.exist():
            return True
        try:
            leaf = creds.leaf()
        except (OSError, ValueError):
            return True
        return pki.renew_due(leaf) <= 0 or leaf.issuer != self._signer[0].subject

    # ----------------------------------------------------------------- tokens

    async def new_token(self, role: str, ttl: float) -> str:
        if role not in _ROLE_CODE:
            raise ValidationError(
                [Problem("role", f"expected agent, server or operator, got {role!r}")]
            )
        if not 0 < ttl <= 7 * 24 * 3600:
            raise ValidationError([Problem("ttl", "expected a duration up to 7 days")])
        secret = secrets.token_hex(20)
        record = TokenRecord(role=role, expires=time.time() + ttl)
        await self.store.put(_secret_key(secret), msgspec.json.encode(record))
        return f"{TOKEN_PREFIX}-{_ROLE_CODE[role]}-{self.root_digest()}-{secret}"

    async def consume_token(self, token: str) -> str:
        """The role a token grants; it can never be used again. Forbidden if not valid."""
        role, digest, secret = parse_token(token)
        key = _secret_key(secret)
        kv = await self.store.get(key)
        if kv is None:
            raise Forbidden("join token unknown or already used")
        record = msgspec.json.decode(kv.value, type=TokenRecord)
        res = await self.store.txn([Compare(key, "mod_rev", "=", kv.mod_rev)], [Delete(key)])
        if not res.succeeded:
            raise Forbidden("join token already used")
        if record.expires < time.time():
            raise Forbidden("join token expired")
        if record.role != role or digest != self.root_digest():
            raise Forbidden("join token does not match this cluster")
        return role

    # ------------------------------------------------------------ join, renew

    async def join(
        self,
        token: str,
        csr: str,
        *,
        proposed_id: str,
        taken: Callable[[str], bool],
        hosts: object = None,
    ) -> dict[str, Any]:
        """Certificate for a joiner. `taken(id)`: a node id already registered; `hosts`: the
        addresses an agent is reached at (IP SANs, for clients that check by address)."""
        try:
            public_key = pki.csr_public_key(csr)
        except ValueError as e:
            raise ValidationError([Problem("csr", str(e))]) from None
        names = _hosts(hosts)
        if proposed_id and not ID_RE.fullmatch(proposed_id):
            raise ValidationError([Problem("node_id", "expected [a-z0-9-], at most 63")])
        if proposed_id and (taken(proposed_id) or proposed_id in self.revoked):
            raise Forbidden(f"node id {proposed_id} is in use (or revoked): purge it first")
        role = await self.consume_token(token)
        default = {"server": secrets.token_hex(6), "operator": f"operator-{secrets.token_hex(4)}"}
        name = proposed_id or default.get(role) or str(uuid.uuid4())
        cert, chain = self._issue(
            public_key,
            role=role,
            name=name,
            hosts=self._server_hosts() if role == "server" else names if role == "agent" else None,
        )
        out: dict[str, Any] = {"role": role, "name": name, "cert": chain, "ca": self.ca_pem}
        if role == "agent":
            await self._record_node(name, cert)
        elif role == "server":
            assert self._kek is not None
            out["kek"] = base64.b64encode(self._kek).decode()
        out["epoch"] = self.epoch
        return out

    async def renew(self, who: Identity, csr: str, *, hosts: object = None) -> dict[str, Any]:
        if who.role not in pki.ROLES or not who.name:
            raise Forbidden(f"{who.describe()} holds no certificate to renew")
        if who.role == "agent" and who.name in self.revoked:
            raise Forbidden(f"node {who.name}'s certificate is revoked")
        try:
            public_key = pki.csr_public_key(csr)
        except ValueError as e:
            raise ValidationError([Problem("csr", str(e))]) from None
        names = _hosts(hosts) if who.role == "agent" else None
        cert, chain = self._issue(public_key, role=who.role, name=who.name, hosts=names)
        if who.role == "agent":
            await self._record_node(who.name, cert)
        return {"role": who.role, "name": who.name, "cert": chain, "ca": self.ca_pem,
                "epoch": self.epoch}  # fmt: skip

    async def issue_node(self, creds: Credentials, node_id: str, *, hosts: list[str]) -> None:
        """An agent certificate straight onto disk (`podium dev`: its agent, same process)."""
        key = pki.make_key()
        cert, chain = self._issue(key.public_key(), role="agent", name=node_id, hosts=hosts)
        creds.save(chain_pem=chain, key=key, ca_pem=self.ca_pem)
        write_public(epoch_path(creds), f"{self.epoch}\n")
        await self._record_node(node_id, cert)

    async def _record_node(self, node_id: str, cert: x509.Certificate) -> None:
        rec = NodeCert(self.epoch, str(cert.serial_number), cert.not_valid_after_utc.timestamp())
        await self.store.put(keys.tls_node(node_id), msgspec.json.encode(rec))

    async def revoke_node(self, node_id: str) -> None:
        """The node's certificate stops counting at once (and it cannot join again as it)."""
        self.revoked.add(node_id)
        await self.store.put(keys.tls_revoked(node_id), b"{}")
        await self.store.delete(keys.tls_node(node_id))

    def node_removed(self, node_id: str) -> None:
        """A node record left the store (`podium node purge`): refused from this moment on
        this server; the revocation is stored (for every server) by `run` within a second."""
        self.revoked.add(node_id)
        self._to_revoke.add(node_id)

    # --------------------------------------------------------------- rotation

    async def rotate(self) -> CAState:
        """Start a rotation: a new CA, cross-signed by the current one, issues from now on."""
        for _ in range(5):
            kv = await self.store.get(keys.TLS_CA)
            assert kv is not None and self._kek is not None
            cur = msgspec.json.decode(kv.value, type=CAState)
            if cur.rotating:
                raise Conflict("a CA rotation is already under way")
            old_cert = pki.load_certs(cur.signer_cert)[0]
            old_key = pki.load_key(pki.unseal(self._kek, cur.signer_key))
            new_cert, new_key = pki.create_ca(common_name=f"podium cluster CA {cur.epoch + 1}")
            cross = pki.cross_sign(new_cert, old_cert, old_key)
            new = CAState(
                epoch=cur.epoch + 1,
                roots=[*cur.roots, pki.cert_pem(new_cert)],
                signer_cert=pki.cert_pem(new_cert),
                signer_key=pki.seal(self._kek, pki.key_pem(new_key).encode()),
                chain=[pki.cert_pem(cross)],
                rotating=True,
                rotated_at=time.time(),
            )
            res = await self.store.txn(
                [Compare(keys.TLS_CA, "mod_rev", "=", kv.mod_rev)],
                [Put(keys.TLS_CA, msgspec.json.encode(new))],
            )
            if res.succeeded:
                await self.refresh()
                return new
        raise Conflict("the CA record changed too often; retry")

    async def pending_nodes(self, ready_nodes: list[str]) -> list[str]:
        """Ready nodes whose certificate is not yet from the current CA."""
        kvs, _ = await self.store.list(keys.TLS_NODES)
        done = {
            kv.key[len(keys.TLS_NODES) :]
            for kv in kvs
            if msgspec.json.decode(kv.value, type=NodeCert).epoch >= self.epoch
        }
        return [n for n in ready_nodes if n not in done]

    async def finish_rotation(self) -> bool:
        """Trust only the new root; False if not rotating (or someone else finished it)."""
        kv = await self.store.get(keys.TLS_CA)
        if kv is None:
            return False
        cur = msgspec.json.decode(kv.value, type=CAState)
        if not cur.rotating:
            return False
        done = msgspec.structs.replace(
            cur, epoch=cur.epoch + 1, roots=[cur.signer_cert], chain=[], rotating=False
        )
        res = await self.store.txn(
            [Compare(keys.TLS_CA, "mod_rev", "=", kv.mod_rev)],
            [Put(keys.TLS_CA, msgspec.json.encode(done))],
        )
        if res.succeeded:
            # Node records count the epoch that issued them: move them along (same CA).
            kvs, _ = await self.store.list(keys.TLS_NODES)
            for n in kvs:
                rec = msgspec.json.decode(n.value, type=NodeCert)
                if rec.epoch == cur.epoch:
                    rec.epoch = done.epoch
                    await self.store.put(n.key, msgspec.json.encode(rec))
            await self.refresh()
        return res.succeeded

    # ------------------------------------------------------------------- run

    async def refresh(self) -> bool:
        """Follow the CA record and renew own certificates when due; True if files changed."""
        kv = await self.store.get(keys.TLS_CA)
        epoch_changed = False
        if kv is not None:
            state = msgspec.json.decode(kv.value, type=CAState)
            if self.state is None or state.epoch != self.state.epoch:
                self._adopt(state)
                epoch_changed = True
        await self._load_revoked()
        changed = self._ensure_own(force=epoch_changed) or epoch_changed
        if changed:
            for fn in self.on_change:
                fn()
        return changed

    async def run(self, ready_nodes: Callable[[], list[str]]) -> None:
        """Keep own certificates fresh; finish a rotation once every ready node renewed."""
        while True:
            await asyncio.sleep(self.config.check_every)
            try:
                for node_id in sorted(self._to_revoke):
                    await self.revoke_node(node_id)
                    self._to_revoke.discard(node_id)
                    log.info("node %s purged: its certificate is revoked", node_id)
                await self.refresh()
                rotating = self.state is not None and self.state.rotating
                if (
                    rotating
                    and not await self.pending_nodes(ready_nodes())
                    and await self.finish_rotation()
                ):
                    log.info("CA rotation finished: only the new root is trusted")
            except (PodiumError, OSError) as e:
                log.warning("certificate upkeep failed (will retry): %s", e)


def _hosts(hosts: object) -> list[str]:
    """Addresses a joiner asks to be named by: a few IPs or DNS names, nothing else."""
    if hosts is None:
        return []
    if not isinstance(hosts, list) or len(hosts) > 8:
        raise ValidationError([Problem("hosts", "expected a list of up to 8 addresses")])
    for i, h in enumerate(hosts):
        if not isinstance(h, str) or not HOST_RE.fullmatch(h) or h.endswith(".podium"):
            raise ValidationError([Problem(f"hosts[{i}]", f"expected an IP or a name, got {h!r}")])
    return list(hosts)
