"""Long work on the event loop in slices, so what shares the loop (the leader's lease
keepalive, heartbeats, the API) is never held up for long.

    slicer = Slicer(budget=0.02)
    for item in work:
        do(item)
        await slicer.tick()   # yields to the loop once `budget` seconds have passed

A tick costs one clock read; the loop is given a turn only when the budget is spent, so
a fast loop over many items yields a few times, not once per item.
"""

from __future__ import annotations

import asyncio
import time

SLICE = 0.01  # seconds of work between turns given to the rest of the loop


class Slicer:
    def __init__(self, *, budget: float | None = None) -> None:
        self.budget = SLICE if budget is None else budget
        self.turns = 0  # how often it yielded
        self._since = time.perf_counter()

    async def tick(self) -> None:
        """Yield to the event loop if this slice's budget is spent."""
        now = time.perf_counter()
        if now - self._since >= self.budget:
            await asyncio.sleep(0)
            self.turns += 1
            self._since = time.perf_counter()
