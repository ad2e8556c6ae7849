"""Deployment health of one alloc, judged on its node (where the truth is freshest).

    undecided --(healthy without a break for min_healthy_time)-->          healthy   (True)
    undecided --(the alloc fails; or, with unhealthy_after N > 0, a check
                 fails N times in a row past check_grace, or its tasks
                 exit N times; or healthy_deadline passes)-->              unhealthy (False)

"Healthy" follows the group's update.health_check: "checks" (every task running and
every check passing since the task's latest start) or "task_states" (every task
running). A task restart inside the window starts the clock again. Once decided, the
verdict never changes: it is about this deployment, not the copy's health from then on.
Failing fast is what lets a bad version roll back in seconds instead of at
healthy_deadline (5 minutes by default).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from podium.model.types import UpdateStrategy


def counts_as_healthy(
    strategy: UpdateStrategy, *, tasks_running: bool, checks_passing: bool
) -> bool:
    """Healthy as the group's update.health_check defines it."""
    return tasks_running and (checks_passing or strategy.health_check == "task_states")


@dataclass
class CheckStreak:
    """One check as the verdict sees it: failures in a row (counted past check_grace)."""

    name: str
    failures: int
    output: str


@dataclass
class Observation:
    """The alloc's state at one moment, as its runner sees it."""

    healthy: bool  # as update.health_check defines it, right now
    restarts: int  # task restarts so far, every task counted
    failed: str = ""  # why the alloc failed; "" while it has not
    # The latest task exit, described, for the verdict's reason (asked only then: it reads
    # the task's stderr).
    last_exit: Callable[[], str] = str
    checks: list[CheckStreak] = field(default_factory=list)


@dataclass
class DeploymentHealth:
    strategy: UpdateStrategy
    started: float  # when this node took the alloc on
    verdict: bool | None = None
    decided_at: float = 0.0
    why: str = ""
    _healthy_since: float | None = None
    _restarts: int | None = None  # at the last observation
    _first_restarts: int | None = None  # at the first: exits before this node judged don't count

    def observe(self, now: float, obs: Observation) -> bool | None:
        """Feed the alloc's current state; returns the verdict (None while undecided)."""
        if self.verdict is not None:
            return self.verdict
        s = self.strategy
        if self._first_restarts is None:
            self._first_restarts = obs.restarts
        if obs.restarts != self._restarts:
            self._restarts = obs.restarts
            self._healthy_since = None
        if obs.failed:
            return self._decide(False, now, f"the alloc failed: {obs.failed}")
        if s.unhealthy_after:
            exits = obs.restarts - self._first_restarts
            if exits >= s.unhealthy_after:
                exit_ = obs.last_exit()
                last = f" (last: {exit_})" if exit_ else ""
                return self._decide(False, now, f"its tasks exited {exits} times{last}")
            if s.health_check == "checks":
                for c in obs.checks:
                    if c.failures >= s.unhealthy_after:
                        output = " ".join(c.output.split())[:300]
                        return self._decide(
                            False,
                            now,
                            f"check {c.name} failed {c.failures} times in a row: {output}",
                        )
        if obs.healthy:
            if self._healthy_since is None:
                self._healthy_since = now
            if now - self._healthy_since >= s.min_healthy_time:
                return self._decide(True, now, f"healthy for {s.min_healthy_time:g}s")
        else:
            self._healthy_since = None
        if now - self.started >= s.healthy_deadline:
            what = "checks passing" if s.health_check == "checks" else "tasks running"
            return self._decide(
                False, now, f"not healthy ({what}) within healthy_deadline {s.healthy_deadline:g}s"
            )
        return None

    def next_check(self, now: float) -> float:
        """When the verdict could next change on its own (a timer, not an event)."""
        if self.verdict is not None:
            return float("inf")
        s = self.strategy
        deadline = self.started + s.healthy_deadline
        if self._healthy_since is not None:
            deadline = min(deadline, self._healthy_since + s.min_healthy_time)
        return max(now, deadline)

    def _decide(self, verdict: bool, now: float, why: str) -> bool:
        self.verdict, self.decided_at, self.why = verdict, now, why
        return verdict
