"""Proxy: podium's data plane against HAProxy, L4 and L7, in the same run.

Two backends are served by nginx (one worker) on 127.0.0.1. `wrk` (one thread,
keep-alive connections) drives load, in turn, straight at a backend (the baseline),
through HAProxy (one thread; `mode tcp`, then `mode http` with keep-alive and
connection reuse to the backends) and through `python -m podium.proxy` (one
process, uvloop; `--mode tcp`, then `--mode http`). Each proxy is pinned to core 0
with `taskset`; wrk and nginx are pinned to the other core.

Printed per proxy and mode: requests per second, the CPU seconds the proxy process
spent per 10,000 requests (utime+stime from /proc/PID/stat around the run: on 2 cores
the load generator can cap both proxies, so CPU per request is the fairer figure)
and the p99 latency it adds over going direct; each figure is the median of
`--rounds` measurements, haproxy and podium interleaved. Last line:
`ratio_vs_haproxy=R`, R = HAProxy's CPU per request / podium's, for L7 (higher is
better; 1.0 = as lean).

Beside podium's plain figures, the same proxy with mutual TLS between nodes ("podium
mTLS"): the backends count as another node's, reached as an agent's proxy reaches them
in a TLS cluster, through that node's mesh gateway (benchmarks/mesh_gateway.py: the
agent's own gateway as a process, on the load generator's core by default, its CPU
printed apart). The proxy holds an agent certificate of a CA made for the run and checks
the gateway's. Printed per mode: its requests/s and CPU per request beside plain
podium's, and the ratio of the two (plain's CPU per request / mTLS's).

Run: .venv/bin/python benchmarks/proxy.py [--duration 10] [--connections 50] [--rounds 3]
(not part of CI; installs nginx, haproxy and wrk with apt-get when missing and root).
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import tools

from podium.tls import pki
from podium.tls.files import Credentials

TOOLS = {"nginx": "nginx", "haproxy": "haproxy", "wrk": "wrk"}  # binary -> apt package
BODY = "x" * 64

NGINX_CONF = """
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server {{ listen 127.0.0.1:{a} backlog=4096; location / {{ return 200 "{body}"; }} }}
    server {{ listen 127.0.0.1:{b} backlog=4096; location / {{ return 200 "{body}"; }} }}
}}
"""

HAPROXY_CONF = """
global
    nbthread 1
    maxconn 4000
defaults
    mode {mode}
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    {http_options}
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
    balance roundrobin
    {reuse}
    server a 127.0.0.1:{a}
    server b 127.0.0.1:{b}
"""


@dataclass
class Result:
    rps: float
    requests: int
    p99_ms: float
    cpu_s: float = 0.0
    gateway_cpu_s: float = 0.0  # podium mTLS: the other node's mesh gateway

    @property
    def cpu_per_10k(self) -> float:
        return self.cpu_s / self.requests * 10_000 if self.requests else float("nan")

    @property
    def gateway_per_10k(self) -> float:
        return self.gateway_cpu_s / self.requests * 10_000 if self.requests else float("nan")


def median(rs: list[Result]) -> Result:
    """The median of each figure across rounds (CPU per request taken as a whole)."""
    mid = len(rs) // 2
    by_cpu = sorted(rs, key=lambda r: r.cpu_per_10k)[mid]
    return Result(
        rps=sorted(r.rps for r in rs)[mid],
        requests=by_cpu.requests,
        p99_ms=sorted(r.p99_ms for r in rs)[mid],
        cpu_s=by_cpu.cpu_s,
        gateway_cpu_s=by_cpu.gateway_cpu_s,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its reaped children, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def run_wrk(port: int, args: argparse.Namespace, pid: int | None) -> Result:
    cmd = [
        "taskset", "-c", args.load_cpu,
        tools.which("wrk") or "wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s",
        "--latency", f"http://127.0.0.1:{port}/",
    ]  # fmt: skip
    before = cpu_seconds(pid) if pid else 0.0
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    after = cpu_seconds(pid) if pid else 0.0
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    if p99 is None or "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk reported errors or no latency:\n{out}")
    return Result(rps, requests, float(p99.group(1)) * _UNITS[p99.group(2)], after - before)


def start(cmd: list[str], cpu: str, **kw: object) -> subprocess.Popen[str]:
    return subprocess.Popen(["taskset", "-c", cpu, *cmd], text=True, **kw)  # type: ignore[call-overload, no-any-return]


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def bench_haproxy(mode: str, a: int, b: int, work: Path, args: argparse.Namespace) -> Result:
    port = free_port()
    http = mode == "http"
    conf = work / f"haproxy-{mode}.cfg"
    conf.write_text(
        HAPROXY_CONF.format(
            mode=mode,
            port=port,
            a=a,
            b=b,
            http_options="option http-keep-alive" if http else "",
            reuse="http-reuse always" if http else "",
        )
    )
    proc = start([tools.which("haproxy") or "haproxy", "-f", str(conf), "-db"], args.proxy_cpu)
    try:
        wait_port(port)
        run_wrk(port, _warmup(args), proc.pid)
        return run_wrk(port, args, proc.pid)
    finally:
        stop(proc)


@dataclass
class Mesh:
    """Two nodes' agent certificates of one CA: the proxy's and the gateway's."""

    proxy: Credentials
    gateway: Credentials
    gateway_node: str = "bench-b"


def make_mesh(work: Path) -> Mesh:
    ca_cert, ca_key = pki.create_ca(common_name="podium benchmark CA")
    creds = {}
    for node in ("bench-a", "bench-b"):
        key = pki.make_key()
        cert = pki.issue(ca_cert, ca_key, key.public_key(), role="agent", name=node)
        c = creds[node] = Credentials.in_dir(str(work / "tls"), node)
        c.save(chain_pem=pki.cert_pem(cert), key=key, ca_pem=pki.cert_pem(ca_cert))
    return Mesh(creds["bench-a"], creds["bench-b"])


def listening(proc: subprocess.Popen[str], what: str) -> str:
    """The address a child prints once it is ready ("listening on HOST:PORT")."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening on"):
        raise RuntimeError(f"{what} did not start: {line!r}")
    return line.split()[-1]


def bench_podium(
    mode: str, a: int, b: int, args: argparse.Namespace, mesh: Mesh | None = None
) -> Result:
    """podium's proxy to the backends: straight, or (mesh) through another node's mesh
    gateway over mutual TLS; `gateway_cpu_s` of the result is the gateway's CPU."""
    port = free_port()
    cmd = [
        sys.executable, "-m", "podium.proxy", "--listen", f"127.0.0.1:{port}", "--mode", mode,
        "--backend", f"127.0.0.1:{a}", "--backend", f"127.0.0.1:{b}",
    ]  # fmt: skip
    gateway = None
    try:
        if mesh is not None:
            g = mesh.gateway
            gw_cmd = [
                sys.executable, str(Path(__file__).with_name("mesh_gateway.py")),
                "--listen", "127.0.0.1:0", "--allow", str(a), "--allow", str(b),
                "--tls-ca", g.ca, "--tls-cert", g.cert, "--tls-key", g.key,
            ]  # fmt: skip
            gateway = start(
                gw_cmd,
                args.gateway_cpu or args.load_cpu,
                stdout=subprocess.PIPE,
            )
            p = mesh.proxy
            cmd += [
                "--via", listening(gateway, "the mesh gateway"),
                "--tls-ca", p.ca, "--tls-cert", p.cert, "--tls-key", p.key,
                "--tls-name", pki.node_name(mesh.gateway_node),
            ]  # fmt: skip
        proc = start(cmd, args.proxy_cpu, stdout=subprocess.PIPE)
        try:
            listening(proc, "podium proxy")
            run_wrk(port, _warmup(args), proc.pid)
            before = cpu_seconds(gateway.pid) if gateway else 0.0
            result = run_wrk(port, args, proc.pid)
            result.gateway_cpu_s = (cpu_seconds(gateway.pid) - before) if gateway else 0.0
            return result
        finally:
            stop(proc)
    finally:
        if gateway is not None:
            stop(gateway)


def _warmup(args: argparse.Namespace) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), "duration": 1})


def main() -> int:
    p = argparse.ArgumentParser(description="podium proxy vs HAProxy")
    p.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--rounds", type=int, default=3, help="measurements per proxy; medians shown")
    p.add_argument("--proxy-cpu", default="0", help="core the proxy under test runs on")
    p.add_argument("--load-cpu", default="1", help="core wrk and nginx run on")
    p.add_argument(
        "--gateway-cpu", default="", help="core the mTLS runs' mesh gateway runs on (--load-cpu)"
    )
    args = p.parse_args()
    tools.ensure(TOOLS)
    a, b = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="podium-bench-proxy-") as tmp:
        work = Path(tmp)
        mesh = make_mesh(work)
        (work / "nginx.conf").write_text(NGINX_CONF.format(dir=tmp, a=a, b=b, body=BODY))
        nginx = start(
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
            wait_port(a)
            wait_port(b)
            run_wrk(a, _warmup(args), None)
            direct = run_wrk(a, args, None)
            print(f"direct (nginx):   {direct.rps:10.0f} rps  p99 {direct.p99_ms:7.3f} ms")
            results: dict[tuple[str, str], Result] = {}
            for mode, label in (("tcp", "L4"), ("http", "L7")):
                runs: dict[str, list[Result]] = {"haproxy": [], "podium": [], "podium mTLS": []}
                for _ in range(args.rounds):  # interleaved, so all meet the same noise
                    runs["haproxy"].append(bench_haproxy(mode, a, b, work, args))
                    runs["podium"].append(bench_podium(mode, a, b, args))
                    runs["podium mTLS"].append(bench_podium(mode, a, b, args, mesh))
                for name, rs in runs.items():
                    r = results[(name, mode)] = median(rs)
                    gateway = (
                        f"  + gateway {r.gateway_per_10k * 100:5.1f} us/req"
                        if name == "podium mTLS"
                        else ""
                    )
                    print(
                        f"{label} {name:11s} {r.rps:10.0f} rps  "
                        f"cpu {r.cpu_per_10k:6.3f} s/10k req ({r.cpu_per_10k * 100:5.1f} us/req)  "
                        f"p99 {r.p99_ms:7.3f} ms (+{r.p99_ms - direct.p99_ms:.3f} ms over direct)"
                        f"{gateway}  [cpu us/req per round: "
                        f"{', '.join(f'{x.cpu_per_10k * 100:.1f}' for x in rs)}]",
                        flush=True,
                    )
        finally:
            stop(nginx)
    l4 = results[("haproxy", "tcp")].cpu_per_10k / results[("podium", "tcp")].cpu_per_10k
    l7 = results[("haproxy", "http")].cpu_per_10k / results[("podium", "http")].cpu_per_10k
    for mode, label in (("tcp", "L4"), ("http", "L7")):
        plain, mtls = results[("podium", mode)], results[("podium mTLS", mode)]
        print(
            f"{label} podium with mTLS between nodes: {mtls.rps:.0f} rps against {plain.rps:.0f} "
            f"plain; the proxy's cpu per request plain/mTLS = "
            f"{plain.cpu_per_10k / mtls.cpu_per_10k:.2f} (the gateway adds "
            f"{mtls.gateway_per_10k * 100:.1f} us/req on the other node)"
        )
    print(f"L4 cpu ratio (haproxy/podium) = {l4:.2f}")
    print(f"ratio_vs_haproxy={l7:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
