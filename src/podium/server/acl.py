"""ACL on a server: tokens and policies in the store, and who a request's token makes it.

    X-Podium-Token / Authorization: Bearer SECRET
        --sha256--> /acl/secrets/<hash> -> accessor --> /acl/tokens/<accessor> (expiry, policies)
        --> /acl/policies/<name>... --acl.policy.Acl.merge--> Acl (cached until /acl/ changes)
    no token: the policy named `anonymous`, if there is one; else nothing is allowed

The secret of a token is shown once (bootstrap, create) and stored only as its hash, so a
store, a snapshot or a log never holds one. Lookups are cached per server; every change
under /acl/ (any server's, through the store watch) empties the cache.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import uuid
from dataclasses import dataclass
from typing import TypeVar

import msgspec

from podium.acl.policy import MANAGEMENT, NOTHING, Acl, parse
from podium.errors import Conflict, Forbidden, NotFound, Problem, ValidationError
from podium.model.tenancy import AclPolicy, AclToken
from podium.server.access import secret_hash
from podium.store import keys
from podium.store.base import Compare, Delete, Get, Put, Store

log = logging.getLogger(__name__)
T = TypeVar("T")
TOKEN_HEADER = "x-podium-token"
ANONYMOUS_POLICY = "anonymous"
SECRET_PREFIX = "pdm_"  # a secret says what it is (found in a paste, it can be revoked)


def token_of(headers: object) -> str:
    """The secret a request carries (X-Podium-Token, or Authorization: Bearer), or ""."""
    get = headers.get  # type: ignore[attr-defined]
    raw: str = get(TOKEN_HEADER, "") or ""
    if not raw:
        auth: str = get("authorization", "") or ""
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer":
            raw = value.strip()
    return raw[:256]


@dataclass(frozen=True)
class Caller:
    """What a request may do under ACL: its Acl and the token it used (None: anonymous)."""

    acl: Acl
    token: AclToken | None = None

    @property
    def accessor(self) -> str:
        return self.token.accessor if self.token else ""


class AclStore:
    """Tokens and policies, read through a cache that any change under /acl/ empties."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._gen = 0
        self._tokens: dict[str, AclToken | None] = {}  # secret hash -> token (None: unknown)
        self._acls: dict[tuple[str, ...], Acl] = {}  # sorted policy names -> merged
        self._policies: dict[str, AclPolicy | None] = {}

    def changed(self) -> None:
        """Something under /acl/ changed (the state's watch calls this)."""
        self._gen += 1
        self._tokens.clear()
        self._acls.clear()
        self._policies.clear()

    # ------------------------------------------------------------ resolve

    async def caller(self, secret: str, *, now: float) -> Caller:
        """Who a secret makes the request ("" : anonymous). Unknown/expired: Forbidden."""
        if not secret:
            return Caller(await self.acl_of([ANONYMOUS_POLICY]))
        token = await self._token(secret_hash(secret))
        if token is None:
            raise Forbidden("ACL token not found")
        if token.expired(now):
            raise Forbidden(f"ACL token {token.accessor[:8]} expired")
        if token.type == "management":
            return Caller(MANAGEMENT, token)
        return Caller(await self.acl_of(token.policies), token)

    async def _token(self, digest: str) -> AclToken | None:
        if digest in self._tokens:
            return self._tokens[digest]
        gen = self._gen
        found: AclToken | None = None
        kv = await self.store.get(keys.acl_secret(digest))
        if kv is not None:
            tkv = await self.store.get(keys.acl_token(kv.value.decode()))
            tok = _decoded(tkv.value, AclToken) if tkv is not None else None
            if tok is not None and hmac.compare_digest(tok.secret_hash, digest):
                found = tok
        if gen == self._gen:  # nothing changed while reading: safe to keep
            self._tokens[digest] = found
        return found

    async def policy(self, name: str) -> AclPolicy | None:
        if name in self._policies:
            return self._policies[name]
        gen = self._gen
        kv = await self.store.get(keys.acl_policy(name))
        found = _decoded(kv.value, AclPolicy) if kv else None
        if found is not None:
            found.revision = kv.mod_rev if kv else 0
        if gen == self._gen:
            self._policies[name] = found
        return found

    async def acl_of(self, names: list[str]) -> Acl:
        key = tuple(sorted(set(names)))
        hit = self._acls.get(key)
        if hit is not None:
            return hit
        gen = self._gen
        found = [p for p in [await self.policy(n) for n in key] if p is not None]
        acl = Acl.merge(parse(p.rules) for p in found) if found else NOTHING
        if gen == self._gen:
            self._acls[key] = acl
        return acl

    # ------------------------------------------------------------- writes

    async def bootstrap(self, *, now: float) -> tuple[AclToken, str]:
        """The first management token (once per cluster)."""
        token, secret = _new_token("bootstrap token", "management", [], now=now, ttl=0.0)
        res = await self.store.txn(
            [Compare(keys.ACL_BOOTSTRAP, "create_rev", "=", 0)],
            [Put(keys.ACL_BOOTSTRAP, token.accessor.encode()), *_token_puts(token)],
        )
        if not res.succeeded:
            raise Conflict("ACL bootstrap was done already (it is allowed once)")
        return token, secret

    async def bootstrapped(self) -> bool:
        return await self.store.get(keys.ACL_BOOTSTRAP) is not None

    async def create_token(
        self, name: str, type_: str, policies: list[str], *, ttl: float, now: float
    ) -> tuple[AclToken, str]:
        if type_ not in ("client", "management"):
            raise ValidationError(
                [Problem("type", f"expected client or management, got {type_!r}")]
            )
        if type_ == "client" and not policies:
            raise ValidationError([Problem("policies", "a client token needs a policy")])
        missing = [p for p in policies if await self.policy(p) is None]
        if missing:
            raise ValidationError([Problem("policies", f"no policy {missing[0]!r}")])
        token, secret = _new_token(name, type_, policies, now=now, ttl=ttl)
        await self.store.txn([], _token_puts(token))
        return token, secret

    async def tokens(self) -> list[AclToken]:
        kvs, _ = await self.store.list(keys.ACL_TOKENS)
        return [t for t in (_decoded(kv.value, AclToken) for kv in kvs) if t is not None]

    async def token(self, accessor: str) -> AclToken:
        kv = await self.store.get(keys.acl_token(accessor))
        found = _decoded(kv.value, AclToken) if kv is not None else None
        if found is None:
            raise NotFound(f"no ACL token {accessor!r}")
        return found

    async def find_token(self, ref: str) -> AclToken:
        """By accessor, or a unique prefix of one."""
        matches = [t for t in await self.tokens() if t.accessor.startswith(ref)]
        if not matches:
            raise NotFound(f"no ACL token {ref!r}")
        if len(matches) > 1:
            raise ValidationError([Problem("accessor", f"{len(matches)} tokens match {ref!r}")])
        return matches[0]

    async def delete_token(self, ref: str) -> AclToken:
        tok = await self.find_token(ref)
        await self.store.txn(
            [], [Delete(keys.acl_token(tok.accessor)), Delete(keys.acl_secret(tok.secret_hash))]
        )
        self.changed()
        return tok

    async def apply_policy(self, name: str, rules: str, description: str) -> AclPolicy:
        parse(rules)  # refused whole when any part is wrong
        pol = AclPolicy(name=name, description=description, rules=rules)
        await self.store.put(keys.acl_policy(name), msgspec.json.encode(pol))
        self.changed()
        return pol

    async def policies(self) -> list[AclPolicy]:
        res = await self.store.txn([], [Get(keys.ACL_POLICIES, prefix=True)])
        found = (_decoded(kv.value, AclPolicy) for kv in res.reads[0])
        return [p for p in found if p is not None]

    async def delete_policy(self, name: str) -> None:
        if await self.policy(name) is None:
            raise NotFound(f"no ACL policy {name!r}")
        await self.store.delete(keys.acl_policy(name))
        self.changed()


def _decoded(value: bytes, kind: type[T]) -> T | None:
    """A stored token or policy, or None when the value does not decode (a restored or
    damaged store): it then grants nothing, and nothing crashes."""
    try:
        return msgspec.json.decode(value, type=kind)
    except msgspec.DecodeError:
        log.error("a stored %s does not decode: ignored", kind.__name__)
        return None


def _new_token(
    name: str, type_: str, policies: list[str], *, now: float, ttl: float
) -> tuple[AclToken, str]:
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    token = AclToken(
        accessor=str(uuid.uuid4()),
        secret_hash=secret_hash(secret),
        name=name,
        type=type_,  # type: ignore[arg-type]
        policies=sorted(set(policies)),
        create_time=now,
        expiration_time=now + ttl if ttl > 0 else 0.0,
    )
    return token, secret


def _token_puts(token: AclToken) -> list[Put]:
    return [
        Put(keys.acl_token(token.accessor), msgspec.json.encode(token)),
        Put(keys.acl_secret(token.secret_hash), token.accessor.encode()),
    ]
