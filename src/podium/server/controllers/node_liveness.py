"""Node liveness: a node not heard from within its heartbeat TTL is marked `down`.

The placement controller then sees its allocs on a down node, marks them lost
and replaces them. A heartbeat from a down node brings it back to `ready`.

Silence is only evidence when this server was listening: after the server starts,
or after its own loop stalled (the process was stopped, or blocked for seconds),
every node gets a fresh TTL plus grace before it can be declared down.

Every node is looked at 20 times per cluster TTL (every `check_interval` at the
least): a large cluster's TTL is minutes (nodes.HeartbeatPolicy), and looking at
10,000 nodes four times a second cost the server's loop 6% of a core for nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from podium.runtime.clock import Clock
from podium.server import nodes
from podium.server.metrics import ServerMetrics
from podium.server.state import ClusterState

log = logging.getLogger(__name__)


@dataclass
class LivenessSettings:
    check_interval: float = 0.25  # the least; a TTL / `checks_per_ttl` when longer
    checks_per_ttl: int = 20
    grace: float = 0.0  # extra seconds past the TTL before a node is declared down
    stall: float = 1.0  # a gap this long between checks means the server was not listening


class NodeLivenessController:
    def __init__(
        self,
        state: ClusterState,
        heartbeats: nodes.Heartbeats,
        clock: Clock,
        settings: LivenessSettings | None = None,
        *,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self.metrics = metrics or ServerMetrics(None)
        self.state = state
        self.heartbeats = heartbeats
        self.clock = clock
        self.settings = settings or LivenessSettings()
        self._last_check: float | None = None
        self._interval = self.settings.check_interval

    def interval(self) -> float:
        """Seconds between two looks: a 20th of the cluster's TTL, or `check_interval`."""
        ttl = self.heartbeats.policy.ttl(len(self.state.nodes))
        return max(self.settings.check_interval, ttl / self.settings.checks_per_ttl)

    async def run(self) -> None:
        await self.state.ready.wait()
        while True:
            await self.check()
            self.state.rounds["liveness"] += 1
            self._interval = self.interval()
            await self.clock.sleep(self._interval)

    async def check(self) -> None:
        mono = self.clock.monotonic()
        last, self._last_check = self._last_check, mono
        if last is not None and mono - last > self._interval + self.settings.stall:
            log.warning(
                "liveness checks stalled for %.1fs: every node gets a fresh TTL", mono - last
            )
            self.heartbeats.restart_grace()
            return
        for node in list(self.state.nodes.values()):
            if node.status != "ready":
                continue
            silent = mono - self.heartbeats.last(node.id)
            if silent > self.heartbeats.ttl_of(node.id) + self.settings.grace:
                log.warning("node %s missed heartbeats for %.1fs: down", node.name, silent)
                self.metrics.heartbeats_missed.inc()
                await nodes.set_status(
                    self.state,
                    node.id,
                    "down",
                    f"no heartbeat for {silent:.1f}s",
                    now=self.clock.now(),
                )
