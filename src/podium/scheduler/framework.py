"""The plugin framework: named extension points, a profile, and one group's cycle.

    Profile (filters, weighted scorers, candidate limit)      chosen by name in a Registry
      -> Cycle(profile, ctx)       one group: plugins that apply to it, a seeded node order
           .select(nodes)          best of a window of `limit` feasible, scored nodes,
                                   filled by walking that order: static filters (cached
                                   per node), then dynamic filters, then scorers
           .placed(pos, nodes)     re-rank the node that changed, rotate the window
           .diagnose(nodes)        why every node rejects the group, for PlacementFailure

Like kube-scheduler, a rejection is a `Status` value, not an exception. Like Nomad's
limit iterator, only a few feasible nodes are scored per placement (log2 of the
cluster size, clamped), so a placement over 5,000 nodes costs a handful of checks.
A score must depend only on the node's state and the group: the cycle keeps a
node's score until a copy lands on that node.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import math
from collections import deque
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from podium.model.types import Group, Job
from podium.scheduler.snapshot import NodeState, group_key


class Code(enum.Enum):
    SUCCESS = "success"
    UNSCHEDULABLE = "unschedulable"  # the node can never take this group as it is
    EXHAUSTED = "exhausted"  # the node is out of `resource` right now


@dataclass(frozen=True, slots=True)
class Status:
    code: Code
    reason: str = ""
    resource: str = ""  # for EXHAUSTED: "cpu", "memory", "ports", "dynamic ports"

    @property
    def ok(self) -> bool:
        return self.code is Code.SUCCESS

    def __hash__(self) -> int:
        # Not the generated one: that hashes `code` through Enum.__hash__, Python code,
        # and statuses are hashed once per node a static filter rejects (_rejection).
        return hash((self.code.value, self.reason, self.resource))


SUCCESS = Status(Code.SUCCESS)
_PASS = ("", SUCCESS)


@functools.lru_cache(maxsize=4096)
def _rejection(plugin: str, status: Status) -> tuple[str, Status]:
    # Memo entries share one tuple per distinct rejection, so 5,000 nodes x many
    # signatures do not keep tens of thousands of GC-tracked objects alive.
    return (plugin, status)


_MEMO_LIMIT = 256  # static answers remembered per node
_NO_ROOM_CHECK = -(2**62)  # a request no node lacks room for
_GLOBAL_WINDOW = 128  # candidates scored at once when a scorer compares groups of nodes


@dataclass(frozen=True, slots=True)
class Request:
    """What one copy of a group asks of a node, computed once per cycle."""

    cpu: int
    memory: int
    static_ports: tuple[int, ...]
    dynamic_ports: int
    drivers: tuple[str, ...]
    group_key: str
    job_group_keys: tuple[str, ...]  # group_key of every group of the job
    ports: tuple[tuple[str, int], ...]  # (label, static port or 0 for dynamic)
    static_set: frozenset[int]

    @classmethod
    def of(cls, job: Job, group: Group) -> Request:
        res = group.resources()
        ports = group.network.ports.values()
        return cls(
            cpu=res.cpu,
            memory=res.memory,
            static_ports=tuple(p.static for p in ports if p.static),
            dynamic_ports=sum(1 for p in ports if not p.static),
            drivers=tuple(sorted({t.driver for t in group.tasks})),
            group_key=group_key(job.namespace, job.name, group.name),
            job_group_keys=tuple(group_key(job.namespace, job.name, g.name) for g in job.groups),
            ports=tuple((label, p.static) for label, p in group.network.ports.items()),
            static_set=frozenset(p.static for p in ports if p.static),
        )


@dataclass(slots=True)
class CycleContext:
    """Per-group state shared by plugins during one cycle (kube's CycleState).

    Plugins may stash what they precompute in `applies()` under their name in `data`.
    """

    job: Job
    group: Group
    request: Request
    node_count: int
    data: dict[str, object] = field(default_factory=dict)
    # Every node's state as the cycle sees it (scorers that compare nodes read it).
    nodes: Sequence[NodeState] = ()


class FilterPlugin(Protocol):
    """Feasibility: can this node take one copy of the group?"""

    name: str
    # True when the answer depends only on the node and on `signature()` (not on usage):
    # the framework then asks once per node and signature, and remembers the answer
    # until the node changes.
    static: bool
    # A filter may also set `checks_room = True` when it rejects exactly the nodes whose
    # free cpu or memory is less than the request's: the cycle's walk then skips such
    # nodes before any other check (on a full cluster most nodes it walks past are full).

    def applies(self, ctx: CycleContext, group: Group) -> bool: ...

    def signature(self, ctx: CycleContext, group: Group) -> Hashable:
        """Everything about the job and group a static answer depends on, as plain
        values (its repr is part of the memo key); dynamic filters may return None."""
        ...

    def filter(self, ctx: CycleContext, node: NodeState, group: Group) -> Status: ...


class ScorePlugin(Protocol):
    """Preference among feasible nodes: a score in [0, 1], higher is better.

    A scorer whose scores depend on where earlier copies of the cycle went (not only on
    the node itself) sets `rescore_all = True` and defines `placed(ctx, node)`: the
    cycle then calls it after each placement and re-scores every candidate."""

    name: str

    def applies(self, ctx: CycleContext, group: Group) -> bool: ...

    def score(self, ctx: CycleContext, node: NodeState, group: Group) -> float: ...


@dataclass(frozen=True)
class Profile:
    """Which plugins run, with which weights, and how many feasible nodes to score."""

    name: str
    filters: tuple[FilterPlugin, ...]
    scorers: tuple[tuple[ScorePlugin, float], ...]
    min_candidates: int = 2
    max_candidates: int = 16

    def candidate_limit(self, n_nodes: int) -> int:
        """Small clusters are scored whole; large ones on ~log2(nodes) candidates."""
        if n_nodes <= self.max_candidates:
            return max(1, n_nodes)
        log = math.ceil(math.log2(n_nodes))
        return max(self.min_candidates, min(self.max_candidates, log))


class Registry:
    """Plugins by name; a profile is assembled from names, as in a config file."""

    def __init__(self) -> None:
        self._filters: dict[str, FilterPlugin] = {}
        self._scorers: dict[str, ScorePlugin] = {}

    def add_filter(self, plugin: FilterPlugin) -> None:
        self._filters[plugin.name] = plugin

    def add_scorer(self, plugin: ScorePlugin) -> None:
        self._scorers[plugin.name] = plugin

    @property
    def filter_names(self) -> list[str]:
        return sorted(self._filters)

    @property
    def scorer_names(self) -> list[str]:
        return sorted(self._scorers)

    def profile(
        self,
        name: str,
        *,
        filters: Sequence[str],
        scorers: Mapping[str, float],
        min_candidates: int = 2,
        max_candidates: int = 16,
    ) -> Profile:
        unknown = [f for f in filters if f not in self._filters]
        unknown += [s for s in scorers if s not in self._scorers]
        if unknown:
            raise ValueError(
                f"profile {name!r}: unknown plugins {unknown}; filters: {self.filter_names}, "
                f"scorers: {self.scorer_names}"
            )
        if min_candidates < 1 or max_candidates < min_candidates:
            raise ValueError(f"profile {name!r}: need 1 <= min_candidates <= max_candidates")
        return Profile(
            name=name,
            filters=tuple(self._filters[f] for f in filters),
            scorers=tuple((self._scorers[s], float(w)) for s, w in scorers.items() if w > 0),
            min_candidates=min_candidates,
            max_candidates=max_candidates,
        )


class Stats:
    """Why nodes were rejected during one pass over the cluster."""

    __slots__ = ("evaluated", "exhausted", "filtered", "reasons")

    def __init__(self) -> None:
        self.evaluated = 0
        self.filtered: dict[str, int] = {}  # filter name -> nodes
        self.exhausted: dict[str, int] = {}  # resource -> nodes
        self.reasons: dict[str, str] = {}  # filter name -> the first reason it gave

    def reject(self, plugin: str, status: Status) -> None:
        if status.code is Code.EXHAUSTED:
            key = status.resource or plugin
            self.exhausted[key] = self.exhausted.get(key, 0) + 1
        else:
            self.filtered[plugin] = self.filtered.get(plugin, 0) + 1
            if status.reason:
                seen = self.reasons.get(plugin)
                if seen is None:
                    self.reasons[plugin] = status.reason
                elif seen != status.reason and not seen.startswith("e.g. "):
                    self.reasons[plugin] = "e.g. " + seen  # nodes failed it differently

    def merge(self, other: Stats) -> None:
        self.evaluated += other.evaluated
        for k, v in other.filtered.items():
            self.filtered[k] = self.filtered.get(k, 0) + v
        for k, v in other.exhausted.items():
            self.exhausted[k] = self.exhausted.get(k, 0) + v
        for k, why in other.reasons.items():
            self.reasons.setdefault(k, why)

    def message(self, fit: int) -> str:
        """E.g. "0/5000 nodes fit: 4990 exhausted on memory, 10 filtered by constraints"."""
        if not self.evaluated:
            return "no nodes in the cluster"
        parts = [(n, f"{n} exhausted on {r}") for r, n in self.exhausted.items()]
        parts += [
            (n, f"{n} filtered by {f}" + (f" ({self.reasons[f]})" if f in self.reasons else ""))
            for f, n in self.filtered.items()
        ]
        parts.sort(key=lambda p: (-p[0], p[1]))
        why = ", ".join(text for _, text in parts)
        return f"{fit}/{self.evaluated} nodes fit" + (f": {why}" if why else "")


def seeded_order(seed: str, n: int) -> tuple[int, int]:
    """A (start, stride) pair: visiting start, start+stride, ... mod n covers all n nodes
    once in a seeded order. O(1) to set up, unlike shuffling 5,000 ids per group."""
    if n <= 1:
        return 0, 1
    digest = hashlib.sha1(seed.encode()).digest()
    start = int.from_bytes(digest[:8], "big") % n
    stride = int.from_bytes(digest[8:16], "big") % n or 1
    while math.gcd(stride, n) != 1:
        stride += 1
    return start, stride


class Cycle:
    """Places copies of one group: runs the profile's plugins over candidate nodes.

    Candidates form a sliding window of at most `limit` feasible, scored nodes taken
    in seeded order. Within a cycle only the node a copy lands on changes, so after
    each placement that node alone is re-checked and re-scored, the oldest candidate
    leaves, and the walk brings in the next feasible node. Each placement still
    picks the best of `limit` candidates, at the cost of about one new node.
    """

    def __init__(self, profile: Profile, ctx: CycleContext, *, seed: str) -> None:
        group = ctx.group
        self.ctx = ctx
        filters = [f for f in profile.filters if f.applies(ctx, group)]
        self.static = [f for f in filters if f.static]
        self.dynamic = [f for f in filters if not f.static]
        self.scorers = [(s, w) for s, w in profile.scorers if s.applies(ctx, group)]
        self.weight = sum(w for _, w in self.scorers) or 1.0
        # Bound methods, looked up once: the hot loops call them per candidate.
        self._filter_fns = [f.filter for f in self.dynamic]
        # What the walk checks inline first, when a filter of the profile rejects the
        # nodes without room anyway (-1 each: nothing is skipped).
        room = any(getattr(f, "checks_room", False) for f in self.dynamic)
        req = ctx.request
        self._room = (req.cpu, req.memory) if room else (_NO_ROOM_CHECK, _NO_ROOM_CHECK)
        self._score_fns = [(s.score, w) for s, w in self.scorers]
        # A str, not the tuple: str caches its hash, and this key is looked up per node.
        self._static_key = repr(
            tuple((type(f).__qualname__, f.name, f.signature(ctx, group)) for f in self.static)
        )
        n = ctx.node_count
        self.limit = profile.candidate_limit(n)
        self._global = [s for s, _ in self.scorers if getattr(s, "rescore_all", False)]
        if self._global:  # a wider window: such scores compare groups of nodes
            self.limit = min(n, max(self.limit, _GLOBAL_WINDOW))
        # Per node: None until checked, then _PASS or (filter name, its rejection).
        self._static_seen: list[tuple[str, Status] | None] = [None] * n
        self._cursor, self._stride = seeded_order(seed, n)
        self._window: deque[int] = deque()  # candidate positions, oldest first
        self._scores: dict[int, float] = {}  # position -> score, for the window
        # Set after a walk covered every node: all feasible nodes are in the window,
        # and as usage only grows within a cycle no other node can become feasible.
        self._saturated = False

    def _static(self, pos: int, state: NodeState) -> tuple[str, Status]:
        result = state.static.get(self._static_key)
        if result is None:
            ctx, group = self.ctx, self.ctx.group
            result = _PASS
            for f in self.static:
                st = f.filter(ctx, state, group)
                if st.code is not Code.SUCCESS:
                    result = _rejection(f.name, st)
                    break
            if len(state.static) >= _MEMO_LIMIT:
                state.static.clear()  # many distinct signatures: bound memory, start over
            state.static[self._static_key] = result
        self._static_seen[pos] = result
        return result

    def static_pass(self, pos: int, state: NodeState) -> bool:
        """Whether the node passes the filters that do not depend on its load."""
        return (self._static_seen[pos] or self._static(pos, state)) is _PASS

    def check(self, pos: int, state: NodeState, stats: Stats | None = None) -> bool:
        """Run every filter on one node; record a rejection in `stats`."""
        seen = self._static_seen[pos] or self._static(pos, state)
        if seen is not _PASS:
            if stats is not None:
                stats.reject(*seen)
            return False
        ctx, group = self.ctx, self.ctx.group
        for f in self.dynamic:
            st = f.filter(ctx, state, group)
            if st.code is not Code.SUCCESS:
                if stats is not None:
                    stats.reject(f.name, st)
                return False
        return True

    def score(self, state: NodeState) -> float:
        ctx, group = self.ctx, self.ctx.group
        total = 0.0
        for s, w in self.scorers:
            total += w * s.score(ctx, state, group)
        return total / self.weight

    def select(self, nodes: Sequence[NodeState]) -> int:
        """Position of the best candidate, or -1 when no node fits (see `diagnose`)."""
        if not self._saturated and len(self._window) < self.limit:
            self._refill(nodes)
        scores = self._scores
        if not scores:
            return -1
        # max() keeps the first of equal scores: the oldest candidate, deterministically.
        return max(self._window, key=scores.__getitem__)

    def placed(self, pos: int, nodes: Sequence[NodeState]) -> None:
        """A copy went to `pos` (now holding its usage): re-rank it, rotate the window."""
        scores = self._scores
        if pos in scores:
            # check() and score() inlined: this runs once per placement. The static
            # answer is still a pass: it does not depend on usage.
            state, ctx, group = nodes[pos], self.ctx, self.ctx.group
            for check in self._filter_fns:
                if check(ctx, state, group).code is not Code.SUCCESS:
                    del scores[pos]
                    self._window.remove(pos)
                    break
            else:
                total = 0.0
                for score, w in self._score_fns:
                    total += w * score(ctx, state, group)
                scores[pos] = total / self.weight
        if not self._saturated and len(self._window) >= self.limit:
            del scores[self._window.popleft()]
        if self._global:
            ctx = self.ctx
            for s in self._global:
                s.placed(ctx, nodes[pos])  # type: ignore[attr-defined]
            for p in self._window:
                scores[p] = self.score(nodes[p])

    def _refill(self, nodes: Sequence[NodeState]) -> None:
        n = len(nodes)
        pos, stride, limit = self._cursor, self._stride, self.limit
        window, scores, seen = self._window, self._scores, self._static_seen
        ctx, group = self.ctx, self.ctx.group
        static_check, filters, scorers, weight = (
            self._static,
            self._filter_fns,
            self._score_fns,
            self.weight,
        )
        cpu, memory = self._room
        visited = 0
        # check() and score() are inlined: this loop is the scheduler's hot path. A node
        # without room is passed over first, at the cost of two comparisons: in a full
        # cluster the walk meets many more of those than of any other kind, and their
        # number per placement grows as the cluster fills.
        while len(window) < limit:
            if visited >= n:
                self._saturated = True
                break
            p = pos
            pos += stride
            if pos >= n:
                pos -= n
            visited += 1
            state = nodes[p]
            if (
                state.cpu_used + cpu > state.cpu_total
                or state.memory_used + memory > state.memory_total
                or p in scores
            ):
                continue
            if (seen[p] or static_check(p, state)) is not _PASS:
                continue
            for check in filters:
                if check(ctx, state, group).code is not Code.SUCCESS:
                    break
            else:
                total = 0.0
                for score, w in scorers:
                    total += w * score(ctx, state, group)
                scores[p] = total / weight
                window.append(p)
        self._cursor = pos

    def diagnose(self, nodes: Sequence[NodeState]) -> Stats:
        """Why each node rejects this group now: one full pass, for a PlacementFailure."""
        stats = Stats()
        for p, state in enumerate(nodes):
            self.check(p, state, stats)
        stats.evaluated = len(nodes)
        return stats
