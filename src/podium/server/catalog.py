"""The service catalog: healthy endpoints per service, derived from the ClusterState.

    ClusterState listener (alloc / node / job changed)
        -> recompute that alloc's endpoints (or every alloc of the node / job)
        -> per service: endpoints by alloc id, an index (store revision of the last change)
        -> wake blocking queries (`wait_service`, `wait_any`) -> API, DNS, agents' proxies

Services of groups that may sleep (scaling min 0) are known from the job itself, copies
or not: the listing keeps their ingress routes while they have no copy, and a service's
answer says how long a proxy should hold a request for it (`wake`) while it wakes.

Nothing is written: an endpoint exists while its alloc should run (desired run), runs
(client running, every task running), sits on a node that is not down, and every check
of its service passes (or it has none). The agent reports a failing check or a dead task
at once, so an endpoint leaves within one check interval.

A copy of an older job version (mid-update) is described by that version's spec, which
`run()` reads from the store once and keeps (versions never change).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

import msgspec

from podium.errors import PodiumError
from podium.model.types import Allocation, Group, Ingress, Job, Node, ServiceSpec, Struct
from podium.runtime.backoff import Backoff
from podium.runtime.waiters import park
from podium.server.state import ClusterState
from podium.store import keys

log = logging.getLogger(__name__)

ServiceKey = tuple[str, str]  # (namespace, service name)
_VersionKey = tuple[str, str, int]  # (namespace, job, version)


class Endpoint(Struct):
    """One healthy copy of a service, as the API, DNS and proxies see it."""

    service: str
    namespace: str
    alloc_id: str
    job: str
    group: str
    node_id: str
    node_name: str
    address: str
    port: int
    tags: list[str] = msgspec.field(default_factory=list)
    meta: dict[str, str] = msgspec.field(default_factory=dict)
    weight: int = 1  # from meta "weight" (1 to 1000), for the weighted policy
    mesh_addr: str = ""  # its node's mesh gateway (TLS clusters): proxies on other nodes use it


class _Declared(Struct):
    """A service a live alloc declares, healthy or not (for listings and ingress routes)."""

    tags: list[str]
    ingress: Ingress | None
    endpoint: Endpoint | None  # None while the copy is not healthy


class Sleeper(Struct):
    """A service a group declares that may scale to 0: proxies hold requests for it."""

    job: str
    group: str
    timeout: float  # the group's scaling.hold_timeout
    queue: int  # scaling.hold_requests
    tags: list[str]
    ingress: Ingress | None


class Catalog:
    """Endpoints per service, kept current by ClusterState changes; blocking-query waiters."""

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self.services: dict[ServiceKey, dict[str, _Declared]] = defaultdict(dict)
        self.index: dict[ServiceKey, int] = defaultdict(int)
        self.last_index = 0  # the highest index of any service (for the listing's watch)
        self._by_alloc: dict[str, dict[ServiceKey, _Declared]] = {}
        self._versions: dict[_VersionKey, dict[str, Group]] = {}  # groups by name, per version
        self._missing: set[_VersionKey] = set()
        self._missing_wake = asyncio.Event()
        self._waiters: dict[ServiceKey | None, list[asyncio.Future[None]]] = defaultdict(list)
        # job key -> the services its sleeping groups declare
        self._sleepers: dict[str, dict[ServiceKey, Sleeper]] = {}
        # and the other way: service -> job key -> its sleeping group's declaration
        self._sleeping: dict[ServiceKey, dict[str, Sleeper]] = {}
        state.add_listener(self._changed)
        for job in state.jobs.values():
            self._learn_job(job)
            self._learn_sleepers(job, 0)
        for a in state.allocs.values():
            self._refresh(a, self._next_index())

    # ----------------------------------------------------------------- reads

    def endpoints(self, namespace: str, name: str, *, tag: str = "") -> list[Endpoint]:
        declared = self.services.get((namespace, name), {})
        out = [d.endpoint for d in declared.values() if d.endpoint is not None]
        if tag:
            out = [e for e in out if tag in e.tags]
        return sorted(out, key=lambda e: (e.node_name, e.address, e.port, e.alloc_id))

    def known(self, namespace: str, name: str) -> bool:
        return (
            bool(self.services.get((namespace, name))) or self.sleeper(namespace, name) is not None
        )

    def sleeper(self, namespace: str, name: str) -> Sleeper | None:
        """The group behind a service that may sleep (scaled to 0), if any."""
        found = self._sleeping.get((namespace, name))
        return next(iter(found.values())) if found else None

    def sleepers(self, namespace: str, name: str) -> list[Sleeper]:
        return list(self._sleeping.get((namespace, name), {}).values())

    def wake(self, namespace: str, name: str) -> dict[str, object] | None:
        """What a proxy holds requests by while the service wakes (None: it never sleeps)."""
        found = self.sleepers(namespace, name)
        if not found:
            return None
        return {
            "timeout": max(s.timeout for s in found),
            "queue": max(s.queue for s in found),
            "groups": [f"{s.job}.{s.group}" for s in found],
        }

    def listing(self, namespace: str | None = None) -> list[dict[str, object]]:
        """One row per service: healthy and declared counts, tags, ingress routes."""
        rows = []
        keys_ = set(self.services) | set(self._sleeping)
        for ns, name in sorted(keys_):
            declared = self.services.get((ns, name), {})
            asleep = self.sleepers(ns, name)
            if (not declared and not asleep) or (namespace is not None and ns != namespace):
                continue
            tags = sorted(
                {t for d in declared.values() for t in d.tags} | {t for s in asleep for t in s.tags}
            )
            routes = {(d.ingress.host, d.ingress.path) for d in declared.values() if d.ingress}
            routes |= {(s.ingress.host, s.ingress.path) for s in asleep if s.ingress}
            rows.append(
                {
                    "name": name,
                    "namespace": ns,
                    "healthy": sum(1 for d in declared.values() if d.endpoint is not None),
                    "total": len(declared),
                    "tags": tags,
                    "ingress": [{"host": h, "path": p} for h, p in sorted(routes)],
                    "index": self.index[(ns, name)],
                    "wake": self.wake(ns, name),
                }
            )
        return rows

    async def wait_service(self, key: ServiceKey | None, index: int, *, timeout: float) -> int:
        """Block until the service's index (None: any service's) passes `index`, or timeout."""
        current = self.last_index if key is None else self.index.get(key, 0)
        if current > index or index > self.last_index:
            # Past it already, or an index from another server's catalog: answer now.
            return current
        await park(self._waiters[key], timeout)
        return self.last_index if key is None else self.index.get(key, 0)

    # ------------------------------------------------------------------ feed

    async def run(self) -> None:
        """Read the specs of older job versions that live allocs still run."""
        backoff = Backoff(base=0.5, cap=10.0)
        while True:
            await self._missing_wake.wait()
            self._missing_wake.clear()
            for vkey in list(self._missing):
                ns, name, version = vkey
                try:
                    kv = await self.state.store.get(keys.job_version(ns, name, version))
                    job = msgspec.json.decode(kv.value, type=Job) if kv is not None else None
                except (OSError, PodiumError, msgspec.DecodeError) as e:
                    log.warning("catalog: cannot read %s/%s v%d: %s", ns, name, version, e)
                    await asyncio.sleep(backoff.next())
                    self._missing_wake.set()  # try again
                    continue
                backoff.reset()
                self._missing.discard(vkey)
                if job is None:
                    self._versions[vkey] = {}  # purged: its copies declare nothing
                else:
                    self._learn_job(job)
                for alloc_id in list(self.state.by_job.get(f"{ns}/{name}", ())):
                    a = self.state.allocs.get(alloc_id)
                    if a is not None and a.job_version == version:
                        self._refresh(a, self._next_index())

    def _next_index(self) -> int:
        # Past the store revision the cache has reached (listeners run before the cache
        # advances), so it keeps growing across restarts; and past the last index given
        # out, so a watcher holding it never misses the next change.
        return max(self.state.revision + 1, self.last_index + 1)

    def _changed(self, prefix: str, old: object | None, new: object | None) -> None:
        index = self._next_index()
        if prefix == keys.ALLOCS:
            alloc = new if isinstance(new, Allocation) else old
            if isinstance(alloc, Allocation):
                if new is None:
                    self._drop(alloc.id, index)
                else:
                    self._refresh(alloc, index)
        elif prefix == keys.NODES:
            node = new if isinstance(new, Node) else old
            if isinstance(node, Node):
                for a in self.state.allocs_of_node(node.id):
                    self._refresh(a, index)
        elif prefix == keys.JOBS:
            job = new if isinstance(new, Job) else None
            if job is not None or isinstance(old, Job):
                self._learn_sleepers(job, index, old=old)
            if job is not None:
                self._learn_job(job)
                for a in self.state.allocs_of_job(job.namespace, job.name):
                    if a.id not in self._by_alloc or a.job_version == job.version:
                        self._refresh(a, index)

    def _learn_sleepers(self, job: Job | None, index: int, *, old: object = None) -> None:
        """Which services the job's groups that may sleep declare (scaling min 0); a
        change moves those services' index, so proxies learn it."""
        gone = old if isinstance(old, Job) else None
        key = job.key if job is not None else gone.key if gone is not None else ""
        fresh: dict[ServiceKey, Sleeper] = {}
        if job is not None and not job.stop and job.type == "service":
            for g in job.groups:
                if g.scaling is None or g.scaling.min != 0:
                    continue
                for svc in g.services:
                    fresh[(job.namespace, svc.name)] = Sleeper(
                        job=job.name,
                        group=g.name,
                        timeout=g.scaling.hold_timeout,
                        queue=g.scaling.hold_requests,
                        tags=list(svc.tags),
                        ingress=svc.ingress,
                    )
        before = self._sleepers.get(key, {})
        if fresh == before:
            return
        if fresh:
            self._sleepers[key] = fresh
        else:
            self._sleepers.pop(key, None)
        for svc_key in before:
            by_job = self._sleeping.get(svc_key, {})
            by_job.pop(key, None)
            if not by_job:
                self._sleeping.pop(svc_key, None)
        for svc_key, sleeper in fresh.items():
            self._sleeping.setdefault(svc_key, {})[key] = sleeper
        if not index:
            return
        for svc_key in set(before) | set(fresh):
            if before.get(svc_key) != fresh.get(svc_key):
                self.index[svc_key] = index
                self.last_index = max(self.last_index, index)
                self._wake(svc_key)
        self._wake(None)

    def _learn_job(self, job: Job) -> None:
        self._versions[(job.namespace, job.name, job.version)] = {g.name: g for g in job.groups}

    def _group(self, a: Allocation) -> Group | None:
        vkey: _VersionKey = (a.namespace, a.job, a.job_version)
        groups = self._versions.get(vkey)
        if groups is None:
            if vkey not in self._missing:
                self._missing.add(vkey)
                self._missing_wake.set()
            return None
        return groups.get(a.group)

    def _refresh(self, a: Allocation, index: int) -> None:
        fresh: dict[ServiceKey, _Declared] = {}
        group = self._group(a) if a.live else None
        if group is not None and group.services:
            node = self.state.nodes.get(a.node_id)
            healthy = _running(a) and node is not None and node.status != "down"
            passing = {c.name for c in a.checks if c.status == "passing"}
            for svc in group.services:
                ok = healthy and all(c.name in passing for c in svc.checks)
                endpoint = _endpoint(a, svc, node) if ok and node is not None else None
                fresh[(a.namespace, svc.name)] = _Declared(
                    tags=list(svc.tags), ingress=svc.ingress, endpoint=endpoint
                )
        self._install(a.id, fresh, index)

    def _drop(self, alloc_id: str, index: int) -> None:
        self._install(alloc_id, {}, index)

    def _install(self, alloc_id: str, fresh: dict[ServiceKey, _Declared], index: int) -> None:
        before = self._by_alloc.get(alloc_id, {})
        if before == fresh:
            return
        if fresh:
            self._by_alloc[alloc_id] = fresh
        else:
            self._by_alloc.pop(alloc_id, None)
        for key in set(before) | set(fresh):
            if before.get(key) == fresh.get(key):
                continue
            declared = self.services[key]
            if key in fresh:
                declared[alloc_id] = fresh[key]
            else:
                declared.pop(alloc_id, None)
                if not declared:
                    del self.services[key]
            self.index[key] = index
            self.last_index = max(self.last_index, index)
            self._wake(key)
        self._wake(None)

    def _wake(self, key: ServiceKey | None) -> None:
        for fut in self._waiters.pop(key, ()):
            if not fut.done():
                fut.set_result(None)


def _running(a: Allocation) -> bool:
    return (
        a.desired_status == "run"
        and a.client_status == "running"
        and bool(a.task_states)
        and all(t.state == "running" for t in a.task_states.values())
    )


def _endpoint(a: Allocation, svc: ServiceSpec, node: Node) -> Endpoint:
    weight = svc.meta.get("weight", "1")
    return Endpoint(
        service=svc.name,
        namespace=a.namespace,
        alloc_id=a.id,
        job=a.job,
        group=a.group,
        node_id=a.node_id,
        node_name=a.node_name or node.name,
        address=node.address,
        port=a.ports.get(svc.port, 0) if svc.port else 0,
        tags=list(svc.tags),
        meta=dict(svc.meta),
        weight=int(weight) if weight.isdigit() and 1 <= int(weight) <= 1000 else 1,
        mesh_addr=node.mesh_addr,
    )
