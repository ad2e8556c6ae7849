"""Task log files: written by one owner with rotation by rename, read across rotations.

    writer (the agent's LogRelay, or the docker driver's log pump) ── RotatingFile
        path ──full──> rename: path -> path.1 -> … -> path.(max_files-1), the oldest dropped
    reader (`podium alloc logs [-f] [--tail N]`) ── read_tail / follow: path.K … path.1, path

Only the owner writes, so a rotation never loses or repeats a byte and the files never
pass `max_files * max_file_size` together: a write that would cross the size ends the file
and the rest goes to the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import BinaryIO

MIB = 1024 * 1024
CHUNK = 256 * 1024


@dataclass(frozen=True, slots=True)
class LogLimits:
    """At most `max_files` files (the current one included) of `max_file_size` bytes each."""

    max_file_size: int = 10 * MIB
    max_files: int = 4

    def __post_init__(self) -> None:
        if self.max_file_size <= 0 or self.max_files < 1:
            raise ValueError("max_file_size must be > 0 and max_files >= 1")

    @property
    def bound(self) -> int:
        return self.max_file_size * self.max_files


def rotated(path: str, i: int) -> str:
    return path if i == 0 else f"{path}.{i}"


class RotatingFile:
    """The one writer of `path`: appends, and renames it away when it is full."""

    def __init__(self, path: str, limits: LogLimits) -> None:
        self.path = path
        self.limits = limits
        self.fd = -1
        self.size = 0
        self.written = 0  # bytes written through this writer (rotated ones included)

    def open(self) -> int:
        """The fd to write at (opened, positioned at the end, on first use)."""
        if self.fd < 0:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            # Not O_APPEND: splice(2) refuses it, and nobody else writes here.
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
            self.size = os.lseek(self.fd, 0, os.SEEK_END)
        return self.fd

    def room(self) -> int:
        """Bytes that fit in the current file; rotates first when it is full."""
        self.open()
        if self.size >= self.limits.max_file_size:
            self.rotate()
        return self.limits.max_file_size - self.size

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = min(self.room(), len(view))
            n = os.write(self.fd, view[:n])
            self.wrote(n)
            view = view[n:]

    def wrote(self, n: int) -> None:
        """`n` bytes went into `fd` (by write, or by the relay's splice)."""
        self.size += n
        self.written += n

    def rotate(self) -> None:
        self.close()
        keep = self.limits.max_files - 1
        with contextlib.suppress(FileNotFoundError):
            os.remove(rotated(self.path, keep) if keep else self.path)
        for i in range(keep - 1, -1, -1):
            with contextlib.suppress(FileNotFoundError):
                os.rename(rotated(self.path, i), rotated(self.path, i + 1))
        self.open()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _files(path: str) -> list[str]:
    """path and its rotated files that exist, newest first."""
    out = [path]
    i = 1
    while os.path.exists(rotated(path, i)):
        out.append(rotated(path, i))
        i += 1
    return out


def _tail(files: list[str], want: int, seen: set[int]) -> list[bytes]:
    """The last `want` bytes of `files` (newest first), as parts newest first."""
    parts: list[bytes] = []
    for p in files:
        if want <= 0:
            break
        try:
            with open(p, "rb") as f:
                st = os.fstat(f.fileno())
                if st.st_ino in seen:  # a rotation while we read shows one file twice
                    continue
                seen.add(st.st_ino)
                f.seek(max(0, st.st_size - want))
                data = f.read(want)
        except FileNotFoundError:
            continue
        parts.append(data)
        want -= len(data)
    return parts


def read_tail(path: str, n_bytes: int) -> bytes:
    """The last `n_bytes` of the stream (across path.K … path.1, path), b"" if none."""
    return b"".join(reversed(_tail(_files(path), max(0, n_bytes), set())))


def tail_bytes(path: str, n_lines: int, *, limit: int = 4 * MIB) -> int:
    """How many bytes from the end of the stream hold its last `n_lines` lines (an
    unfinished last line counts as one), at most `limit`; 0 when there is none."""
    if n_lines <= 0:
        return 0
    want = min(64 * 1024, limit)
    while True:
        data = read_tail(path, want)
        end = len(data) - 1 if data.endswith(b"\n") else len(data)
        for _ in range(n_lines):
            i = data.rfind(b"\n", 0, end)
            if i < 0:
                break
            end = i
        else:
            return len(data) - (end + 1)
        if len(data) < want or want >= limit:
            return len(data)  # the whole stream, or as much as we read, is fewer lines
        want = min(want * 4, limit)


async def follow(
    path: str, *, from_end_bytes: int | None = None, poll: float = 0.1
) -> AsyncIterator[bytes]:
    """Yield the last `from_end_bytes` of the stream (all of `path` when None), then whatever
    is written, forever. A rotation renames the open file away: it is read to its end, then
    any file rotated after it, then the new `path` from 0; nothing is skipped or repeated
    unless the reader falls `max_files` rotations behind."""
    f = _open(path)
    try:
        if from_end_bytes is not None:
            want = max(0, from_end_bytes)
            size = os.fstat(f.fileno()).st_size if f is not None else 0
            take = min(size, want)
            seen = {os.fstat(f.fileno()).st_ino} if f is not None else set()
            older = b"".join(reversed(_tail(_files(path)[1:], want - take, seen)))
            if older:
                yield older
            if f is not None:
                f.seek(size - take)
        while True:
            if f is None:
                f = _open(path)
                if f is None:
                    await asyncio.sleep(poll)
                    continue
            chunk = f.read(CHUNK)
            if chunk:
                yield chunk
                continue
            ino = os.fstat(f.fileno()).st_ino
            if _ino(path) in (ino, None):
                await asyncio.sleep(poll)
                continue
            while chunk := f.read(CHUNK):  # rotated away: its last bytes, then newer files
                yield chunk
            f.close()
            f = None
            for p in _newer_than(path, ino):
                g = _open(p)  # local files, small reads: on the loop, as the rest
                if g is None:
                    continue
                with g:
                    while chunk := g.read(CHUNK):
                        yield chunk
    finally:
        if f is not None:
            f.close()


def _open(path: str) -> BinaryIO | None:
    try:
        return open(path, "rb")  # held across yields: the caller closes it
    except FileNotFoundError:
        return None


def _ino(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


def _newer_than(path: str, ino: int) -> list[str]:
    """The rotated files written after the one with inode `ino`, oldest first."""
    files = _files(path)[1:]
    for i, p in enumerate(files):
        if _ino(p) == ino:
            return list(reversed(files[:i]))
    return []
