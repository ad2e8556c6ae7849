"""The agent's small local state file: which tasks it started, by handle.

Written atomically (temp file + rename + fsync), behind the caller: a change marks the
state dirty and one writer task, off the event loop, saves the latest state until
nothing is left to save. A burst of changes (50 tasks starting at once) costs a few
writes, not one blocking fsync of the whole file per change. After a crash the agent
re-adopts the tasks the file names; a task started in the last moments before the
crash, not yet in the file, is found by its driver (containers by label, processes by
the identity in their environment), so it is not started twice either way.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import asdict
from typing import Any

from podium.drivers.base import TaskHandle
from podium.runtime.backoff import Backoff

log = logging.getLogger(__name__)
_RETRY = 1.0  # seconds: the first retry window of a failed save (then it grows to 10x)


class LocalState:
    def __init__(self, path: str) -> None:
        self.path = path
        self.allocs: dict[str, dict[str, TaskHandle]] = {}
        self.extra: dict[str, Any] = {}
        self._dirty = False
        self._writer: asyncio.Task[None] | None = None

    def load(self) -> None:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return
        except (OSError, ValueError):
            # A torn or foreign file: keep a copy for the operator and start empty.
            os.replace(self.path, self.path + ".corrupt")
            return
        self.extra = data.get("extra", {})
        for alloc_id, tasks in data.get("allocs", {}).items():
            self.allocs[alloc_id] = {t: TaskHandle(**h) for t, h in tasks.items()}

    def set_alloc(self, alloc_id: str, handles: dict[str, TaskHandle]) -> None:
        if handles:
            self.allocs[alloc_id] = dict(handles)
        else:
            self.allocs.pop(alloc_id, None)
        self.changed()

    def changed(self) -> None:
        """Save soon: in the background on a running event loop, at once without one."""
        self._dirty = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.save()
            return
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write_behind(), name="agent-state")

    async def _write_behind(self) -> None:
        backoff = Backoff(base=_RETRY, cap=10 * _RETRY)
        while self._dirty:
            self._dirty = False
            text = self._encode()  # on the loop: a consistent picture of the dicts
            try:
                await asyncio.to_thread(self._write, text)
            except OSError as e:  # e.g. the disk is full: keep the change, try again
                log.error("cannot save the agent's state to %s: %s; retrying", self.path, e)
                self._dirty = True
                await asyncio.sleep(backoff.next())

    async def flush(self) -> None:
        """Wait until every change made so far is on disk."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)
        if self._dirty:
            self.save()

    def save(self) -> None:
        self._dirty = False
        self._write(self._encode())

    def _encode(self) -> str:
        data = {
            "allocs": {a: {t: asdict(h) for t, h in hs.items()} for a, hs in self.allocs.items()},
            "extra": self.extra,
        }
        return json.dumps(data)

    def _write(self, text: str) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
