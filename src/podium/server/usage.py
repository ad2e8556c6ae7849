"""Resource use the server gathers from the agents: per alloc and task, with times.

    podium top, alloc stats, job status, the UI, the autoscaler
        --await usage.refresh(max_age)--> GET /v1/agent/usage on every ready node, at once
        <-- usage.alloc(id) / usage.job(ns, name) / usage.node(id): the figures last gathered

Each node's answer also carries what its proxy counted per service (requests, latency),
from which the autoscaler derives requests per second, latency and concurrency.

Pulled when asked, not pushed: an idle cluster costs nothing, and any server (leader or
not) answers from the agents themselves. A node that does not answer keeps its last
figures (with their time) for `STALE_AFTER` seconds, then drops out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import httpx
import msgspec

from podium.model.types import AllocUsage, Node, ServiceTraffic
from podium.server.agents import AgentLink
from podium.server.state import ClusterState

log = logging.getLogger(__name__)

STALE_AFTER = 30.0  # seconds a silent node's last figures are still served
FETCH_TIMEOUT = 3.0


class NodeUsage(msgspec.Struct, kw_only=True):
    node_id: str
    time: float = 0.0  # when the agent sampled (its clock)
    fetched: float = 0.0  # when this server got it (this server's clock)
    cpu_percent: float = 0.0  # of one core, every alloc summed
    memory_bytes: int = 0
    allocs: list[AllocUsage] = msgspec.field(default_factory=list)
    # What the node's proxy counted per service key (name, or name.namespace), at
    # `services_time` (the agent's clock).
    services: dict[str, ServiceTraffic] = msgspec.field(default_factory=dict)
    services_time: float = 0.0


class JobUsage(msgspec.Struct, kw_only=True):
    namespace: str
    job: str
    time: float = 0.0  # the oldest figure in the sum
    cpu_percent: float = 0.0
    memory_bytes: int = 0
    memory_limit_bytes: int = 0
    allocs: int = 0


class UsageGatherer:
    def __init__(
        self,
        state: ClusterState,
        link: AgentLink | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`link`: how agents are reached (the server's own certificate); None: plain HTTP."""
        self.state = state
        self.link = link or AgentLink(None)
        self.clock = clock
        self.nodes: dict[str, NodeUsage] = {}
        self._allocs: dict[str, AllocUsage] = {}
        self.gathered_at = 0.0
        self._lock = asyncio.Lock()

    async def refresh(self, *, max_age: float = 2.0) -> None:
        """Make the figures at most `max_age` seconds old (one fetch for concurrent callers)."""
        if self.clock() - self.gathered_at <= max_age:
            return
        async with self._lock:
            if self.clock() - self.gathered_at <= max_age:
                return
            nodes = [n for n in self.state.nodes.values() if n.status == "ready" and n.http_addr]
            got = await asyncio.gather(*(self._fetch(n) for n in nodes))
            now = self.clock()
            for n, usage in zip(nodes, got, strict=True):
                if usage is not None:
                    self.nodes[n.id] = usage
            self.nodes = {
                k: v
                for k, v in self.nodes.items()
                if k in self.state.nodes and now - v.fetched <= STALE_AFTER
            }
            self._allocs = {a.id: a for u in self.nodes.values() for a in u.allocs}
            self.gathered_at = now

    async def _fetch(self, node: Node) -> NodeUsage | None:
        try:
            r = await self.link.get(
                node, "/v1/agent/usage", params={"max_age": "1"}, timeout=FETCH_TIMEOUT
            )
            r.raise_for_status()
            data = msgspec.json.decode(r.content)
            allocs = msgspec.convert(data.get("allocs", []), list[AllocUsage])
            services = msgspec.convert(data.get("services", {}), dict[str, ServiceTraffic])
        except (httpx.HTTPError, msgspec.DecodeError, msgspec.ValidationError) as e:
            log.info("usage from node %s: %s", node.name, e)
            return None
        return NodeUsage(
            node_id=node.id,
            time=float(data.get("time", 0.0)),
            fetched=self.clock(),
            cpu_percent=round(sum(a.cpu_percent for a in allocs), 2),
            memory_bytes=sum(a.memory_bytes for a in allocs),
            allocs=allocs,
            services=services,
            services_time=float(data.get("services_time", 0.0)),
        )

    # ------------------------------------------------------------------ reads

    def alloc(self, alloc_id: str) -> AllocUsage | None:
        return self._allocs.get(alloc_id)

    def allocs(self) -> list[AllocUsage]:
        return list(self._allocs.values())

    def node(self, node_id: str) -> NodeUsage | None:
        return self.nodes.get(node_id)

    def job(self, namespace: str, name: str) -> JobUsage:
        """The sum over the job's copies that report (live ones; others have no figures)."""
        total = JobUsage(namespace=namespace, job=name)
        for a in self._allocs.values():
            if a.namespace == namespace and a.job == name:
                total.cpu_percent = round(total.cpu_percent + a.cpu_percent, 2)
                total.memory_bytes += a.memory_bytes
                total.memory_limit_bytes += a.memory_limit_bytes
                total.allocs += 1
                total.time = min(total.time, a.time) if total.time else a.time
        return total

    def jobs(self) -> list[JobUsage]:
        keys = sorted({(a.namespace, a.job) for a in self._allocs.values()})
        return [self.job(ns, name) for ns, name in keys]
