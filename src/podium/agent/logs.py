"""Task log files: bounded by rotation, read by tail and follow (`podium alloc logs [-f]`).

    task ──O_APPEND fd──> path ──LogWatcher (every 1 s)──> LogRotator: path → path.1 → … → path.N
    agent HTTP ── read_tail(path) / follow(path) ──> CLI

The task writes straight into `path` (the driver opens it, so output survives an agent
restart); the rotator therefore never renames `path` but copies it and truncates it in place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import AsyncIterator

log = logging.getLogger(__name__)

MIB = 1024 * 1024
CHUNK = 64 * 1024


class LogRotator:
    """Keeps `path` under `max_bytes` and at most `max_files` rotated copies (path.1 newest).

    Disk use stays under about (max_files + 1) * max_bytes, plus whatever the task writes
    between two checks.
    """

    def __init__(self, path: str, *, max_bytes: int = 10 * MIB, max_files: int = 3) -> None:
        if max_bytes <= 0 or max_files < 1:
            raise ValueError("max_bytes must be > 0 and max_files >= 1")
        self.path = path
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.rotated_bytes = 0  # moved out of `path` by rotations so far

    def written(self) -> int:
        """Bytes written to `path` since this rotator started watching it."""
        return self.rotated_bytes + (_size(self.path) or 0)

    def needs_rotation(self) -> bool:
        try:
            return os.stat(self.path).st_size >= self.max_bytes
        except FileNotFoundError:
            return False

    def rotate_if_needed(self) -> bool:
        """Rotate when `path` reached `max_bytes`; True if it did."""
        if not self.needs_rotation():
            return False
        with contextlib.suppress(FileNotFoundError):
            os.remove(f"{self.path}.{self.max_files}")
        for i in range(self.max_files - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.rename(f"{self.path}.{i}", f"{self.path}.{i + 1}")
        # Copy into a temporary name and rename, so path.1 is a new file (a follower spots
        # the rotation by its identity) and never seen half-written.
        tmp = f"{self.path}.1.tmp"
        with open(self.path, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, CHUNK)
            self.rotated_bytes += dst.tell()
            # The window: bytes the task appends between the copy reaching EOF and the
            # truncate below are lost. It is as short as one syscall; closing it would need
            # the writer's cooperation (a pipe through the agent), which would not survive
            # an agent restart. O_APPEND makes the writer continue at offset 0 afterwards
            # instead of leaving a sparse hole the size of the old file.
            os.truncate(self.path, 0)
        os.rename(tmp, f"{self.path}.1")
        return True


class LogWatcher:
    """Rotates every registered log file once a second. `add` / `remove` at any time."""

    def __init__(
        self, *, max_bytes: int = 10 * MIB, max_files: int = 3, interval: float = 1.0
    ) -> None:
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.interval = interval
        self._rotators: dict[str, LogRotator] = {}

    def add(self, path: str) -> None:
        self._rotators.setdefault(
            path, LogRotator(path, max_bytes=self.max_bytes, max_files=self.max_files)
        )

    def remove(self, path: str) -> None:
        self._rotators.pop(path, None)

    def written(self, path: str) -> int:
        """Bytes the task wrote to `path`, rotated ones included (0 when not watched)."""
        r = self._rotators.get(path)
        return r.written() if r is not None else 0

    @property
    def paths(self) -> list[str]:
        return list(self._rotators)

    async def run(self) -> None:
        while True:
            await self.rotate_all()
            await asyncio.sleep(self.interval)

    async def rotate_all(self) -> None:
        for r in list(self._rotators.values()):
            if not r.needs_rotation():  # a cheap stat on the loop; the copy in a thread
                continue
            try:
                await asyncio.to_thread(r.rotate_if_needed)
            except OSError as e:  # a full disk must not stop rotation of the other files
                log.warning("rotating %s: %s", r.path, e)


def read_tail(path: str, n_bytes: int) -> bytes:
    """The last `n_bytes` of `path` (all of it if shorter; b"" if missing)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - max(0, n_bytes)))
            return f.read()
    except FileNotFoundError:
        return b""


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_ctime_ns


def _read_from(path: str, offset: int) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(CHUNK)
    except FileNotFoundError:
        return b""


def _size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return None


async def follow(
    path: str, *, from_end_bytes: int | None = None, poll: float = 0.1
) -> AsyncIterator[bytes]:
    """Yield what is in `path` (the last `from_end_bytes` of it, or all when None), then
    whatever is appended, forever. Survives rotation: when path.1 is replaced the rest of
    the old content is read from it, then `path` is read again from 0; when `path` merely
    shrank (truncated by someone else) reading restarts from 0.

    Reads are small, local and non-blocking in practice, so they run on the loop.
    """
    start_size = _size(path) or 0
    offset = 0 if from_end_bytes is None else max(0, start_size - max(0, from_end_bytes))
    rotated = _identity(f"{path}.1")
    shrunk = False
    while True:
        now_rotated = _identity(f"{path}.1")
        if now_rotated != rotated and now_rotated is not None:
            rotated, shrunk = now_rotated, False
            while chunk := _read_from(f"{path}.1", offset):  # the old file's unread end
                offset += len(chunk)
                yield chunk
            offset = 0
        size = _size(path)
        if size is not None and size < offset:
            if not shrunk:  # maybe mid-rotation: let the rotator publish path.1 first
                shrunk = True
                await asyncio.sleep(poll)
                continue
            offset = 0
        shrunk = False
        chunk = _read_from(path, offset)
        if chunk:
            offset += len(chunk)
            yield chunk
            continue  # more may be waiting: read again before sleeping
        await asyncio.sleep(poll)
