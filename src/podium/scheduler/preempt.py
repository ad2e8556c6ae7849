"""Preemption: room for a copy that fits nowhere, made by stopping lower-priority allocs.

    place_group: no node fits the next copy (Cycle.select gave -1)
      -> for each node the group's filters accept apart from its current load:
           victims = live allocs there of jobs with a strictly lower priority
                     (never the job's own), lowest priority first, then newest
           take victims in that order until every filter passes on the node
           without them, then give back any taken one the copy does not need
      -> the node needing the fewest victims wins (then the lowest priorities
         evicted, then the node order); no node: the copy stays unplaced

The rule is the one a user can predict: the fewest allocs, and among equals the
least important and the most recent work. The caller turns the victims into
stops; their jobs place them again, as missing copies, once capacity returns.
Pure: the live allocs per node come from `VictimSource`, a read of the caller's state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from podium.model.types import Allocation
from podium.scheduler.framework import Cycle
from podium.scheduler.snapshot import NodeState, usage_of


class Candidate(NamedTuple):
    """A live alloc that may be preempted, with its job's priority."""

    alloc: Allocation
    priority: int


# node id -> the live allocs on that node, each with its job's priority.
VictimSource = Callable[[str], Sequence[Candidate]]


def _order(c: Candidate) -> tuple[int, float, str]:
    # Lowest priority first, then newest (create_time descending), then id: deterministic.
    return (c.priority, -c.alloc.create_time, c.alloc.id)


def victims_on(
    cycle: Cycle,
    pos: int,
    state: NodeState,
    candidates: Sequence[Candidate],
    *,
    priority: int,
    job_key: str,
    taken: set[str],
) -> list[Candidate] | None:
    """The fewest candidates on this node whose stop lets one copy pass every filter,
    or None when stopping all of them would not be enough. `taken` are allocs already
    stopped by this plan (not candidates again)."""
    eligible = sorted(
        (
            c
            for c in candidates
            if c.priority < priority
            and c.alloc.id not in taken
            and f"{c.alloc.namespace}/{c.alloc.job}" != job_key
        ),
        key=_order,
    )
    if not eligible:
        return None
    trial = state.copy()
    chosen: list[Candidate] = []
    for c in eligible:
        trial.remove(usage_of(c.alloc))
        chosen.append(c)
        if cycle.check(pos, trial):
            break
    else:
        return None
    # Greedy picks may include allocs a later, larger one made unnecessary: give back
    # each (most important first) that the copy still fits without.
    for c in sorted(chosen, key=_order, reverse=True):
        if len(chosen) == 1:
            break
        trial.add(usage_of(c.alloc))
        if cycle.check(pos, trial):
            chosen.remove(c)
        else:
            trial.remove(usage_of(c.alloc))
    return sorted(chosen, key=_order)


def best_node(
    cycle: Cycle,
    nodes: Sequence[NodeState],
    positions: Sequence[int],
    source: VictimSource,
    *,
    priority: int,
    job_key: str,
    taken: set[str],
) -> tuple[int, list[Candidate]] | None:
    """The position (among `positions`) needing the fewest victims, and those victims."""
    best: tuple[tuple[int, list[int]], int, list[Candidate]] | None = None
    for pos in positions:
        state = nodes[pos]
        if not cycle.static_pass(pos, state):
            continue
        candidates = source(state.node.id)
        if not candidates:
            continue
        found = victims_on(
            cycle, pos, state, candidates, priority=priority, job_key=job_key, taken=taken
        )
        if found is None:
            continue
        rank = (len(found), sorted((c.priority for c in found), reverse=True))
        if best is None or rank < best[0]:
            best = (rank, pos, found)
    return None if best is None else (best[1], best[2])
