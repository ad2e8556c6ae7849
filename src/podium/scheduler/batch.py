"""Batch groups: how far one is (progress), and whether it failed (a verdict). Pure.

    progress(job, group, allocs, now)
      complete   indexes 0..completions-1 with a copy of this version that exited 0
      running    live copies (placed and not finished), pending among them
      failed     copies of this version that failed (each try counts)
      verdict    why the group failed, or "": more failed tries than backoff_limit;
                 active_deadline passed since the version was submitted; or a copy
                 failed with its reschedule attempts used up
      deadline   when active_deadline passes (0: none), for the caller to wake then

A group that is complete has no verdict. The reconciler stops a failed group's copies
and places none; `job status` shows `3/10 complete, 2 running, 1 failed`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from podium.model.types import Allocation, Group, Job


@dataclass(frozen=True)
class Progress:
    completions: int
    complete: int = 0
    running: int = 0
    pending: int = 0
    failed: int = 0
    verdict: str = ""
    deadline: float = 0.0

    @property
    def done(self) -> bool:
        return self.complete >= self.completions

    def line(self) -> str:
        text = f"{self.complete}/{self.completions} complete, {self.running} running"
        text += f", {self.failed} failed"
        return text + (f" ({self.verdict})" if self.verdict else "")


def is_batch(job: Job) -> bool:
    return job.type == "batch"


def progress(job: Job, group: Group, allocs: Iterable[Allocation], now: float) -> Progress:
    """`allocs`: the group's allocs (any version)."""
    completions = group.count
    done: set[int] = set()
    tries: dict[int, int] = {}  # index -> failed tries, counted along the reschedule chain
    running = pending = failed = 0
    exhausted = ""
    for a in allocs:
        if a.job_version != job.version:
            continue
        if a.client_status == "complete" and a.desired_status == "run":
            done.add(a.index)
        elif a.live:
            running += 1
            pending += a.client_status == "pending"
        if a.client_status == "failed":
            failed += 1
            if not a.next_alloc and not exhausted and _exhausted(group, a):
                exhausted = f"{a.name} failed after {a.reschedule_count + 1} tries"
        # A replacement carries the tries before it in reschedule_count.
        mine = a.reschedule_count + (a.client_status == "failed")
        tries[a.index] = max(tries.get(a.index, 0), mine)
    complete = sum(1 for i in done if 0 <= i < completions)
    deadline = 0.0
    if group.active_deadline:
        deadline = job.submit_time + group.active_deadline
    verdict = ""
    if complete < completions:
        failures = sum(tries.values())
        limit = group.backoff_limit
        if limit is not None and failures > limit:
            verdict = f"{failures} failed tries, more than backoff_limit {limit}"
        elif deadline and now >= deadline:
            verdict = f"active_deadline of {group.active_deadline:g}s passed"
        elif exhausted and not running:
            verdict = exhausted
    return Progress(
        completions=completions,
        complete=complete,
        running=running,
        pending=pending,
        failed=failed,
        verdict=verdict,
        deadline=deadline,
    )


def _exhausted(group: Group, a: Allocation) -> bool:
    return not group.reschedule.unlimited and len(recent(group, a, a.modify_time)) >= (
        group.reschedule.attempts
    )


def recent(group: Group, a: Allocation, now: float) -> list[float]:
    """The reschedules of `a`'s line that count against the policy's attempts now: those
    within its interval (all of them when the interval is 0)."""
    interval = group.reschedule.interval
    return [t for t in a.reschedule_times if not interval or now - t < interval]
