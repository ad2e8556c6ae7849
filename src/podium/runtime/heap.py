"""The garbage collector's settings for podium's long-running processes.

A server keeps the whole cluster in memory (every job, node and alloc, and the indexes
over them): hundreds of thousands of long-lived objects, created in bursts when many
allocs are placed at once. With CPython's default thresholds (700, 10, 10) a young
collection runs every 700 net allocations and an older one every few of those, each
walking objects that will live for hours; placing 100,000 allocs then spends about as
much time in the collector as in the scheduler (benchmarks/scheduler.py: 6.7 s of CPU
with the defaults, 3.8 s with these thresholds, on a 2-core machine). Reference cycles
are still collected, just in larger, rarer passes.

Only for processes that hold the cluster (server, dev). An agent holds little that
lives long, while its churn (tasks started and stopped, their watchers, pipes and
checks) leaves reference cycles that outlive a young collection; it keeps CPython's
defaults. Measured (benchmarks/agent_footprint.py --churn 90 --idle 15, one run each
on a shared 2-core machine): 133.1 MB after the churn with these thresholds, 111.8 MB
with the defaults; the rest of the growth from ~60 MB idle is not explained yet.
"""

from __future__ import annotations

import gc

THRESHOLDS = (50_000, 20, 100)  # young generation size, then collections per older pass


def tune() -> None:
    """Apply podium's thresholds to this process (servers, agents, the dev cluster)."""
    gc.set_threshold(*THRESHOLDS)
