"""Node heartbeats that every server sees: one store lease per node.

With several servers an agent's heartbeats land on whichever server it reaches, but
only the leader judges liveness. So a heartbeat renews the node's lease in the store:

    agent --heartbeat--> any server --lease_keepalive--> /heartbeats/<node> (TTL = granted)
    every server: watch /heartbeats/  put -> heard now;  delete (lease expired) -> silent

A keepalive is cheap in etcd (no new revision), so the cost is one small call per
heartbeat; a write happens only when a node's lease is (re)created. The leader's
liveness check reads `last()` as before: a node whose key is present was heard just
now; one whose key expired was last heard a TTL before it went. A new leader calls
`restart_grace()`, so every node gets a TTL of grace before it is judged. The lease's
TTL is the one the heartbeat granted (nodes.HeartbeatPolicy: it grows with the
cluster); a grant longer than the node's lease gets the node a new lease.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from podium.errors import Compacted, NotFound, PodiumError
from podium.runtime.backoff import Backoff
from podium.runtime.clock import Clock
from podium.server.nodes import HeartbeatPolicy, Heartbeats
from podium.store import keys
from podium.store.base import Store

log = logging.getLogger(__name__)


class HeartbeatLeases(Heartbeats):
    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        ttl: float,
        startup_grace: float | None,
        policy: HeartbeatPolicy | None = None,
        nodes: Callable[[], int] = lambda: 0,
    ) -> None:
        super().__init__(
            clock,
            startup_grace=startup_grace,
            policy=policy or HeartbeatPolicy(min_ttl=ttl),
            nodes=nodes,
        )
        self.store = store
        self.ttl = ttl  # the shortest lease: a node's key outlives its last beat this long
        self._leases: dict[str, int] = {}  # node -> the lease this server renews for it
        self._lease_ttl: dict[int, float] = {}  # lease -> its TTL
        self._present: set[str] = set()  # nodes whose heartbeat key exists
        self._gone: dict[str, float] = {}  # node -> monotonic time its key expired
        self.ready = asyncio.Event()

    async def record(self, node_id: str) -> tuple[float, float]:
        self.beat(node_id)
        granted = self.grant(node_id)
        ttl = max(self.ttl, granted[0])
        lease = self._leases.get(node_id)
        if lease and self._lease_ttl.get(lease, 0.0) >= ttl:
            try:
                await self.store.lease_keepalive(lease)
                return granted
            except NotFound:
                self._leases.pop(node_id, None)
        key = keys.heartbeat(node_id)
        if not lease and ttl <= self.ttl:
            kv = await self.store.get(key)
            if kv is not None and kv.lease:  # another server made it: renew that one
                try:
                    await self.store.lease_keepalive(kv.lease)
                    self._leases[node_id] = kv.lease
                    self._lease_ttl[kv.lease] = self.ttl  # made with the shortest TTL at least
                    return granted
                except NotFound:
                    pass
        lease = await self.store.lease_grant(ttl)
        await self.store.put(key, b"", lease=lease)
        old = self._leases.get(node_id)
        if old is not None:
            self._lease_ttl.pop(old, None)
        self._leases[node_id] = lease
        self._lease_ttl[lease] = ttl
        return granted

    def last(self, node_id: str) -> float:
        now = self.clock.monotonic()
        if node_id in self._present:
            heard = now
        elif node_id in self._gone:
            # its lease ran a full TTL without a beat
            heard = self._gone[node_id] - max(self.ttl, self.ttl_of(node_id))
        else:
            heard = self.started
        grace = self.startup_grace
        if grace is None:
            grace = self.policy.ttl(self.nodes())
        return max(heard, self.started + grace)

    def forget(self, node_id: str) -> None:
        super().forget(node_id)
        lease = self._leases.pop(node_id, None)
        if lease is not None:
            self._lease_ttl.pop(lease, None)

    async def run(self) -> None:
        """Follow /heartbeats/ (re-listing after a compaction or a store outage)."""
        backoff = Backoff(base=0.25, cap=2.0)
        while True:
            try:
                kvs, rev = await self.store.list(keys.HEARTBEATS)
                backoff.reset()
                present = {kv.key[len(keys.HEARTBEATS) :] for kv in kvs}
                for node_id in self._present - present:
                    self._gone[node_id] = self.clock.monotonic()
                self._present = present
                self.ready.set()
                async for ev in self.store.watch(keys.HEARTBEATS, start_rev=rev + 1):
                    node_id = ev.kv.key[len(keys.HEARTBEATS) :]
                    if ev.type == "put":
                        self._present.add(node_id)
                        self._gone.pop(node_id, None)
                    else:
                        self._present.discard(node_id)
                        self._gone[node_id] = self.clock.monotonic()
                        lease = self._leases.pop(node_id, None)
                        if lease is not None:
                            self._lease_ttl.pop(lease, None)
            except Compacted:
                log.info("heartbeat watch compacted; re-listing")
            except (PodiumError, OSError) as e:
                log.warning("heartbeat watch failed (%s); retrying", e)
                await asyncio.sleep(backoff.next())
