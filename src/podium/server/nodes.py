"""Node writes: registration, status changes; heartbeats are kept in memory.

Heartbeats are not written to the store (one write per node per second buys
nothing): the leader remembers when it last heard from each node. A server that
starts, or becomes leader, treats every node as just heard from, so a
control-plane restart never looks like a mass node failure.

How often nodes beat is the server's to say, so the load it takes stays bounded as
the cluster grows (as Nomad's `max_heartbeats_per_second` and TTL scaled with cluster
size do): each answer to a heartbeat grants the node a TTL and says when to beat next.

    ttl      = max(min_ttl, 3 * nodes / (max_per_second * (1 - jitter / 2)))
    next in  = ttl / 3 * uniform(1 - jitter, 1)      (the agent beats then)

so a node beats about three times per TTL, all nodes together at most
`max_per_second` on average, and the random interval spreads beats that came
together (after a restart, say) over the cluster's whole cycle. A node is down when
silent for the TTL it was last granted; one this server never granted (it started,
or just became leader) is given the TTL for the cluster's size after a grace of one
such TTL: no node is declared down before `2 * ttl` after a start or an election.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from podium.errors import Conflict, NotFound
from podium.model.types import Node
from podium.runtime.clock import Clock
from podium.server import reconnect
from podium.server.events import event_put
from podium.server.state import ClusterState, encode
from podium.store import keys
from podium.store.base import Compare, Delete, Op, Put


@dataclass(frozen=True)
class HeartbeatPolicy:
    """How often nodes beat: see the module's docstring."""

    min_ttl: float = 3.0  # a node silent this long is down (small clusters)
    max_per_second: float = 200.0  # heartbeats all nodes together send, on average
    jitter: float = 0.3  # intervals drawn from [1 - jitter, 1] x ttl / 3

    def ttl(self, nodes: int) -> float:
        spread = self.max_per_second * (1 - self.jitter / 2)
        return max(self.min_ttl, 3 * nodes / spread)

    def next_in(self, ttl: float, rng: random.Random) -> float:
        return ttl / 3 * rng.uniform(1 - self.jitter, 1.0)


class Heartbeats:
    """When each node was last heard from, and the TTL it was granted then; every node
    counts as heard from at start.

    `startup_grace` extends that: for this long after the server starts, no node is
    older than the start plus the grace, so agents that were busy retrying a dead
    server have time to find the new one before anyone is declared down. None: one
    TTL for the cluster's size (`nodes()`, counted when asked).
    """

    def __init__(
        self,
        clock: Clock,
        *,
        startup_grace: float | None = None,
        policy: HeartbeatPolicy | None = None,
        nodes: Callable[[], int] = lambda: 0,
        seed: int | None = None,
    ) -> None:
        self.clock = clock
        self.started = clock.monotonic()
        self.startup_grace = startup_grace
        self.policy = policy or HeartbeatPolicy()
        self.nodes = nodes
        self._seen: dict[str, float] = {}
        self._ttl: dict[str, float] = {}  # node -> the TTL granted with its last answer
        self._rng = random.Random(seed)

    def restart_grace(self) -> None:
        """Count everyone as just heard from again (after this server itself stalled)."""
        self.started = self.clock.monotonic()

    def beat(self, node_id: str) -> None:
        self._seen[node_id] = self.clock.monotonic()

    def grant(self, node_id: str) -> tuple[float, float]:
        """The TTL the node gets from this beat on, and the seconds until its next beat."""
        ttl = self.policy.ttl(self.nodes())
        self._ttl[node_id] = ttl
        return ttl, self.policy.next_in(ttl, self._rng)

    async def record(self, node_id: str) -> tuple[float, float]:
        """A heartbeat arrived at this server (HeartbeatLeases also tells the store):
        the TTL granted and when to beat next (`grant`)."""
        self.beat(node_id)
        return self.grant(node_id)

    def ttl_of(self, node_id: str) -> float:
        """The TTL the node was last granted here (the cluster's TTL if none was)."""
        ttl = self._ttl.get(node_id)
        return ttl if ttl is not None else self.policy.ttl(self.nodes())

    def last(self, node_id: str) -> float:
        """Monotonic time the node was last heard from (server start + grace at the least)."""
        grace = self.startup_grace
        if grace is None:
            grace = self.policy.ttl(self.nodes())
        return max(self._seen.get(node_id, self.started), self.started + grace)

    def forget(self, node_id: str) -> None:
        self._seen.pop(node_id, None)
        self._ttl.pop(node_id, None)


async def register(state: ClusterState, hb: Heartbeats, node: Node, *, now: float) -> Node:
    """Create or refresh a node record; the node is `ready` from now on."""
    for _ in range(5):
        current = state.nodes.get(node.id)
        since = current.status_time if current and current.status == "ready" else now
        new = msgspec.structs.replace(
            node,
            status="ready",
            eligible=current.eligible if current else node.eligible,
            drain=current.drain if current else node.drain,
            drain_deadline=current.drain_deadline if current else 0.0,
            drain_started=current.drain_started if current else 0.0,
            register_time=current.register_time if current else now,
            last_heartbeat=now,
            status_description="registered",
            status_time=since,
            revision=0,
        )
        what = "registered" if current is None else "re-registered"
        compares = [Compare(keys.node(node.id), "mod_rev", "=", current.revision if current else 0)]
        ops: list[Op] = [
            _put(new, encode(new)),
            event_put("node." + what, f"node {node.name} {what}", node=node.id, now=now),
        ]
        if current is not None and current.status == "down":
            more_compares, more_ops = reconnect.decide(state, current, now=now)
            compares += more_compares
            ops += more_ops
        res = await state.store.txn(compares, ops)
        if res.succeeded:
            hb.beat(node.id)
            await state.wait_for(res.revision)
            return state.nodes.get(node.id, new)
        await state.wait_for(res.revision)
    raise NotFound(f"node {node.id} could not be registered: too many concurrent changes")


async def set_status(
    state: ClusterState, node_id: str, status: str, reason: str, *, now: float
) -> bool:
    """Move a node to `ready` or `down`; False if someone else changed it first. A down
    node that comes back is made ready with the decision about its lost copies, in one
    transaction (reconnect.py); that is retried on a lost race."""
    for _ in range(5 if status == "ready" else 1):
        current = state.nodes.get(node_id)
        if current is None or current.status == status:
            return False
        new = msgspec.structs.replace(
            current, status=status, status_description=reason, status_time=now, revision=0
        )
        compares = [Compare(keys.node(node_id), "mod_rev", "=", current.revision)]
        ops: list[Op] = [
            _put(new, encode(new)),
            event_put(
                f"node.{status}", f"node {current.name} {status}: {reason}", node=node_id, now=now
            ),
        ]
        if status == "ready" and current.status == "down":
            more_compares, more_ops = reconnect.decide(state, current, now=now)
            compares += more_compares
            ops += more_ops
        res = await state.store.txn(compares, ops)
        await state.wait_for(res.revision)
        if res.succeeded:
            return True
    return False


async def set_eligibility(state: ClusterState, node_id: str, eligible: bool, *, now: float) -> Node:
    for _ in range(5):
        current = state.nodes.get(node_id)
        if current is None:
            raise NotFound(f"no node {node_id!r}")
        new = msgspec.structs.replace(current, eligible=eligible, revision=0)
        word = "eligible" if eligible else "ineligible"
        res = await state.store.txn(
            [Compare(keys.node(node_id), "mod_rev", "=", current.revision)],
            [
                _put(new, encode(new)),
                event_put("node.eligibility", f"node {current.name} {word}", node=node_id, now=now),
            ],
        )
        await state.wait_for(res.revision)
        if res.succeeded:
            return state.nodes[node_id]
    raise NotFound(f"node {node_id} changed too often to update; retry")


async def set_drain(
    state: ClusterState,
    node_id: str,
    *,
    enable: bool,
    deadline: float | None,
    now: float,
    complete: bool = False,
) -> Node:
    """Start a drain (the node takes no new work; its allocs move away), or end one.

    `deadline` is in seconds from now (None: no deadline). A completed drain leaves
    the node ineligible, so nothing lands on it until an operator says so.
    """
    for _ in range(5):
        current = state.nodes.get(node_id)
        if current is None:
            raise NotFound(f"no node {node_id!r}")
        if enable:
            new = msgspec.structs.replace(
                current,
                drain=True,
                drain_deadline=now + deadline if deadline else 0.0,
                drain_started=current.drain_started if current.drain else now,
                revision=0,
            )
            until = f" (deadline {deadline:g}s)" if deadline else ""
            kind, msg = "node.drain", f"node {current.name} draining{until}"
        else:
            new = msgspec.structs.replace(
                current,
                drain=False,
                drain_deadline=0.0,
                drain_started=0.0,
                eligible=False if complete else current.eligible,
                revision=0,
            )
            kind = "node.drain_complete" if complete else "node.drain_cancelled"
            msg = f"node {current.name} " + (
                "drained: nothing left, ineligible" if complete else "drain cancelled"
            )
        res = await state.store.txn(
            [Compare(keys.node(node_id), "mod_rev", "=", current.revision)],
            [_put(new, encode(new)), event_put(kind, msg, node=node_id, now=now)],
        )
        await state.wait_for(res.revision)
        if res.succeeded:
            return state.nodes[node_id]
    raise Conflict(f"node {node_id} changed too often to update; retry")


async def purge(
    state: ClusterState, hb: Heartbeats, node_id: str, *, force: bool, now: float
) -> Node:
    """Forget a node: its record goes (the copies it still held are lost, and replaced).

    A `ready` node's agent is still heartbeating and would only register again, so it
    is refused unless `force`: stop the agent (or wait until the node is down) first.
    """
    current = state.nodes.get(node_id)
    if current is None:
        raise NotFound(f"no node {node_id!r}")
    if current.status == "ready" and not force:
        raise Conflict(
            f"node {current.name} is ready (its agent heartbeats); stop the agent and wait "
            "until the node is down, or purge it anyway (force)"
        )
    held = sum(1 for a in state.allocs_of_node(node_id) if a.live)
    res = await state.store.txn(
        [Compare(keys.node(node_id), "mod_rev", "=", current.revision)],
        [
            Delete(keys.node(node_id)),
            Delete(keys.heartbeat(node_id)),
            event_put(
                "node.purged",
                f"node {current.name} purged ({current.status}); {held} live allocation(s) lost",
                node=node_id,
                now=now,
            ),
        ],
    )
    if not res.succeeded:
        raise Conflict(f"node {current.name} changed while being purged; retry")
    hb.forget(node_id)
    await state.wait_for(res.revision)
    return current


def _put(node: Node, body: bytes) -> Put:
    return Put(keys.node(node.id), body)
