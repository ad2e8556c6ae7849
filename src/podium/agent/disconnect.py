"""Partitions seen from the node: stop copies whose group says so when no server answers.

    every successful exchange with a server  -> Contact.heard()
    DisconnectWatch.run(): every `interval`, for each running alloc whose group has
        disconnect.stop_after_disconnect = S > 0 and silence > S -> stop it locally

The server, meanwhile, declares the node down after its heartbeat TTL and replaces
the node's copies. A group with S below the TTL therefore never runs twice: its
copy here is stopped before the replacement is placed (docs/clustering.md). When the
node gets back in touch, the server's view wins: replaced copies come back with
desired_status=stop (and are stopped, if still running), the rest are adopted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from podium.agent.alloc_runner import AllocRunner
from podium.runtime.clock import Clock

log = logging.getLogger(__name__)


class Contact:
    """When a server last answered this agent (monotonic)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.last = clock.monotonic()

    def heard(self) -> None:
        self.last = self.clock.monotonic()

    def silence(self) -> float:
        return self.clock.monotonic() - self.last


def due(runners: Mapping[str, AllocRunner], silence: float) -> list[AllocRunner]:
    """Runners to stop after `silence` seconds without a server."""
    out = []
    for r in runners.values():
        after = r.group.disconnect.stop_after_disconnect
        if after > 0 and silence > after and not r.finished.is_set():
            out.append(r)
    return out


class DisconnectWatch:
    def __init__(
        self,
        contact: Contact,
        runners: Mapping[str, AllocRunner],
        spawn: Callable[[object], None],
        *,
        interval: float = 0.1,
    ) -> None:
        self.contact = contact
        self.runners = runners
        self.spawn = spawn
        self.interval = interval
        self._stopped: set[str] = set()

    async def run(self) -> None:
        while True:
            await self.contact.clock.sleep(self.interval)
            silence = self.contact.silence()
            if silence < self.interval * 2:
                self._stopped.clear()
            for r in due(self.runners, silence):
                if r.alloc.id in self._stopped:
                    continue
                self._stopped.add(r.alloc.id)
                log.warning(
                    "no server answered for %.1fs: stopping %s (stop_after_disconnect %gs)",
                    silence,
                    r.alloc.name,
                    r.group.disconnect.stop_after_disconnect,
                )
                self.spawn(
                    r.stop(
                        reason=f"node lost its servers for {silence:.1f}s (stop_after_disconnect)"
                    )
                )
