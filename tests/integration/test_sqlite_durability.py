"""An acknowledged write to SQLiteStore survives SIGKILL of the process at any moment.

A child process writes keys as fast as it can (single puts from several tasks, so
commits are grouped, and small txn_many batches) and prints each key only after
its write returned. We kill it at a random moment, reopen the file and check that
every printed key is there with its value, that the file is sound, and that the
revision carries on from where it stopped.
"""

from __future__ import annotations

import asyncio
import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from podium.store.sqlite import SQLiteStore

pytestmark = pytest.mark.integration

WRITER = """
import asyncio, sys
from podium.store.base import Put
from podium.store.sqlite import SQLiteStore

async def main(path: str, round_: int) -> None:
    store = SQLiteStore(path)
    print("ready", await store.revision(), flush=True)
    limit, deadline = 20_000, asyncio.get_running_loop().time() + 10

    def ack(key: str, rev: int) -> None:
        sys.stdout.write(f"{key} {rev}\\n")
        sys.stdout.flush()

    async def singles(lane: int) -> None:
        for i in range(lane, limit, 8):
            if asyncio.get_running_loop().time() > deadline:
                return
            key = f"/dur/{round_}/s{i:06d}"
            ack(key, await store.put(key, f"{round_}:{i}".encode()))

    async def batches() -> None:
        for i in range(0, limit, 10):
            if asyncio.get_running_loop().time() > deadline:
                return
            keys = [f"/dur/{round_}/b{j:06d}" for j in range(i, i + 10)]
            results = await store.txn_many(
                [([], [Put(k, f"{round_}:{k}".encode())]) for k in keys]
            )
            for key, res in zip(keys, results):
                ack(key, res.revision)

    await asyncio.gather(*(singles(lane) for lane in range(8)), batches())
    await store.close()

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def expected_value(key: str) -> bytes:
    round_, name = key.split("/")[2:4]
    return f"{round_}:{int(name[1:])}".encode() if name[0] == "s" else f"{round_}:{key}".encode()


def run_and_kill(
    script: Path, db: Path, round_: int, rng: random.Random
) -> tuple[dict[str, int], int]:
    """Start the writer, SIGKILL it after a random 0.3-1.5 s of writing; return the
    acknowledged keys with their revisions, and the revision the child started at."""
    child = subprocess.Popen(
        [sys.executable, str(script), str(db), str(round_)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=script.parent,
    )
    assert child.stdout is not None
    out = b""
    try:
        # Wait for the store to be open before the clock starts.
        deadline = time.monotonic() + 30
        while b"\n" not in out:
            assert time.monotonic() < deadline, "writer did not start"
            assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
            if select.select([child.stdout], [], [], 0.1)[0]:
                out += os.read(child.stdout.fileno(), 65536)
        kill_at = time.monotonic() + rng.uniform(0.3, 1.5)
        while time.monotonic() < kill_at:
            if select.select([child.stdout], [], [], 0.05)[0]:
                out += os.read(child.stdout.fileno(), 65536)
        child.send_signal(signal.SIGKILL)
        rest, err = child.communicate(timeout=30)  # what it printed before it died
        out += rest
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL, f"writer ended on its own: {err.decode()}"
    lines = out.decode().split("\n")
    if not out.endswith(b"\n"):
        lines.pop()  # a line cut by the kill was never a whole acknowledgement
    first, *acks = [line for line in lines if line]
    start_rev = int(first.split()[1])
    acked = {key: int(rev) for key, rev in (line.split() for line in acks)}
    return acked, start_rev


async def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    db = tmp_path / "podium.db"
    rng = random.Random()
    everything: dict[str, int] = {}
    last_rev = 0
    for round_ in range(3):
        acked, start_rev = await asyncio.to_thread(run_and_kill, script, db, round_, rng)
        assert start_rev >= last_rev  # the child saw what the previous rounds left
        assert len(acked) > 50, "the writer barely wrote; the kill proved nothing"
        everything.update(acked)
        print(f"round {round_}: {len(acked)} writes acknowledged before the kill")

        with sqlite3.connect(db) as check:  # the file is sound after the kill
            assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)

        store = SQLiteStore(db)
        try:
            kvs, _ = await store.list("/dur/")
            stored = {kv.key: kv for kv in kvs}
            lost = []
            for key, rev in everything.items():
                kv = stored.get(key)
                if kv is None or kv.value != expected_value(key) or kv.mod_rev != rev:
                    lost.append((key, rev, kv))
            assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[:3]}"
            top = max(everything.values())
            assert await store.revision() >= top
            new_rev = await store.put(f"/after/{round_}", b"reopened")
            assert new_rev > top
            last_rev = new_rev
            # The change log survived too: a watch can replay this round's writes.
            events = store.watch(f"/dur/{round_}/", start_rev=start_rev + 1)
            unseen = set(acked)
            async with asyncio.timeout(10):
                while unseen:
                    unseen.discard((await anext(events)).kv.key)
        finally:
            await store.close()
