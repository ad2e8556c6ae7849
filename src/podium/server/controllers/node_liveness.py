"""Node liveness: a node not heard from within its heartbeat TTL is marked `down`.

The placement controller then sees its allocs on a down node, marks them lost
and replaces them. A heartbeat from a down node brings it back to `ready`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from podium.runtime.clock import Clock
from podium.server import nodes
from podium.server.state import ClusterState

log = logging.getLogger(__name__)


@dataclass
class LivenessSettings:
    check_interval: float = 0.25
    grace: float = 0.0  # extra seconds past the TTL before a node is declared down


class NodeLivenessController:
    def __init__(
        self,
        state: ClusterState,
        heartbeats: nodes.Heartbeats,
        clock: Clock,
        settings: LivenessSettings | None = None,
    ) -> None:
        self.state = state
        self.heartbeats = heartbeats
        self.clock = clock
        self.settings = settings or LivenessSettings()

    async def run(self) -> None:
        await self.state.ready.wait()
        while True:
            await self.check()
            await self.clock.sleep(self.settings.check_interval)

    async def check(self) -> None:
        mono = self.clock.monotonic()
        for node in list(self.state.nodes.values()):
            silent = mono - self.heartbeats.last(node.id)
            if node.status == "ready" and silent > node.heartbeat_ttl + self.settings.grace:
                log.warning("node %s missed heartbeats for %.1fs: down", node.name, silent)
                await nodes.set_status(
                    self.state,
                    node.id,
                    "down",
                    f"no heartbeat for {silent:.1f}s",
                    now=self.clock.now(),
                )
