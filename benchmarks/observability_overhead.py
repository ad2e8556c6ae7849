"""What metrics cost: the same work with metrics on and with metrics off, in one run.

1. Committed placements/s of the scheduler benchmark (benchmarks/scheduler.py's round:
   placement controller, plan applier, SQLite): metrics on (ServerMetrics on a registry,
   the store timed per operation, as `podium server` runs) against off (ServerMetrics(None)
   and the bare store), interleaved on/off for `--rounds` rounds; medians.
2. The proxy's CPU per request (benchmarks/proxy.py's setup: nginx backends, wrk, the
   proxy pinned to its own core): `python -m podium.proxy` counting per request (on)
   against `--no-metrics` (off), L7, interleaved; medians. Skipped with --no-proxy, or
   when nginx/wrk are missing and cannot be installed.

Prints both ratios (higher is better, 1.0 = free) and, last, `metrics_overhead=R`: the
worse of the two, on / off (for the proxy: CPU per request off / on). Target: >= 0.95.

Run: .venv/bin/python benchmarks/observability_overhead.py [--allocs 100000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
from pathlib import Path

from prometheus_client import CollectorRegistry

from podium.runtime import heap
from podium.scheduler.simulate import simulated_cluster, simulated_jobs
from podium.server.metrics import ServerMetrics, TimedStore
from podium.store import open_store
from podium.store.base import Store

sys.path.insert(0, str(Path(__file__).resolve().parent))
import proxy as proxy_bench
import scheduler as scheduler_bench
import tools


async def placements(tmp: str, name: str, on: bool, nodes: list, jobs: list) -> float:
    raw = open_store(f"sqlite:///{tmp}/{name}.db")
    metrics = ServerMetrics(CollectorRegistry() if on else None)
    store: Store = TimedStore(raw, "sqlite", metrics) if on else raw
    try:
        placed, secs, _, _ = await scheduler_bench.committed(store, nodes, jobs, metrics=metrics)
    finally:
        await raw.close()
    if on:
        text = metrics.exposition().decode()
        assert "podium_placements_total" in text  # the instruments did record
    return placed / secs


def proxy_cpu(no_metrics: bool, a: int, b: int, args: argparse.Namespace) -> proxy_bench.Result:
    port = proxy_bench.free_port()
    cmd = [
        sys.executable, "-m", "podium.proxy", "--listen", f"127.0.0.1:{port}", "--mode", "http",
        "--backend", f"127.0.0.1:{a}", "--backend", f"127.0.0.1:{b}",
        *(["--no-metrics"] if no_metrics else []),
    ]  # fmt: skip
    proc = proxy_bench.start(cmd, args.proxy_cpu, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        if not proc.stdout.readline().startswith("listening on"):
            raise RuntimeError("podium proxy did not start")
        proxy_bench.run_wrk(port, proxy_bench._warmup(args), proc.pid)
        return proxy_bench.run_wrk(port, args, proc.pid)
    finally:
        proxy_bench.stop(proc)


def proxy_ratio(args: argparse.Namespace) -> float | None:
    try:
        tools.ensure({k: v for k, v in proxy_bench.TOOLS.items() if k != "haproxy"})
    except (SystemExit, RuntimeError, OSError) as e:
        print(f"proxy: skipped ({e})")
        return None
    a, b = proxy_bench.free_port(), proxy_bench.free_port()
    with tempfile.TemporaryDirectory(prefix="podium-bench-obs-") as tmp:
        work = Path(tmp)
        conf = proxy_bench.NGINX_CONF.format(dir=tmp, a=a, b=b, body=proxy_bench.BODY)
        (work / "nginx.conf").write_text(conf)
        nginx = proxy_bench.start(
            [
                tools.which("nginx") or "nginx",
                "-c",
                str(work / "nginx.conf"),
                "-e",
                str(work / "e.log"),
            ],
            args.load_cpu,
        )
        try:
            proxy_bench.wait_port(a)
            proxy_bench.wait_port(b)
            on, off = [], []
            for _ in range(args.rounds):
                on.append(proxy_cpu(False, a, b, args))
                off.append(proxy_cpu(True, a, b, args))
        finally:
            proxy_bench.stop(nginx)
    r_on, r_off = proxy_bench.median(on), proxy_bench.median(off)
    print(
        f"proxy L7 metrics on:  {r_on.rps:9.0f} rps, {r_on.cpu_per_10k * 100:5.1f} us CPU/req "
        f"[rounds: {', '.join(f'{x.cpu_per_10k * 100:.1f}' for x in on)}]"
    )
    print(
        f"proxy L7 metrics off: {r_off.rps:9.0f} rps, {r_off.cpu_per_10k * 100:5.1f} us CPU/req "
        f"[rounds: {', '.join(f'{x.cpu_per_10k * 100:.1f}' for x in off)}]"
    )
    ratio = r_off.cpu_per_10k / r_on.cpu_per_10k
    print(f"proxy: CPU per request off / on = {ratio:.3f}")
    return ratio


async def main() -> None:
    heap.tune()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=5000)
    ap.add_argument("--allocs", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-proxy", action="store_true", help="only the scheduler half")
    ap.add_argument("--duration", type=int, default=5, help="proxy: seconds per measurement")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--proxy-cpu", default="0")
    ap.add_argument("--load-cpu", default="1")
    args = ap.parse_args()
    nodes = simulated_cluster(args.nodes, seed=1)
    jobs = simulated_jobs(args.allocs, seed=2)
    on, off = [], []
    with tempfile.TemporaryDirectory(prefix="podium-bench-obs-") as tmp:
        for i in range(args.rounds):  # interleaved, so both meet the same noise
            on.append(await placements(tmp, f"on{i}", True, nodes, jobs))
            off.append(await placements(tmp, f"off{i}", False, nodes, jobs))
            print(f"round {i + 1}: metrics on {on[-1]:,.0f}/s, off {off[-1]:,.0f}/s", flush=True)
    med_on, med_off = sorted(on)[len(on) // 2], sorted(off)[len(off) // 2]
    sched = med_on / med_off
    print(f"scheduler: committed placements/s on {med_on:,.0f}, off {med_off:,.0f}: {sched:.3f}")
    ratios = [sched]
    if not args.no_proxy:
        p = proxy_ratio(args)
        if p is not None:
            ratios.append(p)
    print(f"metrics_overhead={min(ratios):.3f}")


if __name__ == "__main__":
    asyncio.run(main())
