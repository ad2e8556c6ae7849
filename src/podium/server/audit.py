"""The audit trail: every accepted or refused write, exec, log read and snapshot, with who
(from the credential: the token's accessor, or the certificate's role and name; never a
header the caller sets), where, what and how it ended.

    route wrapper (app.py) ──record──► <data-dir>/audit.log   JSON lines, 0600, rotated
                                   └─► with ACL on: event `audit.allowed` / `audit.refused`
                                       (topic audit, read by management only; refusals
                                       rate-limited), queued and written by `run` in one
                                       transaction every 0.1 s: a request never waits on it

A line holds no body and no secret: routes name objects by id, and errors name tokens by
the first characters of their accessor.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import msgspec

from podium.errors import PodiumError
from podium.runtime.logfiles import MIB, LogLimits, RotatingFile
from podium.server.access import DenialLog
from podium.server.events import event_put
from podium.store.base import Put, Store

log = logging.getLogger(__name__)

# Reads worth a line: they hand out what tasks print, a shell, or the whole store.
AUDITED_READS = frozenset({"alloc_logs", "job_logs", "alloc_exec", "snapshot_save"})
# Agents' own traffic (heartbeats, status reports) is not users' doing: refusals only.
MAX_BATCH = 100  # events per transaction (under etcd's default --max-txn-ops, 128)
MAX_QUEUE = 10_000
MACHINE_ROUTES = frozenset({"heartbeat", "node_alloc_updates", "register_node", "node_allocs"})


def audited(method: str, handler: str) -> bool:
    return (method != "GET" or handler in AUDITED_READS) and handler not in MACHINE_ROUTES


class AuditLog:
    def __init__(
        self,
        store: Store,
        path: str | None,
        *,
        events: bool = True,
        limits: LogLimits = LogLimits(max_file_size=10 * MIB, max_files=5),  # noqa: B008
    ) -> None:
        self.store = store
        self.events = events
        self.file = RotatingFile(path, limits) if path else None
        self._fd = -1
        self.refusals = DenialLog(rate=5.0, burst=20)  # events of refusals, not lines
        self._queue: list[Put] = []
        self._wake = asyncio.Event()
        self.dropped = 0  # events not kept because the queue was full (the lines are)

    async def run(self, *, every: float = 0.1) -> None:
        """Write queued audit events, in one transaction per round."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(every)  # gather what else comes meanwhile
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                try:
                    await self.store.txn([], list(batch))
                except PodiumError as e:
                    log.warning("could not record %d audit events: %s", len(batch), e)

    def _append(self, line: bytes) -> None:
        f = self.file
        if f is None:
            return
        try:
            if f.room() < len(line):
                f.rotate()
            if f.fd != self._fd:  # a new file (first write, or rotated): only ours to read
                os.fchmod(f.fd, 0o600)
                self._fd = f.fd
            f.write(line)
        except OSError as e:
            log.error("cannot write the audit log %s: %s", f.path, e)

    async def record(
        self,
        *,
        who: str,
        method: str,
        path: str,
        route: str,
        namespace: str,
        objects: dict[str, str],
        status: int,
        error: str = "",
    ) -> None:
        now = time.time()
        outcome = "allowed" if status < 400 else ("refused" if status in (401, 403) else "failed")
        entry: dict[str, Any] = {
            "time": now,
            "identity": who,
            "namespace": namespace,
            "method": method,
            "route": route,
            "path": path,
            "object": objects,
            "status": status,
            "outcome": outcome,
        }
        if error:
            entry["error"] = error[:500]
        self._append(msgspec.json.encode(entry) + b"\n")
        if not self.events:
            return
        if outcome == "refused" and not self.refusals.allow():
            return
        message = f"{who} {method} {path}: {outcome} ({status})" + (
            f": {error[:200]}" if error else ""
        )
        if len(self._queue) >= MAX_QUEUE:
            self.dropped += 1
            return
        self._queue.append(event_put(f"audit.{outcome}", message, namespace=namespace, now=now))
        self._wake.set()
