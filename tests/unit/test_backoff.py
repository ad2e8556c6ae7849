"""runtime/backoff.py: full jitter within a growing, capped window; reset after success."""

from __future__ import annotations

import random
import statistics

from podium.runtime.backoff import Backoff, exponential
from podium.runtime.clock import FakeClock


def test_exponential_is_capped_and_deterministic() -> None:
    assert [exponential(n, base=0.2, cap=5.0) for n in range(7)] == [
        0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0,
    ]  # fmt: skip
    assert exponential(10_000, base=1.0, cap=7.0) == 7.0


def test_delays_are_full_jitter_within_the_window() -> None:
    b = Backoff(base=0.2, cap=5.0, rng=random.Random(1))
    for n in range(8):
        top = exponential(n, base=0.2, cap=5.0)
        assert b.window() == top
        assert 0.0 <= b.next() <= top
    # At the cap, delays cover the whole window evenly, not its top.
    delays = [b.next() for _ in range(2000)]
    assert max(delays) <= 5.0 and min(delays) < 0.1 and max(delays) > 4.9
    assert 2.3 < statistics.mean(delays) < 2.7


def test_two_clients_that_fail_together_do_not_retry_together() -> None:
    a, b = Backoff(base=0.5, cap=5.0), Backoff(base=0.5, cap=5.0)
    assert [a.next() for _ in range(6)] != [b.next() for _ in range(6)]


async def test_wait_sleeps_on_the_clock_and_reset_starts_over() -> None:
    clock = FakeClock(100.0)
    b = Backoff(base=1.0, cap=8.0, clock=clock, rng=random.Random(2))
    slept = [await b.wait() for _ in range(4)]
    assert abs(clock.monotonic() - 100.0 - sum(slept)) < 1e-9
    assert b.attempt == 4 and b.window() == 8.0
    b.reset()
    assert b.attempt == 0 and b.window() == 1.0
