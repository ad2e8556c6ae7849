"""runtime/slices.py: long work gives the event loop a turn once per budget, not per item."""

from __future__ import annotations

import asyncio
import itertools
import time

from podium.runtime.slices import Slicer


async def test_long_work_lets_other_tasks_run_once_per_budget() -> None:
    turns: list[float] = []

    async def other() -> None:
        while True:
            turns.append(time.perf_counter())
            await asyncio.sleep(0)

    async def work(slicer: Slicer) -> float:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 0.2:  # 0.2 s of work in many small items
            sum(range(200))
            await slicer.tick()
        return time.perf_counter() - t0

    other_task = asyncio.create_task(other())
    await asyncio.sleep(0)
    turns.clear()
    slicer = Slicer(budget=0.02)
    took = await work(slicer)
    other_task.cancel()
    # About one turn per 20 ms of work (fewer when this machine is busy), and no more:
    # a tick only reads the clock until the budget is spent.
    assert 3 <= slicer.turns <= took / 0.02 + 1, (slicer.turns, took)
    assert len(turns) == slicer.turns
    gaps = [b - a for a, b in itertools.pairwise(turns)]
    assert gaps and min(gaps) >= 0.02
