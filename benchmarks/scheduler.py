"""Scheduling throughput: 5,000 simulated nodes, jobs totalling 100,000 allocs.

Prints, measured in this one run:
  - the pure scheduler's placements/s (reconcile + schedule on a snapshot, no I/O);
  - placements/s committed to the store by the real placement controller (reconcile,
    schedule, plan applier, batched commits overlapping the scheduling), timed from job
    records in the store to allocs seen by the server's watch-fed state cache;
  - the store's commit rate for the same alloc rows (keys and values, in commit order)
    in batches of 1,000, and SQLite's own (the sqlite3 module alone, same settings: the
    ceiling), and SQLite's for the same values under random uuid4 keys (what ids that
    scatter a batch over the B-tree would cost);
and the longest the event loop was held while the committed run placed, and in a later
round on the full cluster (a task that asks to wake every 5 ms notes the CPU time the
loop's thread spent between two of its turns, and how late it woke): the loop that runs
the scheduler also renews the leader's lease and takes heartbeats, so it must never be
held for long. Then `max_loop_stall_ms=N` (the CPU figure; target < 100) and, last,
`placements_per_s=N` (committed).

`--store etcd` starts a local single-member etcd (tests/support/etcd.py, data in the same
temporary folder as the SQLite file, so both fsync to the same disk), runs the committed
benchmark on SQLite and then on etcd, and prints as its last line `etcd_vs_sqlite=R`,
etcd's committed placements/s over SQLite's.

The nodes are records in the store (no agents, no processes): the simulated nodes
the standards allow for scale benchmarks. Run: .venv/bin/python benchmarks/scheduler.py
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path

import msgspec

from podium.model.types import Job, Node
from podium.runtime import heap
from podium.runtime.clock import FakeClock
from podium.scheduler import ClusterSnapshot, reconcile, schedule
from podium.scheduler.simulate import simulated_cluster, simulated_jobs
from podium.server.controllers.placement import PlacementController, PlacementSettings
from podium.server.metrics import ServerMetrics
from podium.server.state import ClusterState
from podium.store import keys, open_store
from podium.store.base import Put, Store

NOW = 1_700_000_000.0
CPU: list[float] = []  # this process's CPU seconds in each committed run
STALLS: list[float] = []  # the longest the event loop was held (CPU s) in each committed run
TICK = 0.005  # how often the stall monitor asks to wake


async def watch_loop(longest: list[float]) -> None:
    """Note how long the event loop was held between two of this task's turns: in
    longest[0] the CPU time this thread spent meanwhile (podium's own work: a process
    the OS did not run in that time is not stalled by podium), in longest[1] how much
    later than asked the task woke (wall time, which a busy machine adds to)."""
    loop = asyncio.get_running_loop()
    while True:
        asked, cpu = loop.time() + TICK, time.thread_time()
        await asyncio.sleep(TICK)
        longest[0] = max(longest[0], time.thread_time() - cpu)
        longest[1] = max(longest[1], loop.time() - asked)


BATCH = int(os.environ.get("PODIUM_BENCH_BATCH", "2000"))


def pure(nodes: list[Node], jobs: list[Job]) -> tuple[int, float]:
    snap = ClusterSnapshot.build(nodes, [])
    node_map = {n.id: n for n in nodes}
    placed = 0
    t0 = time.perf_counter()
    for job in jobs:
        rec = reconcile(job, [], node_map, now=NOW)
        plan = schedule(snap, job, rec, eval_id=f"pure-{job.name}", now=NOW)
        snap.apply(plan)
        placed += len(plan.placements)
    return placed, time.perf_counter() - t0


async def load_nodes(store: Store, nodes: list[Node]) -> None:
    enc = msgspec.json.Encoder()
    for i in range(0, len(nodes), 1000):
        await store.txn_many(
            [([], [Put(keys.node(n.id), enc.encode(n))]) for n in nodes[i : i + 1000]]
        )


Rows = list[tuple[str, bytes]]  # (key, value) of each alloc committed, in commit order


async def committed(
    store: Store, nodes: list[Node], jobs: list[Job], *, metrics: ServerMetrics | None = None
) -> tuple[int, float, int, Rows]:
    """The placement controller's round over every job, from job records in the store to
    allocs committed and seen by the server's watch-fed cache."""
    await load_nodes(store, nodes)
    enc = msgspec.json.Encoder()
    await store.txn_many([([], [Put(keys.job(j.namespace, j.name), enc.encode(j))]) for j in jobs])
    state = ClusterState(store)
    feed = asyncio.create_task(state.run())
    try:
        await state.ready.wait()
        # One round over all jobs; within it the controller commits every `commit_every`
        # placements and schedules on while that commit is written.
        settings = PlacementSettings(batch_jobs=len(jobs), commit_every=BATCH)
        controller = PlacementController(state, FakeClock(NOW), settings, metrics=metrics)
        longest = [0.0, 0.0]
        monitor = asyncio.create_task(watch_loop(longest))
        await asyncio.sleep(0)  # armed before the round starts
        try:
            t0, cpu0 = time.perf_counter(), time.process_time()
            await controller.evaluate([j.key for j in jobs])  # returns once the cache has all
            elapsed = time.perf_counter() - t0
            CPU.append(time.process_time() - cpu0)
        finally:
            monitor.cancel()
        placed = len(state.allocs)
        print(
            f"the round over every job: the event loop was held {longest[0] * 1000:.0f} ms "
            f"at most ({longest[1] * 1000:.0f} ms late at most, wall time)"
        )
        requested = sum(g.count for j in jobs for g in j.groups)
        rows = [(keys.alloc(a.id), enc.encode(a)) for a in state.allocs.values()]
        # A round on the full cluster: one job grows by 10 copies, and the round looks at
        # every alloc there is (the snapshot of the cluster it schedules on).
        job = jobs[0]
        grown = msgspec.structs.replace(
            job, groups=[msgspec.structs.replace(job.groups[0], count=job.groups[0].count + 10)]
        )
        await state.wait_for(await store.put(keys.job(job.namespace, job.name), enc.encode(grown)))
        later = [0.0, 0.0]
        monitor = asyncio.create_task(watch_loop(later))
        await asyncio.sleep(0)
        try:
            t1 = time.perf_counter()
            await controller.evaluate([job.key])
            second = time.perf_counter() - t1
        finally:
            monitor.cancel()
        print(
            f"a later round ({len(state.allocs) - placed} placed among {placed} allocs) took "
            f"{second * 1000:.0f} ms; the event loop was held {later[0] * 1000:.0f} ms at most "
            f"({later[1] * 1000:.0f} ms late at most, wall time)"
        )
        STALLS.append(max(longest[0], later[0]))
        return placed, elapsed, requested - placed, rows
    finally:
        feed.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feed


async def raw_commit(store: Store, rows: Rows) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(rows), 1000):
        await store.txn_many([([], [Put(k, v)]) for k, v in rows[i : i + 1000]])
    return len(rows) / (time.perf_counter() - t0)


ETCD_URL = ""  # set by main() when --store etcd started one
TESTS = str(Path(__file__).resolve().parents[1] / "tests")  # tests/support/etcd.py starts it


def store_url(kind: str, tmp: str, name: str) -> str:
    if kind == "sqlite":
        return f"sqlite:///{os.path.join(tmp, name)}.db"
    if kind == "memory":
        return "memory://"
    if kind == "etcd" and ETCD_URL:
        return f"{ETCD_URL}/bench-{name}"
    raise SystemExit(f"--store: expected sqlite, memory or etcd, got {kind!r}")


async def committed_on(
    kind: str, tmp: str, nodes: list[Node], jobs: list[Job]
) -> tuple[float, Rows]:
    store = open_store(store_url(kind, tmp, f"committed-{kind}"))
    start = getattr(store, "start", None)
    if start is not None:
        await start()
    try:
        placed, secs, rejected, rows = await committed(store, nodes, jobs)
    finally:
        await store.close()
    rate = placed / secs
    print(
        f"committed ({kind}): {placed} placements in {secs:.2f}s = "
        f"{rate:,.0f} placements/s ({rejected} not placed; this process used "
        f"{CPU[-1]:.2f}s of CPU)"
    )
    return rate, rows


async def main() -> None:
    heap.tune()  # the collector's settings of a podium server, for both measurements
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--nodes", type=int, default=5000)
    ap.add_argument("--allocs", type=int, default=100_000)
    ap.add_argument("--store", default="sqlite")
    args = ap.parse_args()
    nodes = simulated_cluster(args.nodes, seed=1)
    jobs = simulated_jobs(args.allocs, seed=2)
    print(
        f"cluster: {len(nodes)} simulated nodes; {len(jobs)} jobs, "
        f"{sum(g.count for j in jobs for g in j.groups)} allocs requested"
    )

    n, secs = pure(nodes, jobs)
    print(f"pure scheduler:      {n} placements in {secs:.2f}s = {n / secs:,.0f} placements/s")

    with tempfile.TemporaryDirectory(prefix="podium-bench-") as tmp:
        etcd = None
        if args.store == "etcd":
            global ETCD_URL
            sys.path.insert(0, TESTS)
            from support.etcd import start_etcd_cluster

            etcd = start_etcd_cluster(data_dir=Path(tmp) / "etcd")
            ETCD_URL = etcd.url()
            sqlite_rate, _ = await committed_on("sqlite", tmp, nodes, jobs)
        try:
            rate, rows = await committed_on(args.store, tmp, nodes, jobs)
            await raw_on(args.store, tmp, rows, rate)
        finally:
            if etcd is not None:
                etcd.stop()
    print(f"max_loop_stall_ms={STALLS[-1] * 1000:.0f}")
    print(f"placements_per_s={rate:.0f}")
    if args.store == "etcd":
        print(f"etcd_vs_sqlite={rate / sqlite_rate:.2f}")


async def raw_on(kind: str, tmp: str, rows: Rows, rate: float) -> None:
    """The same alloc rows (keys and values, in commit order) written without the
    scheduler: through the store, and by SQLite alone."""
    store = open_store(store_url(kind, tmp, "raw"))
    start = getattr(store, "start", None)
    if start is not None:
        await start()
    # etcd runs a txn_many's entries one round trip each: 10,000 rows measure it well enough.
    sample = rows[:10_000] if kind == "etcd" else rows
    try:
        ceiling = await raw_commit(store, sample)
    finally:
        await store.close()
    if kind == "etcd":  # not a ceiling there: the applier puts 1,000 allocs in one txn
        print(f"raw etcd commits:  {ceiling:,.0f} txns/s, one alloc row each, in sequence")
        return
    print(
        f"store commits:     {ceiling:,.0f} alloc rows/s through the store (txn_many of "
        "1,000 unguarded puts, one batch at a time)"
    )
    if kind == "sqlite":
        bare = bare_sqlite(os.path.join(tmp, "bare.db"), rows)
        print(
            f"raw sqlite:        {bare:,.0f} alloc rows/s (sqlite3 alone, WAL, synchronous "
            f"FULL, the same rows 1,000 per commit: the ceiling); committed placements "
            f"reach {rate / bare:.0%} of it"
        )
        value = rows[0][1]
        scattered = [(f"/allocs/{uuid.uuid4()}", value) for _ in rows]
        other = bare_sqlite(os.path.join(tmp, "scattered.db"), scattered)
        print(
            f"raw sqlite, uuid4 keys: {other:,.0f} alloc rows/s (the same values under "
            "random keys: what scattered ids would cost)"
        )


def bare_sqlite(path: str, rows: Rows) -> float:
    """SQLite's own commit rate for these rows: no store, no judging, no log."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA page_size = 8192")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, rev INTEGER)")
    t0 = time.perf_counter()
    for i in range(0, len(rows), 1000):
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO kv VALUES (?, ?, ?)", [(k, v, i) for k, v in rows[i : i + 1000]]
        )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return len(rows) / elapsed


if __name__ == "__main__":
    asyncio.run(main())
