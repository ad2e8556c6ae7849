"""A copy's deployment verdict on its node (pure): healthy after min_healthy_time without a
break; unhealthy at once when it fails, when a check fails unhealthy_after times in a row
past check_grace, or when its tasks exit unhealthy_after times; else at healthy_deadline."""

from __future__ import annotations

from typing import Any

from podium.agent.deploy_health import CheckStreak, DeploymentHealth, Observation
from podium.agent.health import CheckRunner
from podium.model.types import Check, UpdateStrategy

T0 = 1_000_000.0


def judge(**update: Any) -> DeploymentHealth:
    return DeploymentHealth(UpdateStrategy(**update), started=T0)


def failing(n: int, output: str = "HTTP 500: broken") -> Observation:
    return Observation(healthy=False, restarts=0, checks=[CheckStreak("web-http-0", n, output)])


def test_healthy_for_min_healthy_time_is_a_healthy_verdict() -> None:
    d = judge(min_healthy_time=5.0)
    assert d.observe(T0 + 1, Observation(healthy=True, restarts=0)) is None
    assert d.observe(T0 + 5.9, Observation(healthy=True, restarts=0)) is None
    assert d.observe(T0 + 6, Observation(healthy=True, restarts=0)) is True
    assert d.decided_at == T0 + 6


def test_a_check_failing_unhealthy_after_times_in_a_row_is_unhealthy_at_once() -> None:
    d = judge()  # defaults: unhealthy_after 3, healthy_deadline 5 minutes
    assert d.observe(T0 + 8, failing(2)) is None
    assert d.observe(T0 + 10, failing(3)) is False
    assert d.why == "check web-http-0 failed 3 times in a row: HTTP 500: broken"


def test_tasks_exiting_unhealthy_after_times_is_unhealthy_with_the_last_exit() -> None:
    d = judge()
    last = "task server exited with code 1: OSError: [Errno 98] Address already in use"
    # Exits before this node judged (a restarted agent) do not count.
    assert d.observe(T0, Observation(healthy=False, restarts=4, last_exit=lambda: last)) is None
    assert d.observe(T0 + 2, Observation(healthy=False, restarts=6)) is None
    assert (
        d.observe(T0 + 3, Observation(healthy=False, restarts=7, last_exit=lambda: last)) is False
    )
    assert d.why == f"its tasks exited 3 times (last: {last})"


def test_unhealthy_after_zero_leaves_the_verdict_to_healthy_deadline() -> None:
    d = judge(unhealthy_after=0, healthy_deadline=60.0)
    assert d.observe(T0 + 30, failing(50)) is None
    assert d.observe(T0 + 30, Observation(healthy=False, restarts=9)) is None
    assert d.observe(T0 + 60, failing(50)) is False
    assert "healthy_deadline 60s" in d.why


def test_task_states_health_ignores_failing_checks() -> None:
    d = judge(health_check="task_states", min_healthy_time=1.0)
    assert d.observe(T0, failing(10)) is None


def test_a_failed_alloc_is_unhealthy_with_its_reason() -> None:
    d = judge()
    obs = Observation(healthy=False, restarts=0, failed="task t failed: OOM")
    assert d.observe(T0, obs) is False
    assert d.why == "the alloc failed: task t failed: OOM"


def runner() -> CheckRunner:
    return CheckRunner(
        Check(name="c", path="/"), address="127.0.0.1", port=1, on_result=lambda *_: None
    )


def test_failures_in_a_row_count_only_past_the_grace_and_reset_on_a_pass() -> None:
    c = runner()
    c.reset(T0, grace=5.0)
    c._record(T0 + 1, "critical", "refused")  # starting up: not counted
    c._record(T0 + 4, "critical", "refused")
    assert c.failures == 0
    c._record(T0 + 6, "critical", "HTTP 500")
    c._record(T0 + 7, "warning", "HTTP 429")  # neither a failure nor a pass
    c._record(T0 + 8, "critical", "HTTP 500")
    assert c.failures == 2
    c._record(T0 + 9, "passing", "HTTP 200")
    assert c.failures == 0
    c.reset(T0 + 20, grace=5.0)  # the task restarted: what was seen says nothing now
    assert c.status.status == "pending" and c.count_from == T0 + 25
