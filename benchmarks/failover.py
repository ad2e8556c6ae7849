"""Failover: how long after a node dies until all its work runs healthy elsewhere.

Each trial starts a real cluster (1 `podium server`, 3 `podium agent`s on 127.0.0.1-3,
the server's default heartbeat TTL unless PODIUM_BENCH_TTL says otherwise), runs a
service of 6 copies of Python's HTTP server spread 2 per node, then kills one agent
and its tasks with SIGKILL (a machine dying) and times from the kill until 6 copies
run and pass their health checks on the surviving nodes. 5 trials; the median is
printed, and last `failover_s=N`.

The peer, Docker Swarm: a Swarm worker cannot be simulated here (a `docker:dind`
image cannot be built locally), so its documented floor is printed instead: a
manager marks a worker down after missing heartbeats for 3 periods of 5 s
(`--dispatcher-heartbeat`, default 5s), i.e. 15 s before rescheduling even starts.

Run: .venv/bin/python benchmarks/failover.py   (not part of CI; about a minute)
     .venv/bin/python benchmarks/failover.py --control-plane   (leader server failover)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# The multi-node cluster helper lives with the integration tests; reuse it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from integration.cluster import wait_until
from integration.multinode import MultiNodeCluster, healthy_running, web_job

SWARM_FLOOR_S = 15.0  # 3 missed heartbeats x 5 s dispatcher heartbeat period


def trial(base: Path, ttl: float) -> float:
    c = MultiNodeCluster(base, heartbeat_ttl=ttl)
    try:
        c.start(3)
        c.cli("job", "run", web_job(base / "web.yaml"), "--detach", check=True)
        wait_until(lambda: len(healthy_running(c.job("web"))) == 6, timeout=30, what="6 healthy")
        victim = c.agents[1]
        t0 = time.monotonic()
        victim.kill9()

        def healed() -> bool:
            running = healthy_running(c.job("web"))
            return len(running) == 6 and all(a["node_name"] != victim.name for a in running)

        wait_until(healed, timeout=60, interval=0.02, what="6 healthy copies on survivors")
        return time.monotonic() - t0
    finally:
        c.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument(
        "--control-plane",
        action="store_true",
        help="kill the leader server instead of a node, next to etcd's own election "
        "(benchmarks/cp_failover.py)",
    )
    args = ap.parse_args()
    if args.control_plane:
        from cp_failover import main as control_plane

        control_plane(args.trials)
        return
    ttl = float(os.environ.get("PODIUM_BENCH_TTL", "3.0"))
    times = []
    with tempfile.TemporaryDirectory(prefix="podium-failover-") as tmp:
        for i in range(args.trials):
            s = trial(Path(tmp) / f"trial-{i}", ttl)
            times.append(s)
            print(f"trial {i + 1}: {s:.2f}s from kill -9 to 6/6 healthy", flush=True)
    median = statistics.median(times)
    print(f"podium: median {median:.2f}s over {len(times)} trials (heartbeat TTL {ttl:g}s)")
    print(
        f"docker swarm: {SWARM_FLOOR_S:.0f}s documented floor (3 x 5s dispatcher heartbeat); "
        "not measured: no docker:dind image can be built here"
    )
    print(f"ratio: podium is {SWARM_FLOOR_S / median:.1f}x faster than swarm's floor")
    print(f"failover_s={median:.2f}")


if __name__ == "__main__":
    main()
