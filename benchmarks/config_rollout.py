"""Config rollout vs job update: the time from a change to every copy serving the new value.

On one `podium dev` (a real server and agent, process tasks), a web app of N copies serves
the content of app.conf, a template over the Config `bench/settings` and the task's env:

    value={{ config("bench/settings")["value"] }}{{ env.EXTRA }}

For N = 3 and 30, and update.max_parallel 1 (a health-gated rolling deployment) and 0 (all
at once), it times, in the same run, side by side:
    job update     a new job version changing env EXTRA (what a deploy of a new version does)
    config put     a new version of bench/settings (change_mode rolling)
and, with change_mode signal (the app reloads on SIGHUP), the config put alone.
"Serving" is checked by asking every copy the catalog lists as healthy, every 50 ms, until
N copies answer the new value. The last line is config_rollout_ratio= (the config puts'
total time over the job updates', rolling cases; the target is 1.1 or less).

    .venv/bin/python benchmarks/config_rollout.py [--sizes 3,30] [--rounds 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
PODIUM = [sys.executable, "-m", "podium.cli.main"]

APP = """\
import os, signal
from http.server import BaseHTTPRequestHandler, HTTPServer
state = {}
def load(*_):
    with open("app.conf") as f:
        state["body"] = f.read().encode()
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = state["body"] if self.path == "/" else b"ok"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
load()
signal.signal(signal.SIGHUP, load)
HTTPServer((os.environ["PODIUM_IP"], int(os.environ["PODIUM_PORT_HTTP"])), H).serve_forever()
"""


TEMPLATE = 'value={{ config("bench/settings")["value"] }}{{ env.EXTRA }}'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def job(name: str, count: int, max_parallel: int, mode: str, extra: str) -> dict[str, Any]:
    return {
        "name": name,
        "groups": [
            {
                "name": "web",
                "count": count,
                "network": {"ports": {"http": {}}},
                "update": {
                    "max_parallel": max_parallel,
                    "min_healthy_time": "500ms",
                    "healthy_deadline": "60s",
                },
                "services": [
                    {
                        "name": name,
                        "port": "http",
                        "checks": [
                            {
                                "type": "http",
                                "path": "/health",
                                "interval": "500ms",
                                "timeout": "400ms",
                            }
                        ],
                    }
                ],
                "tasks": [
                    {
                        "name": "app",
                        "config": {"command": "python3", "args": ["app.py"]},
                        "resources": {"cpu": 100, "memory": 48},
                        "env": {"EXTRA": extra},
                        "templates": [
                            {"destination": "app.py", "data": "{% raw %}" + APP + "{% endraw %}"},
                            {
                                "destination": "app.conf",
                                "change_mode": mode,
                                "data": TEMPLATE,
                            },
                        ],
                    }
                ],
            }
        ],
    }


class Cluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.addr = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(base_url=self.addr, timeout=30)
        log = open(root / "dev.log", "wb")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [*PODIUM, "dev", "--data-dir", str(root / "dev"), "--addr", f"127.0.0.1:{self.port}",
             "--dns-addr", "off", "--ingress-addr", "off", "--insecure"],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if any(n["status"] == "ready" for n in self.http.get("/v1/nodes").json()):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"podium dev did not start: {(root / 'dev.log').read_text()[-2000:]}")

    def put_config(self, value: str) -> None:
        r = self.http.put("/v1/config/bench/settings", json={"data": {"value": value}})
        r.raise_for_status()

    def run_job(self, spec: dict[str, Any]) -> None:
        r = self.http.post("/v1/jobs", json={"job": spec})
        if r.status_code != 200:
            raise SystemExit(f"job run failed: {r.text}")

    def serving(self, name: str) -> list[str]:
        endpoints = self.http.get(f"/v1/service/{name}").json()["endpoints"]
        out = []
        with httpx.Client(timeout=1) as client:
            for e in endpoints:
                try:
                    out.append(client.get(f"http://{e['address']}:{e['port']}/").text)
                except httpx.HTTPError:
                    out.append("")
        return out

    def wait_serving(self, name: str, count: int, want: str, *, timeout: float = 600) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            answers = self.serving(name)
            if len(answers) == count and all(a == want for a in answers):
                return time.monotonic() - t0
            time.sleep(0.05)
        allocs = self.http.get("/v1/allocations", params={"job": name}).json()
        states: dict[str, int] = {}
        for a in allocs:
            state = f"{a['desired_status']}/{a['client_status']}"
            states[state] = states.get(state, 0) + 1
        answers = self.serving(name)
        raise SystemExit(
            f"{name}: not every copy served {want!r} within {timeout}s: copies {states}, "
            f"{len(answers)} healthy, answering {sorted(set(answers))}"
        )

    def stop_job(self, name: str) -> None:
        """Stop, wait until every copy has ended (their ports and memory are free again),
        then purge. Purging first hides the copies still stopping, and the next case's
        copies would be placed on ports and memory they still hold."""
        self.http.delete(f"/v1/job/{name}")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if not [a for a in self.http.get("/v1/allocations", params={"job": name}).json()
                    if a["client_status"] in ("pending", "running")]:  # fmt: skip
                self.http.delete(f"/v1/job/{name}", params={"purge": "true"})
                return
            time.sleep(0.2)
        raise SystemExit(f"{name}: copies still running 120s after the job was stopped")

    def close(self) -> None:
        self.http.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        marker = str(self.root)
        for p in psutil.process_iter(["pid"]):
            try:
                if p.environ().get("PODIUM_ALLOC_DIR", "").startswith(marker):
                    p.kill()
            except (psutil.Error, OSError):
                continue
        for part in psutil.disk_partitions(all=True):
            if part.mountpoint.startswith(marker):
                subprocess.run(["umount", "-l", part.mountpoint], check=False)


def case(c: Cluster, n: int, max_parallel: int, mode: str, index: int) -> tuple[float, float]:
    """(job update seconds, config put seconds); the job update is 0 for signal."""
    name = f"b{index}-{n}-{max_parallel}-{mode}"
    c.put_config("a")
    c.run_job(job(name, n, max_parallel, mode, "x"))
    c.wait_serving(name, n, "value=ax")
    update = 0.0
    if mode == "rolling":
        t0 = time.monotonic()
        c.run_job(job(name, n, max_parallel, mode, "y"))
        c.wait_serving(name, n, "value=ay")
        update = time.monotonic() - t0
    t0 = time.monotonic()
    c.put_config("b")
    c.wait_serving(name, n, "value=b" + ("y" if mode == "rolling" else "x"))
    put = time.monotonic() - t0
    c.stop_job(name)
    return update, put


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="3,30", help="copy counts, comma-separated")
    parser.add_argument("--rounds", type=int, default=1, help="repeat each case this many times")
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    root = Path(tempfile.mkdtemp(prefix="podium-config-bench-"))
    c = Cluster(root)
    updates = puts = 0.0
    index = 0
    try:
        print(
            f"{'copies':>6} {'max_parallel':>12} {'mode':>8} {'job update s':>13} "
            f"{'config put s':>13} {'ratio':>6}"
        )
        for _ in range(args.rounds):
            for n in sizes:
                for max_parallel, mode in ((1, "rolling"), (0, "rolling"), (1, "signal")):
                    index += 1
                    update, put = case(c, n, max_parallel, mode, index)
                    ratio = f"{put / update:.2f}" if update else "-"
                    shown = f"{update:13.2f}" if update else f"{'-':>13}"
                    print(
                        f"{n:>6} {max_parallel:>12} {mode:>8} {shown} {put:13.2f} {ratio:>6}",
                        flush=True,
                    )
                    if mode == "rolling":
                        updates += update
                        puts += put
    finally:
        c.close()
        shutil.rmtree(root, ignore_errors=True)
    print(f"rolling total: job updates {updates:.2f}s, config puts {puts:.2f}s")
    print(f"config_rollout_ratio={puts / updates:.3f}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
