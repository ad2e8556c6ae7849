"""The agent's small local state file: which tasks it started, by handle.

Written atomically (temp file + rename + fsync) on every change, so after a crash
the agent re-adopts exactly the tasks it had, instead of starting them twice.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import Any

from podium.drivers.base import TaskHandle


class LocalState:
    def __init__(self, path: str) -> None:
        self.path = path
        self.allocs: dict[str, dict[str, TaskHandle]] = {}
        self.extra: dict[str, Any] = {}

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
        self.save()

    def save(self) -> None:
        data = {
            "allocs": {a: {t: asdict(h) for t, h in hs.items()} for a, hs in self.allocs.items()},
            "extra": self.extra,
        }
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
