"""Browser sessions for the web UI: a one-use login link, then a cookie.

A browser cannot present the CLI's client certificate, so it logs in with a link that
an operator asks for with their own credentials:

    podium ui ──(mTLS, operator)──► POST /v1/ui/login ──► https://HOST/ui/#login=TOKEN
    browser opens the link; the page POSTs TOKEN to /v1/ui/session (one use, 5 minutes)
        ◄── Set-Cookie: podium_ui=SECRET; Secure; HttpOnly; SameSite=Strict (12 hours)
    every API call of the page carries the cookie: identity operator "ui:<who asked>"

The token travels in the URL's fragment, which a browser never sends, so it reaches no
access log or Referer. The store keeps only SHA-256 hashes of tokens and cookies, under
/tls/ (never in a snapshot). A session acts as an operator (never management, whoever
asked for the link). Writes made with the cookie must carry the `x-podium-ui: 1` header,
which a cross-site form or script cannot send without a CORS preflight this server never
answers; SameSite=Strict keeps the cookie off cross-site requests in the first place.
"""

from __future__ import annotations

import hashlib
import logging
import secrets

import msgspec

from podium.errors import Forbidden, PodiumError
from podium.runtime.clock import Clock
from podium.store import keys
from podium.store.base import Compare, Delete, Put, Store
from podium.tls.identity import Identity

log = logging.getLogger(__name__)

COOKIE = "podium_ui"
CSRF_HEADER = "x-podium-ui"
LOGIN_TTL = 300.0
SESSION_TTL = 12 * 3600.0
CACHE_FOR = 10.0  # seconds a looked-up session is trusted before the store is asked again
SWEEP_MAX = 1000  # expired records removed per new login link, at most


class UiRecord(msgspec.Struct, frozen=True):
    name: str  # who asked for the link (their certificate's name or role)
    expires: float


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def identity(record: UiRecord) -> Identity:
    return Identity("operator", f"ui:{record.name}", browser=True)


class UiSessions:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self._cache: dict[str, tuple[UiRecord, float]] = {}  # digest -> (record, looked at)
        # Sessions logged out here: a lookup that was reading the store while one was
        # closed must not put it back in the cache.
        self._closed: set[str] = set()

    async def new_login(self, who: Identity) -> str:
        """A token for one login within LOGIN_TTL, for `who` (an operator)."""
        await self._sweep()
        token = secrets.token_urlsafe(32)
        record = UiRecord(name=who.name or who.role, expires=self.clock.now() + LOGIN_TTL)
        await self.store.put(keys.ui_login(_digest(token)), msgspec.json.encode(record))
        return token

    async def open(self, token: str) -> tuple[str, UiRecord]:
        """Spend a login token (once): a new session's cookie secret and its record."""
        key = keys.ui_login(_digest(token))
        kv = await self.store.get(key)
        if kv is None:
            raise Forbidden("this login link is unknown or was used already: run `podium ui`")
        res = await self.store.txn([Compare(key, "mod_rev", "=", kv.mod_rev)], [Delete(key)])
        if not res.succeeded:
            raise Forbidden("this login link was used already: run `podium ui`")
        login = msgspec.json.decode(kv.value, type=UiRecord)
        now = self.clock.now()
        if login.expires < now:
            raise Forbidden("this login link expired: run `podium ui` for a new one")
        secret = secrets.token_urlsafe(32)
        session = UiRecord(name=login.name, expires=now + SESSION_TTL)
        await self.store.txn(
            [], [Put(keys.ui_session(_digest(secret)), msgspec.json.encode(session))]
        )
        log.info("web UI session opened for %s", login.name)
        return secret, session

    async def lookup(self, secret: str) -> UiRecord | None:
        """The live session a cookie names, or None (unknown, expired or logged out)."""
        digest = _digest(secret)
        now = self.clock.now()
        cached = self._cache.get(digest)
        if cached is not None and now - cached[1] < CACHE_FOR and cached[0].expires > now:
            return cached[0]
        self._cache.pop(digest, None)
        kv = await self.store.get(keys.ui_session(digest))
        if kv is None or digest in self._closed:
            return None
        try:
            record = msgspec.json.decode(kv.value, type=UiRecord)
        except msgspec.DecodeError:
            return None
        if record.expires <= now:
            await self.store.delete(keys.ui_session(digest))
            return None
        if len(self._cache) > 10_000:  # bounded: many browsers, or an old server
            self._cache.clear()
        self._cache[digest] = (record, now)
        return record

    async def close(self, secret: str) -> None:
        digest = _digest(secret)
        if len(self._closed) > 10_000:  # bounded; the store no longer has them anyway
            self._closed.clear()
        self._closed.add(digest)
        self._cache.pop(digest, None)
        await self.store.delete(keys.ui_session(digest))

    async def _sweep(self) -> None:
        """Forget expired links and sessions (a few at a time, when a link is made)."""
        now = self.clock.now()
        gone: list[str] = []
        for prefix in (keys.UI_LOGINS, keys.UI_SESSIONS):
            kvs, _ = await self.store.list(prefix)
            for kv in kvs:
                try:
                    expired = msgspec.json.decode(kv.value, type=UiRecord).expires <= now
                except msgspec.DecodeError:
                    expired = True
                if expired:
                    gone.append(kv.key)
        for key in gone[:SWEEP_MAX]:
            try:
                await self.store.delete(key)
            except PodiumError as e:
                log.info("could not remove expired UI record: %s", e)
