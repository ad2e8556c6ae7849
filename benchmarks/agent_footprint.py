"""What the agent costs on its node: memory and CPU, idle, per task, and after churn.

One real `podium server` (SQLite) and one real `podium agent` as processes of their own.
Measured on the agent and every process it runs that is not a task (the processes in
the agent's own session: a task runs in a session of its own), as RSS (the mean of one
sample a second over a window) and CPU (a share of one core over the window):

  idle          0 allocs
  50 tasks      one job of 50 `process` tasks (busybox httpd: an HTTP health check
                every 2 s on each, and a log line per check request), all healthy
  200 tasks     the same job scaled to 200
  per task      the slope from 50 to 200: MB and % of a core per task
  churn         the job stopped, then `--churn` seconds (600: ten minutes) of 20 alloc
                creates and 20 stops a second (the API's alloc stop: each stopped copy
                of a 40-copy job is replaced), the job stopped, and `--idle` (60) seconds
                of rest with 0 allocs

Targets: <= 60 MB idle, <= 1 MB and <= 0.1% of a core per task, <= 80 MB after churn.
Anchors: kubelet about 60 MiB; Nomad's client about 130 MB plus 15-20 MB per task for its
per-task logmon and executor helpers (hashicorp/nomad#11547); the k3s agent 275 MB
(docs.k3s.io resource profiling).

Prints each phase, then `agent_mb_after_churn=N` and, last, `agent_mb_per_task=N`.
Run: .venv/bin/python benchmarks/agent_footprint.py [--churn 600] [--idle 60]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

PODIUM = [sys.executable, "-m", "podium.cli.main"]
MB = 1_000_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(pred: Callable[[], Any], *, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got = pred()
        except (httpx.HTTPError, OSError, KeyError, ValueError):
            got = None
        if got:
            return got
        time.sleep(0.2)
    raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")


def job(name: str, count: int) -> dict[str, Any]:
    """`count` busybox HTTP servers (the shell execs it: one process a task), each
    checked over HTTP every 2 s and logging each request it serves (-v: to stderr)."""
    serve = "httpd -f -v -p 127.0.0.1:$PODIUM_PORT_HTTP -h ."
    httpd = f"echo ok > index.html; exec {BUSYBOX} {serve}"
    return {
        "name": name,
        "groups": [
            {
                "name": "web",
                "count": count,
                "network": {"ports": {"http": {}}},
                "services": [
                    {
                        "name": name,
                        "port": "http",
                        "checks": [{"type": "http", "path": "/", "interval": "2s"}],
                    }
                ],
                "tasks": [
                    {
                        "name": "httpd",
                        "driver": "process",
                        "config": {"command": "/bin/sh", "args": ["-c", httpd]},
                        "resources": {"cpu": 20, "memory": 16},
                        "kill_timeout": "2s",
                    }
                ],
            }
        ],
    }


BUSYBOX = shutil.which("busybox") or "/usr/bin/busybox"


class Cluster:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = free_port()
        self.addr = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(base_url=self.addr, timeout=30)
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        # --insecure: this measures the agent, on loopback (tls_overhead.py measures mTLS)
        server = [*PODIUM, "server", "--data-dir", str(self.base / "server"), "--insecure",
                  "--addr", f"127.0.0.1:{self.port}", "--dns-addr", "off"]  # fmt: skip
        self.procs.append(self._spawn(server, "server.log"))
        wait_until(lambda: self.http.get("/v1/status").json(), timeout=60, what="the server")
        agent = [*PODIUM, "agent", "--server", self.addr, "--data-dir", str(self.base / "agent"),
                 "--name", "footprint", "--cpu", "8000", "--memory", "8000",
                 "--insecure"]  # fmt: skip
        self.agent = self._spawn(agent, "agent.log")
        self.procs.append(self.agent)
        wait_until(
            lambda: any(n["status"] == "ready" for n in self.http.get("/v1/nodes").json()),
            timeout=60,
            what="the agent's node ready",
        )

    def _spawn(self, cmd: list[str], log: str) -> subprocess.Popen[bytes]:
        out = open(self.base / log, "wb")  # noqa: SIM115 - owned by the process
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.http.close()

    def run_job(self, spec: dict[str, Any]) -> None:
        self.http.post("/v1/jobs", json={"job": spec}).raise_for_status()

    def allocs(self, name: str) -> list[dict[str, Any]]:
        r = self.http.get(f"/v1/job/{name}")
        if r.status_code == 404:
            return []
        r.raise_for_status()
        return list(r.json()["allocations"])

    def wait_healthy(self, name: str, count: int, *, timeout: float = 300) -> None:
        def healthy() -> bool:
            rows = [a for a in self.allocs(name) if a["desired_status"] == "run"]
            return sum(1 for a in rows if a["client_status"] == "running" and a["healthy"]) >= count

        wait_until(healthy, timeout=timeout, what=f"{count} healthy copies of {name}")

    def wait_no_allocs(self, *, timeout: float = 120) -> None:
        node = self.http.get("/v1/nodes").json()[0]
        wait_until(
            lambda: (
                not self.http.get(f"/v1/node/{node['id']}").json()["allocations"]
                and not self.agent_tasks()
            ),
            timeout=timeout,
            what="no live allocs and no task processes on the node",
        )

    def agent_tasks(self) -> list[psutil.Process]:
        return [p for p in descendants(self.agent.pid) if not same_session(p, self.agent.pid)]


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.Error:
        return []


def same_session(p: psutil.Process, pid: int) -> bool:
    try:
        return os.getsid(p.pid) == os.getsid(pid)
    except OSError:
        return False


def agent_processes(pid: int) -> list[psutil.Process]:
    """The agent and its descendants that are not tasks (tasks run in their own session)."""
    return [psutil.Process(pid), *(p for p in descendants(pid) if same_session(p, pid))]


def cpu_of(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def rss_of(procs: list[psutil.Process]) -> int:
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def measure(pid: int, seconds: float) -> tuple[float, float]:
    """(mean RSS in MB, CPU as % of one core) of the agent's own processes over `seconds`."""
    t0, c0 = time.monotonic(), cpu_of(agent_processes(pid))
    samples = []
    while time.monotonic() - t0 < seconds:
        samples.append(rss_of(agent_processes(pid)))
        time.sleep(1.0)
    cpu = (cpu_of(agent_processes(pid)) - c0) / (time.monotonic() - t0) * 100
    return statistics.mean(samples) / MB, cpu


def churn(c: Cluster, seconds: float, per_second: int) -> int:
    """Stop `per_second` live copies of the churn job each second (each is replaced)."""
    stopped = 0
    end = time.monotonic() + seconds
    next_report = time.monotonic() + 60
    while time.monotonic() < end:
        tick = time.monotonic()
        live = [a for a in c.allocs("churn") if a["desired_status"] == "run"]
        for a in live[:per_second]:
            r = c.http.post(f"/v1/allocation/{a['id']}/stop")
            if r.status_code < 300:
                stopped += 1
        if time.monotonic() >= next_report:
            next_report += 60
            rss = rss_of(agent_processes(c.agent.pid)) / MB
            left = end - time.monotonic()
            print(f"  churn: {stopped} stopped so far; agent RSS {rss:.1f} MB; {left:.0f}s left",
                  flush=True)  # fmt: skip
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    return stopped


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--churn", type=float, default=600.0, help="seconds of churn")
    ap.add_argument("--idle", type=float, default=60.0, help="seconds of rest after churn")
    ap.add_argument("--window", type=float, default=20.0, help="seconds each phase is measured")
    args = ap.parse_args()
    print("anchors: kubelet ~60 MiB; Nomad client ~130 MB + 15-20 MB per task "
          "(hashicorp/nomad#11547); k3s agent 275 MB")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="podium-footprint-") as tmp:
        c = Cluster(Path(tmp))
        try:
            c.start()
            pid = c.agent.pid
            time.sleep(5)
            idle_mb, idle_cpu = measure(pid, args.window)
            print(f"idle, 0 allocs:  {idle_mb:6.1f} MB, {idle_cpu:5.2f}% of a core", flush=True)
            found: dict[int, tuple[float, float]] = {}
            c.run_job(job("footprint", 50))
            for n in (50, 200):
                if n != 50:  # in place: a new version would roll out one copy at a time
                    body = {"group": "web", "count": n}
                    c.http.post("/v1/job/footprint/scale", json=body).raise_for_status()
                c.wait_healthy("footprint", n)
                time.sleep(5)
                found[n] = measure(pid, args.window)
                tasks = len(c.agent_tasks())
                mb, cpu = found[n]
                print(f"{n} tasks ({tasks} task processes), healthy: {mb:6.1f} MB, "
                      f"{cpu:5.2f}% of a core", flush=True)  # fmt: skip
            per_mb = (found[200][0] - found[50][0]) / 150
            per_cpu = (found[200][1] - found[50][1]) / 150
            print(f"per task (50 -> 200): {per_mb:.3f} MB, {per_cpu:.4f}% of a core")
            c.http.delete("/v1/job/footprint", params={"purge": "true"}).raise_for_status()
            c.wait_no_allocs()
            c.run_job(job("churn", 40))
            c.wait_healthy("churn", 40)
            t0 = time.monotonic()
            stopped = churn(c, args.churn, 20)
            took = time.monotonic() - t0
            print(f"churn: {stopped} copies stopped and replaced in {took:.0f}s "
                  f"({stopped / took:.1f}/s)", flush=True)  # fmt: skip
            c.http.delete("/v1/job/churn", params={"purge": "true"}).raise_for_status()
            c.wait_no_allocs()
            time.sleep(args.idle)
            after_mb, after_cpu = measure(pid, args.window)
            print(f"after churn and {args.idle:.0f}s idle, 0 allocs: {after_mb:6.1f} MB, "
                  f"{after_cpu:5.2f}% of a core")  # fmt: skip
            ok = (idle_mb <= 60, per_mb <= 1, per_cpu <= 0.1, after_mb <= 80)
            word = ["met" if x else "NOT met" for x in ok]
            print(f"targets: idle <= 60 MB {word[0]}; per task <= 1 MB {word[1]} and <= 0.1% "
                  f"of a core {word[2]}; after churn <= 80 MB {word[3]}")  # fmt: skip
        finally:
            c.stop()
    print(f"agent_mb_after_churn={after_mb:.1f}")
    print(f"agent_mb_per_task={per_mb:.3f}")


if __name__ == "__main__":
    main()
