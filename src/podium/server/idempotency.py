"""Idempotency keys: a retried write returns the first result instead of applying twice.

A client that lost the response to a write (the server died, a timeout) cannot know
whether it was applied; it retries, on any server, with the same `Idempotency-Key`.

    claim    txn: /idempotency/<key> absent -> put "pending" (short lease)
    run      the handler, once
    record   put the response (status, type, body) on a long lease (RECORD_TTL)
    a retry  finds the record -> the same response; finds "pending" -> waits for it

A claim whose server died goes with its short lease, so the retry then runs the write
itself. Server errors (5xx) are not recorded: the write did not happen, retry freely.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from podium.errors import Conflict, NotFound, Problem, ValidationError
from podium.store import keys
from podium.store.base import Compare, Get, Put, Store

HEADER = "idempotency-key"
RECORD_TTL = 600.0  # a retry within 10 minutes gets the first answer
CLAIM_TTL = 6.0  # a claim outlives a slow write (3 s at the least), not a dead server
WAIT = 8.0  # a retry waits this long for the first attempt: past a dead claimant's claim
_VALID = re.compile(r"^[A-Za-z0-9_.:-]{8,128}$")

Handler = Callable[[Request], Awaitable[Response]]


class _Record(msgspec.Struct):
    state: str  # "pending" | "done"
    status: int = 0
    media_type: str = ""
    body: bytes = b""


class _LeasePool:
    """One lease per period shared by every record written in it (not a lease each)."""

    def __init__(self, store: Store, ttl: float) -> None:
        self.store = store
        self.ttl = ttl
        self._lease = 0
        self._granted = 0.0
        self._lock = asyncio.Lock()

    async def get(self) -> int:
        async with self._lock:
            # Renewed at half its TTL, so anything attached lives at least TTL/2.
            if not self._lease or time.monotonic() - self._granted > self.ttl / 2:
                self._lease = await self.store.lease_grant(self.ttl)
                self._granted = time.monotonic()
            return self._lease

    def reset(self) -> None:
        """The lease was refused (expired early, store restored): take a fresh one."""
        self._lease = 0


class Idempotency:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._claims = _LeasePool(store, CLAIM_TTL)
        self._records = _LeasePool(store, RECORD_TTL)

    def wrap(self, fn: Handler) -> Handler:
        async def handler(req: Request) -> Response:
            raw = req.headers.get(HEADER)
            if raw is None:
                return await fn(req)
            if not _VALID.match(raw):
                raise ValidationError(
                    [Problem("Idempotency-Key", "expected 8-128 characters of [A-Za-z0-9_.:-]")]
                )
            return await self._once(keys.idempotency(f"{req.method}:{req.url.path}:{raw}"), fn, req)

        return handler

    async def _once(self, key: str, fn: Handler, req: Request) -> Response:
        deadline = time.monotonic() + WAIT
        while True:
            claim = _Record("pending")
            try:
                lease = await self._claims.get()
                res = await self.store.txn(
                    [Compare(key, "mod_rev", "=", 0)],
                    [Put(key, msgspec.msgpack.encode(claim), lease)],
                    [Get(key)],
                )
            except NotFound:
                self._claims.reset()
                raise
            if res.succeeded:
                break
            found = res.reads[0][0] if res.reads and res.reads[0] else None
            if found is not None:
                rec = msgspec.msgpack.decode(found.value, type=_Record)
                if rec.state == "done":
                    return Response(rec.body, status_code=rec.status, media_type=rec.media_type)
            if time.monotonic() > deadline:
                raise Conflict("a request with this Idempotency-Key is still in progress; retry")
            await asyncio.sleep(0.1)
        try:
            resp = await fn(req)
        except BaseException:
            with contextlib.suppress(Exception):
                await self.store.delete(key)  # not applied: a retry may run it
            raise
        if resp.status_code >= 500:
            await self.store.delete(key)
            return resp
        done = _Record("done", resp.status_code, resp.media_type or "", bytes(resp.body))
        try:
            await self.store.put(key, msgspec.msgpack.encode(done), lease=await self._records.get())
        except NotFound:
            self._records.reset()
            await self.store.put(key, msgspec.msgpack.encode(done), lease=await self._records.get())
        return resp
