"""Quotas, as far as the autoscaler asks: the most copies a group may have.

    autoscaler --scaling_limit(state, job, group)--> (most copies, why) or (None, "")

The hook where namespace quotas (with the ACL work) plug in: the autoscaler never scales
a group above what this returns, and its decision says why. Until quotas exist, nothing
limits a group beyond its own `scaling.max`.
"""

from __future__ import annotations

from podium.model.types import Group, Job
from podium.server.state import ClusterState


def scaling_limit(state: ClusterState, job: Job, group: Group) -> tuple[int | None, str]:
    """The most copies `group` may have under its namespace's quota (None: no quota)."""
    return None, ""
