"""Level-triggered control loops run by the leader. Each reads desired and actual state
from the ClusterState and writes the difference; running one again after a crash is safe.

    placement.py      dirty jobs -> reconcile -> scheduler -> plan applier
    node_liveness.py  missed heartbeats -> node down (its allocs then lost and replaced)
    gc.py             old events, terminal allocs of purged jobs
    periodic.py       cron jobs -> a child batch job per run, each launched exactly once
"""
