"""Feasibility filters: node status, drivers, cpu/memory, ports, distinct hosts.

Each returns SUCCESS or a Status naming why not; exhausted resources carry the
resource name so a PlacementFailure can say "exhausted on memory".
"""

from __future__ import annotations

from collections.abc import Hashable

from podium.model.types import Constraint, Group
from podium.scheduler.framework import SUCCESS, Code, CycleContext, Status
from podium.scheduler.snapshot import NodeState

_DOWN = Status(Code.UNSCHEDULABLE, "node is down")
_INIT = Status(Code.UNSCHEDULABLE, "node is initializing")
_INELIGIBLE = Status(Code.UNSCHEDULABLE, "node is ineligible")
_DRAINING = Status(Code.UNSCHEDULABLE, "node is draining")
_CPU = Status(Code.EXHAUSTED, "cpu exhausted", "cpu")
_MEMORY = Status(Code.EXHAUSTED, "memory exhausted", "memory")
_PORT_TAKEN = Status(Code.EXHAUSTED, "static port in use", "ports")
_PORT_TWICE = Status(Code.UNSCHEDULABLE, "the group declares one static port twice")
_PORT_RESERVED = Status(Code.UNSCHEDULABLE, "static port reserved by the node")
_DYNAMIC = Status(Code.EXHAUSTED, "not enough free dynamic ports", "dynamic ports")
_DISTINCT = Status(Code.UNSCHEDULABLE, "distinct_hosts: node already holds a copy")


class NodeStatusFilter:
    """Only ready, eligible, non-draining nodes take new work."""

    name = "node-status"
    static = True

    def applies(self, ctx: CycleContext, group: Group) -> bool:
        return True

    def signature(self, ctx: CycleContext, group: Group) -> Hashable:
        return None

    def filter(self, ctx: CycleContext, node: NodeState, group: Group) -> Status:
        n = node.node
        if n.status != "ready":
            return _DOWN if n.status == "down" else _INIT
        if not n.eligible:
            return _INELIGIBLE
        if n.drain:
            return _DRAINING
        return SUCCESS


class DriverFilter:
    """Every task's driver must be detected and healthy on the node."""

    name = "driver"
    static = True

    def applies(self, ctx: CycleContext, group: Group) -> bool:
        return bool(ctx.request.drivers)

    def signature(self, ctx: CycleContext, group: Group) -> Hashable:
        return ctx.request.drivers

    def filter(self, ctx: CycleContext, node: NodeState, group: Group) -> Status:
        drivers = node.node.drivers
        for name in ctx.request.drivers:
            info = drivers.get(name)
            if info is None or not info.detected:
                return Status(Code.UNSCHEDULABLE, f"driver {name} not detected")
            if not info.healthy:
                return Status(Code.UNSCHEDULABLE, f"driver {name} unhealthy")
        return SUCCESS


class ResourcesFilter:
    """cpu and memory must fit next to what the node's live allocs already use."""

    name = "resources"
    static = False
    checks_room = True  # the cycle's walk skips nodes without room before calling it

    def applies(self, ctx: CycleContext, group: Group) -> bool:
        return True

    def signature(self, ctx: CycleContext, group: Group) -> Hashable:
        return None

    def filter(self, ctx: CycleContext, node: NodeState, group: Group) -> Status:
        req = ctx.request
        if node.cpu_used + req.cpu > node.cpu_total:
            return _CPU
        if node.memory_used + req.memory > node.memory_total:
            return _MEMORY
        return SUCCESS


class PortsFilter:
    """Static ports must be free; enough dynamic ports must remain in the node's range."""

    name = "ports"
    static = False

    def applies(self, ctx: CycleContext, group: Group) -> bool:
        req = ctx.request
        return bool(req.static_ports or req.dynamic_ports)

    def signature(self, ctx: CycleContext, group: Group) -> Hashable:
        return None

    def filter(self, ctx: CycleContext, node: NodeState, group: Group) -> Status:
        req = ctx.request
        if len(req.static_set) != len(req.static_ports):
            return _PORT_TWICE  # no node can give one port to two labels
        # A static port inside the dynamic range also uses up one dynamic port.
        need = req.dynamic_ports
        for p in req.static_ports:
            if p in node.reserved:
                return _PORT_RESERVED
            if p in node.ports:
                return _PORT_TAKEN
            if node.port_min <= p <= node.port_max:
                need += 1
        if need > node.dynamic_free and req.dynamic_ports:
            return _DYNAMIC
        return SUCCESS


def _distinct(constraints: list[Constraint]) -> bool:
    return any(c.operator == "distinct_hosts" and c.value.lower() != "false" for c in constraints)


class DistinctHostsFilter:
    """The distinct_hosts constraint: at most one copy of the group (or, when the
    constraint is on the job, of the whole job) per node. Split from `constraints`
    because it depends on usage, while attribute constraints are cached per node."""

    name = "distinct-hosts"
    static = False

    def applies(self, ctx: CycleContext, group: Group) -> bool:
        job_wide = _distinct(ctx.job.constraints)
        ctx.data[self.name] = job_wide
        return job_wide or _distinct(group.constraints)

    def signature(self, ctx: CycleContext, group: Group) -> Hashable:
        return None

    def filter(self, ctx: CycleContext, node: NodeState, group: Group) -> Status:
        req = ctx.request
        if ctx.data[self.name]:
            # Copies of any group of this job (groups removed from the job are being
            # stopped in this same plan, so their copies do not count).
            groups = node.groups
            for key in req.job_group_keys:
                if key in groups:
                    return _DISTINCT
        elif req.group_key in node.groups:
            return _DISTINCT
        return SUCCESS
