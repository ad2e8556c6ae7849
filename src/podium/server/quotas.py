"""Quotas, as far as the autoscaler asks: the most copies a group may have.

    autoscaler --scaling_limit(state, job, group)--> (most copies, why) or (None, "")

The autoscaler never scales a group above what this returns, and its decision says why:
the copies its namespace's quota (namespace_quota.py: cpu, memory, allocs) leaves room
for, with everything else the namespace holds as it is.
"""

from __future__ import annotations

from podium.model.types import Group, Job
from podium.server import namespace_quota
from podium.server.state import ClusterState


def scaling_limit(state: ClusterState, job: Job, group: Group) -> tuple[int | None, str]:
    """The most copies `group` may have under its namespace's quota (None: no quota)."""
    quota = state.quotas.get(job.namespace)
    room = namespace_quota.room_for(state, quota, job, group)
    if room is None:
        return None, ""
    return room, f"the quota of namespace {job.namespace!r}"
