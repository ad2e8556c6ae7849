"""Docker Engine's own floor for starting many containers at once, without podium.

Sends N container creates and starts (default 49, what `vs_swarm.py` adds when it scales
1 -> 50) straight to the Engine API, all at once, with the same small image, for each
network mode: `none` (a network namespace, no interface), `bridge` (the default, as
podium's and Swarm's tasks get) and `host` (no namespace of its own). Prints the time
until every start returned, per mode (median of --rounds), and last the share of the
bridge time that the host's network saves: `netns_share=R`. It tells how much of
podium's time in vs_swarm.py is Docker's own, and where Docker spends it.

Leaves nothing behind (every container it made is removed).

Run: .venv/bin/python benchmarks/docker_start.py [--count 49] [--rounds 2]   (root)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from integration.docker_image import IMAGE, engine_problem, ensure_image  # noqa: E402

LABEL = "podium-bench=docker-start"


async def trial(client: httpx.AsyncClient, mode: str, count: int) -> float:
    body = {
        "Image": IMAGE,
        "Cmd": ["sleep", "100000"],
        "Labels": {"podium-bench": "docker-start"},
        "HostConfig": {"NetworkMode": mode},
    }

    async def one() -> str:
        r = await client.post("/containers/create", json=body)
        r.raise_for_status()
        cid: str = r.json()["Id"]
        r = await client.post(f"/containers/{cid}/start")
        r.raise_for_status()
        return cid

    t0 = time.monotonic()
    results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    elapsed = time.monotonic() - t0
    await remove_all(client)
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        raise RuntimeError(f"{mode}: {len(failed)} of {count} did not start: {failed[0]}")
    await asyncio.sleep(2)  # let the kernel finish tearing down the namespaces
    return elapsed


async def remove_all(client: httpx.AsyncClient) -> None:
    r = await client.get(
        "/containers/json", params={"all": "1", "filters": f'{{"label":["{LABEL}"]}}'}
    )
    r.raise_for_status()
    await asyncio.gather(
        *(client.delete(f"/containers/{c['Id']}", params={"force": "1"}) for c in r.json())
    )


async def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--count", type=int, default=49)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    problem = engine_problem()
    if problem:
        raise SystemExit(f"no docker engine: {problem}")
    ensure_image()
    transport = httpx.AsyncHTTPTransport(uds="/var/run/docker.sock")
    async with httpx.AsyncClient(transport=transport, base_url="http://docker", timeout=300) as c:
        times: dict[str, list[float]] = {"none": [], "bridge": [], "host": []}
        try:
            for _ in range(max(1, args.rounds)):
                for mode, seen in times.items():  # alternated, so drift hits every mode
                    seen.append(await trial(c, mode, args.count))
        finally:
            await remove_all(c)
    med = {mode: statistics.median(seen) for mode, seen in times.items()}
    for mode, seen in times.items():
        runs = ", ".join(f"{t:.2f}" for t in seen)
        print(f"{args.count} containers at once, network {mode}: median {med[mode]:.2f}s ({runs})")
    print(f"netns_share={(med['bridge'] - med['host']) / med['bridge']:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
