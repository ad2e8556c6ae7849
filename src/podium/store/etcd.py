"""The HA backend: the store interface on an etcd v3 cluster, over gRPC.

    EtcdStore ── one gRPC channel, pick_first over every endpoint ──► etcd members
      get / list / revision    Range (linearizable)
      put / delete / txn       one etcd Txn each: compares and ops map one to one
      txn_many                 one etcd Txn per entry, in order (see below)
      watch                    one Watch stream per call; resumed after a dropped connection
      leases                   etcd leases (ttl rounded up to whole seconds, at least 1)

The gRPC messages and stubs are aetcd's (`aetcd.rpc`, generated from etcd's protos);
its high-level client is not used because a Txn's per-op responses, watch compaction
and lease-not-found need the raw messages anyway.

Revisions are etcd's own (`mod_revision`, `create_revision`, `version`, `lease`), so
they are global to the etcd cluster: another tenant's writes under another prefix move
them too. Every key lives under `prefix` (default "/podium"), which is cut off again on
the way out.

txn_many: etcd judges every compare of a Txn before any of its ops runs, and a nested
Txn sees the state before its parent, so "each judged on its own, seeing the writes of
those before it" is only possible one Txn after another: they are sent in order, each
awaited (N round trips, not one; each gets its own revision as on the other backends).
The leases they name are checked first, so a dead lease fails the whole call before
anything is written. If etcd becomes unreachable midway, the entries before stand:
callers guard every entry, so a retry re-judges them.

etcd refuses a Txn that writes one key twice (two Puts, or a Put inside a Delete's
range): ValueError here; memory and sqlite allow it. etcd also caps a Txn's ops
(`--max-txn-ops`, default 128) and a request's size (`--max-request-bytes`, 1.5 MiB);
run it with larger limits for big clusters (tests/support/etcd.py does).

Failures: every request has a deadline (`timeout`, default 5 s) and carries etcd's
"require leader" flag, so a member cut off from its quorum answers at once instead of
queueing. Reads, and writes that etcd refused before proposing (no leader), are retried
within the deadline; then StoreUnavailable. A write whose connection broke after it was
sent raises StoreUnavailable at once: its outcome is unknown. Several endpoints
(`etcd://h1:p1,h2:p2,h3:p3`) are one channel: gRPC connects to the first that answers
and moves on when it drops. A watch reconnects for up to `watch_reconnect` seconds and
resumes after the last revision it delivered; a compacted start raises Compacted.

Security (`EtcdSecurity`): TLS with etcd's CA and, for etcd's --client-cert-auth, a
client certificate; etcd user/password auth: a token from Authenticate rides on every
call's metadata and is fetched again when etcd says it is no longer valid.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import math
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import grpc
from aetcd import rpc

from podium.errors import Compacted, NotFound, StoreError, StoreUnavailable
from podium.runtime.backoff import Backoff
from podium.store.base import Compare, Delete, Get, KeyValue, Put, TxnResult, WatchEvent
from podium.store.memory import Txn, TxnFrontend, leases_used

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_PREFIX = "/podium"
_MD = (("hasleader", "true"),)  # etcd: fail fast on a member that has no leader
# Retries within a call's deadline, and watch reconnects: full jitter, so the servers
# that lost etcd together do not come back to it together.
_RETRY_BASE, _RETRY_CAP = 0.05, 1.0
_MAX_MESSAGE = 256 * 1024 * 1024
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", _MAX_MESSAGE),
    ("grpc.max_send_message_length", _MAX_MESSAGE),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
]
_RESULT = {
    "=": rpc.Compare.EQUAL,
    "!=": rpc.Compare.NOT_EQUAL,
    "<": rpc.Compare.LESS,
    ">": rpc.Compare.GREATER,
}
_TARGET = {
    "mod_rev": (rpc.Compare.MOD, "mod_revision"),
    "create_rev": (rpc.Compare.CREATE, "create_revision"),
    "version": (rpc.Compare.VERSION, "version"),
    "value": (rpc.Compare.VALUE, "value"),
}
_DOWN = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


def parse_endpoints(spec: str) -> builtins.list[tuple[str, int]]:
    """ "h1:p1,h2:p2" -> [(h1, p1), (h2, p2)]; ValueError naming the bad endpoint."""
    out = []
    for raw in spec.split(","):
        ep = raw.strip().removeprefix("http://")
        host, sep, port = ep.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"etcd endpoint {raw!r}: expected host:port")
        out.append((host.strip("[]"), int(port)))
    return out


@dataclass(frozen=True)
class EtcdSecurity:
    """How podium proves itself to etcd (`--etcd-cacert/--etcd-cert/--etcd-key`,
    `--etcd-user` and PODIUM_ETCD_PASSWORD)."""

    cacert: str = ""  # PEM file: TLS to etcd, verified against it
    cert: str = ""  # client certificate (etcd --client-cert-auth)
    key: str = ""
    user: str = ""
    password: str = ""

    def credentials(self) -> grpc.ChannelCredentials | None:
        if not self.cacert:
            return None

        def read(path: str) -> bytes | None:
            if not path:
                return None
            with open(path, "rb") as f:
                return f.read()

        return grpc.ssl_channel_credentials(read(self.cacert), read(self.key), read(self.cert))


class EtcdStore(TxnFrontend):
    """The store on etcd. See the module docstring for how each call maps."""

    def __init__(
        self,
        endpoints: Sequence[str] | str,
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = 5.0,
        watch_reconnect: float = 60.0,
        security: EtcdSecurity | None = None,
    ) -> None:
        spec = endpoints if isinstance(endpoints, str) else ",".join(endpoints)
        self.endpoints = [f"{h}:{p}" for h, p in parse_endpoints(spec)]
        if prefix and not prefix.startswith("/"):
            raise ValueError(f"etcd key prefix {prefix!r} must start with '/'")
        self.prefix = prefix.rstrip("/")
        self._p = self.prefix.encode()
        self._timeout = timeout
        self._watch_reconnect = watch_reconnect
        self._channel: grpc.aio.Channel | None = None
        self._kv: Any = None
        self._watch: Any = None
        self._lease: Any = None
        self._streams: set[Any] = set()  # open watch / keepalive calls, cancelled by close
        self._closed = False
        self.security = security or EtcdSecurity()
        self._md: tuple[tuple[str, str], ...] = _MD  # + the auth token, once there is one
        self._auth_lock = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str, *, security: EtcdSecurity | None = None) -> EtcdStore:
        """`etcd://h1:p1,h2:p2[/prefix]`; no path means the prefix "/podium"."""
        rest = url.removeprefix("etcd://")
        hosts, slash, path = rest.partition("/")
        if not hosts:
            raise ValueError(f"store url {url!r}: expected etcd://host:port[,host:port...]")
        return cls(hosts, prefix=f"/{path}" if slash else DEFAULT_PREFIX, security=security)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect now (optional: the first call does it) and check etcd answers."""
        await self.revision()

    def _stubs(self) -> None:
        if self._closed:
            raise StoreError("store is closed")
        if self._channel is None:
            creds = self.security.credentials()
            target = _target(self.endpoints)
            if creds is None:
                self._channel = grpc.aio.insecure_channel(target, _CHANNEL_OPTIONS)
            else:
                # etcd's certificate names the host as given, whatever address it resolved to.
                host = self.endpoints[0].rsplit(":", 1)[0]
                options = [*_CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", host)]
                self._channel = grpc.aio.secure_channel(target, creds, options)
            self._kv = rpc.KVStub(self._channel)
            self._watch = rpc.WatchStub(self._channel)
            self._lease = rpc.LeaseStub(self._channel)

    async def close(self) -> None:
        """End every watch (they raise StoreError) and close the channel."""
        if self._closed:
            return
        self._closed = True
        for call in list(self._streams):
            call.cancel()
        if self._channel is not None:
            await self._channel.close()

    # ------------------------------------------------------------ calling etcd

    async def _authenticate(self, *, stale: tuple[tuple[str, str], ...] | None = None) -> None:
        """Get an auth token (etcd user/password); once, however many calls found it stale."""
        if not self.security.user:
            return
        async with self._auth_lock:
            if stale is not None and self._md is not stale:
                return  # another call got a fresh one meanwhile
            assert self._channel is not None
            try:
                resp = await rpc.AuthStub(self._channel).Authenticate(
                    rpc.AuthenticateRequest(
                        name=self.security.user, password=self.security.password
                    ),
                    timeout=self._timeout,
                    wait_for_ready=True,
                )
            except grpc.aio.AioRpcError as e:
                raise StoreUnavailable(
                    f"etcd {','.join(self.endpoints)}: authenticate as {self.security.user!r}: "
                    f"{e.details() or e.code().name}"
                ) from None
            self._md = (*_MD, ("token", resp.token))

    async def _call(self, what: str, fn: Callable[[], Awaitable[T]], *, idempotent: bool) -> T:
        """Run one RPC with the store's deadline, retrying what is safe to retry."""
        self._stubs()
        if self.security.user and len(self._md) == len(_MD):
            await self._authenticate()
        deadline = time.monotonic() + self._timeout
        backoff = Backoff(base=_RETRY_BASE, cap=_RETRY_CAP)
        reauthed = False
        while True:
            try:
                return await fn()
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._closed or task is None or task.cancelling():
                    raise  # our caller cancelled us: unwind
                # grpc.aio raises CancelledError for an RPC cancelled under us (seen when
                # etcd loses quorum); for the caller that is "the store did not answer".
                raise StoreUnavailable(
                    f"etcd {','.join(self.endpoints)}: {what}: the call was cancelled"
                ) from None
            except grpc.aio.AioRpcError as e:
                if self._closed:
                    raise StoreError("store is closed") from None
                left = deadline - time.monotonic()
                code, details = e.code(), e.details() or ""
                if self.security.user and not reauthed and _auth_expired(code, details):
                    # Refused before anything was done: safe to send again with a new token.
                    reauthed = True
                    await self._authenticate(stale=self._md)
                    continue
                safe = idempotent or "no leader" in details
                delay = backoff.next()
                if code in _DOWN and safe and left > delay:
                    await asyncio.sleep(delay)
                    continue
                raise self._error(what, e) from None

    def _error(self, what: str, e: grpc.aio.AioRpcError) -> Exception:
        code, details = e.code(), e.details() or ""
        where = f"etcd {','.join(self.endpoints)}: {what}"
        if code in _DOWN:
            return StoreUnavailable(f"{where}: unavailable ({details or code.name})")
        if code == grpc.StatusCode.NOT_FOUND and "lease" in details:
            return NotFound(f"{what}: lease not found (expired or revoked)")
        if "duplicate key" in details:
            return ValueError(f"{what}: etcd refuses a transaction that writes a key twice")
        if "too many operations" in details:
            return StoreError(f"{where}: too many ops in one txn (raise etcd's --max-txn-ops)")
        if "too large" in details:
            return StoreError(f"{where}: request too large (raise etcd's --max-request-bytes)")
        return StoreError(f"{where}: {code.name}: {details}")

    def _key(self, key: str) -> bytes:
        return self._p + key.encode()

    def _range(self, prefix: str) -> tuple[bytes, bytes]:
        key = self._key(prefix)
        return (key, _range_end(key)) if key else (b"\0", b"\0")  # b"\0", b"\0": every key

    def _KeyValue(self, pb: Any) -> KeyValue:
        return KeyValue(
            pb.key[len(self._p) :].decode(),
            pb.value,
            pb.mod_revision,
            pb.create_revision,
            pb.version,
            pb.lease,
        )

    # ------------------------------------------------------------ reads

    async def get(self, key: str) -> KeyValue | None:
        req = rpc.RangeRequest(key=self._key(key))
        resp = await self._call(
            f"get {key!r}", lambda: self._rpc(self._kv.Range, req), idempotent=True
        )
        return self._KeyValue(resp.kvs[0]) if resp.kvs else None

    async def list(self, prefix: str) -> tuple[builtins.list[KeyValue], int]:
        key, end = self._range(prefix)
        req = rpc.RangeRequest(key=key, range_end=end)
        resp = await self._call(
            f"list {prefix!r}", lambda: self._rpc(self._kv.Range, req), idempotent=True
        )
        return [self._KeyValue(kv) for kv in resp.kvs], int(resp.header.revision)

    async def revision(self) -> int:
        req = rpc.RangeRequest(key=self._p or b"/", count_only=True)
        resp = await self._call("revision", lambda: self._rpc(self._kv.Range, req), idempotent=True)
        return int(resp.header.revision)

    def _rpc(self, method: Any, req: Any) -> Awaitable[Any]:
        return cast(
            Awaitable[Any],
            method(req, timeout=self._timeout, metadata=self._md, wait_for_ready=True),
        )

    # ------------------------------------------------------------ writes

    async def _run_txns(self, txns: builtins.list[Txn]) -> builtins.list[TxnResult]:
        self._stubs()
        if len(txns) > 1:
            for lease in sorted(leases_used(txns)):
                if not await self._lease_alive(lease):
                    raise NotFound(f"lease {lease} not found (expired or revoked)")
        return [await self._txn(txn) for txn in txns]

    async def _txn(self, txn: Txn) -> TxnResult:
        compares, success, failure = txn
        req = rpc.TxnRequest(
            compare=[self._compare(c) for c in compares],
            success=[self._op(op) for op in success],
            failure=[self._op(op) for op in failure],
        )
        read_only = all(isinstance(op, Get) for op in (*success, *failure))
        resp = await self._call("txn", lambda: self._rpc(self._kv.Txn, req), idempotent=read_only)
        reads = [
            [self._KeyValue(kv) for kv in r.response_range.kvs]
            for r in resp.responses
            if r.WhichOneof("response") == "response_range"
        ]
        return TxnResult(bool(resp.succeeded), int(resp.header.revision), reads)

    def _compare(self, c: Compare) -> Any:
        target, field = _TARGET[c.target]
        return rpc.Compare(
            result=_RESULT[c.op], target=target, key=self._key(c.key), **{field: c.value}
        )

    def _op(self, op: Put | Delete | Get) -> Any:
        if isinstance(op, Put):
            return rpc.RequestOp(
                request_put=rpc.PutRequest(key=self._key(op.key), value=op.value, lease=op.lease)
            )
        key, end = self._range(op.key) if op.prefix else (self._key(op.key), b"")
        if isinstance(op, Get):
            return rpc.RequestOp(request_range=rpc.RangeRequest(key=key, range_end=end))
        return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key, range_end=end))

    # ------------------------------------------------------------ leases

    async def lease_grant(self, ttl: float) -> int:
        if not ttl > 0:
            raise ValueError(f"lease ttl must be > 0 seconds, got {ttl!r}")
        req = rpc.LeaseGrantRequest(TTL=max(1, math.ceil(ttl)))
        resp = await self._call(
            "lease grant", lambda: self._rpc(self._lease.LeaseGrant, req), idempotent=False
        )
        if resp.error:
            raise StoreError(f"etcd: lease grant: {resp.error}")
        return int(resp.ID)

    async def lease_keepalive(self, lease: int) -> None:
        """Renew; NotFound if it already expired."""

        async def once() -> Any:
            call = self._lease.LeaseKeepAlive(
                timeout=self._timeout, metadata=self._md, wait_for_ready=True
            )
            self._streams.add(call)
            try:
                await call.write(rpc.LeaseKeepAliveRequest(ID=lease))
                return await call.read()
            finally:
                self._streams.discard(call)
                call.cancel()

        resp = await self._call(f"lease keepalive {lease}", once, idempotent=True)
        if resp is grpc.aio.EOF or resp.TTL <= 0:
            raise NotFound(f"lease {lease} not found (expired or revoked)")

    async def lease_revoke(self, lease: int) -> None:
        """Drop the lease and delete its keys (one revision). Unknown lease: no-op."""
        req = rpc.LeaseRevokeRequest(ID=lease)
        try:
            await self._call(
                f"lease revoke {lease}",
                lambda: self._rpc(self._lease.LeaseRevoke, req),
                idempotent=True,
            )
        except NotFound:
            pass

    async def _lease_alive(self, lease: int) -> bool:
        req = rpc.LeaseTimeToLiveRequest(ID=lease)
        resp = await self._call(
            f"lease {lease}", lambda: self._rpc(self._lease.LeaseTimeToLive, req), idempotent=True
        )
        return int(resp.TTL) > 0

    # ------------------------------------------------------------ watches

    def watch(self, prefix: str, *, start_rev: int) -> AsyncIterator[WatchEvent]:
        self._stubs()
        return self._follow(prefix, max(start_rev, 1))

    async def _follow(self, prefix: str, start: int) -> AsyncIterator[WatchEvent]:
        if self.security.user and len(self._md) == len(_MD):
            await self._authenticate()
        key, end = self._range(prefix)
        nxt = start
        down_since: float | None = None
        backoff = Backoff(base=_RETRY_BASE, cap=_RETRY_CAP)
        while True:
            if self._closed:
                raise StoreError("store is closed")
            call = self._watch.Watch(metadata=self._md, wait_for_ready=True)
            self._streams.add(call)
            try:
                create = rpc.WatchCreateRequest(
                    key=key, range_end=end, start_revision=nxt, prev_kv=True
                )
                await call.write(rpc.WatchRequest(create_request=create))
                while True:
                    resp = await call.read()
                    if resp is grpc.aio.EOF:
                        raise _Dropped("the watch stream ended")
                    if resp.compact_revision:
                        raise Compacted(nxt, int(resp.compact_revision))
                    if resp.canceled:
                        raise _Dropped(resp.cancel_reason or "etcd cancelled the watch")
                    down_since = None
                    backoff.reset()
                    for ev in resp.events:
                        out = self._event(ev)
                        nxt = out.kv.mod_rev + 1
                        yield out
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._closed and (task is None or not task.cancelling()):
                    raise StoreError("store is closed") from None  # close() ended the call
                raise
            except (grpc.aio.AioRpcError, _Dropped) as e:
                if self._closed:
                    raise StoreError("store is closed") from None
                stale = (
                    isinstance(e, grpc.aio.AioRpcError)
                    and _auth_expired(e.code(), e.details() or "")
                ) or (isinstance(e, _Dropped) and "auth" in str(e))
                if stale and self.security.user:
                    await self._authenticate(stale=self._md)
                    continue
                if isinstance(e, grpc.aio.AioRpcError) and e.code() not in _DOWN:
                    raise self._error(f"watch {prefix!r}", e) from None
                now = time.monotonic()
                down_since = down_since or now
                if now - down_since > self._watch_reconnect:
                    raise StoreUnavailable(
                        f"etcd {','.join(self.endpoints)}: watch {prefix!r} could not "
                        f"reconnect for {self._watch_reconnect:g}s: {_why(e)}"
                    ) from None
                log.warning("etcd watch on %r dropped (%s); resuming at %d", prefix, _why(e), nxt)
                await asyncio.sleep(backoff.next())
            finally:
                self._streams.discard(call)
                call.cancel()

    def _event(self, ev: Any) -> WatchEvent:
        prev = ev.prev_kv.value if ev.HasField("prev_kv") else None
        if ev.type == rpc.Event.PUT:
            return WatchEvent("put", self._KeyValue(ev.kv), prev)
        kv = KeyValue(ev.kv.key[len(self._p) :].decode(), b"", ev.kv.mod_revision, 0, 0, 0)
        return WatchEvent("delete", kv, prev)

    # ------------------------------------------------------------ etcd only

    async def compact(self, revision: int) -> None:
        """Drop history before `revision` (etcd-wide): watches from before it get Compacted."""
        req = rpc.CompactionRequest(revision=revision, physical=True)
        await self._call("compact", lambda: self._rpc(self._kv.Compact, req), idempotent=True)


class _Dropped(Exception):
    """A watch stream ended without an RPC error (server shutdown, lost leader)."""


def _why(e: BaseException) -> str:
    if isinstance(e, grpc.aio.AioRpcError):
        return str(e.details() or e.code().name)
    return str(e)


def _range_end(key: bytes) -> bytes:
    """The smallest key greater than every key starting with `key` (etcd's prefix end)."""
    b = bytearray(key)
    while b:
        if b[-1] < 0xFF:
            b[-1] += 1
            return bytes(b)
        b.pop()
    return b"\0"


def _auth_expired(code: grpc.StatusCode, details: str) -> bool:
    return code == grpc.StatusCode.UNAUTHENTICATED or "invalid auth token" in details


def _target(endpoints: Iterable[str]) -> str:
    """One gRPC target naming every member, so pick_first fails over between them."""
    addrs = []
    for ep in endpoints:
        ((host, port),) = parse_endpoints(ep)
        try:
            infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise StoreUnavailable(f"etcd endpoint {ep!r}: cannot resolve {host!r}: {e}") from e
        addrs.append(f"{infos[0][4][0]}:{port}")
    return "ipv4:" + ",".join(addrs)
