"""A job status's alloc rows come from a cache kept by the allocs' last change: the
same bytes as built afresh, never stale after a change, and bounded in size."""

from __future__ import annotations

import msgspec

from podium.server import jobs as job_ops
from podium.server.state import ClusterState, encode
from podium.store import keys
from podium.store.base import Delete, Put
from support.builders import make_alloc, make_job
from support.state import memory_state


async def write(state: ClusterState, *ops: Put | Delete) -> None:
    res = await state.store.txn([], list(ops))
    await state.wait_for(res.revision)


def status(state: ClusterState, name: str, rows: job_ops.RowCache | None) -> bytes:
    job = state.jobs[f"default/{name}"]
    return msgspec.json.encode(job_ops.summary(state, job, now=5.0, rows=rows))


async def test_cached_rows_are_the_rows_and_follow_every_change() -> None:
    async with memory_state() as state:
        rows = job_ops.RowCache()
        for name in ("web", "db"):
            job = make_job(name, count=3)
            await write(state, Put(keys.job("default", name), encode(job)))
            await write(
                state,
                *(Put(keys.alloc(f"{name}-{i}"), encode(make_alloc(job, index=i, id=f"{name}-{i}")))
                  for i in range(3)),
            )  # fmt: skip
        assert status(state, "web", rows) == status(state, "web", None)
        a = state.allocs["web-1"]
        await write(
            state, Put(keys.alloc(a.id), encode(msgspec.structs.replace(a, client_status="failed")))
        )
        assert status(state, "web", rows) == status(state, "web", None), "a change shows"
        assert b'"failed"' in status(state, "web", rows)
        await write(state, Delete(keys.alloc("web-2")))
        assert status(state, "web", rows) == status(state, "web", None), "a delete shows"
        assert b"web-2" not in status(state, "web", rows)
        assert status(state, "db", rows) == status(state, "db", None)


async def test_the_cache_keeps_within_its_bound() -> None:
    async with memory_state() as state:
        for name in ("a", "b", "c"):
            job = make_job(name, count=2)
            await write(state, Put(keys.job("default", name), encode(job)))
            await write(
                state, Put(keys.alloc(f"{name}-0"), encode(make_alloc(job, id=f"{name}-0")))
            )
        one = len(job_ops.RowCache().get(state, state.jobs["default/a"]))
        rows = job_ops.RowCache(max_bytes=2 * one + 10)
        for name in ("a", "b", "c", "a"):
            status(state, name, rows)
        assert len(rows._rows) == 2 and rows._bytes <= rows.max_bytes
