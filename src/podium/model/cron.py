"""Cron schedules: which expressions are valid, and when a schedule fires next.

    cron_ok(expr)                 5 fields, 6 with seconds first, or a macro (@daily...)
    time_zone(name)               an IANA zone, or None
    next_time(periodic, after)    the first time after `after` any schedule names, read
                                  in the job's zone, daylight saving time included

Pure (croniter does the calendar arithmetic). The periodic controller launches runs at
these times; `job status` shows the next one.
"""

from __future__ import annotations

import datetime
import re
import zoneinfo

from croniter import CroniterError, croniter

from podium.model.types import Periodic

MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_FIELD = re.compile(r"[0-9A-Za-z*?/,#-]+")
_ZONE = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9_+-]+){0,2}")


def time_zone(name: str) -> datetime.tzinfo | None:
    """The IANA zone `name`, or None when there is no such zone."""
    if name.upper() == "UTC":
        return datetime.UTC
    if not _ZONE.fullmatch(name):
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return None


def cron_iter(expr: str, start: datetime.datetime) -> croniter:
    """An iterator over the times `expr` names after `start` (6 fields: seconds first)."""
    text = expr.strip()
    return croniter(text, start, second_at_beginning=len(text.split()) == 6)


def cron_ok(expr: str) -> bool:
    text = expr.strip()
    if text in MACROS:
        return True
    fields = text.split()
    if len(fields) not in (5, 6) or not all(_FIELD.fullmatch(f) for f in fields):
        return False
    try:
        cron_iter(text, datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)).get_next(float)
    except (ValueError, KeyError, TypeError, OverflowError, CroniterError):
        return False  # e.g. "61 * * * *", or "0 0 31 2 *" (never)
    return True


def next_time(periodic: Periodic, after: float) -> float:
    """The first time after `after` (epoch seconds) that any schedule names.

    Daylight saving time, as Vixie cron handles it: a wall-clock time that does not
    exist (spring forward) runs at the first time after the gap; in the hour that
    repeats (fall back), a schedule with fixed hours runs once, one with `*` hours
    runs in both."""
    zone = time_zone(periodic.time_zone) or datetime.UTC
    start = datetime.datetime.fromtimestamp(after, tz=zone)
    return min(_next_one(expr, start, zone) for expr in periodic.schedule)


def _next_one(expr: str, start: datetime.datetime, zone: datetime.tzinfo) -> float:
    it = cron_iter(expr, start)
    fixed_hours = _fixed_hours(expr)
    while True:
        t = float(it.get_next(float))
        if not (fixed_hours and datetime.datetime.fromtimestamp(t, tz=zone).fold):
            return t  # (fold: the second pass through a repeated hour)


def _fixed_hours(expr: str) -> bool:
    fields = expr.split()
    if len(fields) < 5:
        return expr.strip() != "@hourly"  # @daily, @weekly...: fixed
    hours = fields[2] if len(fields) == 6 else fields[1]
    return "*" not in hours
