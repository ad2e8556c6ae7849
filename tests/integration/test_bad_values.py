"""A corrupt value written straight into the SQLite file: the server starts, serves, and
says what it skipped (issue 19, item 3)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from integration.cluster import DevCluster, wait_until

pytestmark = pytest.mark.integration


def _corrupt(db: Path, key: str) -> None:
    conn = sqlite3.connect(db)
    try:
        with conn:
            conn.execute("UPDATE kv SET value = ? WHERE key = ?", (b"\x00{garbage", key))
            assert conn.total_changes == 1, key
    finally:
        conn.close()


def test_server_with_a_corrupt_stored_value_starts_and_serves(tmp_path: Path) -> None:
    c = DevCluster(tmp_path / "dev").start()
    try:
        spec = {
            "name": "keep",
            "type": "service",
            "groups": [
                {
                    "name": "g",
                    "count": 2,
                    "tasks": [
                        {
                            "name": "t",
                            "driver": "process",
                            "config": {"command": "sleep", "args": ["3600"]},
                            "resources": {"cpu": 50, "memory": 16},
                        }
                    ],
                }
            ],
        }
        c.api("POST", "/v1/jobs", json={"job": spec})
        wait_until(
            lambda: (
                sum(a["client_status"] == "running" for a in c.api("GET", "/v1/allocations")) == 2
            ),
            timeout=30,
            what="2 running allocs",
        )
        bad = c.api("GET", "/v1/allocations")[0]["id"]
        c.stop()
        _corrupt(tmp_path / "dev" / "podium.db", f"/allocs/{bad}")
        c.start()
        status = c.api("GET", "/v1/status")
        assert status["bad_values"] == 1, status
        assert c.proc is not None and c.proc.poll() is None
        events = c.api("GET", "/v1/events", params={"limit": 0})
        told = [e for e in events if e["type"] == "store.bad_value"]
        assert told and f"/allocs/{bad}" in told[0]["message"], told
        # Still a working control plane: the job is whole again (the unreadable copy is
        # replaced) and new work is placed.
        wait_until(
            lambda: (
                sum(
                    a["client_status"] == "running" and a["id"] != bad
                    for a in c.api("GET", "/v1/allocations")
                )
                == 2
            ),
            timeout=30,
            what="the job whole again",
        )
    finally:
        c.stop()
        c.kill_leftovers()
