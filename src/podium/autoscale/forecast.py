"""Predictive scaling's model: the demand now plus the rise the season before saw next.

In two sentences: the forecast for a moment within `lead` is the demand measured now
plus how much demand rose, one season (a day) earlier, from this moment to that one
(the season's curve averaged over a span as long as the lead; a fall, or a rise within
`tolerance` of the demand now, counts as none), and the group is sized for the highest
such forecast, never below what the reactive policies ask. Scale-downs follow the
reactive policies' `scale_down_window` alone: a forecast's count lasts only while it
sees a rise ahead, so copies are added before a rise and none are held after it
(autoscale/hpa.py's `decide`).

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
SMOOTH = 1  # the seasonal value is the mean of the buckets this close to the one asked,
SMOOTH_LEAD = 0.5  # or this share of the lead if that is more (a span as long as the lead)


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
    value: float  # the highest demand forecast within the lead: level + rise
    at: float  # when it is due (wall time)
    level: float  # the demand measured last
    rise: float  # how much demand rose, one season earlier, from this moment to `at`
    history: float  # seconds of history the model had


def seasonal_value(series: Series, i: int, period: int, smooth: int = SMOOTH) -> float | None:
    """What one season before bucket i measured (a small neighbourhood's mean)."""
    found = [
        v
        for k in range(i - period - smooth, i - period + smooth + 1)
        if (v := series.at(k)) is not None
    ]
    return sum(found) / len(found) if found else None


def level(series: Series, now_index: int) -> float | None:
    """The demand measured last, at or before bucket `now_index`."""
    for i in range(min(now_index, len(series.values) - 1), -1, -1):
        v = series.at(i)
        if v is not None:
            return v
    return None


def forecast(
    series: Series, now: float, season: float, lead: float, *, tolerance: float = 0.0
) -> Forecast | None:
    """The highest demand forecast from now to `lead` ahead: the demand measured last
    plus the largest rise the season before saw from this moment to one within the lead
    (a fall is no rise: scaling down is the reactive policies' part; a rise within
    `tolerance` of the demand now is noise, none). None with less than one season of
    history or no demand measured yet."""
    period = max(1, round(season / series.step))
    now_index = series.index(now)
    if len(series.values) < period + 2 or now_index < period:
        return None
    now_value = level(series, now_index)
    smooth = max(SMOOTH, round(lead / series.step * SMOOTH_LEAD))
    base = seasonal_value(series, now_index, period, smooth)
    if now_value is None or base is None:
        return None
    rise, at = 0.0, now_index
    for h in range(1, math.ceil(lead / series.step) + 1):
        past = seasonal_value(series, now_index + h, period, smooth)
        if past is not None and past - base > rise:
            rise, at = past - base, now_index + h
    if rise <= tolerance * now_value:
        rise, at = 0.0, now_index
    return Forecast(
        value=max(0.0, now_value + rise),
        at=series.start + at * series.step,
        level=now_value,
        rise=rise,
        history=series.seconds(),
    )
