"""Exponential backoff with a cap, used by the restart and reschedule policies and retries."""

from __future__ import annotations


def exponential(attempt: int, *, base: float, cap: float, factor: float = 2.0) -> float:
    """Delay before attempt number `attempt` (0 = first retry): base * factor**attempt, capped."""
    if attempt <= 0:
        return min(base, cap)
    # Guard the power against overflow for absurd attempt counts.
    exp = min(attempt, 64)
    return min(base * factor**exp, cap)
