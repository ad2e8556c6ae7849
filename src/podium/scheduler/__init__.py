"""Pure placement: decide what should change for a job and where new copies go.

    job + its allocs + nodes ──reconcile()──> Reconciliation (place / stop / lost /
                                              reschedule / in-place, as data)
    ClusterSnapshot + job + Reconciliation ──schedule()──> Plan (placements, stops,
                                              failures with reasons)
    schedule() per group:  Cycle(Profile) ── filters (node-status, driver, constraints,
                           resources, ports, distinct-hosts) ── scorers (binpack | spread,
                           job-anti-affinity) over a few seeded candidates ── best node

No I/O, no clock, no unseeded randomness: the caller passes `now` and an `eval_id`,
and the same inputs always give the same plan. The caller commits the plan and
then calls `snapshot.apply(plan)` to keep its long-lived snapshot current, or, as the
owner of a snapshot, calls `schedule_into()`, which does both in one pass, writing the
nodes it places on in place.
"""

from podium.scheduler.framework import (
    SUCCESS,
    Code,
    CycleContext,
    FilterPlugin,
    Profile,
    Registry,
    Request,
    ScorePlugin,
    Status,
)
from podium.scheduler.plugins import default_profile, default_registry
from podium.scheduler.reconcile import Placement, Reconciliation, group_hash, reconcile
from podium.scheduler.schedule import schedule, schedule_into
from podium.scheduler.snapshot import ClusterSnapshot, NodeState

__all__ = [
    "SUCCESS",
    "ClusterSnapshot",
    "Code",
    "CycleContext",
    "FilterPlugin",
    "NodeState",
    "Placement",
    "Profile",
    "Reconciliation",
    "Registry",
    "Request",
    "ScorePlugin",
    "Status",
    "default_profile",
    "default_registry",
    "group_hash",
    "reconcile",
    "schedule",
    "schedule_into",
]
