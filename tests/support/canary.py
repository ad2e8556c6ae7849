"""Canary secrets: tests register the token secrets they make; when the whole run ends,
every file the run left under pytest's temporary directory (server and agent logs, audit
trails, stores, events kept in them) is searched for them. Only a CLI config (cli.json,
0600, the one place a user keeps a token) may hold one."""

from __future__ import annotations

import os
import stat
from pathlib import Path

SECRETS: set[str] = set()
ALLOWED = {"cli.json"}
MAX_READ = 64 * 1024 * 1024


def register(secret: str) -> str:
    SECRETS.add(secret)
    return secret


def leaks(root: Path) -> list[tuple[str, str]]:
    """(file, which secret's first characters) for every file that holds one."""
    if not SECRETS:
        return []
    wanted = [s.encode() for s in SECRETS]
    found = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if name in ALLOWED:
                continue
            path = os.path.join(dirpath, name)
            try:
                if not stat.S_ISREG(os.lstat(path).st_mode):
                    continue  # a task's FIFO or socket: opening it would wait for a writer
                with open(path, "rb") as f:
                    data = f.read(MAX_READ)
            except OSError:
                continue
            for s in wanted:
                if s in data:
                    found.append((path, s[:8].decode()))
    return found
