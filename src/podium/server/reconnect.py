"""A node that comes back keeps its healthy work (Nomad's disconnect.reconcile).

When a `down` node is heard from again (a heartbeat or a registration), it becomes
`ready` in ONE transaction with the decision about each of its copies that were marked
lost because it went down:

    disconnect.reconcile     its live replacements                the lost copy
    keep_original (default)  none, none running yet, or only      runs on (desired run
                             on this same node                    again); they stop
    keep_original            one runs on another node             stays lost: the agent
                                                                  stops it
    keep_replacement         any                                  stays lost

The agent acts on its allocs only while the server counts its node `ready` (the alloc
watch says the node's status; a node still `down` heartbeats first), and the server
takes no status report for a lost copy while the node is down: so by the time the
agent sees a lost copy, `lost` is final, and a kept copy is simply adopted again (same
processes, same containers). Each decision leaves
an event (`alloc.reconnected`, `alloc.replacement_cancelled`).
"""

from __future__ import annotations

import msgspec

from podium.model.types import Allocation, Node
from podium.scheduler.reconcile import LOST_REASON
from podium.server.events import event_put
from podium.server.state import ClusterState, encode
from podium.store import keys
from podium.store.base import Compare, Op, Put


def decide(state: ClusterState, node: Node, *, now: float) -> tuple[list[Compare], list[Op]]:
    """Guards and writes that keep the lost copies that the return of `node` (its record
    as it stood, down since its status_time) should keep."""
    # Roughly how long the agent has been without a server: it stopped the copies of
    # groups with a shorter disconnect.stop_after_disconnect itself.
    silent = now - node.status_time + node.heartbeat_ttl
    lost = [
        a
        for a in state.allocs_of_node(node.id)
        if a.client_status == "lost" and a.desired_reason == LOST_REASON
    ]
    compares: list[Compare] = []
    ops: list[Op] = []
    by_job: dict[str, dict[str, list[Allocation]]] = {}  # job -> previous_alloc -> live copies
    for a in lost:
        job = state.jobs.get(f"{a.namespace}/{a.job}")
        group = job.group(a.group) if job is not None and not job.stop else None
        if group is None or group.disconnect.reconcile != "keep_original":
            continue
        stop_after = group.disconnect.stop_after_disconnect
        if stop_after and silent >= stop_after:
            continue  # the agent stopped it on its own by now
        key = f"{a.namespace}/{a.job}"
        if key not in by_job:
            by_job[key] = _replacements(state.allocs_of_job(a.namespace, a.job))
        replacements = by_job[key].get(a.id, [])
        if any(b.client_status == "running" and b.node_id != node.id for b in replacements):
            continue  # its replacement serves already elsewhere: the original goes
        compares.append(Compare(keys.alloc(a.id), "mod_rev", "=", a.revision))
        ops.append(Put(keys.alloc(a.id), encode(_kept(a, node, now))))
        ops.append(
            _event(a, "alloc.reconnected", f"node {node.name} is back: {a.name} runs on", now)
        )
        for b in replacements:
            compares.append(Compare(keys.alloc(b.id), "mod_rev", "=", b.revision))
            why = f"its original {a.id[:8]} came back with node {node.name}"
            cancelled = msgspec.structs.replace(
                b, desired_status="stop", desired_reason=why, modify_time=now, revision=0
            )
            ops.append(Put(keys.alloc(b.id), encode(cancelled)))
            ops.append(_event(b, "alloc.replacement_cancelled", f"{b.name} not needed: {why}", now))
    return compares, ops


def _replacements(allocs: list[Allocation]) -> dict[str, list[Allocation]]:
    out: dict[str, list[Allocation]] = {}
    for b in allocs:
        if b.previous_alloc and b.live:
            out.setdefault(b.previous_alloc, []).append(b)
    return out


def _kept(a: Allocation, node: Node, now: float) -> Allocation:
    # Its status as last reported, before it was marked lost: the agent re-adopts its
    # tasks and reports again, but an agent that never went away has nothing new to say.
    states = a.task_states.values()
    running = bool(states) and all(t.state == "running" for t in states)
    return msgspec.structs.replace(
        a,
        desired_status="run",
        desired_reason="",
        client_status="running" if running else "pending",
        client_description=f"kept: node {node.name} came back before its replacement ran",
        next_alloc="",
        modify_time=now,
        revision=0,
    )


def _event(a: Allocation, kind: str, message: str, now: float) -> Put:
    return event_put(
        kind, message, namespace=a.namespace, job=a.job, alloc=a.id, node=a.node_id, now=now
    )
