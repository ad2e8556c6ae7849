"""Scorers: binpack (fill nodes), spread (empty nodes first), job anti-affinity.

Binpack and spread use Nomad's curve: 10^free grows fast as a node empties, so a
node balanced in cpu and memory scores better than one full in only one of them.
"""

from __future__ import annotations

import math

from podium.model.types import Group
from podium.scheduler.framework import CycleContext
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
