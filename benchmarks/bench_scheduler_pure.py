"""Pure scheduler throughput: place 100,000 allocs over 5,000 simulated nodes.

    simulated_cluster + simulated_jobs (podium.scheduler.simulate)
      -> per job: reconcile -> schedule -> snapshot.apply(plan)   (no store, no I/O)

Prints placements per second; the lead's side-by-side benchmark reuses the helpers.
Usage: python benchmarks/bench_scheduler_pure.py [--nodes 5000] [--allocs 100000]
"""

from __future__ import annotations

import argparse
import time

from podium.scheduler import ClusterSnapshot, reconcile, schedule
from podium.scheduler.simulate import simulated_cluster, simulated_jobs


def run(n_nodes: int, n_allocs: int, seed: int = 1) -> dict[str, float]:
    nodes = simulated_cluster(n_nodes, seed)
    jobs = simulated_jobs(n_allocs, seed)
    by_id = {n.id: n for n in nodes}
    t0 = time.perf_counter()
    snapshot = ClusterSnapshot.build(nodes, [])
    build = time.perf_counter() - t0
    placed = failed = 0
    c0 = time.process_time()  # CPU time too: other work on the machine skews wall time
    t0 = time.perf_counter()
    for i, job in enumerate(jobs):
        rec = reconcile(job, [], by_id, now=1000.0)
        plan = schedule(snapshot, job, rec, eval_id=f"bench-{i}", now=1000.0)
        snapshot.apply(plan)
        placed += len(plan.placements)
        failed += sum(f.unplaced for f in plan.failures)
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0
    return {
        "placed": placed,
        "failed": failed,
        "seconds": elapsed,
        "build": build,
        "per_second": placed / elapsed if elapsed else 0.0,
        "per_cpu_second": placed / cpu if cpu else 0.0,
        "jobs": len(jobs),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=5000)
    ap.add_argument("--allocs", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    r = run(args.nodes, args.allocs, args.seed)
    print(
        f"pure scheduler: {r['placed']:.0f} placed ({r['failed']:.0f} unplaced) in "
        f"{r['jobs']:.0f} jobs over {args.nodes} nodes in {r['seconds']:.2f}s "
        f"-> {r['per_second']:,.0f} placements/s wall, {r['per_cpu_second']:,.0f} per cpu-second "
        f"(snapshot build {r['build'] * 1000:.0f} ms)"
    )


if __name__ == "__main__":
    main()
