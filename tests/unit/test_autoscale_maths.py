"""The autoscaler's maths (autoscale/hpa.py, autoscale/forecast.py): HPA's formula, its
tolerance and missing-metric rules, the safety rules in their order, the forecast."""

from __future__ import annotations

import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from podium.autoscale import Reading, Series, Situation, Window, decide, forecast, propose
from podium.autoscale.forecast import step_for
from podium.autoscale.hpa import Proposal
from podium.model.types import Scaling

NOW = 1_700_000_000.0


def scaling(**kw: object) -> Scaling:
    base: dict[str, object] = {"min": 1, "max": 20, "scale_down_window": 60.0}
    return Scaling(**(base | kw))  # type: ignore[arg-type]


def rps(count: int | None, text: str = "rps") -> Proposal:
    return Proposal("rps", count, f"{text} → {count}")


# ------------------------------------------------------------------ proposals


def test_cpu_over_target_scales_by_the_ratio() -> None:
    p = propose(Reading("cpu", 60, copies=(91.0, 91.0, 91.0)), current=3, tolerance=0.1)
    assert p.count == 5  # ceil(3 x 91 / 60)
    assert p.text == "cpu 91% vs target 60% over 3 copies → 5"


def test_within_tolerance_keeps_the_count() -> None:
    assert propose(Reading("cpu", 60, copies=(65.0, 64.0)), current=2, tolerance=0.1).count == 2
    assert propose(Reading("cpu", 60, copies=(67.0, 67.0)), current=2, tolerance=0.1).count == 3
    assert propose(Reading("cpu", 60, copies=(67.0, 67.0)), current=2, tolerance=0.2).count == 2


def test_missing_copies_count_zero_up_and_full_down() -> None:
    # Up: 90% on one copy, the other starting. As 0% the mean is 45%: the direction turns,
    # so nothing changes (HPA).
    up = propose(Reading("cpu", 60, copies=(90.0, None)), current=2, tolerance=0.1)
    assert up.count == 2 and "1 without a figure" in up.text
    # Up, clearly: 200% and a starting copy -> (200 + 0) / 2 = 100% -> ceil(2 x 100/60) = 4.
    assert propose(Reading("cpu", 60, copies=(200.0, None)), current=2, tolerance=0.1).count == 4
    # Down: 10% and a copy with no figure taken as 60% -> 35% -> ceil(2 x 35/60) = 2.
    assert propose(Reading("cpu", 60, copies=(10.0, None)), current=2, tolerance=0.1).count == 2
    # No figure at all: no proposal.
    none = propose(Reading("cpu", 60, copies=(None, None)), current=2, tolerance=0.1)
    assert none.count is None and "no figure" in none.text


def test_totals_divide_by_the_target_per_copy() -> None:
    assert propose(Reading("rps", 10, value=42.0), current=3, tolerance=0.1).count == 5
    assert propose(Reading("rps", 10, value=31.0), current=3, tolerance=0.1).count == 3
    assert propose(Reading("rps", 10, value=0.0), current=3, tolerance=0.1).count == 0
    assert propose(Reading("concurrency", 4, value=9.0), current=0, tolerance=0.1).count == 3
    assert propose(Reading("prometheus", 5, value=17.0), current=1, tolerance=0.1).count == 4
    missing = propose(Reading("rps", 10, missing="no proxy has counted yet"), 3, 0.1)
    assert missing.count is None and "no proxy has counted yet" in missing.text


def test_latency_moves_the_count_by_its_ratio() -> None:
    p = propose(Reading("latency_p95", 0.2, value=0.35), current=4, tolerance=0.1)
    assert p.count == 7 and p.text == "latency_p95 350ms vs target 200ms over 4 copies → 7"


# ------------------------------------------------------------------- decisions


def test_highest_proposal_wins_and_missing_blocks_scale_down() -> None:
    d = decide(scaling(), Situation(NOW, 4, (rps(6), rps(2))), Window())
    assert d.count == 6 and d.reason == "rps → 6; rps → 2"
    d = decide(
        scaling(), Situation(NOW, 4, (rps(2), Proposal("cpu", None, "cpu: no figure"))), Window()
    )
    assert d.count == 4 and "not scaling down while cpu has no figure" in d.reason


def test_scale_down_waits_for_the_window_then_goes() -> None:
    w, cfg = Window(), scaling(scale_down_window=60.0)
    assert decide(cfg, Situation(NOW, 1, (rps(5),)), w).count == 5
    held = decide(cfg, Situation(NOW + 10, 5, (rps(2),)), w)
    assert held.count == 5 and held.wanted == 2 and "scale-down window" in held.held
    assert held.next_change == NOW + 60
    assert decide(cfg, Situation(NOW + 59, 5, (rps(2),)), w).count == 5
    assert decide(cfg, Situation(NOW + 61, 5, (rps(2),)), w).count == 2


def test_scale_down_takes_the_highest_in_the_window() -> None:
    w, cfg = Window(), scaling(scale_down_window=60.0)
    decide(cfg, Situation(NOW, 8, (rps(8),)), w)
    decide(cfg, Situation(NOW + 30, 8, (rps(6),)), w)
    assert decide(cfg, Situation(NOW + 70, 8, (rps(3),)), w).count == 6  # 8 expired, 6 not


def test_scale_up_is_limited_per_change() -> None:
    d = decide(scaling(max=100), Situation(NOW, 2, (rps(40),)), Window())
    assert d.count == 6 and d.wanted == 40 and "+4 copies or +100%" in d.held
    assert decide(scaling(max=100), Situation(NOW, 10, (rps(40),)), Window()).count == 20


def test_min_and_max_bound_the_count() -> None:
    assert decide(scaling(min=2, max=5), Situation(NOW, 3, (rps(9),)), Window()).count == 5
    w = Window()
    assert (
        decide(scaling(min=2, max=5, scale_down_window=0), Situation(NOW, 3, (rps(0),)), w).count
        == 2
    )


def test_a_forecasts_count_lasts_while_it_asks_and_is_not_held_by_the_window() -> None:
    """The window holds what the reactive policies asked for; a forecast's count is not
    held after the forecast drops it (a rise it saw has come, or did not)."""
    cfg, w = scaling(scale_down_window=60.0), Window()
    ahead = decide(cfg, Situation(NOW, 2, (rps(2),), forecast=rps(6, "forecast")), w)
    assert ahead.count == 6
    still = decide(cfg, Situation(NOW + 2, 6, (rps(2),), forecast=rps(5, "forecast")), w)
    assert still.count == 5 and not still.held
    gone = decide(cfg, Situation(NOW + 4, 5, (rps(2),), forecast=rps(2, "forecast")), w)
    assert gone.count == 2 and not gone.held
    # The reactive ask of 2 is held through the window, the forecast or not.
    low = decide(cfg, Situation(NOW + 6, 2, (rps(1),), forecast=rps(1, "forecast")), w)
    assert low.count == 2 and low.held.startswith("scale-down window: 2")


def test_forecast_raises_never_lowers() -> None:
    up = decide(scaling(), Situation(NOW, 2, (rps(2),), forecast=rps(7, "forecast")), Window())
    assert up.count == 6 and up.wanted == 7 and "forecast → 7" in up.reason  # limited +4
    same = decide(scaling(), Situation(NOW, 5, (rps(5),), forecast=rps(1, "forecast")), Window())
    assert same.count == 5


def test_idle_goes_to_zero_and_zero_stays_until_woken() -> None:
    cfg = scaling(min=0, idle_timeout=30.0)
    busy = decide(cfg, Situation(NOW, 1, (rps(0),), idle_for=10.0), Window())
    assert busy.count == 1  # min 0, but not idle yet: at least one copy
    idle = decide(cfg, Situation(NOW, 1, (rps(0),), idle_for=31.0), Window())
    assert idle.count == 0 and idle.reason == "no request for 31s (idle_timeout 30s)"
    assert decide(cfg, Situation(NOW, 0, (rps(0),), idle_for=99.0), Window()).count == 0
    # A forecast of demand within the lead keeps it up (and wakes it ahead of a request).
    ahead = decide(cfg, Situation(NOW, 0, (rps(0),), forecast=rps(2, "forecast")), Window())
    assert ahead.count == 2
    kept = decide(cfg, Situation(NOW, 1, (rps(0),), idle_for=99.0, forecast=rps(1, "f")), Window())
    assert kept.count == 1


def test_holds_cooldown_rollout_unplaced_quota() -> None:
    cfg = scaling(cooldown=30.0)
    d = decide(cfg, Situation(NOW, 2, (rps(5),), last_change=NOW - 10), Window())
    assert d.count == 2 and d.next_change == NOW + 20 and d.held.startswith("cooldown")
    assert decide(cfg, Situation(NOW, 2, (rps(5),), last_change=NOW - 31), Window()).count == 5
    rolling = Situation(NOW, 2, (rps(5),), rollout="deployment abcd1234 is rolling out")
    d = decide(scaling(), rolling, Window())
    assert d.count == 2 and "during_rollout is false" in d.held
    assert decide(scaling(during_rollout=True), rolling, Window()).count == 5
    d = decide(scaling(), Situation(NOW, 2, (rps(5),), unplaced=1), Window())
    assert d.count == 2 and "could not be placed" in d.held
    # A scale-down still goes (it frees what the unplaced copies wait for).
    assert decide(scaling(), Situation(NOW, 2, (rps(1),), unplaced=1), Window()).count == 1
    d = decide(scaling(), Situation(NOW, 2, (rps(9),), quota=4, quota_why="team-a"), Window())
    assert d.count == 4 and d.held == "quota: at most 4 copies (team-a)"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=30), min_size=5, max_size=120))
def test_never_scales_down_within_a_window_of_a_scale_up(asks: list[int]) -> None:
    """The acceptance's "never flaps more than once per window": a scale-down comes at
    least a window after the last scale-up, so one window holds at most one turn."""
    cfg, w = scaling(min=1, max=30, scale_down_window=10.0), Window()
    count, last_up = 1, -math.inf
    for t, ask in enumerate(asks):
        d = decide(cfg, Situation(NOW + t, count, (rps(ask),)), w)
        if d.count > count:
            last_up = t
        elif d.count < count:
            assert t - last_up >= 10.0, (t, last_up, asks)
        count = d.count


# -------------------------------------------------------------------- forecast


def day(t: float, season: float) -> float:
    """A daily curve: quiet nights, a morning ramp, an afternoon peak of 100."""
    x = (t % season) / season
    return 10 + 90 * max(0.0, math.sin(math.pi * (x - 0.25) / 0.6)) if 0.25 <= x <= 0.85 else 10


def test_step_divides_the_season() -> None:
    assert step_for(86400, 300) == 150.0
    assert step_for(300, 20) == 300 / 288
    assert step_for(60, 0) == 1.0
    for season, lead in ((86400, 300), (300, 20), (3600, 60), (777, 13)):
        step = step_for(season, lead)
        assert abs(season / step - round(season / step)) < 1e-9


def test_no_forecast_before_one_season() -> None:
    season, lead = 600.0, 30.0
    s = Series(step=step_for(season, lead))
    for t in range(0, 500, 2):
        s.add(NOW + t, day(t, season), 2.0, keep=1000)
    assert forecast(s, NOW + 500, season, lead) is None


def test_forecast_is_the_demand_now_plus_the_rise_a_lead_ahead() -> None:
    season, lead = 600.0, 30.0
    s = Series(step=step_for(season, lead))
    t = 0
    while t <= 600 + 200:  # one season, then day two 20 higher all along
        s.add(NOW + t, day(t, season) + (20 if t >= 600 else 0), 2.0, keep=2 * 288 + 8)
        t += 2
    now = NOW + t - 1  # t - 2 was measured last; this is in the morning ramp
    f = forecast(s, now, season, lead)
    assert f is not None
    # The demand measured now (its bucket's mean), not what it was a season ago.
    assert abs(f.level - (day(t - 2, season) + 20)) < 2, f
    rise = max(day(t - 2 + h, season) for h in range(0, 31)) - day(t - 2, season)
    assert abs(f.rise - rise) < 5, (f, rise)
    assert f.value == f.level + f.rise and f.at > now
    assert f.history >= season


def noisy_days(season: float, lead: float, level: float, seed: int) -> tuple[Series, list[float]]:
    """Two seasons of a flat `level` with +-15 % noise in every second (as the benchmark's
    trace), read every 2 s (the mean of two seconds); the series and the times read."""
    rng = random.Random(seed)
    s = Series(step=step_for(season, lead))
    times = [NOW + t for t in range(0, int(2 * season), 2)]
    for t in times:
        s.add(t, level * (rng.uniform(0.85, 1.15) + rng.uniform(0.85, 1.15)) / 2, 2.0,
              keep=2 * 288 + 8)  # fmt: skip
    return s, times


def test_forecast_on_a_noisy_plateau_holds_no_peak() -> None:
    """Demand flat at 58/s with +-15 % noise: a forecast that held the highest (noisy)
    value within the lead asked for a copy more than the demand all day long; within
    the reactive tolerance a rise is noise, so the forecast is the demand now."""
    season, lead = 300.0, 10.0
    for seed in range(5):
        s, times = noisy_days(season, lead, 58.0, seed)
        for now in times[len(times) // 2 + 5 :: 7]:
            f = forecast(s, now + 1, season, lead, tolerance=0.1)
            assert f is not None
            assert f.rise == 0.0 and f.value == f.level, (seed, now - NOW, f)


def test_forecast_never_adds_a_fall_and_follows_a_quieter_day() -> None:
    season, lead = 600.0, 30.0
    s = Series(step=step_for(season, lead))
    for t in range(0, 600 + 360, 2):  # day two half of day one, into the evening decline
        s.add(NOW + t, day(t, season) * (0.5 if t >= 600 else 1.0), 2.0, keep=2 * 288 + 8)
    f = forecast(s, NOW + 600 + 359, season, lead)
    assert f is not None
    # The season before fell from here (x = 0.6): the forecast is today's demand, not
    # yesterday's peak nor anything below today's.
    assert f.rise == 0.0 and f.value == f.level == day(358, season) * 0.5


def test_series_keeps_a_bounded_history_and_skips_late_samples() -> None:
    s = Series(step=1.0)
    for t in range(100):
        s.add(NOW + t, float(t), 1.0, keep=10)
    assert len(s.values) == 10 and s.values[-1] == 99.0
    s.add(NOW + 50, 1000.0, 1.0, keep=10)  # late: its bucket is long closed
    assert 1000.0 not in s.values
