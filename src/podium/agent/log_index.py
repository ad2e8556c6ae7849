"""A time index over a task's retained log files, so `--since` reads only the recent end.

    LogIndexer tick (1 s) --LogRelay.written(path)--> LogIndex: [(time, logical offset)]
    read_lines(since) --bisect--> start offset --> files path.N … path.1, path
        --> lines stamped with the time their bytes were first seen, grep'd (RE2)

Offsets are logical: bytes the relay wrote to the stream since it began (rotated ones
included), so they hold across rotations. A line's time is the first checkpoint at or
past its end: when the relay had written it (within a tick). Bytes from before the relay
began (an agent restart) carry the first checkpoint's time; streams the relay does not
write (a container's, pumped by its driver) carry the time they are read.
"""

from __future__ import annotations

import asyncio
import bisect
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from podium.agent.logs import LogRelay

MAX_CHECKPOINTS = 100_000  # a day of one-second ticks with room; older ones are dropped
READ_LIMIT = 8 * 1024 * 1024  # at most this much is read for one request


@dataclass
class LogIndex:
    times: list[float] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)

    def note(self, now: float, written: int) -> None:
        """Record that `written` bytes had been seen by `now` (only when it moved)."""
        if self.offsets and self.offsets[-1] >= written:
            return
        self.times.append(now)
        self.offsets.append(written)
        if len(self.times) > MAX_CHECKPOINTS:
            del self.times[: MAX_CHECKPOINTS // 10], self.offsets[: MAX_CHECKPOINTS // 10]

    def start_for(self, since: float) -> int | None:
        """The logical offset from which bytes were seen at or after `since` (None: all)."""
        i = bisect.bisect_left(self.times, since)
        if i == 0:
            return None
        return self.offsets[i - 1]

    def time_of(self, end: int, default: float) -> float:
        """When the byte before logical offset `end` was first seen."""
        i = bisect.bisect_left(self.offsets, end)
        if i < len(self.times):
            return self.times[i]
        return default


@dataclass(frozen=True)
class Line:
    time: float
    text: str


def segments(path: str, max_files: int, written: int) -> list[tuple[str, int, int]]:
    """(file, logical start, size) of the retained files, oldest first."""
    out: list[tuple[str, int, int]] = []
    end = written
    for name in [path] + [f"{path}.{i}" for i in range(1, max_files + 1)]:
        try:
            size = os.stat(name).st_size
        except FileNotFoundError:
            continue
        out.append((name, end - size, size))
        end -= size
    return out[::-1]


def read_lines(
    path: str,
    *,
    max_files: int,
    written: int,
    index: LogIndex,
    since: float = 0.0,
    match: Callable[[str], bool] | None = None,
    now: float,
    limit: int = READ_LIMIT,
) -> Iterator[Line]:
    """Complete lines retained for `path` seen at or after `since`, oldest first (a line
    may span two files: a rotation splits a write where the file fills)."""
    start = index.start_for(since) if since > 0 else None
    segs = segments(path, max_files, written)
    if start is None:
        start = segs[0][1] if segs else written
    start = max(start, written - limit)
    parts: list[bytes] = []
    for name, seg_start, size in segs:
        if seg_start + size <= start:
            continue
        skip = max(0, start - seg_start)
        try:
            with open(name, "rb") as f:
                f.seek(skip)
                parts.append(f.read(size - skip))
        except FileNotFoundError:
            continue
    data = b"".join(parts)
    pos = written - len(data)  # the logical offset of data[0]
    lines = data.split(b"\n")
    lines.pop()  # an unfinished last line waits (or the empty piece after the last \n)
    for raw in lines:
        pos += len(raw) + 1
        text = raw.decode("utf-8", "replace")
        if match is not None and not match(text):
            continue
        yield Line(index.time_of(pos, now), text)


class LogIndexer:
    """Keeps a LogIndex for every stream the relay writes; reads lines through them."""

    def __init__(self, relay: LogRelay, *, interval: float = 1.0) -> None:
        self.relay = relay
        self.interval = interval
        self._indexes: dict[str, LogIndex] = {}

    def tick(self, now: float) -> None:
        paths = set(self.relay.paths)
        for path in paths:
            self._indexes.setdefault(path, LogIndex()).note(now, self.relay.written(path))
        for gone in set(self._indexes) - paths:
            del self._indexes[gone]

    async def run(self) -> None:
        while True:
            self.tick(time.time())
            await asyncio.sleep(self.interval)

    def lines(
        self, path: str, *, since: float = 0.0, match: Callable[[str], bool] | None = None
    ) -> list[Line]:
        """The retained lines of `path` seen at or after `since` (wall time), each with
        that time; only the files (and the part of them) that time needs are read."""
        return list(
            read_lines(
                path,
                max_files=self.relay.limits.max_files - 1,
                written=self.relay.written(path),
                index=self._indexes.get(path) or LogIndex(),
                since=since,
                match=match,
                now=time.time(),
            )
        )

    def retention(self) -> dict[str, int]:
        """What a task's log stream keeps at most: files and bytes (`podium logs` says so)."""
        limits = self.relay.limits
        return {"max_files": limits.max_files, "max_bytes": limits.bound}
