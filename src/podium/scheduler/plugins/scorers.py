"""Scorers: binpack (fill nodes), spread (empty nodes first), job anti-affinity, and
spread-target (copies over an attribute's values toward target percentages).

Binpack and spread use Nomad's curve: 10^free grows fast as a node empties, so a
node balanced in cpu and memory scores better than one full in only one of them.
"""

from __future__ import annotations

import math
from collections import Counter

from podium.model.types import Group, Node, Spread
from podium.scheduler.framework import CycleContext
from podium.scheduler.plugins.constraints import Lookup, interpolate
from podium.scheduler.snapshot import NodeState


def fitness(ctx: CycleContext, node: NodeState) -> float:
    """How full the node would be after placing one copy: 0 empty .. 1 full."""
    req = ctx.request
    free_cpu = 1.0 - (node.cpu_used + req.cpu) / node.cpu_total if node.cpu_total else 0.0
    free_mem = (
        1.0 - (node.memory_used + req.memory) / node.memory_total if node.memory_total else 0.0
    )
    return (20.0 - (math.pow(10.0, free_cpu) + math.pow(10.0, free_mem))) / 18.0


class BinpackScorer:
    """Prefer the fullest node that fits: keeps whole nodes free for big work."""

    name = "binpack"

    def applies(self, ctx: CycleContext, group: Group) -> bool:
        return not group.spread

    def score(self, ctx: CycleContext, node: NodeState, group: Group) -> float:
        # fitness(), inlined: this runs for every scored candidate.
        req = ctx.request
        cpu, mem = node.cpu_total, node.memory_total
        free_cpu = 1.0 - (node.cpu_used + req.cpu) / cpu if cpu else 0.0
        free_mem = 1.0 - (node.memory_used + req.memory) / mem if mem else 0.0
        return (20.0 - (math.pow(10.0, free_cpu) + math.pow(10.0, free_mem))) / 18.0


class SpreadScorer:
    """Prefer the emptiest node: chosen by `spread: true` on the group."""

    name = "spread"

    def applies(self, ctx: CycleContext, group: Group) -> bool:
        return group.spread

    def score(self, ctx: CycleContext, node: NodeState, group: Group) -> float:
        return 1.0 - fitness(ctx, node)


class JobAntiAffinityScorer:
    """Penalize nodes already holding copies of the same group, so that one node
    failing takes down as few copies as possible."""

    name = "job-anti-affinity"

    def applies(self, ctx: CycleContext, group: Group) -> bool:
        return group.count > 1 or ctx.job.type == "system"

    def score(self, ctx: CycleContext, node: NodeState, group: Group) -> float:
        return 1.0 / (1 + node.groups.get(ctx.request.group_key, 0))


class _SpreadCounts:
    """One `spread` of a group: the share each attribute value should get, and how many
    copies of the group each value holds (updated as the cycle places copies)."""

    def __init__(self, spread: Spread, nodes: list[NodeState], group_key: str) -> None:
        self.lookup: Lookup = interpolate(spread.attribute)
        self.weight = spread.weight
        self.counts: Counter[str] = Counter()
        values: set[str] = set()
        for ns in nodes:
            v = self.lookup(ns.node)
            if v is None:
                continue
            values.add(v)
            self.counts[v] += ns.groups.get(group_key, 0)
        self.total = sum(self.counts.values())
        targets = spread.targets
        if targets:
            others = values - set(targets)
            rest = max(0.0, 100.0 - sum(targets.values()))
            self.share = {v: pct / 100 for v, pct in targets.items()}
            self.share.update({v: rest / 100 / len(others) for v in others})
        else:
            self.share = {v: 1 / len(values) for v in values} if values else {}

    def boost(self, node: Node) -> float:
        """-1 (this value has its share or more) .. 1 (far below it), for one more copy."""
        v = self.lookup(node)
        if v is None:
            return -1.0
        desired = self.share.get(v, 0.0) * (self.total + 1)
        if desired <= 0:
            return -1.0
        return max(-1.0, min(1.0, (desired - (self.counts[v] + 1)) / desired))

    def add(self, node: Node) -> None:
        v = self.lookup(node)
        if v is not None:
            self.counts[v] += 1
        self.total += 1


class SpreadTargetScorer:
    """Prefer nodes whose attribute value holds fewer copies than its target share:
    chosen by `spread: [{attribute, targets, weight}]` on the group."""

    name = "spread-target"
    rescore_all = True

    def applies(self, ctx: CycleContext, group: Group) -> bool:
        if not group.spreads:
            return False
        nodes = list(ctx.nodes)
        key = ctx.request.group_key
        ctx.data[self.name] = [_SpreadCounts(s, nodes, key) for s in group.spreads]
        return True

    def score(self, ctx: CycleContext, node: NodeState, group: Group) -> float:
        spreads: list[_SpreadCounts] = ctx.data[self.name]  # type: ignore[assignment]
        total = sum(s.weight * s.boost(node.node) for s in spreads)
        return (total / sum(s.weight for s in spreads) + 1.0) / 2.0

    def placed(self, ctx: CycleContext, node: NodeState) -> None:
        for s in ctx.data[self.name]:  # type: ignore[attr-defined]
            s.add(node.node)
