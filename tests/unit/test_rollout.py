"""The reconciler's deployment decisions: rolling batches, canaries, blue-green, pauses."""

from __future__ import annotations

from typing import Any

import msgspec

from podium.model.types import Allocation, Deployment, DeploymentGroup, Job, UpdateStrategy
from podium.scheduler import group_hash, reconcile
from podium.scheduler.reconcile import Reconciliation, deployment_id
from support.builders import make_alloc, make_job, make_node

NOW = 1_000_000.0


def nodes() -> dict[str, Any]:
    n = make_node("node-0001")
    return {n.id: n}


def v0_and_v1(count: int = 4, **update: Any) -> tuple[Job, Job]:
    strategy = UpdateStrategy(**update)
    v0 = make_job(count=count, cpu=100, update=strategy)
    v1 = msgspec.structs.replace(make_job(count=count, cpu=200, update=strategy), version=1)
    return v0, v1


def old_copies(job: Job, count: int) -> list[Allocation]:
    h = group_hash(job, job.groups[0])
    return [make_alloc(job, index=i, id=f"old{i}", group_hash=h) for i in range(count)]


def new_copy(
    job: Job, index: int, rec_or_dep: Reconciliation | Deployment, **kw: Any
) -> Allocation:
    dep = rec_or_dep.deployment if isinstance(rec_or_dep, Reconciliation) else rec_or_dep
    assert dep is not None
    return make_alloc(
        job,
        index=index,
        id=f"new{index}",
        group_hash=group_hash(job, job.groups[0]),
        deployment_id=dep.id,
        **kw,
    )


def test_a_new_version_opens_a_deployment_and_replaces_max_parallel_copies() -> None:
    v0, v1 = v0_and_v1(max_parallel=2)
    rec = reconcile(v1, old_copies(v0, 4), nodes(), now=NOW)
    assert rec.deployment is not None and rec.deployment.job_version == 1
    assert rec.deployment.id == deployment_id(v1)
    assert rec.deployment.groups["web"].desired_total == 4
    assert sorted(s.alloc_id for s in rec.stop) == ["old0", "old1"]
    assert [(p.index, p.reason, p.deployment_id) for p in rec.place] == [
        (0, "update", rec.deployment.id),
        (1, "update", rec.deployment.id),
    ]


def test_the_next_batch_waits_until_the_placed_copies_are_deployment_healthy() -> None:
    v0, v1 = v0_and_v1(max_parallel=2)
    first = reconcile(v1, old_copies(v0, 4), nodes(), now=NOW)
    dep = first.deployment
    assert dep is not None
    rest = old_copies(v0, 4)[2:]
    placed = [new_copy(v1, i, dep) for i in (0, 1)]  # running, not yet healthy
    rec = reconcile(v1, placed + rest, nodes(), now=NOW, deployment=dep)
    assert rec.deployment is None and not rec.stop and not rec.place
    # One becomes healthy: exactly one more old copy is replaced.
    placed[0] = msgspec.structs.replace(placed[0], deployment_healthy=True)
    rec = reconcile(v1, placed + rest, nodes(), now=NOW, deployment=dep)
    assert [s.alloc_id for s in rec.stop] == ["old2"]
    assert [(p.index, p.reason) for p in rec.place] == [(2, "update")]


def test_a_paused_or_failed_deployment_replaces_nothing_more_but_repairs() -> None:
    v0, v1 = v0_and_v1(max_parallel=1)
    dep = reconcile(v1, old_copies(v0, 4), nodes(), now=NOW).deployment
    assert dep is not None
    healthy = new_copy(v1, 0, dep, deployment_healthy=True)
    for status in ("paused", "failed"):
        d = msgspec.structs.replace(dep, status=status)
        rec = reconcile(v1, [healthy, *old_copies(v0, 4)[1:3]], nodes(), now=NOW, deployment=d)
        assert not rec.stop
        assert [(p.index, p.reason) for p in rec.place] == [(3, "missing")]  # index 3 gone


def test_canaries_start_beside_the_old_copies_and_wait_for_promotion() -> None:
    v0, v1 = v0_and_v1(max_parallel=1, canary=1)
    old = old_copies(v0, 4)
    rec = reconcile(v1, old, nodes(), now=NOW)
    dep = rec.deployment
    assert dep is not None and dep.groups["web"].desired_canaries == 1
    assert not rec.stop
    assert [(p.index, p.reason, p.canary) for p in rec.place] == [(0, "canary", True)]
    canary = new_copy(v1, 0, dep, canary=True, deployment_healthy=True)
    rec = reconcile(v1, [canary, *old], nodes(), now=NOW, deployment=dep)
    assert not rec.stop and not rec.place  # healthy, but not promoted: nothing moves
    promoted = msgspec.structs.replace(
        dep, groups={"web": msgspec.structs.replace(dep.groups["web"], promoted=True)}
    )
    rec = reconcile(v1, [canary, *old], nodes(), now=NOW, deployment=promoted)
    # The canary takes over index 0 (its old copy stops) and one more copy rolls.
    assert sorted(s.alloc_id for s in rec.stop) == ["old0", "old1"]
    assert [(p.index, p.reason) for p in rec.place] == [(1, "update")]


def test_blue_green_runs_the_whole_new_set_then_switches_at_once() -> None:
    v0, v1 = v0_and_v1(count=3, max_parallel=1, canary=3)
    old = old_copies(v0, 3)
    rec = reconcile(v1, old, nodes(), now=NOW)
    dep = rec.deployment
    assert dep is not None
    assert [(p.index, p.canary) for p in rec.place] == [(0, True), (1, True), (2, True)]
    assert not rec.stop
    greens = [new_copy(v1, i, dep, canary=True, deployment_healthy=True) for i in range(3)]
    rec = reconcile(v1, greens + old, nodes(), now=NOW, deployment=dep)
    assert not rec.stop and not rec.place
    promoted = msgspec.structs.replace(
        dep, groups={"web": msgspec.structs.replace(dep.groups["web"], promoted=True)}
    )
    rec = reconcile(v1, greens + old, nodes(), now=NOW, deployment=promoted)
    assert sorted(s.alloc_id for s in rec.stop) == ["old0", "old1", "old2"]
    assert not rec.place


def test_no_deployment_when_nothing_rolls_out() -> None:
    v0, _ = v0_and_v1()
    # In place only (the same group spec under a new version): no deployment.
    v1 = msgspec.structs.replace(v0, version=1)
    rec = reconcile(v1, old_copies(v0, 4), nodes(), now=NOW)
    assert rec.deployment is None
    assert [a.job_version for a in rec.in_place] == [1, 1, 1, 1]


def test_a_new_version_supersedes_the_running_deployment() -> None:
    v0, v1 = v0_and_v1(max_parallel=1)
    dep = reconcile(v1, old_copies(v0, 4), nodes(), now=NOW).deployment
    assert dep is not None
    v2 = msgspec.structs.replace(make_job(count=4, cpu=300, update=UpdateStrategy()), version=2)
    rec = reconcile(v2, old_copies(v0, 4), nodes(), now=NOW, deployment=dep)
    assert rec.deployment is not None and rec.deployment.job_version == 2
    assert [(d.id, d.status) for d in rec.deployment_updates] == [(dep.id, "cancelled")]


def test_a_stopped_job_cancels_its_deployment() -> None:
    v0, v1 = v0_and_v1()
    dep = Deployment(
        id="d", namespace="default", job=v1.name, job_version=1,
        groups={"web": DeploymentGroup(desired_total=4)},
    )  # fmt: skip
    rec = reconcile(msgspec.structs.replace(v1, stop=True), old_copies(v0, 4), nodes(),
                    now=NOW, deployment=dep)  # fmt: skip
    assert [(d.status, d.status_description) for d in rec.deployment_updates] == [
        ("cancelled", "job stopped")
    ]


def test_the_first_version_is_deployed_without_canaries() -> None:
    _, v1 = v0_and_v1(max_parallel=1, canary=2)
    v0 = msgspec.structs.replace(v1, version=0)
    rec = reconcile(v0, [], nodes(), now=NOW)
    assert rec.deployment is not None
    assert rec.deployment.groups["web"].desired_canaries == 0
    assert [p.reason for p in rec.place] == ["missing"] * 4


# ------------------------------------------------------------ the verdicts (pure)

from podium.server.controllers.deployments import judge  # noqa: E402


def running_deployment(v1: Job, **group: Any) -> Deployment:
    dg = DeploymentGroup(desired_total=4, progress_deadline=60.0, require_progress_by=NOW + 60)
    return Deployment(
        id=deployment_id(v1), namespace="default", job=v1.name, job_version=1,
        groups={"web": msgspec.structs.replace(dg, **group)},
    )  # fmt: skip


def test_all_copies_healthy_on_the_new_version_is_a_success() -> None:
    _, v1 = v0_and_v1()
    d = running_deployment(v1)
    allocs = [new_copy(v1, i, d, deployment_healthy=True) for i in range(4)]
    v = judge(d, v1, allocs, now=NOW)
    assert v is not None and v.deployment.status == "successful"
    assert v.deployment.groups["web"].healthy == 4
    assert judge(v.deployment, v1, allocs, now=NOW) is None  # nothing new: no write


def test_one_unhealthy_copy_fails_the_deployment_with_the_reason() -> None:
    v0, v1 = v0_and_v1()
    d = running_deployment(v1)
    bad = new_copy(v1, 0, d, deployment_healthy=False)
    v = judge(d, v1, [bad, *old_copies(v0, 4)[1:]], now=NOW)
    assert v is not None and v.deployment.status == "failed" and v.kind == "deployment.failed"
    assert "new0" in v.message and "unhealthy" in v.message


def test_a_copy_the_agent_says_nothing_about_fails_past_its_deadline() -> None:
    _, v1 = v0_and_v1(healthy_deadline=10.0)
    d = running_deployment(v1)
    silent = new_copy(v1, 0, d, create_time=NOW)
    assert judge(d, v1, [silent], now=NOW + 10.5, agent_grace=1.0) is not None
    v = judge(d, v1, [silent], now=NOW + 11.5, agent_grace=1.0)
    assert v is not None and v.deployment.status == "failed"


def test_no_progress_before_the_progress_deadline_fails() -> None:
    v0, v1 = v0_and_v1()
    d = running_deployment(v1)
    waiting = new_copy(v1, 0, d, create_time=NOW)
    allocs = [waiting, *old_copies(v0, 4)[1:]]
    v = judge(d, v1, allocs, now=NOW + 61)
    assert v is not None and v.deployment.status == "failed"
    assert "progress_deadline" in v.message


def test_progress_moves_the_progress_deadline() -> None:
    v0, v1 = v0_and_v1()
    d = running_deployment(v1)
    ok = new_copy(v1, 0, d, deployment_healthy=True)
    v = judge(d, v1, [ok, *old_copies(v0, 4)[1:]], now=NOW + 30)
    assert v is not None and v.kind == "deployment.progress"
    assert v.deployment.groups["web"].require_progress_by == NOW + 30 + 60


def test_healthy_canaries_are_promoted_automatically_when_asked() -> None:
    v0, v1 = v0_and_v1()
    d = running_deployment(v1, desired_canaries=1, auto_promote=True)
    canary = new_copy(v1, 0, d, canary=True, deployment_healthy=True)
    v = judge(d, v1, [canary, *old_copies(v0, 4)], now=NOW)
    assert v is not None and v.kind == "deployment.promoted"
    assert v.deployment.groups["web"].promoted and v.deployment.status == "running"
    manual = running_deployment(v1, desired_canaries=1)
    v = judge(manual, v1, [canary, *old_copies(v0, 4)], now=NOW)
    assert v is not None and not v.deployment.groups["web"].promoted
