"""A node that comes back keeps its lost copies unless their replacement already serves
elsewhere (server/reconnect.py), decided in the same write that makes the node ready."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from podium.model.types import AllocUpdate, DisconnectPolicy, Job, TaskState
from podium.runtime.clock import FakeClock
from podium.scheduler import group_hash, reconcile
from podium.scheduler.reconcile import LOST_REASON
from podium.server import allocs, nodes
from podium.server.events import decode_event
from podium.server.nodes import Heartbeats
from podium.server.state import ClusterState, encode
from podium.store import keys
from support.builders import make_alloc, make_group, make_job, make_node
from support.state import memory_state

NOW = 1000.0


@pytest.fixture
async def state() -> AsyncIterator[ClusterState]:
    async with memory_state() as st:
        yield st


def _job(policy: str = "keep_original") -> Job:
    return make_job(
        "app",
        groups=[make_group("web", count=1, disconnect=DisconnectPolicy(reconcile=policy))],  # type: ignore[arg-type]
    )


async def _put(state: ClusterState, *objs: Any) -> None:
    rev = 0
    for o in objs:
        key = keys.alloc(o.id) if hasattr(o, "job_version") else None
        if key is None:
            key = keys.node(o.id) if hasattr(o, "heartbeat_ttl") else keys.job(o.namespace, o.name)
        rev = await state.store.put(key, encode(o))
    await state.wait_for(rev)


async def _scene(
    state: ClusterState, *, policy: str = "keep_original", replacement: str = "pending",
    same_node: bool = False,
) -> None:  # fmt: skip
    job = _job(policy)
    running = {"main": TaskState(state="running", pid=42)}
    lost = make_alloc(
        job, group="web", id="orig", node="n1", client="lost", desired="stop",
        desired_reason=LOST_REASON, next_alloc="repl", task_states=running,
        group_hash=group_hash(job, job.groups[0]),
    )  # fmt: skip
    repl = make_alloc(
        job, group="web", id="repl", node="n1" if same_node else "n2", client=replacement,
        previous_alloc="orig", create_time=5.0, group_hash=group_hash(job, job.groups[0]),
    )  # fmt: skip
    await _put(state, make_node("n1", status="down"), make_node("n2"), job, lost, repl)


async def _events(state: ClusterState) -> list[str]:
    kvs, _ = await state.store.list(keys.EVENTS)
    return [e.type for e in map(decode_event, kvs)]


async def test_the_original_runs_on_when_its_replacement_has_not_started(
    state: ClusterState,
) -> None:
    await _scene(state, replacement="pending")
    assert await nodes.set_status(state, "n1", "ready", "heartbeat resumed", now=NOW)
    orig, repl = state.allocs["orig"], state.allocs["repl"]
    assert state.nodes["n1"].status == "ready"
    assert (orig.desired_status, orig.client_status, orig.next_alloc) == ("run", "running", "")
    assert orig.task_states["main"].pid == 42
    assert repl.desired_status == "stop" and "came back" in repl.desired_reason
    assert {"alloc.reconnected", "alloc.replacement_cancelled"} <= set(await _events(state))
    # The placement controller's reconciler leaves it so: the original is the copy.
    rec = reconcile(state.jobs["default/app"], list(state.allocs.values()), state.nodes, now=NOW)
    assert not rec.place and not [s for s in rec.stop if s.alloc_id == "orig"]


async def test_a_replacement_on_the_same_node_is_cancelled_even_when_running(
    state: ClusterState,
) -> None:
    await _scene(state, replacement="running", same_node=True)
    # Re-registration (an agent that restarted) decides the same way as a heartbeat.
    await nodes.register(state, Heartbeats(FakeClock()), make_node("n1"), now=NOW)
    assert state.allocs["orig"].desired_status == "run"
    assert state.allocs["repl"].desired_status == "stop"


async def test_the_original_goes_when_its_replacement_serves_elsewhere(
    state: ClusterState,
) -> None:
    await _scene(state, replacement="running")
    assert await nodes.set_status(state, "n1", "ready", "heartbeat resumed", now=NOW)
    assert state.allocs["orig"].client_status == "lost"
    assert state.allocs["repl"].desired_status == "run"


async def test_keep_replacement_stops_the_original(state: ClusterState) -> None:
    await _scene(state, policy="keep_replacement", replacement="pending")
    assert await nodes.set_status(state, "n1", "ready", "heartbeat resumed", now=NOW)
    assert state.allocs["orig"].client_status == "lost"
    assert state.allocs["repl"].desired_status == "run"


async def test_a_report_for_a_lost_copy_waits_until_the_node_is_back(
    state: ClusterState,
) -> None:
    await _scene(state)
    update = AllocUpdate(id="orig", client_status="running")
    applied, rejected = await allocs.apply_updates(state, "n1", [update], now=NOW)
    assert applied == 0 and [(r.id, r.retry) for r in rejected] == [("orig", True)]
    assert state.allocs["orig"].client_status == "lost"
    await nodes.set_status(state, "n1", "ready", "heartbeat resumed", now=NOW)
    applied, rejected = await allocs.apply_updates(state, "n1", [update], now=NOW)
    assert applied == 1 and not rejected


def test_a_duplicate_keeps_the_original_over_its_replacement() -> None:
    job = _job()
    h = group_hash(job, job.groups[0])
    orig = make_alloc(job, group="web", id="orig", node="n1", create_time=1.0, group_hash=h)
    repl = make_alloc(
        job, group="web", id="repl", node="n2", create_time=9.0, previous_alloc="orig",
        group_hash=h,
    )  # fmt: skip
    other = msgspec.structs.replace(repl, id="newer", previous_alloc="", create_time=10.0)
    ns = {n.id: n for n in (make_node("n1"), make_node("n2"))}
    rec = reconcile(job, [orig, repl], ns, now=NOW)
    assert [s.alloc_id for s in rec.stop] == ["repl"]
    # Without an original among them, the newest copy stays, as before.
    rec = reconcile(job, [repl, other], ns, now=NOW)
    assert [s.alloc_id for s in rec.stop] == ["repl"]
