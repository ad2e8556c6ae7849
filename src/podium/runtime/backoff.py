"""Delays between tries.

    exponential(attempt, base, cap)   base * 2**attempt, capped: deterministic, for the
                                      restart and reschedule policies a user wrote down
    Backoff(base=, cap=)              one retry loop's delays, with full jitter: each
                                      delay is uniform in [0, exponential(n)], so the
                                      clients that failed together (every agent, when a
                                      server restarts) come back spread over the window
                                      instead of in lockstep; `reset()` after a success

Every loop that retries after a failure takes its delays from a Backoff.
"""

from __future__ import annotations

import random

from podium.runtime.clock import Clock, SystemClock


def exponential(attempt: int, *, base: float, cap: float, factor: float = 2.0) -> float:
    """Delay before attempt number `attempt` (0 = first retry): base * factor**attempt, capped."""
    if attempt <= 0:
        return min(base, cap)
    # Guard the power against overflow for absurd attempt counts.
    exp = min(attempt, 64)
    return min(base * factor**exp, cap)


class Backoff:
    """Full-jitter exponential backoff ("Exponential Backoff And Jitter", AWS, 2015)."""

    def __init__(
        self,
        *,
        base: float,
        cap: float,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0  # failures since the last reset
        self.clock = clock or SystemClock()
        self._rng = rng or random.Random()

    def window(self) -> float:
        """The upper bound of the next delay."""
        return exponential(self.attempt, base=self.base, cap=self.cap)

    def next(self) -> float:
        """The delay before the next try (and count this failure)."""
        delay = self._rng.uniform(0.0, self.window())
        self.attempt += 1
        return delay

    async def wait(self) -> float:
        """Sleep the next delay; return it (for the log line)."""
        delay = self.next()
        await self.clock.sleep(delay)
        return delay

    def reset(self) -> None:
        self.attempt = 0
