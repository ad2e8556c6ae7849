"""Simulated clusters and workloads for the scheduler benchmark and property tests.

Seeded and pure: the same arguments always give the same nodes and jobs.
"""

from __future__ import annotations

import random

from podium.model.types import (
    Constraint,
    DriverInfo,
    Group,
    Job,
    NetworkSpec,
    Node,
    NodeResources,
    PortSpec,
    Resources,
    Task,
)

ZONES = ("a", "b", "c")


def simulated_cluster(n_nodes: int, seed: int) -> list[Node]:
    """Mixed node sizes across three zones; ~1% not schedulable, some without docker."""
    rng = random.Random(seed)
    nodes = []
    for i in range(n_nodes):
        cpu, memory = rng.choice(((4000, 8192), (8000, 16384), (16000, 32768), (32000, 65536)))
        drivers = {"process": DriverInfo()}
        if rng.random() < 0.8:
            drivers["docker"] = DriverInfo()
        roll = rng.random()
        nodes.append(
            Node(
                id=f"node-{seed}-{i:05d}",
                name=f"sim{i:05d}",
                datacenter=rng.choice(("dc1", "dc2")),
                labels={"zone": ZONES[i % 3], "rack": f"r{i % 40}"},
                attributes={"kernel.version": rng.choice(("5.15.0", "6.1.2", "6.8.0"))},
                drivers=drivers,
                resources=NodeResources(cpu=cpu, memory=memory),
                status="down" if roll < 0.005 else "ready",
                eligible=roll >= 0.01,
            )
        )
    return nodes


def simulated_jobs(total_allocs: int, seed: int) -> list[Job]:
    """Service jobs of 100-1000 copies each, small tasks; some with dynamic ports,
    some pinned to a zone or a kernel version, some on docker."""
    rng = random.Random(seed)
    jobs: list[Job] = []
    left = total_allocs
    while left > 0:
        count = min(left, rng.randint(100, 1000))
        left -= count
        n = len(jobs)
        ports = {"http": PortSpec()} if rng.random() < 0.4 else {}
        constraints = []
        if rng.random() < 0.2:
            constraints.append(Constraint(attribute="${node.labels.zone}", value=rng.choice(ZONES)))
        if rng.random() < 0.1:
            constraints.append(
                Constraint(attribute="${node.attributes.kernel.version}", operator="version",
                           value=">= 6.0")
            )  # fmt: skip
        task = Task(
            name="main",
            driver="docker" if rng.random() < 0.3 else "process",
            resources=Resources(cpu=rng.choice((50, 100, 250)), memory=rng.choice((64, 128, 256))),
        )
        group = Group(
            name="g",
            count=count,
            constraints=constraints,
            network=NetworkSpec(ports=ports),
            tasks=[task],
            spread=rng.random() < 0.1,
        )
        jobs.append(Job(name=f"sim-{seed}-{n:04d}", groups=[group]))
    return jobs
