"""Batch groups in the reconciler: parallelism, completions, backoff_limit, active_deadline,
and parents (cron, parameterized) whose runs are child jobs."""

from __future__ import annotations

from typing import Any

import msgspec

from podium.model.types import Allocation, Job, Parameterized, Periodic, ReschedulePolicy
from podium.scheduler import reconcile
from podium.scheduler.batch import progress
from support.builders import make_alloc, make_group, make_job, make_node

NOW = 1000.0
NODES = {"n1": make_node("n1")}


def batch_job(**group: Any) -> Job:
    g = make_group("work", **{"count": 10, "parallelism": 3, "backoff_limit": 6} | group)
    return make_job("b", type="batch", groups=[g])


def copy(job: Job, index: int, client: Any, **kw: Any) -> Allocation:
    return make_alloc(job, group="work", index=index, node="n1", client=client,
                      id=f"a{index}-{client}-{kw.get('reschedule_count', 0)}", **kw)  # fmt: skip


def test_parallelism_caps_the_copies_that_run_at_once_lowest_index_first() -> None:
    job = batch_job()
    rec = reconcile(job, [], NODES, now=NOW)
    assert [p.index for p in rec.place] == [0, 1, 2]
    have = [copy(job, 0, "complete"), copy(job, 1, "complete"), copy(job, 2, "running"),
            copy(job, 3, "running"), copy(job, 4, "pending")]  # fmt: skip
    assert reconcile(job, have, NODES, now=NOW).place == []  # 3 live: none more
    have[2] = copy(job, 2, "complete")
    assert [p.index for p in reconcile(job, have, NODES, now=NOW).place] == [5]


def test_completed_indexes_never_run_again_and_the_group_ends_with_every_one() -> None:
    job = batch_job()
    done = [copy(job, i, "complete") for i in range(10)]
    assert reconcile(job, done, NODES, now=NOW).empty
    assert progress(job, job.groups[0], done, NOW).line() == "10/10 complete, 0 running, 0 failed"


def test_a_failed_copy_is_retried_within_parallelism() -> None:
    job = batch_job(reschedule=ReschedulePolicy(attempts=3, unlimited=False, delay=0.0))
    have = [copy(job, 0, "failed"), copy(job, 1, "running"), copy(job, 2, "running")]
    have[0].modify_time = NOW - 10
    rec = reconcile(job, have, NODES, now=NOW)
    assert [(p.index, p.reason) for p in rec.place] == [(0, "reschedule")]
    have.append(copy(job, 3, "running"))
    assert reconcile(job, have, NODES, now=NOW).place == []  # 3 running: it waits


def test_more_failures_than_backoff_limit_fail_the_group() -> None:
    job = batch_job(backoff_limit=1, reschedule=ReschedulePolicy(unlimited=True, delay=0.0))
    have = [copy(job, 0, "failed", next_alloc="x"), copy(job, 0, "failed", reschedule_count=1),
            copy(job, 1, "running"), copy(job, 2, "complete")]  # fmt: skip
    prog = progress(job, job.groups[0], have, NOW)
    assert prog.verdict == "2 failed tries, more than backoff_limit 1"
    assert prog.line() == (
        "1/10 complete, 1 running, 2 failed (2 failed tries, more than backoff_limit 1)"
    )
    rec = reconcile(job, have, NODES, now=NOW)
    assert rec.place == [] and [(s.alloc_id, s.reason) for s in rec.stop] == [
        ("a1-running-0", "job failed: 2 failed tries, more than backoff_limit 1")
    ]
    within = batch_job(backoff_limit=2, reschedule=ReschedulePolicy(unlimited=True, delay=0.0))
    assert [p.index for p in reconcile(within, have, NODES, now=NOW).place] == [0, 3]


def test_active_deadline_stops_the_group_and_wakes_the_caller_at_it() -> None:
    job = msgspec.structs.replace(batch_job(active_deadline=60.0), submit_time=NOW - 30)
    have = [copy(job, 0, "running")]
    rec = reconcile(job, have, NODES, now=NOW)
    assert rec.reschedule_later == {"deadline:work": NOW + 30}
    late = reconcile(job, have, NODES, now=NOW + 31)
    assert late.place == [] and [s.reason for s in late.stop] == [
        "job failed: active_deadline of 60s passed"
    ]


def test_cron_and_dispatch_parents_place_nothing_and_stop_what_they_ran_before() -> None:
    cron = make_job("c", type="cron")
    cron = msgspec.structs.replace(cron, periodic=Periodic(schedule=["* * * * *"]))
    assert reconcile(cron, [], NODES, now=NOW).empty
    dispatch = make_job("d", type="batch")
    dispatch = msgspec.structs.replace(dispatch, parameterized=Parameterized())
    assert reconcile(dispatch, [], NODES, now=NOW).empty
    old = make_alloc(dispatch, node="n1", id="old")
    rec = reconcile(dispatch, [old], NODES, now=NOW)
    assert [(s.alloc_id, s.reason) for s in rec.stop] == [("old", "runs are child jobs now")]
