"""How many nodes one server keeps track of, and its API while the cluster churns.

One real `podium server` (SQLite) and simulated agents in worker processes of their own
(`--workers`, 2): each agent registers, heartbeats when the server says (the TTL and the
next beat come with every answer: nodes.HeartbeatPolicy) and keeps a blocking query on
its allocs open (`wait` 30 s, as the agent does). No tasks run: the agents are the
simulated nodes the standards allow for scale benchmarks; the protocol is the agent's.

  ramp   nodes are added `--step` (2,000) at a time, registrations paced at 500/s; each
         step is held `--hold` seconds (60), and prints the heartbeat p50/p99/max, the
         registrations' p99, the blocking queries answered, the server's CPU and RSS, the
         TTL granted, the nodes marked down, and beside them the p99 of a probe (GET
         /v1/status every 100 ms: the server's own lag) and the simulated agents' CPU
         (their own lag shows in the heartbeats' latency too). The ramp stops at
         `--max-nodes` (14,000), or once heartbeat p99 passes 200 ms or a node is marked
         down while its agent beats (a false down): the largest step held is
         `nodes_held`.
  churn  on every node the ramp registered (the test is at 10,000 or more): jobs of
         `--allocs` (100,000) allocs in all are placed, then for `--churn` seconds (60)
         a bounded client makes 20 mutations a second (job registers, scales, stops)
         and 50 readers: 25 read a job's status
         (`--read-rate`, 2 a second each: 50/s, each a job of 1,000 allocs), 25 loop on
         a node's allocs and then a blocking query on them (5 s); p50/p99 per route
         class, and `api_p99_ms` for the mutations.

Targets: nodes_held >= 10,000 on a 2-core machine; mutation p99 <= 100 ms.
Anchors: Kubernetes supports 5,000 nodes and 150,000 pods, with an SLO of p99 <= 1 s for
mutating API calls; Nomad's servers cap heartbeats (`max_heartbeats_per_second` 50, the
TTL scaled with cluster size, `heartbeat_grace` 10 s) and give every node
`failover_heartbeat_ttl` 5 min after an election.

Prints each step, then `nodes_held=N`, and last `api_p99_ms=N`.
Run: .venv/bin/python benchmarks/heartbeats.py   (about 15 minutes)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil

PODIUM = [sys.executable, "-m", "podium.cli.main"]
WATCH_WAIT = 30.0  # the agent's default blocking query wait (AgentConfig.watch_wait)
HOST = "127.0.0.1"


# ----------------------------------------------------------------- a small HTTP client


class Http:
    """HTTP/1.1 on asyncio streams: small and cheap, so the load generator's own CPU
    (on the same two cores as the server) stays out of the server's latency."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        conn: list[Any] | None = None,
        timeout: float = 60.0,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """(status, decoded JSON). `conn` (a list holding reader and writer) keeps the
        connection open across calls; without it the request closes its own."""
        data = b"" if body is None else json.dumps(body).encode()
        keep = conn is not None
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n{extra}"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n"
        ).encode()
        async with asyncio.timeout(timeout):
            if conn:
                reader, writer = conn
            else:
                reader, writer = await asyncio.open_connection(HOST, self.port)
                if conn is not None:
                    conn[:] = [reader, writer]
            try:
                writer.write(head + data)
                status_line = await reader.readline()
                if not status_line:
                    raise ConnectionError("closed")
                status = int(status_line.split()[1])
                length = 0
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = line.decode("latin-1").partition(":")
                    if k.strip().lower() == "content-length":
                        length = int(v)
                payload = await reader.readexactly(length) if length else b""
            except BaseException:
                writer.close()
                if conn is not None:
                    conn.clear()
                raise
            if not keep:
                writer.close()
        return status, json.loads(payload) if payload else None


# ------------------------------------------------------------------ simulated agents


@dataclass
class Samples:
    heartbeat: list[float] = field(default_factory=list)
    register: list[float] = field(default_factory=list)
    watches: int = 0  # blocking queries answered
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    ttl: float = 0.0


def node_doc(i: int) -> dict[str, Any]:
    return {
        "id": f"sim-{i:05d}",
        "name": f"sim{i:05d}",
        "address": "127.0.0.1",
        "datacenter": "dc1",
        "labels": {"zone": "abc"[i % 3]},
        "drivers": {"process": {}},
        "resources": {"cpu": 16000, "memory": 32768},
    }


async def sim_agent(
    http: Http, i: int, out: Samples, registered: asyncio.Semaphore, secrets: dict[str, str]
) -> None:
    node = node_doc(i)
    node_id = node["id"]
    while True:
        t0 = time.perf_counter()
        try:
            status, resp = await http.request("POST", "/v1/nodes/register", node)
        except (OSError, TimeoutError, ConnectionError) as e:
            out.errors[f"register {type(e).__name__}"] += 1
            await asyncio.sleep(1.0)
            continue
        if status == 200:
            out.register.append(time.perf_counter() - t0)
            break
        out.errors[f"register {status}"] += 1
        if status == 403:  # registered by an attempt that timed out: its secret is lost
            registered.release()
            return
        await asyncio.sleep(1.0)
    registered.release()
    # The server runs --insecure (this measures heartbeats; benchmarks/tls_overhead.py
    # measures mTLS): a node proves itself with the secret its registration returned.
    secrets[node_id] = resp.get("node_secret", "")
    me = {"x-podium-node": node_id, "x-podium-node-secret": secrets[node_id]}
    ttl = float(resp["heartbeat_ttl"])
    after = float(resp.get("heartbeat_in", ttl / 3))

    async def watch() -> None:
        index, conn, first = 0, [], True
        while True:
            try:
                # The first asks at once, the rest block until the node's allocs change
                # (a node without allocs stays at index 0: it blocks at 0).
                wait = "0" if first else f"{WATCH_WAIT:g}s"
                first = False
                status, body = await http.request(
                    "GET", f"/v1/node/{node_id}/allocations?index={index}&wait={wait}",
                    conn=conn, timeout=WATCH_WAIT + 30, headers=me,
                )  # fmt: skip
                if status == 200:
                    index = int(body["index"])
                    out.watches += 1
                else:
                    out.errors[f"watch {status}"] += 1
                    await asyncio.sleep(1.0)
            except (OSError, TimeoutError, ConnectionError, ValueError) as e:
                out.errors[f"watch {type(e).__name__}"] += 1
                await asyncio.sleep(1.0)

    watcher = asyncio.create_task(watch())
    try:
        while True:
            await asyncio.sleep(after)
            after = ttl / 3
            t0 = time.perf_counter()
            try:
                status, resp = await http.request(
                    "POST",
                    f"/v1/node/{node_id}/heartbeat",
                    timeout=max(1.0, ttl / 2),
                    headers=me,
                )
            except (OSError, TimeoutError, ConnectionError) as e:
                out.errors[f"heartbeat {type(e).__name__}"] += 1
                out.heartbeat.append(float("inf"))  # a beat lost counts as the slowest
                continue
            if status != 200:
                out.errors[f"heartbeat {status}"] += 1
                continue
            out.heartbeat.append(time.perf_counter() - t0)
            ttl = float(resp["heartbeat_ttl"])
            after = float(resp.get("heartbeat_in", ttl / 3))
            out.ttl = max(out.ttl, ttl)
    finally:
        watcher.cancel()


def worker(port: int, pipe: Connection) -> None:
    """A process of simulated agents: ("add", first, count, per_second) starts agents,
    ("take",) answers the samples gathered since the last take, ("stop",) ends."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    async def main() -> None:
        http = Http(port)
        out = Samples()
        tasks: list[asyncio.Task[None]] = []
        secrets: dict[str, str] = {}  # node id -> the secret its registration returned
        loop = asyncio.get_running_loop()
        while True:
            cmd = await loop.run_in_executor(None, pipe.recv)
            if cmd[0] == "add":
                _, first, count, per_second = cmd
                registered = asyncio.Semaphore(0)
                for i in range(first, first + count):
                    tasks.append(asyncio.create_task(sim_agent(http, i, out, registered, secrets)))
                    await asyncio.sleep(1.0 / per_second)
                for _ in range(count):
                    await registered.acquire()
                pipe.send(("added", count, dict(secrets)))
            elif cmd[0] == "take":
                pipe.send(("samples", out))
                out.heartbeat, out.register, out.watches = [], [], 0
                out.errors = defaultdict(int)
            else:
                for t in tasks:
                    t.cancel()
                pipe.send(("stopped",))
                return

    asyncio.run(main())


# ----------------------------------------------------------------------- the run


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def more_files() -> None:
    """The server holds two connections per simulated agent: lift its open-files limit
    (root may raise the hard limit too)."""
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (200_000, 200_000))
    except (ValueError, OSError):
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Run:
    def __init__(self, base: Path, args: argparse.Namespace) -> None:
        self.args = args
        self.port = free_port()
        self.http = Http(self.port)
        self.log = open(base / "server.log", "wb")  # noqa: SIM115 - owned by the server
        cmd = [*PODIUM, "server", "--data-dir", str(base / "server"),
               "--addr", f"{HOST}:{self.port}", "--dns-addr", "off", "--log-level", "warning",
               "--insecure",
               "--max-heartbeats-per-second", str(args.max_heartbeats)]  # fmt: skip
        self.server = subprocess.Popen(
            cmd, stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=more_files
        )
        self.proc = psutil.Process(self.server.pid)
        self.pipes: list[Connection] = []
        self.workers: list[mp.process.BaseProcess] = []
        ctx = mp.get_context("spawn")
        for _ in range(args.workers):
            mine, theirs = ctx.Pipe()
            w = ctx.Process(target=worker, args=(self.port, theirs), daemon=True)
            w.start()
            self.pipes.append(mine)
            self.workers.append(w)
        self.nodes = 0
        self.secrets: dict[str, str] = {}  # node id -> node secret (a reader acts as it)

    async def wait_ready(self) -> None:
        for _ in range(600):
            try:
                await self.http.request("GET", "/v1/status")
                return
            except OSError:
                await asyncio.sleep(0.1)
        raise SystemExit("the server did not answer")

    async def add(self, count: int) -> float:
        """Add `count` agents, spread over the workers; seconds until all registered."""
        t0 = time.monotonic()
        share = count // len(self.pipes)
        rate = 500 / len(self.pipes)
        first = self.nodes
        for k, pipe in enumerate(self.pipes):
            n = share if k < len(self.pipes) - 1 else count - share * k
            pipe.send(("add", first, n, rate))
            first += n
        for pipe in self.pipes:
            _, _, secrets = await asyncio.to_thread(pipe.recv)
            self.secrets.update(secrets)
        self.nodes += count
        return time.monotonic() - t0

    async def take(self) -> Samples:
        total = Samples()
        for pipe in self.pipes:
            pipe.send(("take",))
        for pipe in self.pipes:
            _, s = await asyncio.to_thread(pipe.recv)
            total.heartbeat += s.heartbeat
            total.register += s.register
            total.watches += s.watches
            total.ttl = max(total.ttl, s.ttl)
            for k, v in s.errors.items():
                total.errors[k] += v
        return total

    async def probe(self, seconds: float) -> list[float]:
        """GET /v1/status every 100 ms for `seconds`: how long the server's loop takes to
        answer anything (beside the heartbeats: a slow beat with a fast probe is the
        simulated agents' own lag)."""
        out: list[float] = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t = time.perf_counter()
            try:
                await self.http.request("GET", "/v1/status", timeout=10)
                out.append(time.perf_counter() - t)
            except (OSError, TimeoutError, ConnectionError):
                out.append(float("inf"))
            await asyncio.sleep(0.1)
        return out

    def server_waited(self) -> float:
        """Seconds the server's main thread (its event loop) spent runnable but waiting
        for a CPU (Linux schedstat): on a shared machine, the part of its latency that
        is other processes' doing."""
        try:
            with open(f"/proc/{self.server.pid}/schedstat") as f:
                return int(f.read().split()[1]) / 1e9
        except (OSError, ValueError, IndexError):
            return 0.0

    def agents_cpu(self) -> float:
        """CPU seconds the simulated agents' worker processes have used."""
        total = 0.0
        for w in self.workers:
            try:
                t = psutil.Process(w.pid).cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    async def downs(self) -> int:
        """node.down events so far (each one a false down: every agent keeps beating)."""
        _, evs = await self.http.request("GET", "/v1/events?topic=node&limit=0", timeout=120)
        return sum(1 for e in evs if e["type"] == "node.down")

    def stop(self) -> None:
        for pipe in self.pipes:
            try:
                pipe.send(("stop",))
            except OSError:
                pass
        for w in self.workers:
            w.join(10)
            if w.is_alive():
                w.kill()
        self.server.terminate()
        try:
            self.server.wait(30)
        except subprocess.TimeoutExpired:
            self.server.kill()
        self.log.close()


async def ramp(run: Run, args: argparse.Namespace) -> int:
    held = 0
    print(f"{'nodes':>6} {'hb p50':>7} {'hb p99':>7} {'hb max':>7} {'beats/s':>8} "
          f"{'reg p99':>8} {'watch/s':>8} {'ttl s':>6} {'cpu %':>6} {'rss MB':>7} "
          f"{'status p99':>10} {'agents cpu %':>12} "
          f"{'down':>5}  errors", flush=True)  # fmt: skip
    while run.nodes < args.max_nodes:
        took = await run.add(min(args.step, args.max_nodes - run.nodes))
        reg = await run.take()
        await asyncio.sleep(min(10.0, args.hold / 4))  # the registration burst settles
        await run.take()
        cpu0, t0, agents0 = run.proc.cpu_times(), time.monotonic(), run.agents_cpu()
        status = await run.probe(args.hold)
        cpu1, span = run.proc.cpu_times(), time.monotonic() - t0
        agents = (run.agents_cpu() - agents0) / span * 100
        s = await run.take()
        down = await run.downs()
        cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / span * 100
        p99 = pct(s.heartbeat, 0.99)
        errors = ", ".join(f"{k} {v}" for k, v in sorted(s.errors.items())) or "-"
        print(f"{run.nodes:>6} {pct(s.heartbeat, 0.5):>6.1f}ms {p99:>5.1f}ms "
              f"{pct(s.heartbeat, 1.0):>5.0f}ms {len(s.heartbeat) / span:>8.0f} "
              f"{pct(reg.register, 0.99):>6.0f}ms {s.watches / span:>8.0f} {s.ttl:>6.1f} "
              f"{cpu:>6.0f} {run.proc.memory_info().rss / 1e6:>7.0f} "
              f"{pct(status, 0.99):>8.1f}ms {agents:>12.0f} {down:>5}  {errors} "
              f"(registered in {took:.0f}s)", flush=True)  # fmt: skip
        if p99 > 200 or down:
            print(f"stopped: {'heartbeat p99 over 200 ms' if p99 > 200 else 'a false down'}")
            break
        held = run.nodes
    return held


def job_doc(name: str, count: int) -> dict[str, Any]:
    return {
        "name": name,
        "groups": [{"name": "g", "count": count, "tasks": [{
            "name": "t", "driver": "process", "config": {"command": "sleep", "args": ["1d"]},
            "resources": {"cpu": 10, "memory": 10}}]}],
    }  # fmt: skip


async def churn(run: Run, args: argparse.Namespace) -> float:
    """`args.allocs` allocs (100 jobs), then 20 mutations a second and 50 readers for
    `args.churn` s."""
    http = run.http
    t0 = time.monotonic()
    per_job = args.allocs // 100
    for k in range(100):
        spec = job_doc(f"base-{k:03d}", per_job)
        status, _ = await http.request("POST", "/v1/jobs", {"job": spec})
        assert status == 200, status
    while True:
        _, st = await http.request("GET", "/v1/status")
        if st["allocations"] >= per_job * 100:
            break
        await asyncio.sleep(0.5)
    print(f"churn: {per_job * 100:,} allocs placed on {run.nodes:,} nodes in "
          f"{time.monotonic() - t0:.1f}s", flush=True)  # fmt: skip
    await run.take()
    lat: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)
    end = time.monotonic() + args.churn
    rng = random.Random(3)
    mine: list[str] = []  # the jobs the churn registered

    async def timed(kind: str, method: str, path: str, body: Any = None, *, node: str = "") -> Any:
        t = time.perf_counter()
        me = {"x-podium-node": node, "x-podium-node-secret": run.secrets.get(node, "")}
        try:
            status, resp = await http.request(
                method, path, body, timeout=30, headers=me if node else None
            )
        except (OSError, TimeoutError, ConnectionError) as e:
            errors[f"{kind} {type(e).__name__}"] += 1
            return None
        lat[kind].append(time.perf_counter() - t)
        if status >= 300:
            errors[f"{kind} {status}"] += 1
        return resp

    async def mutate(n: int) -> None:
        roll = rng.random()
        if roll < 0.4 or len(mine) < 5:
            name = f"churn-{n:05d}"
            mine.append(name)
            await timed("mutation", "POST", "/v1/jobs", {"job": job_doc(name, rng.randint(1, 10))})
        elif roll < 0.8:
            name = rng.choice(mine)
            body = {"group": "g", "count": rng.randint(0, 10)}
            await timed("mutation", "POST", f"/v1/job/{name}/scale", body)
        else:
            name = mine.pop(rng.randrange(len(mine)))
            await timed("mutation", "DELETE", f"/v1/job/{name}")

    async def mutations() -> None:
        n, tasks = 0, []
        while time.monotonic() < end:
            tick = time.monotonic()
            for _ in range(20):  # 20 a second, each on its own: a slow one does not pace
                tasks.append(asyncio.create_task(mutate(n)))
                n += 1
                await asyncio.sleep(1 / 20)
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
        await asyncio.gather(*tasks)

    async def reader(k: int) -> None:
        r = random.Random(k)
        while time.monotonic() < end:
            if k % 2:  # `--read-rate` job status reads a second (each a job of many allocs)
                tick = time.monotonic()
                await timed("job status", "GET", f"/v1/job/base-{r.randrange(100):03d}")
                await asyncio.sleep(max(0.0, 1 / args.read_rate - (time.monotonic() - tick)))
            else:
                node = f"sim-{r.randrange(run.nodes):05d}"
                path = f"/v1/node/{node}/allocations"
                resp = await timed("node allocs (index 0)", "GET", path, node=node)
                if resp is not None and "index" in resp:  # then block until it changes or 5 s
                    path += f"?index={resp['index']}&wait=5s"
                    await timed("blocking query (5s)", "GET", path, node=node)

    cpu0, waited0 = run.proc.cpu_times(), run.server_waited()
    t1 = time.monotonic()
    await asyncio.gather(mutations(), *(reader(k) for k in range(50)))
    span = time.monotonic() - t1
    cpu1, waited = run.proc.cpu_times(), run.server_waited() - waited0
    s = await run.take()
    lat["heartbeat"] = s.heartbeat
    print(f"churn for {span:.0f}s on {run.nodes:,} nodes and {per_job * 100:,}+ allocs (server CPU "
          f"{(cpu1.user + cpu1.system - cpu0.user - cpu0.system) / span * 100:.0f}% of a core, "
          f"its loop waited for a CPU {waited / span * 100:.0f}% of the time, "
          f"RSS {run.proc.memory_info().rss / 1e6:.0f} MB):")  # fmt: skip
    for kind, xs in lat.items():
        print(f"  {kind:<24} {len(xs):>7} calls  p50 {pct(xs, 0.5):7.1f} ms  "
              f"p99 {pct(xs, 0.99):7.1f} ms  max {pct(xs, 1.0):7.0f} ms")  # fmt: skip
    if errors or s.errors:
        print("  errors: " + ", ".join(f"{k} {v}" for k, v in {**errors, **s.errors}.items()))
    print(f"  false downs: {await run.downs()}")
    return pct(lat["mutation"], 0.99)


async def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--step", type=int, default=2000)
    ap.add_argument("--hold", type=float, default=60.0)
    ap.add_argument("--max-nodes", type=int, default=14_000)
    ap.add_argument("--churn-nodes", type=int, default=10_000)
    ap.add_argument("--churn", type=float, default=60.0)
    ap.add_argument("--allocs", type=int, default=100_000, help="placed before the churn")
    ap.add_argument("--read-rate", type=float, default=2.0,
                    help="job status reads a second by each of the 25 status readers")  # fmt: skip
    ap.add_argument("--max-heartbeats", type=float, default=200.0,
                    help="the server's --max-heartbeats-per-second")  # fmt: skip
    args = ap.parse_args()
    print("anchors: Kubernetes 5,000 nodes / 150,000 pods, mutating API p99 <= 1 s; Nomad "
          "max_heartbeats_per_second 50, TTL scaled with cluster size, heartbeat_grace 10 s, "
          "failover_heartbeat_ttl 5 min", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="podium-heartbeats-") as tmp:
        run = Run(Path(tmp), args)
        try:
            await run.wait_ready()
            held = await ramp(run, args)
            api_p99 = float("nan")
            if args.churn > 0:
                if run.nodes < args.churn_nodes:
                    print(f"churn on the {run.nodes:,} nodes registered (the ramp stopped "
                          f"before {args.churn_nodes:,})")  # fmt: skip
                api_p99 = await churn(run, args)
        finally:
            run.stop()
    print(f"nodes_held={held}")
    print(f"api_p99_ms={api_p99:.1f}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(main())
