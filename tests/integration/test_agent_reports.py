"""Agent reports are never dropped silently (issue 19, item 2).

A real server (in this process, on the memory store, real HTTP on loopback) whose store
has conflicts injected: each time a report is about to be merged into its alloc, another
write to that alloc lands first. The server answers which reports it did not apply and
why; the agent's reporter keeps those and sends them again (the newest report for an
alloc wins) until they are applied, and drops them only when the alloc is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import msgspec
import pytest

from podium.agent.agent import Agent, AgentConfig
from podium.model.types import Allocation, AllocUpdate, TaskEvent
from podium.scheduler import group_hash
from podium.server.access import secret_hash
from podium.server.events import decode_event
from podium.server.runtime import Server, ServerConfig
from podium.server.state import encode
from podium.store import keys
from podium.store.base import Compare, Op, Put, TxnResult
from podium.store.memory import MemoryStore
from podium.tls.identity import NODE_ID_HEADER, NODE_SECRET_HEADER
from support.builders import make_alloc, make_job, make_node

pytestmark = pytest.mark.integration

JOB = make_job("app", count=2)
NODE_SECRET = "n1-secret-for-the-test"


class ConflictingStore(MemoryStore):
    """A memory store where, `conflicts[alloc_id]` times, a write to that alloc lands just
    before a transaction guarded on it (as a user's stop or restart would)."""

    def __init__(self) -> None:
        super().__init__()
        self.conflicts: dict[str, int] = {}
        self.injected = 0

    async def txn_many(
        self, txns: Sequence[tuple[Sequence[Compare], Sequence[Op]]]
    ) -> list[TxnResult]:
        for compares, _ in txns:
            for c in compares:
                alloc_id = c.key[len(keys.ALLOCS) :]
                if c.key.startswith(keys.ALLOCS) and self.conflicts.get(alloc_id, 0) > 0:
                    self.conflicts[alloc_id] -= 1
                    self.injected += 1
                    kv = await self.get(c.key)
                    assert kv is not None
                    a = msgspec.json.decode(kv.value, type=Allocation)
                    a.modify_time += 1
                    await super().txn([], [Put(c.key, encode(a))])
        return await super().txn_many(txns)


@pytest.fixture
async def server() -> AsyncIterator[tuple[Server, ConflictingStore]]:
    store = ConflictingStore()
    # A node and a job the allocs belong to, so the controllers leave them alone (the
    # node's heartbeat TTL outlasts the test: it never heartbeats).
    await store.put(keys.node("n1"), encode(make_node("n1")))
    # Plain HTTP (no TLS): the node proves itself with the secret it was issued once.
    await store.put(keys.node_secret("n1"), secret_hash(NODE_SECRET).encode())
    await store.put(keys.job("default", "app"), encode(JOB))
    srv = Server(ServerConfig(store_url="memory://", port=0, heartbeat_ttl=3600), store=store)
    task = asyncio.get_running_loop().create_task(srv.run())
    try:
        async with asyncio.timeout(10):
            await srv.started.wait()
        yield srv, store
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _agent(srv: Server, tmp_path: Path) -> Agent:
    agent = Agent(AgentConfig(servers=[srv.address], data_dir=str(tmp_path / "agent")), {})
    agent.node = make_node("n1")
    agent.client.headers = {NODE_ID_HEADER: "n1", NODE_SECRET_HEADER: NODE_SECRET}
    return agent


async def _alloc(srv: Server, alloc_id: str, index: int) -> Allocation:
    assert srv.ctx is not None
    state = srv.ctx.state
    a = make_alloc(JOB, id=alloc_id, index=index, node="n1", client="running")
    a.group_hash = group_hash(JOB, JOB.groups[0])
    rev = await state.store.put(keys.alloc(alloc_id), encode(a))
    await state.wait_for(rev)
    return state.allocs[alloc_id]


async def test_a_report_that_meets_conflicts_is_resent_until_applied(
    server: tuple[Server, ConflictingStore], tmp_path: Path
) -> None:
    srv, store = server
    assert srv.ctx is not None
    state = srv.ctx.state
    await _alloc(srv, "a1", 0)
    await _alloc(srv, "a2", 1)
    agent = await _agent(srv, tmp_path)
    store.conflicts["a1"] = 12  # more than the server retries within one request
    reporter = asyncio.get_running_loop().create_task(agent._reporter_loop())
    try:
        agent._report(
            AllocUpdate(
                id="a1",
                client_status="running",
                events=[TaskEvent(type="task.started", message="first")],
            )
        )
        agent._report(AllocUpdate(id="a2", client_status="complete"))
        # A newer report for a1 while the first may be on its way: the newer one wins.
        await asyncio.sleep(0.2)
        agent._report(
            AllocUpdate(
                id="a1",
                client_status="complete",
                client_description="exited 0",
                events=[TaskEvent(type="task.exited", message="second")],
            )
        )
        async with asyncio.timeout(15):
            while state.allocs["a1"].client_status != "complete" or agent._pending:
                await asyncio.sleep(0.05)
        assert store.injected == 12
        assert state.allocs["a1"].client_description == "exited 0"
        assert state.allocs["a2"].client_status == "complete"
        kvs, _ = await state.store.list(keys.EVENTS)
        told = [e.message for e in map(decode_event, kvs) if e.alloc == "a1"]
        assert any("first" in m for m in told) and any("second" in m for m in told), told
    finally:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
        await agent.client.close()


async def test_a_report_for_an_alloc_that_is_gone_is_dropped(
    server: tuple[Server, ConflictingStore], tmp_path: Path
) -> None:
    srv, _ = server
    assert srv.ctx is not None
    agent = await _agent(srv, tmp_path)
    answer = await agent.client.alloc_updates(
        "n1", [AllocUpdate(id="never-was", client_status="complete")]
    )
    assert answer["applied"] == 0
    assert answer["rejected"] == [
        {"id": "never-was", "reason": "the server has no such allocation", "retry": False}
    ]
    reporter = asyncio.get_running_loop().create_task(agent._reporter_loop())
    try:
        agent._report(AllocUpdate(id="never-was", client_status="complete"))
        async with asyncio.timeout(10):
            while agent.reports_sent < 1:
                await asyncio.sleep(0.01)
        # Judged as the answer came: a report kept for another try would be pending now.
        assert not agent._pending
        assert agent.reports_dropped == 1
    finally:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
        await agent.client.close()
