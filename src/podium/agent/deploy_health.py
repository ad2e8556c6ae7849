"""Deployment health of one alloc, judged on its node (where the truth is freshest).

    undecided --(healthy without a break for min_healthy_time)--> healthy   (True)
    undecided --(healthy_deadline passes, or the alloc fails)-->   unhealthy (False)

"Healthy" follows the group's update.health_check: "checks" (every task running and
every check passing) or "task_states" (every task running). A task restart inside
the window starts the clock again. Once decided, the verdict never changes: it is
about this deployment, not the copy's health from then on.
"""

from __future__ import annotations

from dataclasses import dataclass

from podium.model.types import UpdateStrategy


@dataclass
class DeploymentHealth:
    strategy: UpdateStrategy
    started: float  # when this node took the alloc on
    verdict: bool | None = None
    decided_at: float = 0.0
    why: str = ""
    _healthy_since: float | None = None
    _restarts: int = 0

    def observe(
        self, now: float, *, tasks_running: bool, checks_passing: bool, failed: bool, restarts: int
    ) -> bool | None:
        """Feed the alloc's current state; returns the verdict (None while undecided)."""
        if self.verdict is not None:
            return self.verdict
        s = self.strategy
        healthy = tasks_running and (checks_passing or s.health_check == "task_states")
        if restarts != self._restarts:
            self._restarts = restarts
            self._healthy_since = None
        if failed:
            return self._decide(False, now, "the alloc failed")
        if healthy:
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
