"""The built-in plugins and the default profile.

filters:  node-status, driver, constraints (static: cached per node and cycle)
          resources, ports, distinct-hosts (dynamic: depend on usage)
scorers:  binpack | spread (group.spread picks), job-anti-affinity,
          spread-target (group.spreads: attribute values toward target shares)
"""

from __future__ import annotations

from functools import cache

from podium.scheduler.framework import Profile, Registry
from podium.scheduler.plugins.constraints import ConstraintsFilter
from podium.scheduler.plugins.filters import (
    DistinctHostsFilter,
    DriverFilter,
    NodeStatusFilter,
    PortsFilter,
    ResourcesFilter,
)
from podium.scheduler.plugins.scorers import (
    BinpackScorer,
    JobAntiAffinityScorer,
    SpreadScorer,
    SpreadTargetScorer,
)

DEFAULT_FILTERS = (
    "node-status",
    "driver",
    "constraints",
    # Dynamic filters run in this order on every candidate: cheapest and most
    # often decisive first.
    "resources",
    "ports",
    "distinct-hosts",
)
DEFAULT_SCORERS = {"binpack": 1.0, "spread": 1.0, "job-anti-affinity": 1.0, "spread-target": 4.0}


def default_registry() -> Registry:
    reg = Registry()
    for f in (
        NodeStatusFilter(),
        DriverFilter(),
        ConstraintsFilter(),
        ResourcesFilter(),
        PortsFilter(),
        DistinctHostsFilter(),
    ):
        reg.add_filter(f)
    for s in (BinpackScorer(), SpreadScorer(), JobAntiAffinityScorer(), SpreadTargetScorer()):
        reg.add_scorer(s)
    return reg


@cache
def default_profile() -> Profile:
    return default_registry().profile("default", filters=DEFAULT_FILTERS, scorers=DEFAULT_SCORERS)


__all__ = ["DEFAULT_FILTERS", "DEFAULT_SCORERS", "default_profile", "default_registry"]
