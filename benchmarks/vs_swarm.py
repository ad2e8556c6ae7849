"""Scaling a containerized service from 1 to 50 replicas: podium vs Docker Swarm.

In one run, on this machine's Docker Engine, with the same local image (a static busybox,
built as the tests build it; no registry needed):
  A  podium: a `podium dev` cluster; the job is re-submitted with count 50; timed until the
     server reports 50 allocs running (and `docker ps` shows 50 containers)
  B  swarm:  `docker swarm init` on 127.0.0.1; `docker service scale svc=50`; timed until
     50 tasks are Running
alternating A, B, A, B, ... (--rounds, at least 3). Also, measured in the same run:
  - podium scaling 50 `process` tasks (1 -> 50), for comparison with containers;
  - the per-task start overhead of podium over a bare `docker run -d` (one task, median).
Prints each median; the last line is `ratio_vs_swarm=R` (podium median / swarm median,
lower is better). Leaves the machine as it found it: swarm left (if it was not in one),
its networks and every container it started removed.

Run: .venv/bin/python benchmarks/vs_swarm.py [--rounds 3]   (needs a docker engine; root)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from integration.docker_image import IMAGE, engine_problem, ensure_image  # noqa: E402

REPLICAS = 50
PODIUM_DEV = [sys.executable, "-m", "podium.cli.main", "dev"]
SERVICE = "podium-bench-swarm"
TIMEOUT = 180.0  # per trial
POLL = 0.02  # seconds between looks, the same for both sides
# The engine API, for looking at Swarm's tasks (one client for every look, as for podium).
ENGINE = httpx.Client(
    transport=httpx.HTTPTransport(uds="/var/run/docker.sock"), base_url="http://docker", timeout=10
)


def sh(*args: str, check: bool = True, timeout: float = 120) -> str:
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {r.returncode}: {r.stderr.strip()}")
    return r.stdout


def wait_for(
    pred: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, OSError, ValueError, KeyError):
            if pred():
                return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def containers(label: str) -> int:
    return len(sh("docker", "ps", "-q", "--filter", f"label={label}").split())


def remove_containers(label: str) -> None:
    ids = sh("docker", "ps", "-aq", "--filter", f"label={label}").split()
    if ids:
        sh("docker", "rm", "-fv", *ids, check=False)


# ── podium ─────────────────────────────────────────────────────────────────────────────


class Podium:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.addr = f"https://127.0.0.1:{free_port()}"
        self.proc: subprocess.Popen[bytes] | None = None
        # One client for every look: a new one per request costs ~25 ms of CPU (its TLS
        # context), which at a look every 20 ms would take a core from what is measured.
        # Made once `podium dev` has written its CA and management certificate.
        self.http: httpx.Client | None = None

    def __enter__(self) -> Podium:
        log = open(self.data_dir / "dev.log", "wb")  # owned by the subprocess
        addr = self.addr.removeprefix("https://")
        self.proc = subprocess.Popen(
            [
                *PODIUM_DEV,
                "--data-dir",
                str(self.data_dir),
                "--addr",
                addr,
                "--log-level",
                "warning",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        wait_for(lambda: (self.data_dir / "cli.json").exists(), timeout=30, what="credentials")
        tls = self.data_dir / "tls"
        ctx = ssl.create_default_context(cafile=str(tls / "ca.pem"))
        ctx.load_cert_chain(str(tls / "cli.pem"), str(tls / "cli-key.pem"))
        self.http = httpx.Client(base_url=self.addr, timeout=30, verify=ctx)
        wait_for(
            lambda: any(n["status"] == "ready" for n in self.get("/v1/nodes")),
            timeout=30,
            what="podium dev",
        )
        return self

    def __exit__(self, *exc: object) -> None:
        node = self.node_label()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if node:
            remove_containers(node)
        if self.http is not None:
            self.http.close()

    def node_label(self) -> str:
        path = self.data_dir / "agent" / "node-id"
        return f"podium.node_id={path.read_text().strip()}" if path.exists() else ""

    def get(self, path: str, **params: str) -> Any:
        assert self.http is not None
        r = self.http.get(path, params=params, timeout=10)
        r.raise_for_status()
        return r.json()

    def submit(self, job: dict[str, Any]) -> None:
        assert self.http is not None
        r = self.http.post("/v1/jobs", json={"job": job})
        r.raise_for_status()

    def running(self, job: str) -> int:
        return sum(
            1
            for a in self.get("/v1/allocations", job=job)
            if a["desired_status"] == "run" and a["client_status"] == "running"
        )

    def stop(self, job: str) -> None:
        assert self.http is not None
        self.http.delete(f"/v1/job/{job}", params={"purge": "true"})

    def scale_trial(self, name: str, task: dict[str, Any]) -> float:
        """Seconds from submitting count 50 (with 1 already running) to 50 running."""

        def job(count: int) -> dict[str, Any]:
            return {"name": name, "groups": [{"name": "g", "count": count, "tasks": [task]}]}

        self.submit(job(1))
        wait_for(lambda: self.running(name) == 1, timeout=TIMEOUT, what=f"{name}: 1 running")
        t0 = time.monotonic()
        self.submit(job(REPLICAS))
        wait_for(
            lambda: self.running(name) == REPLICAS,
            timeout=TIMEOUT,
            what=f"{name}: {REPLICAS} running",
            interval=POLL,
        )
        elapsed = time.monotonic() - t0
        if task["driver"] == "docker":
            n = containers(self.node_label())
            assert n == REPLICAS, f"podium reports {REPLICAS} running but docker has {n}"
        self.stop(name)
        if task["driver"] == "docker":
            wait_for(lambda: containers(self.node_label()) == 0, timeout=60, what="cleanup")
        else:
            wait_for(lambda: self.running(name) == 0, timeout=60, what="cleanup")
        return elapsed

    def single_start(self, name: str) -> float:
        """Seconds from submitting a 1-container job to it running (the per-task latency)."""
        t0 = time.monotonic()
        self.submit({"name": name, "groups": [{"name": "g", "tasks": [container_task()]}]})
        wait_for(
            lambda: self.running(name) == 1, timeout=60, what=f"{name} running", interval=0.005
        )
        elapsed = time.monotonic() - t0
        self.stop(name)
        wait_for(lambda: containers(self.node_label()) == 0, timeout=60, what="cleanup")
        return elapsed


def container_task(network_mode: str = "bridge") -> dict[str, Any]:
    """The default network (bridge), as Swarm's tasks get: the headline compares like with like."""
    return {
        "name": "t",
        "driver": "docker",
        "kill_timeout": "1s",
        "config": {
            "image": IMAGE,
            "command": "sleep",
            "args": ["100000"],
            "network_mode": network_mode,
        },
        "resources": {"cpu": 10, "memory": 16},
    }


def process_task() -> dict[str, Any]:
    return {
        "name": "t",
        "driver": "process",
        "kill_timeout": "1s",
        "config": {"command": "sleep", "args": ["100000"]},
        "resources": {"cpu": 10, "memory": 16},
    }


# ── swarm ──────────────────────────────────────────────────────────────────────────────


@contextlib.contextmanager
def swarm() -> Iterator[None]:
    state = sh("docker", "info", "--format", "{{.Swarm.LocalNodeState}}").strip()
    networks_before = set(sh("docker", "network", "ls", "-q").split())
    ours = state != "active"
    if ours:
        sh(
            "docker",
            "swarm",
            "init",
            "--advertise-addr",
            "127.0.0.1",
            "--listen-addr",
            "127.0.0.1:2377",
        )
    try:
        yield
    finally:
        sh("docker", "service", "rm", SERVICE, check=False)
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: swarm_containers() == 0, timeout=60, what="swarm cleanup")
        if ours:
            sh("docker", "swarm", "leave", "--force", check=False)
            # Swarm leaves docker_gwbridge (and ingress) behind: remove what it added.
            for net in set(sh("docker", "network", "ls", "-q").split()) - networks_before:
                sh("docker", "network", "rm", net, check=False)


def swarm_containers() -> int:
    return containers(f"com.docker.swarm.service.name={SERVICE}")


def swarm_running() -> int:
    """Tasks Swarm reports running: one engine API request per look, as podium's side is one
    GET (`docker service ps` would start a CLI process, and ask more, on every look)."""
    filters = json.dumps({"service": [SERVICE], "desired-state": ["running"]})
    r = ENGINE.get("/tasks", params={"filters": filters})
    r.raise_for_status()
    return sum(1 for t in r.json() if t["Status"]["State"] == "running")


def swarm_scale_trial() -> float:
    sh(
        "docker",
        "service",
        "create",
        "--detach",
        "--no-resolve-image",
        "--name",
        SERVICE,
        "--replicas",
        "1",
        "--stop-grace-period",
        "1s",
        IMAGE,
        "sleep",
        "100000",
    )
    wait_for(lambda: swarm_running() == 1, timeout=TIMEOUT, what="swarm: 1 running")
    t0 = time.monotonic()
    sh("docker", "service", "scale", "--detach", f"{SERVICE}={REPLICAS}")
    wait_for(
        lambda: swarm_running() == REPLICAS,
        timeout=TIMEOUT,
        what=f"swarm: {REPLICAS} running",
        interval=POLL,
    )
    elapsed = time.monotonic() - t0
    sh("docker", "service", "rm", SERVICE)
    wait_for(lambda: swarm_containers() == 0, timeout=60, what="swarm cleanup")
    return elapsed


def bare_docker_run() -> float:
    t0 = time.monotonic()
    cid = sh("docker", "run", "-d", "--label", "podium-bench=bare", IMAGE, "sleep", "100000")
    elapsed = time.monotonic() - t0
    sh("docker", "rm", "-f", cid.strip())
    return elapsed


# ── main ───────────────────────────────────────────────────────────────────────────────


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="A/B alternations (at least 3)")
    args = ap.parse_args()
    rounds = max(3, args.rounds)
    problem = engine_problem()
    if problem:
        sys.exit(f"vs_swarm: needs a docker engine: {problem} (try scripts/ensure-docker.sh)")
    ensure_image()
    tmp = Path(tempfile.mkdtemp(prefix="podium-vs-swarm-"))
    podium_s: list[float] = []
    swarm_s: list[float] = []
    process_s: list[float] = []
    host_s: list[float] = []  # containers on the node's network (network_mode: host)
    single_s: list[float] = []
    bare_s: list[float] = []
    try:
        with Podium(tmp) as p, swarm():
            for r in range(rounds):
                podium_s.append(p.scale_trial(f"bench-c{r}", container_task()))
                print(f"round {r + 1}: podium {podium_s[-1]:.2f}s", flush=True)
                swarm_s.append(swarm_scale_trial())
                print(f"round {r + 1}: swarm  {swarm_s[-1]:.2f}s", flush=True)
            for r in range(rounds):
                process_s.append(p.scale_trial(f"bench-p{r}", process_task()))
                host_s.append(p.scale_trial(f"bench-h{r}", container_task("host")))
            for r in range(rounds * 2):
                bare_s.append(bare_docker_run())
                single_s.append(p.single_start(f"bench-one{r}"))
    finally:
        remove_containers("podium-bench=bare")
        shutil.rmtree(tmp, ignore_errors=True)
        ENGINE.close()
    med = statistics.median
    print(f"podium_containers_1_to_{REPLICAS}_median_s={med(podium_s):.3f}")
    print(f"swarm_containers_1_to_{REPLICAS}_median_s={med(swarm_s):.3f}")
    print(f"podium_processes_1_to_{REPLICAS}_median_s={med(process_s):.3f}")
    print(f"podium_host_network_containers_1_to_{REPLICAS}_median_s={med(host_s):.3f}")
    print(f"bare_docker_run_median_s={med(bare_s):.3f}")
    print(f"podium_one_container_median_s={med(single_s):.3f}")
    print(f"podium_per_task_overhead_over_docker_run_s={med(single_s) - med(bare_s):.3f}")
    print(json.dumps({"podium": podium_s, "swarm": swarm_s, "process": process_s, "host": host_s}))
    print(f"ratio_vs_swarm={med(podium_s) / med(swarm_s):.3f}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
