"""Control-plane failover: kill -9 of the leader server, next to etcd's own leader election.

One real control plane (tests/integration/control_plane.py): 3 etcd members, 3
`podium server`s on it (leader lease TTL from PODIUM_BENCH_LEADER_TTL, default the
server's default), 3 agents running a steady 3-copy service, and a client that submits
and updates jobs every 0.1 s through the failing-over CLI client.

    podium trial  kill -9 the leading server; time until another server reports that it
                  leads; then restart the killed one as a follower
    etcd trial    kill -9 the etcd leader member; time until a surviving member reports a
                  new leader (`etcdctl endpoint status`); then restart the member

5 trials of each in the same run; prints each, the medians, the writes acknowledged and
lost, the steady tasks restarted, and last `cp_failover_s=N`.

Run: .venv/bin/python benchmarks/failover.py --control-plane   (about two minutes; installs
etcd-server and etcd-client with apt-get when missing and root)
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import tools

from integration.cluster import wait_until
from integration.control_plane import ControlPlane, Writer, job, running, stored_marks
from podium.server.runtime import ServerConfig

TOOLS = {"etcd": "etcd-server", "etcdctl": "etcd-client"}  # binary -> Debian package


def leader_trial(cp: ControlPlane) -> float:
    old = cp.leader()
    assert old is not None, "no leader before the trial"
    old.kill9()
    _, took = cp.wait_new_leader(old, timeout=60)
    old.start()
    wait_until(lambda: old.status() is not None, timeout=30, what="the killed server back")
    return took


def etcd_status(endpoints: list[str]) -> list[dict[str, int]]:
    """member_id and leader id as each answering endpoint reports them."""
    etcdctl = tools.which("etcdctl")
    assert etcdctl, "etcdctl not found (the etcd-client package)"
    res = subprocess.run(
        [etcdctl, "--endpoints", ",".join(endpoints), "endpoint", "status", "-w", "json"],
        capture_output=True,
        text=True,
        timeout=5,
        env={**os.environ, "ETCDCTL_API": "3", "ETCDCTL_DIAL_TIMEOUT": "200ms"},
    )
    try:
        rows = json.loads(res.stdout or "[]")
    except ValueError:
        return []
    return [
        {"member": r["Status"]["header"]["member_id"], "leader": r["Status"]["leader"]}
        for r in rows
    ]


def etcd_trial(cp: ControlPlane) -> float:
    etcd = cp.etcd
    assert etcd is not None
    before = etcd_status(etcd.endpoints)
    leader_id = before[0]["leader"]
    idx = next(i for i, r in enumerate(before) if r["member"] == leader_id)
    survivors = [e for i, e in enumerate(etcd.endpoints) if i != idx]
    t0 = time.monotonic()
    etcd.kill(idx)

    def elected() -> bool:
        return any(r["leader"] not in (0, leader_id) for r in etcd_status(survivors))

    wait_until(elected, timeout=60, interval=0.02, what="a new etcd leader")
    took = time.monotonic() - t0
    etcd.restart(idx)
    return took


def main(trials: int = 5) -> None:
    tools.ensure(TOOLS)
    ttl = float(os.environ.get("PODIUM_BENCH_LEADER_TTL", str(ServerConfig.leader_ttl)))
    with tempfile.TemporaryDirectory(prefix="podium-cp-failover-") as tmp:
        cp = ControlPlane(Path(tmp) / "cp", leader_ttl=ttl)
        try:
            cp.start(etcd_members=3, servers=3, agents=3)
            cp.api("POST", "/v1/jobs", json={"job": job("steady", count=3)})
            wait_until(lambda: len(running(cp, "steady")) == 3, timeout=60, what="steady")
            steady = running(cp, "steady")
            ours, theirs = [], []
            with Writer(cp) as w:
                for i in range(trials):
                    time.sleep(1.0)  # let the writer run against a settled leader
                    s = leader_trial(cp)
                    ours.append(s)
                    print(f"podium trial {i + 1}: new leader {s:.2f}s after kill -9", flush=True)
                for i in range(trials):
                    time.sleep(1.0)
                    s = etcd_trial(cp)
                    theirs.append(s)
                    print(f"etcd trial {i + 1}: new leader {s:.2f}s after kill -9", flush=True)
                time.sleep(1.0)
            lost = 0
            acked = 0
            for name, marks in w.acked.items():
                acked += len(marks)
                lost += len(marks - set(stored_marks(cp, name)))
            after = running(cp, "steady")
            restarted = sum(1 for k, v in steady.items() if after.get(k) != v)
        finally:
            cp.stop()
    mine, etcds = statistics.median(ours), statistics.median(theirs)
    print(
        f"podium leader failover: median {mine:.2f}s over {len(ours)} trials "
        f"(lease TTL {cp.leader_ttl:g}s)"
    )
    print(f"etcd leader election:   median {etcds:.2f}s over {len(theirs)} trials (same run)")
    print(f"ratio: podium failover takes {mine / etcds:.1f}x etcd's own election")
    print(
        f"client writes: {acked} acknowledged, {lost} lost, {len(w.failed)} refused; "
        f"steady tasks restarted: {restarted}"
    )
    print(f"cp_failover_s={mine:.2f}")


if __name__ == "__main__":
    main()
