"""What mutual TLS costs the API: the same server with mTLS and without, side by side.

    1. requests/s and p99 of GET /v1/status, keep-alive clients: mTLS vs plain
    2. the same with a new connection per request (a full handshake each time)
    3. heartbeats/s one server sustains from 1,000 simulated agents, each with its own
       agent certificate and connection (mTLS)

Both servers are `podium server` processes on loopback with SQLite, identical but for
`--insecure`; rounds alternate between them. Last line: tls_rps_ratio= (mTLS ÷ plain,
keep-alive); the target is >= 0.8.

    .venv/bin/python benchmarks/tls_overhead.py [--seconds 5] [--rounds 2] [--agents 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from podium.tls import pki  # noqa: E402
from podium.tls.authority import CAState  # noqa: E402

PODIUM = [sys.executable, "-m", "podium.cli.main"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(data: Path, *, tls: bool) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    args = ["server", "--addr", f"127.0.0.1:{port}", "--data-dir", str(data), "--dns-addr", "off"]
    if not tls:
        args.append("--insecure")
    proc = subprocess.Popen(
        [*PODIUM, *args, "--log-level", "error"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    scheme = "https" if tls else "http"
    return proc, f"{scheme}://127.0.0.1:{port}"


def ctx_for(tls_dir: Path, cert: str = "cli") -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(tls_dir / "ca.pem"))
    ctx.load_cert_chain(str(tls_dir / f"{cert}.pem"), str(tls_dir / f"{cert}-key.pem"))
    return ctx


def wait_up(url: str, verify: Any) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/v1/status", verify=verify, timeout=2).status_code == 200:
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.1)
    raise SystemExit(f"server at {url} did not start")


async def load(
    url: str, verify: Any, *, seconds: float, workers: int, keepalive: bool
) -> tuple[float, float]:
    """(requests/s, p99 ms) of GET /v1/status from `workers` concurrent loops."""
    limits = httpx.Limits(max_keepalive_connections=workers if keepalive else 0)
    lat: list[float] = []
    async with httpx.AsyncClient(verify=verify, limits=limits, timeout=10) as c:
        deadline = time.monotonic() + seconds

        async def worker() -> None:
            n = 0
            while time.monotonic() < deadline and n < 1_000_000:
                t0 = time.perf_counter()
                r = await c.get(url + "/v1/status")
                lat.append(time.perf_counter() - t0)
                r.raise_for_status()
                n += 1

        t0 = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(workers)))
        took = time.monotonic() - t0
    lat.sort()
    return len(lat) / took, lat[int(len(lat) * 0.99) - 1] * 1000 if lat else 0.0


def issue_agents(tls_dir: Path, db: Path, out: Path, n: int) -> list[tuple[str, Path]]:
    """n agent certificates from the cluster's CA (read as a server does: KEK + store)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    (value,) = con.execute("SELECT value FROM kv WHERE key = '/tls/ca'").fetchone()
    con.close()
    state = msgspec.json.decode(value, type=CAState)
    ca = pki.load_certs(state.signer_cert)[0]
    key = pki.load_key(pki.unseal((tls_dir / "kek").read_bytes(), state.signer_key))
    out.mkdir(parents=True, exist_ok=True)
    agents = []
    for i in range(n):
        node_id = f"sim-{i:05d}"
        k = pki.make_key()
        leaf = pki.issue(ca, key, k.public_key(), role="agent", name=node_id, lifetime=3600)
        (out / f"{node_id}.pem").write_text(pki.cert_pem(leaf))
        (out / f"{node_id}-key.pem").write_text(pki.key_pem(k))
        agents.append((node_id, out / node_id))
    return agents


async def heartbeats(url: str, ca: Path, agents: list[tuple[str, Path]], seconds: float) -> float:
    clients = []
    for node_id, base in agents:
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.load_cert_chain(f"{base}.pem", f"{base}-key.pem")
        clients.append((node_id, httpx.AsyncClient(verify=ctx, timeout=30)))
    sem = asyncio.Semaphore(200)  # connections opened at once

    async def register(node_id: str, c: httpx.AsyncClient) -> None:
        async with sem:
            body = {"id": node_id, "name": node_id, "address": "127.0.0.1"}
            (await c.post(url + "/v1/nodes/register", json=body)).raise_for_status()

    await asyncio.gather(*(register(n, c) for n, c in clients))
    count = 0
    deadline = time.monotonic() + seconds

    async def beat(node_id: str, c: httpx.AsyncClient) -> None:
        nonlocal count
        while time.monotonic() < deadline:
            (await c.post(f"{url}/v1/node/{node_id}/heartbeat")).raise_for_status()
            count += 1

    t0 = time.monotonic()
    await asyncio.gather(*(beat(n, c) for n, c in clients))
    took = time.monotonic() - t0
    for _, c in clients:
        await c.aclose()
    return count / took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--agents", type=int, default=1000)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="podium-tls-bench-"))
    tls_proc, tls_url = start_server(base / "tls", tls=True)
    plain_proc, plain_url = start_server(base / "plain", tls=False)
    try:
        tls_dir = base / "tls" / "tls"
        deadline = time.monotonic() + 30
        while not (tls_dir / "cli.pem").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        ctx = ctx_for(tls_dir)
        wait_up(tls_url, ctx)
        wait_up(plain_url, True)
        results: dict[str, list[tuple[float, float]]] = {}
        for r in range(args.rounds):
            for keepalive in (True, False):
                for name, url, verify in (("mtls", tls_url, ctx), ("plain", plain_url, True)):
                    key = f"{name}-{'keepalive' if keepalive else 'newconn'}"
                    rps, p99 = asyncio.run(
                        load(
                            url,
                            verify,
                            seconds=args.seconds,
                            workers=args.workers,
                            keepalive=keepalive,
                        )
                    )
                    results.setdefault(key, []).append((rps, p99))
                    print(f"round {r + 1} {key:16} {rps:8.0f} req/s  p99 {p99:6.1f} ms", flush=True)
        med = {
            k: (statistics.median(x for x, _ in v), statistics.median(y for _, y in v))
            for k, v in results.items()
        }
        print()
        for k, (rps, p99) in med.items():
            print(f"{k:16} median {rps:8.0f} req/s  p99 {p99:6.1f} ms")
        agents = issue_agents(tls_dir, base / "tls" / "podium.db", base / "agents", args.agents)
        hb = asyncio.run(heartbeats(tls_url, tls_dir / "ca.pem", agents, args.seconds * 2))
        who = f"{args.agents} mTLS agents (a certificate, a connection each)"
        print(f"heartbeats/s from {who}: {hb:.0f}")
        ratio_new = med["mtls-newconn"][0] / med["plain-newconn"][0]
        print(f"tls_newconn_ratio={ratio_new:.2f}")
        print(f"tls_rps_ratio={med['mtls-keepalive'][0] / med['plain-keepalive'][0]:.2f}")
    finally:
        for p in (tls_proc, plain_proc):
            p.terminate()
            p.wait(10)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
