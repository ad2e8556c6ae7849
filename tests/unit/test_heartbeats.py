"""Heartbeats scale with the cluster: a TTL from its size, a cap on beats per second, beats
spread by jitter, and a grace after a start so no unheard node is declared down early."""

from __future__ import annotations

import random
from collections import Counter

from podium.model.types import Node, NodeResources
from podium.runtime.clock import FakeClock
from podium.server.controllers.node_liveness import NodeLivenessController
from podium.server.nodes import HeartbeatPolicy, Heartbeats
from podium.server.state import ClusterState, encode
from podium.store import keys
from podium.store.base import Put
from support.state import memory_state


def test_the_ttl_is_the_least_ttl_on_small_clusters_and_grows_with_the_node_count() -> None:
    p = HeartbeatPolicy(min_ttl=3.0, max_per_second=200.0, jitter=0.3)
    assert p.ttl(1) == p.ttl(100) == 3.0
    assert p.ttl(10_000) == 3 * 10_000 / (200 * 0.85)
    assert p.ttl(20_000) == 2 * p.ttl(10_000)


def test_the_nodes_together_never_beat_more_than_the_cap_on_average() -> None:
    rng = random.Random(1)
    for nodes in (50, 1_000, 10_000, 50_000):
        p = HeartbeatPolicy(min_ttl=3.0, max_per_second=200.0)
        ttl = p.ttl(nodes)
        mean = sum(p.next_in(ttl, rng) for _ in range(20_000)) / 20_000
        assert nodes / mean <= 200.0 * 1.01 or ttl == 3.0
        assert all(p.next_in(ttl, rng) <= ttl / 3 for _ in range(1000))  # 3 beats a TTL


def beats_per_second(policy: HeartbeatPolicy, nodes: int, seconds: float) -> Counter[int]:
    """Every node beats at 0 (a server came back and all agents retried at once), then as
    told; how many beats land in each second of [2 TTL, 2 TTL + seconds)."""
    rng = random.Random(2)
    ttl = policy.ttl(nodes)
    start, end = 2 * ttl, 2 * ttl + seconds
    per: Counter[int] = Counter()
    for _ in range(nodes):
        t = 0.0
        while t < end:
            if t >= start:
                per[int(t - start)] += 1
            t += policy.next_in(ttl, rng)
    return per


def test_jitter_spreads_beats_that_came_together() -> None:
    nodes = 2_000
    spread = beats_per_second(HeartbeatPolicy(max_per_second=200.0), nodes, 60)
    assert max(spread.values()) <= 2.5 * 200, spread.most_common(3)
    lockstep = beats_per_second(HeartbeatPolicy(max_per_second=200.0, jitter=0.0), nodes, 60)
    assert max(lockstep.values()) == nodes  # without it every beat stays in step


async def add_node(state: ClusterState, node_id: str) -> None:
    node = Node(id=node_id, name=node_id, resources=NodeResources(cpu=1000, memory=1000))
    res = await state.store.txn([], [Put(keys.node(node_id), encode(node))])
    await state.wait_for(res.revision)


async def test_a_node_is_judged_by_the_ttl_it_was_granted() -> None:
    clock = FakeClock()
    async with memory_state() as state:
        await add_node(state, "n1")
        size = [10_000]  # as if the cluster had 10,000 nodes
        hb = Heartbeats(clock, startup_grace=0.0, nodes=lambda: size[0])
        liveness = NodeLivenessController(state, hb, clock)
        ttl, next_in = await hb.record("n1")
        assert ttl > 100 and next_in <= ttl / 3
        await liveness.check()
        size[0] = 1  # the cluster shrinks: the node keeps the TTL it was granted
        silent = 0.0
        while silent < ttl - 0.5:  # silent for just under the TTL: still ready
            clock.advance(0.5)
            silent += 0.5
            await liveness.check()
        assert state.nodes["n1"].status == "ready"
        for _ in range(2):
            clock.advance(0.5)
            await liveness.check()
        assert state.nodes["n1"].status == "down"


async def test_after_a_start_no_unheard_node_is_down_before_a_grace_and_its_ttl() -> None:
    clock = FakeClock()
    async with memory_state() as state:
        await add_node(state, "n1")
        hb = Heartbeats(clock, nodes=lambda: 10_000)  # the grace: one TTL for the size
        liveness = NodeLivenessController(state, hb, clock)
        ttl = hb.policy.ttl(10_000)
        waited = 0.0
        while waited < 2 * ttl - 1:  # never heard from since the start
            await liveness.check()
            clock.advance(0.5)
            waited += 0.5
        assert state.nodes["n1"].status == "ready"
        for _ in range(3):
            clock.advance(0.5)
            await liveness.check()
        assert state.nodes["n1"].status == "down"


async def test_liveness_looks_20_times_a_ttl_and_no_less_often_than_check_interval() -> None:
    clock = FakeClock()
    async with memory_state() as state:
        hb = Heartbeats(clock)
        liveness = NodeLivenessController(state, hb, clock)
        for i in range(3):
            await add_node(state, f"n{i}")
        assert liveness.interval() == liveness.settings.check_interval == 0.25
        hb.policy = HeartbeatPolicy(max_per_second=10.0)
        for i in range(3, 100):  # 100 nodes at 10 beats/s: a TTL of 35 s
            await add_node(state, f"n{i}")
        assert liveness.interval() == hb.policy.ttl(100) / 20 > 1.0
