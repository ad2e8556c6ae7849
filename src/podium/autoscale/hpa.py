"""Kubernetes HPA's maths and safety rules, per group, with podium's additions.

A policy's proposal (`propose`):
- cpu, memory (utilization: percent of what each copy reserves):
  desired = ceil(copies x mean / target); copies with no figure yet (starting) count as
  0 % when the others say "up" and as 100 % of target when they say "down", and if that
  turns the direction around nothing changes (HPA's missing-metric rule).
- rps, concurrency, prometheus (a group total, target per copy): desired = ceil(total / target).
- latency_p95 (seconds): desired = ceil(copies x p95 / target).
A figure within `tolerance` of its target (|ratio - 1| <= tolerance) keeps the count.

The decision (`decide`), in order:
1. the highest proposal wins; a policy with no figure blocks a scale-down (HPA);
2. a forecast (predictive policy) may raise it, never lower it;
3. min 0: no request for `idle_timeout` takes the group to 0 (and a group at 0 stays there
   until a request wakes it: the proxies do that); otherwise the count stays in min..max,
   at least 1;
4. scale-down stabilization: the highest count the reactive policies asked for within
   `scale_down_window` (a forecast's count is not held: it lasts while the forecast sees
   a rise ahead, autoscale/forecast.py);
5. scale-up limit: at most +4 copies or +100 % (whichever is more) per change;
6. held: `cooldown` after the last change, a deployment rolling out (unless
   `during_rollout`), copies the scheduler could not place, a quota.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from podium.model.types import Scaling

UTILIZATION = ("cpu", "memory")
PER_COPY = ("rps", "concurrency", "prometheus")
SCALE_UP_COPIES = 4  # HPA: +4 pods or +100 % per period, whichever is more
_EPS = 1e-9


@dataclass(frozen=True)
class Reading:
    """One policy's figures at one look."""

    metric: str  # cpu | memory | rps | latency_p95 | concurrency | prometheus
    target: float
    value: float | None = None  # the group's figure; None: missing (see `missing`)
    copies: tuple[float | None, ...] = ()  # cpu, memory: each live copy's (None: no figure)
    missing: str = ""  # why there is no figure


@dataclass(frozen=True)
class Proposal:
    metric: str
    count: int | None  # None: no figure, no proposal
    text: str  # the numbers, e.g. "cpu 91% vs target 60% over 3 copies → 5"
    value: float | None = None


def _ceil(x: float) -> int:
    return max(0, math.ceil(x - _EPS))


def _within(ratio: float, tolerance: float) -> bool:
    return abs(ratio - 1.0) <= tolerance + _EPS


def show_value(metric: str, value: float) -> str:
    if metric in UTILIZATION:
        return f"{value:.0f}%"
    if metric == "latency_p95":
        return f"{value * 1000:.0f}ms"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _target(metric: str, target: float) -> str:
    if metric in UTILIZATION:
        return f"target {target:g}%"
    if metric == "latency_p95":
        return f"target {target * 1000:.0f}ms"
    return f"target {target:g} per copy"


def propose(r: Reading, current: int, tolerance: float) -> Proposal:
    """What one policy asks for, given the group's count now."""
    if r.metric in UTILIZATION:
        return _utilization(r, current, tolerance)
    if r.value is None:
        return Proposal(r.metric, None, f"{r.metric}: no figure ({r.missing or 'not measured'})")
    value = r.value
    if r.metric == "latency_p95":
        if current == 0:
            return Proposal(r.metric, None, "latency_p95: no figure (no copies)", value)
        ratio = value / r.target
        count = current if _within(ratio, tolerance) else _ceil(current * ratio)
    else:
        ratio = value / (r.target * current) if current else math.inf
        count = current if current and _within(ratio, tolerance) else _ceil(value / r.target)
    text = (
        f"{r.metric} {show_value(r.metric, value)} vs {_target(r.metric, r.target)} "
        f"over {_copies(current)} → {count}"
    )
    return Proposal(r.metric, count, text, value)


def _copies(n: int) -> str:
    return f"{n} copy" if n == 1 else f"{n} copies"


def _utilization(r: Reading, current: int, tolerance: float) -> Proposal:
    known = [v for v in r.copies if v is not None]
    if not known:
        why = r.missing or ("no copies" if not r.copies else "no copy reports a figure yet")
        return Proposal(r.metric, None, f"{r.metric}: no figure ({why})")
    mean = sum(known) / len(known)
    ratio = mean / r.target
    missing = len(r.copies) - len(known)
    if not missing:
        count = current if _within(ratio, tolerance) else _ceil(ratio * len(known))
    else:
        # HPA: a copy with no figure counts as 0 % on the way up, 100 % of target down.
        fill = 0.0 if ratio > 1 else r.target
        values = known + [fill] * missing
        new = sum(values) / len(values) / r.target
        if _within(new, tolerance) or (ratio < 1 < new) or (new < 1 < ratio):
            count = current
        else:
            count = _ceil(new * len(values))
            if (new < 1 and count > current) or (new > 1 and count < current):
                count = current
    n = len(r.copies)
    text = (
        f"{r.metric} {show_value(r.metric, mean)} vs {_target(r.metric, r.target)} "
        f"over {_copies(n)}" + (f" ({missing} without a figure)" if missing else "") + f" → {count}"
    )
    return Proposal(r.metric, count, text, mean)


class Window:
    """Counts asked for lately (scale-down stabilization): a scale-down takes the highest
    of them within the window. A monotonic queue (each entry higher than all later ones):
    its size stays small however often it is fed."""

    def __init__(self) -> None:
        self._q: deque[tuple[float, int]] = deque()

    def add(self, now: float, count: int) -> None:
        q = self._q
        while q and q[-1][1] <= count:
            q.pop()
        q.append((now, count))

    def highest(self, since: float) -> int | None:
        """The highest count asked for at or after `since`; older entries are dropped."""
        q = self._q
        while q and q[0][0] < since:
            q.popleft()
        return q[0][1] if q else None

    def above_until(self, count: int) -> float:
        """When the last entry higher than `count` was asked for (0.0: none)."""
        last = 0.0
        for t, c in self._q:
            if c > count:
                last = max(last, t)
        return last

    def __len__(self) -> int:
        return len(self._q)


@dataclass(frozen=True)
class Situation:
    """What the controller saw of one group at one look."""

    now: float
    current: int  # the group's count
    proposals: tuple[Proposal, ...] = ()
    forecast: Proposal | None = None  # the predictive policy's (count None: not yet)
    idle_for: float | None = None  # seconds without a request (None: unknown)
    last_change: float = 0.0  # when the count last changed
    rollout: str = ""  # a deployment that is rolling out ("": none)
    unplaced: int = 0  # the group's copies the scheduler could not place
    quota: int | None = None  # the most copies a quota allows (None: no quota)
    quota_why: str = ""


@dataclass(frozen=True)
class Decision:
    count: int  # the count to set (equal to the current: no change)
    wanted: int  # what the figures asked for, within min..max, before the safety rules
    reason: str  # the figures, with their numbers
    held: str = ""  # why `wanted` was not (or not fully) applied
    next_change: float = 0.0  # the earliest a held change may come (0: no hold in time)


def decide(scaling: Scaling, s: Situation, window: Window) -> Decision:
    """The count for one group now (see the module docstring for the rules, in order)."""
    known = [p for p in s.proposals if p.count is not None]
    missing = [p for p in s.proposals if p.count is None]
    texts = [p.text for p in s.proposals]
    wanted = max((p.count for p in known if p.count is not None), default=s.current)
    notes: list[str] = []
    if missing and known and wanted < s.current:
        names = ", ".join(p.metric for p in missing)
        notes.append(f"not scaling down while {names} has no figure")
        wanted = s.current
    fc = s.forecast
    ahead = 0  # what the forecast asks for (0: nothing)
    if fc is not None:
        texts.append(fc.text)
        ahead = fc.count or 0
    idle = (
        scaling.min == 0
        and s.idle_for is not None
        and s.idle_for >= scaling.idle_timeout
        and (fc is None or not fc.count)
    )
    if idle and s.current > 0:
        texts = [f"no request for {s.idle_for:.0f}s (idle_timeout {scaling.idle_timeout:g}s)"]
        wanted = 0
    # min 0: a group at 0 stays there until a request (or a forecast) wakes it.
    asleep = s.current == 0 or idle
    floor = scaling.min or (0 if asleep else 1)
    reactive = max(floor, min(scaling.max, wanted))
    wanted = max(reactive, min(scaling.max, ahead))
    if not s.proposals and fc is None and not idle:
        texts.append("no policy asks for a change")
    # Only the reactive asks are held through the window: a forecast's count lasts
    # while the forecast sees its rise ahead, and no longer.
    window.add(s.now, reactive)
    reason = "; ".join(texts + notes) or "no figures"
    target, held, next_change = wanted, "", 0.0
    if target < s.current and not idle:
        top = window.highest(s.now - scaling.scale_down_window)
        steady = min(s.current, max(wanted, top if top is not None else s.current))
        if steady > target:
            held = (
                f"scale-down window: {steady} was asked for within the last "
                f"{scaling.scale_down_window:g}s"
            )
            next_change = window.above_until(target) + scaling.scale_down_window
            target = steady
    if target > s.current:
        limit = s.current + max(SCALE_UP_COPIES, s.current)
        if target > limit:
            held = f"scale-up limited to {limit} (+{SCALE_UP_COPIES} copies or +100% per change)"
            target = limit
    if target != s.current:
        until = s.last_change + scaling.cooldown
        if scaling.cooldown and s.now < until:
            held, next_change, target = (
                f"cooldown until {until - s.now:.0f}s from now",
                until,
                s.current,
            )
        elif s.rollout and not scaling.during_rollout:
            held, target = f"{s.rollout} (during_rollout is false)", s.current
        elif target > s.current and s.unplaced:
            held = (
                f"{s.unplaced} {'copy' if s.unplaced == 1 else 'copies'} of the group "
                "could not be placed: no scale-up until they are"
            )
            target = s.current
        elif s.quota is not None and target > s.current and target > s.quota:
            held = f"quota: at most {s.quota} copies" + (f" ({s.quota_why})" if s.quota_why else "")
            target = max(s.current, s.quota)
    return Decision(count=target, wanted=wanted, reason=reason, held=held, next_change=next_change)
