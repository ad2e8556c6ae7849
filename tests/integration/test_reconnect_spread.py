"""200 agents that lost their server together come back spread out, not in lockstep
(issue 19, item 8): a real `podium server` is killed and started again while 200
simulated agents (the agent's own registration loop, real HTTP clients) retry."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from integration.cluster import free_port, wait_until
from integration.multinode import _end, _spawn
from podium.agent.agent import Agent, AgentConfig
from podium.model.types import Node, NodeResources

pytestmark = pytest.mark.integration

AGENTS = 200
DOWN_FOR = 4.0  # seconds the server is away while the agents retry


def _start_server(port: int, data_dir: Path) -> subprocess.Popen[bytes]:
    return _spawn(
        # Plain HTTP (--insecure): what is measured is when agents come back, not TLS; each
        # simulated agent proves itself by the node secret the server issues.
        ["server", "--addr", f"127.0.0.1:{port}", "--data-dir", str(data_dir), "--insecure"],
        data_dir.parent / "server.log",
    )


def _up(addr: str) -> bool:
    return httpx.get(addr + "/v1/status", timeout=1).status_code == 200


async def test_agents_reconnecting_after_a_server_restart_spread_their_first_requests(
    tmp_path: Path,
) -> None:
    port = free_port()
    addr = f"http://127.0.0.1:{port}"
    proc = _start_server(port, tmp_path / "server")
    agents: list[Agent] = []
    try:
        wait_until(lambda: _up(addr), timeout=30, what="the server")
        proc.kill()
        proc.wait(10)
        sent: list[list[float]] = [[] for _ in range(AGENTS)]
        for i in range(AGENTS):
            agent = Agent(AgentConfig(servers=[addr], data_dir=str(tmp_path / f"a{i}")), {})
            agent.node = Node(
                id=f"sim-{i:03d}",
                name=f"sim-{i:03d}",
                resources=NodeResources(cpu=1000, memory=1000),
            )

            async def record(_req: httpx.Request, times: list[float] = sent[i]) -> None:
                times.append(time.monotonic())

            agent.client._http.event_hooks["request"].append(record)
            agents.append(agent)
        t0 = time.monotonic()
        async with asyncio.TaskGroup() as tg:
            for agent in agents:
                tg.create_task(agent._register())
            await asyncio.sleep(DOWN_FOR)  # every agent fails and backs off meanwhile
            proc = _start_server(port, tmp_path / "server")
            async with asyncio.timeout(60):
                while not all(a.registered.is_set() for a in agents):
                    await asyncio.sleep(0.05)
        # Each agent's last request is the one that reached the restarted server.
        first = sorted(times[-1] - t0 for times in sent)
        busiest = max(sum(1 for t in first if s <= t < s + 0.25) for s in first)
        middle = first[int(0.9 * AGENTS) - 1] - first[int(0.1 * AGENTS)]
        print(
            f"first requests from {first[0]:.2f}s to {first[-1]:.2f}s; middle 80% over "
            f"{middle:.2f}s; busiest 250 ms held {busiest} of {AGENTS}"
        )
        assert busiest <= AGENTS // 4, f"{busiest} of {AGENTS} agents came back within 250 ms"
        assert middle >= 1.0, f"the middle 80% came back within {middle:.2f}s"
        assert len(_nodes(addr)) == AGENTS
    finally:
        for agent in agents:
            await agent.client.close()
        _end(proc)


def _nodes(addr: str) -> list[object]:
    return list(httpx.get(addr + "/v1/nodes", timeout=10).json())
