"""Short builders for kinds in tests: `make_node(cpu=4000, labels={"zone": "a"})`.

Every argument has a sensible default, so a test states only what it is about.
"""

from __future__ import annotations

import itertools
from typing import Any

from podium.model.types import (
    Allocation,
    Constraint,
    DriverInfo,
    Group,
    Job,
    NetworkSpec,
    Node,
    NodeResources,
    PortSpec,
    ReschedulePolicy,
    Resources,
    Task,
)

_ids = itertools.count(1)


def make_node(
    id: str | None = None,
    *,
    name: str | None = None,
    cpu: int = 4000,
    memory: int = 8192,
    labels: dict[str, str] | None = None,
    attributes: dict[str, str] | None = None,
    drivers: tuple[str, ...] | dict[str, DriverInfo] = ("process",),
    status: Any = "ready",
    eligible: bool = True,
    drain: bool = False,
    port_min: int = 20000,
    port_max: int = 32000,
    reserved_ports: list[int] | None = None,
    **kw: Any,
) -> Node:
    node_id = id or f"node-{next(_ids):04d}"
    infos = drivers if isinstance(drivers, dict) else {d: DriverInfo() for d in drivers}
    return Node(
        id=node_id,
        name=name or node_id,
        labels=labels or {},
        attributes=attributes or {},
        drivers=infos,
        resources=NodeResources(
            cpu=cpu,
            memory=memory,
            port_min=port_min,
            port_max=port_max,
            reserved_ports=reserved_ports or [],
        ),
        status=status,
        eligible=eligible,
        drain=drain,
        **kw,
    )


def c(attribute: str, operator: Any = "=", value: str = "") -> Constraint:
    return Constraint(attribute=attribute, operator=operator, value=value)


def make_group(
    name: str = "web",
    *,
    count: int = 1,
    cpu: int = 100,
    memory: int = 64,
    driver: str = "process",
    ports: dict[str, int] | None = None,  # label -> static port, 0 for dynamic
    constraints: list[Constraint] | None = None,
    spread: bool = False,
    reschedule: ReschedulePolicy | None = None,
    tasks: list[Task] | None = None,
    **kw: Any,
) -> Group:
    return Group(
        name=name,
        count=count,
        constraints=constraints or [],
        network=NetworkSpec(ports={k: PortSpec(static=v) for k, v in (ports or {}).items()}),
        tasks=tasks
        or [Task(name="main", driver=driver, resources=Resources(cpu=cpu, memory=memory))],
        spread=spread,
        reschedule=reschedule or ReschedulePolicy(),
        **kw,
    )


def make_job(
    name: str = "app",
    *,
    type: Any = "service",
    version: int = 0,
    constraints: list[Constraint] | None = None,
    groups: list[Group] | None = None,
    stop: bool = False,
    namespace: str = "default",
    **group_kw: Any,
) -> Job:
    """A job with one group built from `group_kw` (see make_group), unless `groups`."""
    return Job(
        name=name,
        namespace=namespace,
        type=type,
        version=version,
        constraints=constraints or [],
        groups=groups if groups is not None else [make_group(**group_kw)],
        stop=stop,
    )


def make_alloc(
    job: Job | str = "app",
    *,
    group: str = "web",
    index: int = 0,
    node: Node | str = "node-0001",
    version: int | None = None,
    id: str | None = None,
    cpu: int = 100,
    memory: int = 64,
    ports: dict[str, int] | None = None,
    desired: Any = "run",
    client: Any = "running",
    create_time: float = 0.0,
    namespace: str = "default",
    **kw: Any,
) -> Allocation:
    job_name = job if isinstance(job, str) else job.name
    job_version = version if version is not None else (0 if isinstance(job, str) else job.version)
    node_id = node if isinstance(node, str) else node.id
    return Allocation(
        id=id or f"alloc-{next(_ids):05d}",
        namespace=namespace if isinstance(job, str) else job.namespace,
        job=job_name,
        job_version=job_version,
        group=group,
        index=index,
        node_id=node_id,
        node_name=node_id,
        resources=Resources(cpu=cpu, memory=memory),
        ports=ports or {},
        desired_status=desired,
        client_status=client,
        create_time=create_time,
        **kw,
    )
