"""Predictive scaling's model: seasonal-naive with an exponentially weighted trend.

In two sentences: the demand forecast for a moment ahead is what the group saw one
season (a day) before that moment, plus the trend, an exponentially weighted average of
how much each recent stretch exceeded the same stretch one season earlier. The group is
sized for the highest forecast between now and `lead` ahead, and never below what the
reactive policies ask for.

    Series: the group's own demand (requests/s, concurrency or cores) in buckets of
            `step` seconds, two seasons kept (stored with the group's scaling record)
    forecast(series, now, season, lead) -> Forecast (None before one season is seen:
            ECS likewise waits for 24 h of history)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import msgspec

BUCKETS_PER_SEASON = 288  # a day in 5-minute buckets
MIN_STEP = 1.0
SMOOTH = 1  # the seasonal value is the mean of the buckets this close to the one asked


def step_for(season: float, lead: float) -> float:
    """A bucket length that divides the season evenly: about season/288, at most half
    the lead (so the lead spans buckets), at least a second."""
    want = season / BUCKETS_PER_SEASON
    if lead > 0:
        want = min(want, lead / 2)
    want = max(MIN_STEP, want)
    return season / max(1, round(season / want))


class Series(msgspec.Struct, kw_only=True):
    """A metric in buckets of `step` seconds (each the time-weighted mean of what was
    measured in it; None: nothing measured), oldest first. Bucket i covers
    [start + i*step, start + (i+1)*step); the last bucket is the one being filled."""

    step: float
    start: float = 0.0
    values: list[float | None] = msgspec.field(default_factory=list)
    acc: float = 0.0  # value x seconds measured so far in the last bucket
    acc_s: float = 0.0  # and those seconds

    def add(self, now: float, value: float, seconds: float, *, keep: int) -> None:
        """Record `value`, measured over the `seconds` up to `now`; keep at most `keep` buckets."""
        if not self.values:
            self.start = math.floor(now / self.step) * self.step
            self.values.append(None)
            self.acc = self.acc_s = 0.0
        i = int((now - self.start) // self.step)
        last = len(self.values) - 1
        if i < last:
            return  # late: its bucket is closed
        if i - last > keep:  # a long gap: start afresh
            self.values = []
            self.add(now, value, seconds, keep=keep)
            return
        while len(self.values) <= i:
            self.values.append(None)
            self.acc = self.acc_s = 0.0
        weight = max(seconds, 1e-3)
        self.acc += value * weight
        self.acc_s += weight
        self.values[-1] = self.acc / self.acc_s
        extra = len(self.values) - keep
        if extra > 0:
            del self.values[:extra]
            self.start += extra * self.step

    def index(self, t: float) -> int:
        return int((t - self.start) // self.step)

    def at(self, i: int) -> float | None:
        return self.values[i] if 0 <= i < len(self.values) else None

    def seconds(self) -> float:
        """How much history it holds."""
        return len(self.values) * self.step


@dataclass(frozen=True)
class Forecast:
    value: float  # the highest demand forecast within the lead
    at: float  # when it is due (wall time)
    seasonal: float  # what one season ago says for that moment
    trend: float  # the level shift added
    history: float  # seconds of history the model had


def seasonal_value(series: Series, i: int, period: int) -> float | None:
    """What one season before bucket i measured (a small neighbourhood's mean)."""
    found = [
        v
        for k in range(i - period - SMOOTH, i - period + SMOOTH + 1)
        if (v := series.at(k)) is not None
    ]
    return sum(found) / len(found) if found else None


def trend(series: Series, now_index: int, period: int) -> float:
    """The exponentially weighted mean of (bucket - same bucket one season earlier) over
    the closed buckets, the newest weighing most (span: a 24th of the season, an hour a day)."""
    span = max(3, period // 24)
    alpha = 2.0 / (span + 1)
    level: float | None = None
    for i in range(max(0, now_index - 4 * span), now_index):
        v = series.at(i)
        past = seasonal_value(series, i, period)
        if v is None or past is None:
            continue
        diff = v - past
        level = diff if level is None else alpha * diff + (1 - alpha) * level
    return level or 0.0


def forecast(series: Series, now: float, season: float, lead: float) -> Forecast | None:
    """The highest demand forecast from now to `lead` ahead; None with less than one
    season of history."""
    period = max(1, round(season / series.step))
    now_index = series.index(now)
    if len(series.values) < period + 2 or now_index < period:
        return None
    shift = trend(series, now_index, period)
    best: Forecast | None = None
    for h in range(0, math.ceil(lead / series.step) + 1):
        i = now_index + h
        past = seasonal_value(series, i, period)
        if past is None:
            continue
        value = max(0.0, past + shift)
        if best is None or value > best.value:
            best = Forecast(
                value=value,
                at=series.start + i * series.step,
                seasonal=past,
                trend=shift,
                history=series.seconds(),
            )
    return best
