"""The cluster as the scheduler sees it: nodes plus what their live allocs use.

    ClusterSnapshot.build(nodes, live allocs)      once, O(nodes + allocs)
      .apply(plan) / .add_alloc / .remove_alloc    cheap updates after each commit
      .upsert_node / .remove_node                  node changes
      .node_states()                               nodes sorted by id, for schedule()

`schedule()` never mutates a snapshot: it copies the few `NodeState`s it places
on (copy-on-write), so one long-lived snapshot can serve many evaluations.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from podium.model.types import Allocation, Node, Plan

if TYPE_CHECKING:
    from podium.scheduler.framework import Status

_TERMINAL = frozenset(("complete", "failed", "lost"))  # as in Allocation.terminal


def group_key(namespace: str, job: str, group: str) -> str:
    # One interned-style string instead of a tuple: str caches its hash, and these
    # keys are looked up once per scored candidate.
    return f"{namespace}\x00{job}\x00{group}"


# What one live alloc holds on its node: (node_id, cpu, memory, ports, group_key).
# A plain tuple of atomic values on purpose: CPython's GC stops tracking
# such tuples, and a snapshot holds one per live alloc (100,000s), which would
# otherwise make every full collection walk them all.
AllocUsage = tuple[str, int, int, tuple[int, ...], str]


def usage_of(alloc: Allocation) -> AllocUsage:
    ns, job, res = alloc.namespace, alloc.job, alloc.resources
    return (
        alloc.node_id,
        res.cpu,
        res.memory,
        tuple(alloc.ports.values()) if alloc.ports else (),
        f"{ns}\x00{job}\x00{alloc.group}",  # group_key(), inlined
    )


class NodeState:
    """One node and the resources its live allocs use. Plugins read it; only the
    snapshot and schedule()'s private copies write it."""

    __slots__ = (
        "cpu_total",
        "cpu_used",
        "dynamic_free",
        "groups",
        "memory_total",
        "memory_used",
        "node",
        "port_max",
        "port_min",
        "ports",
        "reserved",
        "static",
    )

    def __init__(self, node: Node) -> None:
        self.cpu_used = 0
        self.memory_used = 0
        # Port -> live allocs holding it. Counted, not a set: should two allocs ever
        # hold one port, removing one must not free it.
        self.ports: dict[int, int] = {}
        self.groups: dict[str, int] = {}  # group_key -> live allocs of that group here
        self.set_node(node)

    def set_node(self, node: Node) -> None:
        r = node.resources
        self.node = node
        # A memo of static filter answers for this node, keyed by the filters' signature
        # of a group: not cluster state, so schedule() may fill it; reset when the node
        # changes. Shared with schedule()'s private copies (usage does not affect it).
        self.static: dict[str, tuple[str, Status]] = {}
        self.cpu_total = r.cpu
        self.memory_total = r.memory
        self.port_min = r.port_min
        self.port_max = r.port_max
        self.reserved = frozenset(r.reserved_ports)
        # Free dynamic ports are counted, not scanned, so the ports filter is O(1).
        span = max(0, r.port_max - r.port_min + 1)
        taken = {p for p in self.reserved | self.ports.keys() if r.port_min <= p <= r.port_max}
        self.dynamic_free = span - len(taken)

    def copy(self) -> NodeState:
        new = NodeState.__new__(NodeState)
        new.node = self.node
        new.static = self.static
        new.cpu_total = self.cpu_total
        new.memory_total = self.memory_total
        new.port_min = self.port_min
        new.port_max = self.port_max
        new.reserved = self.reserved
        new.dynamic_free = self.dynamic_free
        new.cpu_used = self.cpu_used
        new.memory_used = self.memory_used
        new.ports = dict(self.ports)
        new.groups = dict(self.groups)
        return new

    def add(self, u: AllocUsage) -> None:
        self.add_parts(u[1], u[2], u[3], u[4])

    def add_parts(self, cpu: int, memory: int, ports: Iterable[int], group_key: str) -> None:
        self.cpu_used += cpu
        self.memory_used += memory
        held = self.ports
        for p in ports:
            n = held.get(p, 0)
            held[p] = n + 1
            if not n and self.port_min <= p <= self.port_max and p not in self.reserved:
                self.dynamic_free -= 1
        self.groups[group_key] = self.groups.get(group_key, 0) + 1

    def remove(self, u: AllocUsage) -> None:
        _, cpu, memory, ports, group_key = u
        self.cpu_used -= cpu
        self.memory_used -= memory
        held = self.ports
        for p in ports:
            n = held.get(p, 0)
            if n > 1:
                held[p] = n - 1
            elif n == 1:
                del held[p]
                if self.port_min <= p <= self.port_max and p not in self.reserved:
                    self.dynamic_free += 1
        _decrement(self.groups, group_key)


def _decrement(counts: dict[str, int], key: str) -> None:
    n = counts.get(key, 0) - 1
    if n > 0:
        counts[key] = n
    else:
        counts.pop(key, None)


class ClusterSnapshot:
    """Nodes and the usage of all live allocs, kept current by its owner."""

    def __init__(self) -> None:
        self._states: dict[str, NodeState] = {}
        self._allocs: dict[str, AllocUsage] = {}
        # Placements taken in by `adopt` whose usage is not in `_allocs` yet: their nodes
        # already count them, and a round's snapshot rarely looks one up, so they are
        # indexed on the first lookup rather than one by one as they come.
        self._unindexed: list[Allocation] = []
        # Allocs whose node the snapshot does not know (yet): counted when it appears.
        self._orphans: dict[str, set[str]] = {}
        self._order: list[NodeState] | None = None
        self._positions: dict[str, int] = {}

    @classmethod
    def build(cls, nodes: list[Node], allocs: Iterable[Allocation]) -> ClusterSnapshot:
        snap = cls()
        for node in nodes:
            snap._states[node.id] = NodeState(node)
        for a in allocs:
            snap.add_alloc(a)
        return snap

    # ------------------------------------------------------------------ reads

    def __len__(self) -> int:
        return len(self._states)

    def node_states(self) -> list[NodeState]:
        """All nodes sorted by id: a stable order, so equal inputs give equal plans."""
        if self._order is None:
            self._order = [self._states[k] for k in sorted(self._states)]
            self._positions = {s.node.id: i for i, s in enumerate(self._order)}
        return self._order

    def position(self, node_id: str) -> int:
        """Index of the node in `node_states()`, or -1."""
        self.node_states()
        return self._positions.get(node_id, -1)

    def get(self, node_id: str) -> NodeState | None:
        return self._states.get(node_id)

    def usage(self, alloc_id: str) -> AllocUsage | None:
        return self._index().get(alloc_id)

    def __contains__(self, alloc_id: str) -> bool:
        return alloc_id in self._index()

    def index_adopted(self, limit: int) -> int:
        """Index up to `limit` of the placements adopted since the last lookup; return
        how many are left. The owner of a long-lived snapshot calls this between turns
        of the event loop: the first lookup otherwise indexes all of them at once (a
        round of 100,000 placements held the loop for most of a second)."""
        todo = self._unindexed
        if limit > 0 and todo:
            allocs = self._allocs
            for a in todo[:limit]:  # in order: a later placement of one id wins
                allocs[a.id] = usage_of(a)
            del todo[:limit]
        return len(todo)

    def _index(self) -> dict[str, AllocUsage]:
        """`_allocs`, with the adopted placements in it."""
        if self._unindexed:
            allocs = self._allocs
            for a in self._unindexed:
                allocs[a.id] = usage_of(a)
            self._unindexed = []
        return self._allocs

    # ---------------------------------------------------------------- updates

    def apply(self, plan: Plan) -> None:
        """Account for a committed (or about to be committed) plan."""
        for stop in plan.stops:
            self.remove_alloc_id(stop.alloc_id)
        for a in plan.placements:
            self.add_alloc(a)

    def adopt(self, plan: Plan, states: dict[int, NodeState]) -> None:
        """Account for a plan as `apply` does, given the node states that schedule()
        computed for this very plan on this snapshot (`schedule_into`): they take the
        place of the snapshot's own, which are not updated placement by placement again."""
        order = self.node_states()
        for pos, state in states.items():
            node_id = state.node.id
            if order[pos].node.id != node_id:
                raise ValueError(f"adopt: position {pos} is not node {node_id} here")
            order[pos] = self._states[node_id] = state
        if plan.stops:
            allocs = self._index()
            for stop in plan.stops:
                u = allocs.get(stop.alloc_id)
                if u is not None and self._positions.get(u[0], -1) in states:
                    del allocs[stop.alloc_id]  # the adopted state freed it already
                else:
                    self.remove_alloc_id(stop.alloc_id)
        self._unindexed.extend(plan.placements)

    def add_alloc(self, alloc: Allocation) -> None:
        """Add or update one alloc; an alloc that is no longer live is removed."""
        if alloc.id in self._index():
            self.remove_alloc_id(alloc.id)
        # Allocation.live, inlined: apply() runs this for every placement.
        if alloc.desired_status != "run" or alloc.client_status in _TERMINAL:
            return
        u = self._allocs[alloc.id] = usage_of(alloc)
        state = self._states.get(u[0])
        if state is not None:
            state.add_parts(u[1], u[2], u[3], u[4])
        else:
            self._orphans.setdefault(u[0], set()).add(alloc.id)

    def remove_alloc(self, alloc: Allocation) -> None:
        self.remove_alloc_id(alloc.id)

    def remove_alloc_id(self, alloc_id: str) -> None:
        u = self._index().pop(alloc_id, None)
        if u is None:
            return
        node_id = u[0]
        state = self._states.get(node_id)
        if state is not None:
            state.remove(u)
        else:
            orphans = self._orphans.get(node_id)
            if orphans is not None:
                orphans.discard(alloc_id)
                if not orphans:
                    del self._orphans[node_id]

    def upsert_node(self, node: Node) -> None:
        state = self._states.get(node.id)
        if state is not None:
            # Updated in place so the sorted order (which holds this object) stays valid.
            state.set_node(node)
            return
        state = self._states[node.id] = NodeState(node)
        for alloc_id in sorted(self._orphans.pop(node.id, ())):
            state.add(self._index()[alloc_id])
        self._order = None

    def remove_node(self, node_id: str) -> None:
        if self._states.pop(node_id, None) is None:
            return
        # Its allocs stay known, so they count again if the node comes back.
        ids = {i for i, u in self._index().items() if u[0] == node_id}
        if ids:
            self._orphans[node_id] = ids
        self._order = None
