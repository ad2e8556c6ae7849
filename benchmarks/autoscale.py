"""Autoscaling: reactive vs reactive + predictive on a replayed daily trace, and cold starts.

A real `podium dev` with its ingress. Two service groups run the same server
(tests/integration/scale_server.py, `/wait?ms=100` with 2 slots: a copy answers about
20 requests/s, more wait their turn):

  reactive     scaling: {policies: [{metric: rps, target: 10}]}
  predictive   the same, plus {predictive: {metric: rps, season: DAY, lead: LEAD}}

A synthetic daily trace (quiet night, a steep morning rise, a dip, a steeper lunch
peak, an evening decline; seeded noise), compressed so that a "day" lasts DAY seconds
(300 by default: two days in 10 minutes), is replayed open-loop through the ingress
against both groups at once. A request is under-provisioned when it is answered over
the latency SLO (400 ms; a copy's own work is 100 ms) or not answered 200 (refused,
timed out). Copy-seconds: the group's running copies, sampled every second.

The forecast needs one season of history, so day 1 is the same for both groups (both
reactive); day 2 compares them. Printed per day and group: requests, under-provisioned
requests (and their share), copy-seconds. Then the cold start from zero: a third group
(min 0, idle_timeout 2s) is woken by one request through the ingress 10 times; the
median first-request latency is printed beside Knative's reported 2-4 s for a
hello-world (knative/serving#13459: no cold-start metric there; reports range 2-18 s).

Last line: predictive_underprovision_ratio= (day 2, predictive / reactive under-provisioned
requests). The target is 0.5 or less at 1.1x the copy-seconds or less.

Run: .venv/bin/python benchmarks/autoscale.py   (not part of CI; about 12 minutes)
     --day 60 for a quick look (two 1-minute days).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

# The dev-cluster helpers and the test server live with the integration tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from integration.cluster import wait_until
from integration.test_autoscale import running, scaled_job, status
from integration.test_service_discovery import ServiceCluster

SLO = 0.4  # seconds
WORK_MS = 100  # each request holds one of a copy's 2 slots this long
TIMEOUT = 5.0  # a request not answered in this long counts as refused
KNATIVE_REPORTED = "2-4 s"  # hello-world cold start reported for Knative


def shape(x: float) -> float:
    """The daily pattern in requests/s at x in [0, 1) of the day."""

    def step(x0: float, x1: float, a: float, b: float) -> float:
        if x <= x0:
            return a
        if x >= x1:
            return b
        u = (x - x0) / (x1 - x0)
        return a + (b - a) * u * u * (3 - 2 * u)  # smoothstep

    if x < 0.20:
        return 3.0
    if x < 0.45:
        return step(0.20, 0.22, 3, 40)  # the morning rise
    if x < 0.50:
        return step(0.45, 0.47, 40, 22)
    if x < 0.65:
        return step(0.50, 0.515, 22, 58)  # the lunch peak, steeper
    return step(0.65, 0.85, 58, 3)  # the evening decline


def trace(day: float, days: int, seed: int, rate: float = 1.0) -> list[float]:
    """Due times (seconds from the start) of every request: each second's count is the
    pattern's rate with +-15 % noise (drawn anew each second of each day), spread evenly
    in the second."""
    rng = random.Random(seed)
    due: list[float] = []
    for d in range(days):
        for s in range(math.ceil(day)):
            n = round(shape(s / day) * rng.uniform(0.85, 1.15) * rate)
            due.extend(d * day + s + (i + 0.5) / n for i in range(n))
    return due


@dataclass
class Group:
    name: str
    results: list[tuple[float, float, int]] = field(default_factory=list)  # (due, took, status)
    copies: list[tuple[float, int]] = field(default_factory=list)  # (time, running copies)

    def day(self, d: int, length: float) -> tuple[int, int, float]:
        """(requests, under-provisioned, copy-seconds) of day d (0-based)."""
        lo, hi = d * length, (d + 1) * length
        rs = [r for r in self.results if lo <= r[0] < hi]
        bad = sum(1 for _, took, st in rs if st != 200 or took > SLO)
        samples = [n for t, n in self.copies if lo <= t < hi]
        # samples are a second apart: copy-seconds is their sum, scaled to the day.
        copy_s = sum(samples) * length / max(1, len(samples))
        return len(rs), bad, copy_s


async def get(port: int, host: str, path: str) -> int:
    """One request on a connection of its own (no pool to exhaust when the service lags:
    an overloaded copy's requests time out and are closed, nothing is left behind)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        if m:
            await reader.readexactly(int(m[1]))
        return int(head[9:12])
    finally:
        writer.close()


async def replay(ingress: int, groups: list[Group], due: list[float]) -> None:
    """Open-loop: every request leaves at its due time whatever the earlier ones did;
    bounded by the trace's length and each request's timeout."""
    start = time.monotonic()
    pending: set[asyncio.Task[None]] = set()

    async def one(g: Group, t: float) -> None:
        t0 = time.monotonic()
        try:
            async with asyncio.timeout(TIMEOUT):
                st = await get(ingress, f"{g.name}.test", f"/wait?ms={WORK_MS}")
        except (TimeoutError, OSError, ValueError, asyncio.IncompleteReadError):
            st = 0
        g.results.append((t, time.monotonic() - t0, st))

    for t in due:
        delay = start + t - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        for g in groups:
            task = asyncio.create_task(one(g, t))
            pending.add(task)
            task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending)


async def sample_copies(c: ServiceCluster, groups: list[Group], start: float, end: float) -> None:
    async with httpx.AsyncClient(base_url=c.addr, timeout=5, verify=c.ssl_context()) as api:
        while time.monotonic() < end:
            t = time.monotonic() - start
            for g in groups:
                try:
                    rows = (await api.get(f"/v1/job/{g.name}")).json()["allocations"]
                except (httpx.HTTPError, ValueError, KeyError):
                    continue
                n = sum(
                    1
                    for r in rows
                    if r["desired_status"] == "run" and r["client_status"] == "running"
                )
                g.copies.append((t, n))
            await asyncio.sleep(max(0.0, start + t + 1 - time.monotonic()))


async def run_trace(c: ServiceCluster, groups: list[Group], due: list[float], days: float) -> None:
    start = time.monotonic()
    sampler = asyncio.create_task(sample_copies(c, groups, start, start + days))
    await replay(c.ingress_port, groups, due)
    await sampler


def cold_starts(c: ServiceCluster, n: int, cpu: int) -> list[float]:
    c.run_job(scaled_job("cold", {"min": 0, "max": 1, "interval": "1s", "idle_timeout": "2s",
                                  "hold_timeout": "60s"}, cpu=cpu, env={"SLOTS": "2"}))  # fmt: skip
    out = []
    for i in range(n):
        wait_until(
            lambda: status(c, "cold")["count"] == 0 and running(c, "cold") == 0,
            timeout=60,
            interval=0.2,
            what="the group to sleep",
        )
        t0 = time.monotonic()
        r = httpx.get(f"http://127.0.0.1:{c.ingress_port}/", headers={"host": "cold.test"},
                      timeout=60)  # fmt: skip
        took = time.monotonic() - t0
        print(f"  cold start {i + 1}: {r.status_code} in {took:.2f}s", flush=True)
        if r.status_code == 200:
            out.append(took)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--day", type=float, default=300.0, help="seconds per compressed day")
    ap.add_argument("--lead", type=float, default=10.0, help="the predictive policy's lead, s")
    ap.add_argument("--cold", type=int, default=10, help="cold starts to time")
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument("--rate", type=float, default=1.0, help="scale the trace's rates (a smoke run)")
    args = ap.parse_args()
    day = args.day
    due = trace(day, 2, args.seed, args.rate)
    with tempfile.TemporaryDirectory(prefix="podium-autoscale-") as tmp:
        c = ServiceCluster(Path(tmp) / "dev").start()
        try:
            node = c.api("GET", "/v1/nodes")[0]
            cpu = max(50, min(250, int(node["resources"]["cpu"]) // 24))
            common: dict[str, Any] = {
                "min": 1, "max": 10, "interval": "2s", "scale_down_window": f"{day / 10:g}s",
                "tolerance": 0.1,
            }  # fmt: skip
            reactive = [{"metric": "rps", "target": 10}]
            predictive = [*reactive, {"predictive": {"metric": "rps", "season": f"{day:g}s",
                                                     "lead": f"{args.lead:g}s"}}]  # fmt: skip
            for name, policies in (("reactive", reactive), ("predictive", predictive)):
                c.run_job(scaled_job(name, {**common, "policies": policies}, cpu=cpu,
                                     env={"SLOTS": "2"}))  # fmt: skip
            wait_until(
                lambda: running(c, "reactive") == 1 and running(c, "predictive") == 1,
                timeout=60,
                what="one copy of each group",
            )
            time.sleep(3)  # their checks pass and the ingress knows them
            groups = [Group("reactive"), Group("predictive")]
            peak = max(shape(x / 100) for x in range(100)) * args.rate
            print(
                f"trace: {len(due)} requests per group over two {day:g}s days "
                f"(peak {peak:.0f}/s), SLO {SLO * 1000:.0f} ms, copy capacity "
                f"~{2000 / WORK_MS:.0f}/s, target 10/s per copy, cpu {cpu} MHz",
                flush=True,
            )
            asyncio.run(run_trace(c, groups, due, 2 * day))
            figures: dict[tuple[str, int], tuple[int, int, float]] = {}
            for d in (0, 1):
                for g in groups:
                    n, bad, copy_s = figures[(g.name, d)] = g.day(d, day)
                    print(f"day {d + 1} {g.name:>10}: {n} requests, {bad} under-provisioned "
                          f"({bad / max(1, n):.1%}), {copy_s:.0f} copy-seconds")  # fmt: skip
            forecast = status(c, "predictive").get("forecast") or {}
            print(f"predictive status: {forecast.get('text', '')}")
            colds = cold_starts(c, args.cold, cpu)
        finally:
            c.stop()
            c.kill_leftovers()
    _, r_bad, r_cs = figures[("reactive", 1)]
    _, p_bad, p_cs = figures[("predictive", 1)]
    ratio = p_bad / r_bad if r_bad else (0.0 if not p_bad else math.inf)
    cost = p_cs / r_cs if r_cs else math.inf
    print(
        f"day 2: predictive under-provisioned {p_bad} vs reactive {r_bad} "
        f"(ratio {ratio:.2f}, target <= 0.5), copy-seconds {cost:.2f}x (target <= 1.1x)"
    )
    if colds:
        print(
            f"cold start from zero, first request through the ingress: median "
            f"{statistics.median(colds):.2f}s of {len(colds)} (min {min(colds):.2f}s, "
            f"max {max(colds):.2f}s); Knative reports {KNATIVE_REPORTED} for a hello-world"
        )
    print(f"predictive_underprovision_ratio={ratio:.3f}")


if __name__ == "__main__":
    main()
