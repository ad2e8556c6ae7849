"""Namespace quotas, pure parts: what a namespace holds, what a job asks, admission's
message, and the room the autoscaler's limit leaves a group."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from podium.errors import Forbidden
from podium.model.tenancy import Namespace, Quota
from podium.server import namespace_quota, quotas
from podium.server.state import ClusterState
from podium.store import keys
from podium.store.memory import MemoryStore
from support.builders import make_alloc, make_group, make_job


def _state() -> ClusterState:
    s = ClusterState(MemoryStore())
    web = make_job("web", namespace="a", groups=[make_group("g", count=2, cpu=100, memory=64)])
    db = make_job("db", namespace="a", groups=[make_group("g", count=1, cpu=100, memory=64)])
    other = make_job("x", namespace="b", groups=[make_group("g", count=5)])
    for j in (web, db, other):
        s.jobs[j.key] = j
    allocs = [make_alloc(web, group="g", index=i, id=f"w{i}") for i in range(2)]
    allocs += [make_alloc(db, group="g", id="d0"), make_alloc(other, group="g", id="x0")]
    s.absorb(allocs, 1)
    return s


def test_usage_counts_live_allocs_and_running_jobs_of_the_namespace() -> None:
    s = _state()
    assert namespace_quota.usage(s, "a") == namespace_quota.Usage(300, 192, 3, 2)
    assert namespace_quota.usage(s, "a", excluding="a/web") == namespace_quota.Usage(100, 64, 1, 1)


def test_the_autoscalers_limit_is_the_room_the_quota_leaves() -> None:
    s = _state()
    web = s.jobs["a/web"]
    assert quotas.scaling_limit(s, web, web.groups[0]) == (None, "")  # no quota read yet
    s.quotas = {"a": Quota(allocs=4)}
    assert quotas.scaling_limit(s, web, web.groups[0]) == (3, "the quota of namespace 'a'")
    s.quotas = {"a": Quota(cpu=250)}
    assert quotas.scaling_limit(s, web, web.groups[0])[0] == 1  # db holds 100 of 250
    s.quotas = {"b": Quota(allocs=1)}
    assert quotas.scaling_limit(s, web, web.groups[0]) == (None, "")


def test_admission_names_the_quota_and_lets_a_job_shrink() -> None:
    s = _state()
    ns = Namespace(name="a", quota=Quota(allocs=3))
    asyncio.run(s.store.put(keys.namespace("a"), msgspec.json.encode(ns)))
    web = s.jobs["a/web"]
    bigger = msgspec.structs.replace(web, groups=[make_group("g", count=3)])
    with pytest.raises(Forbidden, match=r"allocs: quota 3 allocations, 1 in use by other jobs"):
        asyncio.run(namespace_quota.admit(s, bigger, current=web))
    asyncio.run(namespace_quota.admit(s, web, current=web))  # 2 + 1 fits
    # Lowered below what runs: growing is refused, shrinking passes.
    ns2 = Namespace(name="a", quota=Quota(allocs=1))
    asyncio.run(s.store.put(keys.namespace("a"), msgspec.json.encode(ns2)))
    smaller = msgspec.structs.replace(web, groups=[make_group("g", count=1)])
    asyncio.run(namespace_quota.admit(s, smaller, current=web))
    with pytest.raises(Forbidden):
        asyncio.run(namespace_quota.admit(s, bigger, current=web))
