"""The agent's side of the proxy: what to listen on, and fresh endpoints for it.

    allocs' task upstreams --ensure/release--> listeners on 127.0.0.1:local_port
    ingress (optional)     --/v1/services watch--> routes by host and path prefix
    per service in use     --/v1/service/NAME blocking query--> Proxy.set_endpoints
                                                               (and set_wake: it may sleep)
    a request held for a sleeping service --on_wake--> POST /v1/service/NAME/wake

One `podium.proxy.Proxy` runs in the agent's event loop. A listener is shared by every
alloc that names the same service on the same local port, and closed when none does.
Endpoints are never cleared on a failed watch: stale healthy copies beat none.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from podium.api.client import AsyncClient
from podium.errors import PodiumError
from podium.model.types import Upstream
from podium.proxy import Endpoint, Proxy, Route, UpstreamConfig, WakeConfig, service_key
from podium.runtime.backoff import Backoff
from podium.tls import pki

log = logging.getLogger(__name__)

UPSTREAM_HOST = "127.0.0.1"


@dataclass(frozen=True)
class _Listener:
    key: str  # the proxy's service key
    mode: str
    policy: str


class ProxyManager:
    def __init__(
        self,
        client: AsyncClient,
        *,
        ingress_addr: str = "",
        ingress_fallback: bool = False,
        watch_wait: float = 30.0,
    ) -> None:
        self.client = client
        self.proxy = Proxy(on_wake=self._wake_requested)
        self.ingress_addr = ingress_addr
        self.ingress_fallback = ingress_fallback
        self.ingress_at = ""  # HOST:PORT the ingress listens on, once it does
        self.watch_wait = watch_wait
        self.ready = asyncio.Event()
        self._listeners: dict[int, _Listener] = {}
        self._users: dict[int, set[str]] = defaultdict(set)  # local port -> alloc ids
        self._by_alloc: dict[str, list[int]] = {}
        self._watched: dict[str, asyncio.Task[None]] = {}  # service key -> watcher
        self._ingress_services: set[str] = set()
        self._names: dict[str, tuple[str, str]] = {}  # service key -> (namespace, name)
        self._wakes: set[str] = set()  # service keys a held request asks to wake
        self._wake_now = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self._lock = asyncio.Lock()
        # TLS clusters: this node's id and the context for other nodes' mesh gateways
        self.node_id = ""
        self.mesh_ssl: ssl.SSLContext | None = None

    def _endpoint(self, e: dict[str, Any]) -> Endpoint:
        """A copy on this node: plain; on another node of a TLS cluster: through its mesh
        gateway, mutual TLS, that node checked by name."""
        ep = Endpoint(id=e["alloc_id"], host=e["address"], port=int(e["port"]), weight=e["weight"])
        mesh = e.get("mesh_addr") or ""
        if self.mesh_ssl is None or not mesh or e.get("node_id") == self.node_id:
            return ep
        host, _, port = mesh.rpartition(":")
        return Endpoint(
            id=ep.id,
            host=ep.host,
            port=ep.port,
            weight=ep.weight,
            via=(host, int(port)),
            tls_name=pki.node_name(e["node_id"]),
            ssl=self.mesh_ssl,
        )

    # ------------------------------------------------------------------- run

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                if self.ingress_addr:
                    host, port = await self._start_ingress()
                    self.ingress_at = f"{host}:{port}"
                    log.info("ingress listening on http://%s", self.ingress_at)
                    tg.create_task(self._watch_ingress(host, port), name="ingress-routes")
                tg.create_task(self._waker(), name="wake")
                self.ready.set()
                # Watches start later, as allocs need them: keep the group open until then.
                await asyncio.Future()
        finally:
            await self.proxy.close()

    async def _start_ingress(self) -> tuple[str, int]:
        host, _, port_text = self.ingress_addr.rpartition(":")
        port = int(port_text)
        config = UpstreamConfig(mode="http")
        try:
            await self.proxy.listen_ingress(host, port, [], config)
            if port:
                return host, port
        except OSError as e:
            if not self.ingress_fallback:
                raise OSError(f"ingress: cannot listen on {host}:{port}: {e.strerror}") from None
            log.warning("ingress: %s:%d is taken; listening on a free port instead", host, port)
            await self.proxy.listen_ingress(host, 0, [], config)
        # Port 0: the one the proxy bound, the only ingress among its listeners so far.
        return next((h, p) for h, p in self.proxy.addresses() if h == host)

    # -------------------------------------------------------------- upstreams

    async def ensure(self, alloc_id: str, namespace: str, upstreams: list[Upstream]) -> None:
        """Listen for every upstream of an alloc before its tasks start.

        Raises OSError naming the upstream when its port is taken by something else.
        """
        if not upstreams:
            return
        await self.ready.wait()
        try:
            async with self._lock:
                for u in upstreams:
                    await self._listen(alloc_id, namespace, u)
        except (OSError, PodiumError):
            await self.release(alloc_id)  # what it opened so far
            raise

    async def _listen(self, alloc_id: str, namespace: str, u: Upstream) -> None:
        namespace = u.namespace or namespace  # another namespace's service, named explicitly
        want = _Listener(service_key(namespace, u.service), u.mode, u.policy)
        have = self._listeners.get(u.local_port)
        if have is None:
            config = UpstreamConfig(mode=u.mode, policy=u.policy)
            try:
                await self.proxy.listen_upstream(want.key, UPSTREAM_HOST, u.local_port, config)
            except OSError as e:
                raise OSError(
                    f"upstream {u.service}: cannot listen on "
                    f"{UPSTREAM_HOST}:{u.local_port}: {e.strerror or e}"
                ) from None
            self._listeners[u.local_port] = want
            self._watch(namespace, u.service)
        elif have != want:
            raise OSError(
                f"upstream {u.service}: local port {u.local_port} already serves "
                f"{have.key} ({have.mode}, {have.policy}) for another allocation"
            )
        self._users[u.local_port].add(alloc_id)
        self._by_alloc.setdefault(alloc_id, []).append(u.local_port)

    async def release(self, alloc_id: str) -> None:
        """The alloc stopped: close the listeners no other alloc uses."""
        async with self._lock:
            for port in self._by_alloc.pop(alloc_id, []):
                self._users[port].discard(alloc_id)
        await self._release_unused()

    async def _release_unused(self) -> None:
        async with self._lock:
            for port in [p for p in self._listeners if not self._users.get(p)]:
                key = self._listeners.pop(port).key
                self._users.pop(port, None)
                if not any(lst.key == key for lst in self._listeners.values()):
                    # The proxy closes per service: every listener of it goes at once.
                    await self.proxy.close(key)
                    self._unwatch(key)

    # --------------------------------------------------------------- watches

    def _watch(self, namespace: str, name: str) -> None:
        key = service_key(namespace, name)
        if key in self._watched or self._tg is None:
            return
        self._names[key] = (namespace, name)
        self._watched[key] = self._tg.create_task(
            self._watch_service(namespace, name, key), name=f"service-watch:{key}"
        )

    def _unwatch(self, key: str) -> None:
        if key in self._ingress_services or any(lst.key == key for lst in self._listeners.values()):
            return
        task = self._watched.pop(key, None)
        if task is not None:
            task.cancel()

    async def _watch_service(self, namespace: str, name: str, key: str) -> None:
        index, wait = 0, 0.0
        backoff = Backoff(base=0.2, cap=5.0)
        while True:
            try:
                data = await self.client.service(namespace, name, index=index, wait=wait)
                wait = self.watch_wait
                backoff.reset()
            except PodiumError as e:
                delay = backoff.next()
                log.warning("watching service %s failed (%s); retry in %.1fs", key, e, delay)
                await asyncio.sleep(delay)
                continue
            # A copy without a port (a service declared with none) cannot be proxied to.
            endpoints = [self._endpoint(e) for e in data["endpoints"] if e["port"]]
            self.proxy.set_wake(key, _wake(data.get("wake")))
            self.proxy.set_endpoints(key, endpoints)
            # Lower than before means another server answered: its index is the one to use.
            index = int(data["index"])

    async def _watch_ingress(self, host: str, port: int) -> None:
        index, wait = 0, 0.0
        backoff = Backoff(base=0.2, cap=5.0)
        while True:
            try:
                data = await self.client.services(index=index, wait=wait)
                wait = self.watch_wait
                backoff.reset()
            except PodiumError as e:
                delay = backoff.next()
                log.warning("watching ingress routes failed (%s); retry in %.1fs", e, delay)
                await asyncio.sleep(delay)
                continue
            routes = [
                Route(
                    service=service_key(row["namespace"], row["name"]),
                    host=route["host"],
                    path_prefix=route["path"],
                )
                for row in data["services"]
                for route in row["ingress"]
            ]
            wanted = {r.service for r in routes}
            for row in data["services"]:
                if service_key(row["namespace"], row["name"]) in wanted:
                    self._watch(row["namespace"], row["name"])
            gone, self._ingress_services = self._ingress_services - wanted, wanted
            self.proxy.set_routes(host, port, routes)
            for key in gone:
                self._unwatch(key)
            index = int(data["index"])

    # ----------------------------------------------------------- sleeping services

    def _wake_requested(self, key: str) -> None:
        """The proxy holds a request for a sleeping service (called in its data path)."""
        self._wakes.add(key)
        self._wake_now.set()

    async def _waker(self) -> None:
        """Ask the servers to wake each service requests wait for. The proxy asks again
        every second while they wait, so a failed call is simply made again then."""
        while True:
            await self._wake_now.wait()
            self._wake_now.clear()
            keys, self._wakes = self._wakes, set()
            for key in keys:
                named = self._names.get(key)
                if named is None:
                    continue
                try:
                    await self.client.wake_service(*named)
                except PodiumError as e:
                    log.warning("waking service %s failed: %s", key, e)


def _wake(raw: object) -> WakeConfig | None:
    """The catalog's word on whether a service may sleep (autoscaled to 0)."""
    if not isinstance(raw, dict):
        return None
    try:
        return WakeConfig(timeout=float(raw["timeout"]), max_held=int(raw["queue"]))
    except (KeyError, TypeError, ValueError):
        return None
