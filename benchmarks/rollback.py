"""Rollback: how long a bad version runs before podium fails its deployment and reverts.

A real `podium dev`; a service of 4 copies (v1, healthy) deployed; then v2, whose
health check answers 500 from its first second, submitted with podium's default update
policy and check timing. Timed from `podium job run` until the deployment.failed event
(the revert is submitted in the same step) and until the reverted version's deployment
is successful again. 3 trials; the median is printed.

Baseline, measured in the same run: the same bad version with fail-fast off
(`update.unhealthy_after: 0`), judged at `healthy_deadline` (default 5 minutes) as
podium did before; Nomad does the same (healthy_deadline 5m, auto_revert off by
default). Skip it with --no-baseline (it takes five minutes).

Run: .venv/bin/python benchmarks/rollback.py   (not part of CI; about 6 minutes)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# The dev-cluster helper and the versioned server live with the integration tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from integration.cluster import ROOT, DevCluster, wait_until

SERVER = ROOT / "tests" / "integration" / "versioned_server.py"


def job(path: Path, version: str, *, healthy: bool, update: dict[str, Any]) -> str:
    spec = {
        "name": "web",
        "groups": [
            {
                "name": "app",
                "count": 4,
                "network": {"ports": {"http": {}}},
                **({"update": update} if update else {}),
                "services": [
                    {"name": "web", "port": "http", "checks": [{"type": "http", "path": "/health"}]}
                ],
                "tasks": [
                    {
                        "name": "server",
                        "config": {"command": sys.executable, "args": [str(SERVER)]},
                        "env": {"VERSION": version, "HEALTHY": "1" if healthy else "0"},
                        "resources": {"cpu": 50, "memory": 32},
                    }
                ],
            }
        ],
    }
    path.write_text(json.dumps(spec))
    return str(path)


def trial(base: Path, bad_update: dict[str, Any]) -> tuple[float, float]:
    """(seconds to deployment.failed, seconds until the reverted version is healthy)."""
    c = DevCluster(base / "dev").start()
    try:
        quick = {"min_healthy_time": "1s"}
        c.cli("job", "run", job(base / "v1.json", "v1", healthy=True, update=quick), check=True)
        t0 = time.time()
        bad = job(base / "v2.json", "v2", healthy=False, update=bad_update)
        c.cli("job", "run", bad, timeout=900)

        def failed_at() -> float | None:
            events = c.api("GET", "/v1/events", params={"job": "web"})
            return next((e["time"] for e in events if e["type"] == "deployment.failed"), None)

        failed = wait_until(failed_at, timeout=600, what="deployment.failed")

        def reverted() -> bool:
            d = c.cli_json("deployment", "status", "web")["deployment"]
            return bool(d["job_version"] == 2 and d["status"] == "successful")

        wait_until(reverted, timeout=120, interval=0.1, what="the reverted version healthy")
        return failed - t0, time.time() - t0
    finally:
        c.stop()
        c.kill_leftovers()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--no-baseline", action="store_true", help="skip the 5-minute baseline")
    args = ap.parse_args()
    fails, backs = [], []
    with tempfile.TemporaryDirectory(prefix="podium-rollback-") as tmp:
        for i in range(args.trials):
            failed, back = trial(Path(tmp) / f"trial-{i}", {})
            fails.append(failed)
            backs.append(back)
            print(f"trial {i + 1}: failed and reverted after {failed:.1f}s, "
                  f"v1 healthy again after {back:.1f}s", flush=True)  # fmt: skip
        median, healthy = statistics.median(fails), statistics.median(backs)
        print(f"podium (defaults: unhealthy_after 3, check_grace 5s, check every 2s): "
              f"median {median:.1f}s to revert, {healthy:.1f}s to healthy")  # fmt: skip
        if not args.no_baseline:
            base, _ = trial(Path(tmp) / "baseline", {"unhealthy_after": 0})
            print(f"baseline (fail-fast off, judged at healthy_deadline 5m): {base:.1f}s")
            print(f"ratio: fail-fast reverts {base / median:.0f}x sooner")
    print(f"rollback_s={median:.1f}")


if __name__ == "__main__":
    main()
