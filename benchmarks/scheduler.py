"""Scheduling throughput: 5,000 simulated nodes, jobs totalling 100,000 allocs.

Prints, measured in this one run:
  - the pure scheduler's placements/s (reconcile + schedule on a snapshot, no I/O; each
    plan taken into the snapshot in place, as the placement controller does);
  - placements/s committed to the store by the real placement controller (reconcile,
    schedule, plan applier, batched commits overlapping the scheduling), timed from job
    records in the store to allocs seen by the server's watch-fed state cache;
  - with more allocs than one batch (`--batch`, 100,000), e.g. `--allocs 1000000 --nodes
    10000`: the jobs are placed a batch at a time into the store that holds what the
    batches before placed, and each batch prints its committed placements/s beside the
    pure scheduler's for the same jobs (a fuller cluster is harder to place in, for the
    scheduler alone too), this process's RSS (the server's cache, controller and store
    client) and the SQLite writer's, and the SQLite file's size; then the rate of the
    last batch over the first's (`scale_linearity=`), and the cold start: a real
    `podium server` started on that store, timed until its API answers and until it has
    placed a new job on one of the nodes it has never heard from (`cold_start_s=`, and
    `cold_start_1m_s=` at a million allocs), with its RSS once loaded;
  - the store's commit rate for the same alloc rows (keys and values, in commit order)
    in batches of 1,000, and SQLite's own (the sqlite3 module alone, same settings: the
    ceiling), and SQLite's for the same values under random uuid4 keys (what ids that
    scatter a batch over the B-tree would cost);
and the longest the event loop was held while the committed run placed, and in a later
round on the full cluster (a task that asks to wake every 5 ms notes the CPU time the
loop's thread spent between two of its turns, and how late it woke): the loop that runs
the scheduler also renews the leader's lease and takes heartbeats, so it must never be
held for long. Then `max_loop_stall_ms=N` (the CPU figure; target < 100) and, last,
`placements_per_s=N` (committed, over all batches).

Anchors: Nomad's C1M placed 1,000,000 containers on 5,000 hosts in under 5 minutes
(3,750/s, 5 servers) and C2M 2,000,000 on 6,100 hosts in 22 minutes; Kubernetes
supports clusters up to 5,000 nodes and 150,000 pods.

`--store etcd` starts a local single-member etcd (tests/support/etcd.py, data in the same
temporary folder as the SQLite file, so both fsync to the same disk), runs the committed
benchmark on SQLite and then on etcd, and prints as its last line `etcd_vs_sqlite=R`,
etcd's committed placements/s over SQLite's.

`--acl` measures what trust costs: the same jobs submitted through a real server's HTTP
API (eight at a time) and placed by its own controllers, once with TLS and ACL off
(`--insecure`) and once with both on (mutual TLS, a client token whose policy allows the
namespace, the audit trail's events), timed from the first submission to the last alloc
committed, three times each, alternating (off first in the first and third round, on
first in the second). Each run prints its placements per second of wall time and per
CPU second (this process, server and clients, and its SQLite writer process): on the
shared 2-core machine others' load halves a wall-time rate from one run to the next,
while the CPU spent per placement holds. Last line `acl_overhead=R`: the best
placements per CPU second on / the best off (target >= 0.95); the wall-time ratio is
printed above it.

The nodes are records in the store (no agents, no processes): the simulated nodes
the standards allow for scale benchmarks. Run: .venv/bin/python benchmarks/scheduler.py
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import psutil

from podium.model.types import Job, Node
from podium.runtime import heap
from podium.runtime.clock import FakeClock
from podium.scheduler import ClusterSnapshot, reconcile, schedule_into
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
GC_PAUSES: dict[int, float] = {}  # generation -> the longest collection of it (s)


def gc_timer() -> None:
    """Note the longest collection of each generation (a full one walks every object
    the collector tracks: part of what can hold the event loop)."""
    started = [0.0]

    def note(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            took = time.perf_counter() - started[0]
            gen = info["generation"]
            GC_PAUSES[gen] = max(GC_PAUSES.get(gen, 0.0), took)

    gc.callbacks.append(note)


def batches_of(jobs: list[Job], size: int) -> list[list[Job]]:
    """The jobs in order, cut into runs of about `size` allocs (a job is never split)."""
    out: list[list[Job]] = [[]]
    total = 0
    for job in jobs:
        if total >= size:
            out.append([])
            total = 0
        out[-1].append(job)
        total += sum(g.count for g in job.groups)
    return out


def pure(nodes: list[Node], batches: list[list[Job]]) -> list[tuple[int, float]]:
    """Placements and seconds of each batch, on one snapshot that keeps them all (and
    the CPU seconds of each, in PURE_CPU)."""
    snap = ClusterSnapshot.build(nodes, [])
    node_map = {n.id: n for n in nodes}
    out = []
    for jobs in batches:
        placed = 0
        t0, cpu0 = time.perf_counter(), time.process_time()
        for job in jobs:
            rec = reconcile(job, [], node_map, now=NOW)
            plan = schedule_into(snap, job, rec, eval_id=f"pure-{job.name}", now=NOW)
            snap.index_adopted(len(plan.placements))  # as the controller does, in slices
            placed += len(plan.placements)
        out.append((placed, time.perf_counter() - t0))
        PURE_CPU.append(time.process_time() - cpu0)
    return out


async def load_nodes(store: Store, nodes: list[Node]) -> None:
    enc = msgspec.json.Encoder()
    for i in range(0, len(nodes), 1000):
        await store.txn_many(
            [([], [Put(keys.node(n.id), enc.encode(n))]) for n in nodes[i : i + 1000]]
        )


Rows = list[tuple[str, bytes]]  # (key, value) of each alloc committed, in commit order


@dataclass
class Batch:
    """One batch committed: what it placed, how fast, and what the process held after."""

    placed: int
    secs: float
    total: int  # allocs in the store after it
    rss: int  # bytes: this process (the server's cache, controller and store client)
    writer_rss: int  # bytes: the SQLite writer process (0 on other stores)
    file_size: int  # bytes: the SQLite file and its WAL (0 on other stores)


def rss_of(proc: psutil.Process) -> int:
    try:
        return int(proc.memory_info().rss)
    except psutil.Error:
        return 0


def writer_rss() -> int:
    """The SQLite writer process's RSS (a child of this one), or 0."""
    return sum(rss_of(c) for c in psutil.Process().children(recursive=True))


def file_size(url: str) -> int:
    if not url.startswith("sqlite:///"):
        return 0
    path = url[len("sqlite:///") - 1 :]
    return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))


async def committed(
    store: Store,
    nodes: list[Node],
    batches: list[list[Job]],
    *,
    url: str = "",
    metrics: ServerMetrics | None = None,
) -> tuple[list[Batch], int, Rows]:
    """The placement controller's round over each batch of jobs, from job records in the
    store to allocs committed and seen by the server's watch-fed cache; each batch goes
    into the store that holds the batches before it. Returns the batches, the allocs not
    placed, and the first batch's rows."""
    await load_nodes(store, nodes)
    GC_PAUSES.clear()  # those of the committed rounds only
    enc = msgspec.json.Encoder()
    state = ClusterState(store)
    feed = asyncio.create_task(state.run())
    try:
        await state.ready.wait()
        controller: PlacementController | None = None
        done: list[Batch] = []
        longest = [0.0, 0.0]
        for jobs in batches:
            rev = 0
            for i in range(0, len(jobs), 1000):
                res = await store.txn_many(
                    [([], [Put(keys.job(j.namespace, j.name), enc.encode(j))])
                     for j in jobs[i : i + 1000]]
                )  # fmt: skip
                rev = max(rev, *(r.revision for r in res))
            await state.wait_for(rev, timeout=60)
            # One round over the batch's jobs; within it the controller commits every
            # `commit_every` placements and schedules on while that commit is written.
            settings = PlacementSettings(batch_jobs=len(jobs), commit_every=BATCH)
            if controller is None:
                controller = PlacementController(state, FakeClock(NOW), settings, metrics=metrics)
            controller.settings = settings
            before = len(state.allocs)
            monitor = asyncio.create_task(watch_loop(longest))
            await asyncio.sleep(0)  # armed before the round starts
            try:
                t0, cpu0 = time.perf_counter(), time.process_time()
                await controller.evaluate([j.key for j in jobs])  # returns once the cache has all
                elapsed = time.perf_counter() - t0
                CPU.append(time.process_time() - cpu0)
            finally:
                monitor.cancel()
            total = len(state.allocs)
            done.append(
                Batch(total - before, elapsed, total, rss_of(psutil.Process()), writer_rss(),
                      file_size(url))
            )  # fmt: skip
            if len(batches) > 1:
                print_batch(len(done), done[-1])
        assert controller is not None
        placed = len(state.allocs)
        print(
            "the longest collections (generation 0, 1, 2): "
            + ", ".join(f"{GC_PAUSES.get(g, 0) * 1000:.0f} ms" for g in range(3))
        )
        print(
            f"the rounds over every job: the event loop was held {longest[0] * 1000:.0f} ms "
            f"at most ({longest[1] * 1000:.0f} ms late at most, wall time)"
        )
        requested = sum(g.count for jobs in batches for j in jobs for g in j.groups)
        first = done[0].placed
        rows = [
            (keys.alloc(a.id), enc.encode(a))
            for a in itertools.islice(state.allocs.values(), first)
        ]
        # A round on the full cluster: one job grows by 10 copies, and the round looks at
        # every alloc there is (the snapshot of the cluster it schedules on).
        job = batches[0][0]
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
        return done, requested - placed, rows
    finally:
        feed.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feed


PURE: list[tuple[int, float]] = []  # the pure scheduler's (placed, seconds) per batch
PURE_CPU: list[float] = []  # and its CPU seconds per batch


def print_batch(n: int, b: Batch) -> None:
    rate = b.placed / b.secs
    pure_rate = PURE[n - 1][0] / PURE[n - 1][1] if len(PURE) >= n else 0.0
    print(
        f"  batch {n:2d}: {b.total - b.placed:>9,} -> {b.total:>9,} allocs: "
        f"{rate:>7,.0f} placements/s committed ({pure_rate:>7,.0f}/s pure, "
        f"{rate / pure_rate if pure_rate else 0:.2f} of it; CPU {CPU[-1]:.1f}s, pure "
        f"{PURE_CPU[n - 1] if len(PURE_CPU) >= n else 0:.1f}s); "
        f"RSS {b.rss / 2**20:,.0f} MiB "
        f"+ writer {b.writer_rss / 2**20:,.0f} MiB; file {b.file_size / 2**20:,.0f} MiB",
        flush=True,
    )


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
    kind: str, tmp: str, nodes: list[Node], batches: list[list[Job]]
) -> tuple[float, Rows, list[Batch], str]:
    url = store_url(kind, tmp, f"committed-{kind}")
    store = open_store(url)
    start = getattr(store, "start", None)
    if start is not None:
        await start()
    try:
        done, rejected, rows = await committed(store, nodes, batches, url=url)
    finally:
        await store.close()
    placed = sum(b.placed for b in done)
    secs = sum(b.secs for b in done)
    rate = placed / secs
    print(
        f"committed ({kind}): {placed} placements in {secs:.2f}s = "
        f"{rate:,.0f} placements/s ({rejected} not placed; this process used "
        f"{sum(CPU[-len(done) :]):.2f}s of CPU)"
    )
    return rate, rows, done, url


async def main() -> None:
    heap.tune()  # the collector's settings of a podium server, for both measurements
    gc_timer()
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--nodes", type=int, default=5000)
    ap.add_argument("--allocs", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=100_000, help="allocs placed per round")
    ap.add_argument("--store", default="sqlite")
    ap.add_argument(
        "--no-cold-start", action="store_true", help="skip starting a server on the store"
    )
    ap.add_argument("--acl", action="store_true", help="through the API: ACL+mTLS off vs on")
    args = ap.parse_args()
    nodes = simulated_cluster(args.nodes, seed=1)
    jobs = simulated_jobs(args.allocs, seed=2)
    batches = batches_of(jobs, args.batch)
    print(
        f"cluster: {len(nodes)} simulated nodes; {len(jobs)} jobs, "
        f"{sum(g.count for j in jobs for g in j.groups)} allocs requested"
        + (f", in {len(batches)} batches" if len(batches) > 1 else "")
    )

    if args.acl:
        await acl_overhead(nodes, jobs)
        return
    PURE[:] = pure(nodes, batches)
    n, secs = sum(p for p, _ in PURE), sum(t for _, t in PURE)
    print(f"pure scheduler:      {n} placements in {secs:.2f}s = {n / secs:,.0f} placements/s")
    cold: float | None = None
    with tempfile.TemporaryDirectory(prefix="podium-bench-") as tmp:
        etcd = None
        if args.store == "etcd":
            global ETCD_URL
            sys.path.insert(0, TESTS)
            from support.etcd import start_etcd_cluster

            etcd = start_etcd_cluster(data_dir=Path(tmp) / "etcd")
            ETCD_URL = etcd.url()
            sqlite_rate, *_ = await committed_on("sqlite", tmp, nodes, batches)
        try:
            rate, rows, done, url = await committed_on(args.store, tmp, nodes, batches)
            if len(done) > 1:
                print_curve(done)
            await raw_on(args.store, tmp, rows, done[0].placed / done[0].secs)
            if args.store == "sqlite" and not args.no_cold_start:
                cold = cold_start(url, tmp, done[-1].total, nodes)
        finally:
            if etcd is not None:
                etcd.stop()
    print(f"max_loop_stall_ms={STALLS[-1] * 1000:.0f}")
    if cold is not None:
        print(f"cold_start_s={cold:.1f}")
        if done[-1].total >= 1_000_000:
            print(f"cold_start_1m_s={cold:.1f}")
    if len(done) > 1:
        print(f"scale_linearity={linearity(done):.2f}")
    print(f"placements_per_s={rate:.0f}")
    if args.store == "etcd":
        print(f"etcd_vs_sqlite={rate / sqlite_rate:.2f}")


def linearity(done: list[Batch]) -> float:
    """Committed placements/s of the last batch over the first's."""
    first, last = done[0], done[-1]
    return (last.placed / last.secs) / (first.placed / first.secs)


def print_curve(done: list[Batch]) -> None:
    """What each 100,000 allocs cost in memory, and the rate's trend."""
    first, last = done[0], done[-1]
    per = 100_000 / max(1, last.total - first.total)
    grew = (last.rss - first.rss) * per
    wgrew = (last.writer_rss - first.writer_rss) * per
    fgrew = (last.file_size - first.file_size) * per
    print(
        f"per 100,000 allocs: this process's RSS +{grew / 2**20:,.0f} MiB, the writer's "
        f"+{wgrew / 2**20:,.0f} MiB, the SQLite file +{fgrew / 2**20:,.0f} MiB; at "
        f"{last.total:,} allocs: RSS {last.rss / 2**20:,.0f} MiB "
        f"({last.rss / last.total:,.0f} B per alloc), file {last.file_size / 2**20:,.0f} MiB"
    )
    pure_ratio = (PURE[-1][0] / PURE[-1][1]) / (PURE[0][0] / PURE[0][1])
    print(
        f"last batch over first: committed {linearity(done):.2f}, the pure scheduler "
        f"{pure_ratio:.2f} (a fuller cluster has fewer nodes with room)"
    )


def cold_start(url: str, tmp: str, total: int, nodes: list[Node]) -> float:
    """Start `podium server` on the store the batches filled; time until the API answers
    and until a new job is placed (on nodes no agent speaks for: the server must give
    them a grace, not declare them down)."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    addr = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "podium.cli.main", "server", "--store", url,
           "--addr", f"127.0.0.1:{port}", "--dns-addr", "off",
           "--log-level", "warning", "--insecure"]  # fmt: skip
    log = open(os.path.join(tmp, "server.log"), "wb")  # noqa: SIM115
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        answered = placed = 0.0
        spec = {
            "name": "cold-start-probe",
            "groups": [{"name": "g", "count": 1, "tasks": [{
                "name": "t", "driver": "process", "config": {"command": "true"},
                "resources": {"cpu": 10, "memory": 16}}]}],
        }  # fmt: skip
        with httpx.Client(base_url=addr, timeout=30) as http:
            deadline = t0 + 300
            while time.perf_counter() < deadline:
                if proc.poll() is not None:
                    raise SystemExit(f"podium server exited {proc.returncode}; see {log.name}")
                try:
                    http.get("/v1/status").raise_for_status()
                except httpx.HTTPError:
                    time.sleep(0.02)
                    continue
                if not answered:
                    answered = time.perf_counter() - t0
                    http.post("/v1/jobs", json={"job": spec}).raise_for_status()
                allocs = http.get("/v1/job/cold-start-probe").json().get("allocations", [])
                if allocs:
                    placed = time.perf_counter() - t0
                    break
                time.sleep(0.02)
            else:
                raise SystemExit("the server placed nothing within 300 s")
            held = rss_of(psutil.Process(proc.pid))
            writer = sum(rss_of(c) for c in psutil.Process(proc.pid).children(recursive=True))
            down = sum(1 for n in http.get("/v1/nodes").json() if n["status"] == "down")
        print(
            f"cold start on {total:,} allocs: `podium server` answered after {answered:.1f}s, "
            f"placed a new job after {placed:.1f}s; its RSS {held / 2**20:,.0f} MiB + writer "
            f"{writer / 2**20:,.0f} MiB; nodes down: {down} "
            f"(of {len(nodes)}, {sum(n.status == 'down' for n in nodes)} down when stored)"
        )
        return placed
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


async def through_api(
    tmp: str, nodes: list[Node], jobs: list[Job], *, secure: bool
) -> tuple[float, float]:
    """Placements/s of jobs submitted to a real server (TLS and ACL on or off), from the
    first submission to the last alloc its state cache saw committed."""
    import httpx

    from podium.server.runtime import Server, ServerConfig, TLSSettings
    from podium.tls import pki
    from podium.tls.context import NamedTransport, client_context

    name = "secure" if secure else "plain"
    url = store_url("sqlite", tmp, f"api-{name}")
    store = open_store(url)
    await load_nodes(store, nodes)
    await store.close()
    server = Server(
        ServerConfig(
            store_url=url,
            port=0,
            heartbeat_ttl=3600.0,  # simulated nodes send no heartbeats
            tls=TLSSettings(os.path.join(tmp, name)) if secure else None,
            acl=secure,
            audit_path=os.path.join(tmp, f"audit-{name}.log"),
        )
    )
    run = asyncio.create_task(server.run())
    await server.started.wait()
    ctx = server.ctx
    assert ctx is not None
    headers: dict[str, str] = {}
    transport = None
    if secure:
        assert ctx.acl is not None and ctx.authority is not None
        await ctx.acl.apply_policy("bench", 'namespace "default" { policy = "write" }', "")
        _, secret = await ctx.acl.create_token("bench", "client", ["bench"], ttl=0, now=NOW)
        headers["x-podium-token"] = secret
        ssl_ctx = client_context(ctx.authority.cli_creds, ca=ctx.authority.cli_creds.ca)
        transport = NamedTransport(httpx.AsyncHTTPTransport(verify=ssl_ctx), pki.SERVER_NAME)
    enc = msgspec.json.Encoder()
    bodies = [enc.encode({"job": submittable(j)}) for j in jobs]
    headers["content-type"] = "application/json"
    state = ctx.state
    queue = list(bodies)
    try:
        async with httpx.AsyncClient(transport=transport, timeout=60) as http:

            async def submitter() -> None:
                while queue:
                    body = queue.pop()
                    r = await http.post(f"{server.address}/v1/jobs", content=body, headers=headers)
                    assert r.status_code == 200, r.text

            t0, cpu0 = time.perf_counter(), cpu_of_tree()
            await asyncio.gather(*(submitter() for _ in range(8)))
            count, last, cpu = len(state.allocs), time.perf_counter(), cpu_of_tree()
            while time.perf_counter() - last < 2.0:  # placed: no new alloc for 2 s
                await asyncio.sleep(0.05)
                if len(state.allocs) != count:
                    count, last, cpu = len(state.allocs), time.perf_counter(), cpu_of_tree()
            secs, cpu_secs = last - t0, cpu - cpu0
    finally:
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run
    rate, per_cpu = count / secs, count / cpu_secs
    what = "mutual TLS + ACL token + audit events" if secure else "plain HTTP, no ACL"
    print(
        f"through the API ({what}): {count} placements in {secs:.2f}s = {rate:,.0f}/s; "
        f"{cpu_secs:.2f} CPU s = {per_cpu:,.0f} per CPU second"
    )
    return rate, per_cpu


def cpu_of_tree() -> float:
    """CPU seconds this process and its children (the SQLite writer) have used so far."""
    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += sum(child.cpu_times()[:2])
    return total


def submittable(job: Job) -> dict[str, object]:
    """A simulated job as a user submits it: its tasks say what they run (never run here)."""
    raw: dict[str, Any] = msgspec.to_builtins(job)
    for g in raw["groups"]:
        for t in g["tasks"]:
            t["config"] = {"image": "busybox"} if t["driver"] == "docker" else {"command": "true"}
    return raw


async def acl_overhead(nodes: list[Node], jobs: list[Job], *, rounds: int = 3) -> None:
    """Off and on alternate, `rounds` times each; the best of each is compared (on a shared
    machine the best run is the one least disturbed by others)."""
    off: list[tuple[float, float]] = []  # (placements/s, placements per CPU second)
    on: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="podium-bench-") as tmp:
        for i in range(rounds):
            pair = [(False, off), (True, on)]
            for secure, rates in pair if i % 2 == 0 else pair[::-1]:  # neither always first
                d = os.path.join(tmp, f"{i}-{secure}")
                os.makedirs(d)
                rates.append(await through_api(d, nodes, jobs, secure=secure))
    wall_off, wall_on = max(r[0] for r in off), max(r[0] for r in on)
    cpu_off, cpu_on = max(r[1] for r in off), max(r[1] for r in on)
    print(f"best of {rounds}, wall time: off {wall_off:,.0f}/s, on {wall_on:,.0f}/s "
          f"(ratio {wall_on / wall_off:.2f})")  # fmt: skip
    print(f"best of {rounds}, per CPU second: off {cpu_off:,.0f}, on {cpu_on:,.0f}")
    print(f"acl_overhead={cpu_on / cpu_off:.2f}")


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
