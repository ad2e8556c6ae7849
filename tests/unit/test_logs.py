"""Log rotation stays bounded; tail and follow read across truncation and rotation."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from podium.agent.logs import LogRotator, LogWatcher, follow, read_tail


def append(path: Path, data: bytes) -> None:
    # O_APPEND, as the process driver opens task logs
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def names(tmp: Path) -> list[str]:
    return sorted(p.name for p in tmp.iterdir())


def test_rotation_keeps_at_most_n_files_within_the_bound(tmp_path: Path) -> None:
    log = tmp_path / "web.stdout"
    r = LogRotator(str(log), max_bytes=1000, max_files=3)
    for i in range(10):
        append(log, bytes([ord("a") + i]) * 1000)
        assert r.rotate_if_needed()
        assert not r.rotate_if_needed()  # now empty
    assert names(tmp_path) == ["web.stdout", "web.stdout.1", "web.stdout.2", "web.stdout.3"]
    assert log.read_bytes() == b""
    assert (tmp_path / "web.stdout.1").read_bytes() == b"j" * 1000  # newest first
    assert (tmp_path / "web.stdout.3").read_bytes() == b"h" * 1000
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) <= 4 * 1000


def test_small_file_is_left_alone(tmp_path: Path) -> None:
    log = tmp_path / "web.stdout"
    r = LogRotator(str(log), max_bytes=1000)
    assert not r.rotate_if_needed()  # missing is fine
    append(log, b"x" * 999)
    assert not r.rotate_if_needed()
    assert names(tmp_path) == ["web.stdout"]


def test_append_writer_continues_at_zero_after_truncation(tmp_path: Path) -> None:
    log = tmp_path / "web.stdout"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, b"x" * 2000)
        assert LogRotator(str(log), max_bytes=1000).rotate_if_needed()
        os.write(fd, b"after")  # the same fd the task holds
    finally:
        os.close(fd)
    assert log.read_bytes() == b"after"  # no sparse hole of 2000 NULs
    assert (tmp_path / "web.stdout.1").read_bytes() == b"x" * 2000


def test_read_tail(tmp_path: Path) -> None:
    log = tmp_path / "web.stdout"
    assert read_tail(str(log), 10) == b""
    append(log, b"0123456789")
    assert read_tail(str(log), 4) == b"6789"
    assert read_tail(str(log), 100) == b"0123456789"


def test_bad_settings_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        LogRotator(str(tmp_path / "x"), max_files=0)


async def collect(it: AsyncIterator[bytes], want: bytes, timeout: float = 3) -> bytes:
    got = b""
    async with asyncio.timeout(timeout):
        while len(got) < len(want):
            got += await anext(it)
    return got


async def test_follow_from_end_then_appends(tmp_path: Path) -> None:
    log = tmp_path / "web.stdout"
    append(log, b"old lines\nlast\n")
    it = follow(str(log), from_end_bytes=5, poll=0.01)
    assert await collect(it, b"last\n") == b"last\n"
    append(log, b"new\n")
    assert await collect(it, b"new\n") == b"new\n"


async def test_follow_survives_truncation(tmp_path: Path) -> None:
    log = tmp_path / "web.stdout"
    append(log, b"first part\n")
    it = follow(str(log), from_end_bytes=None, poll=0.01)
    assert await collect(it, b"first part\n") == b"first part\n"
    os.truncate(log, 0)  # someone else truncated it: start again from 0
    await asyncio.sleep(0.05)
    append(log, b"again\n")
    assert await collect(it, b"again\n") == b"again\n"


async def test_follow_across_rotation_loses_and_repeats_nothing(tmp_path: Path) -> None:
    log = tmp_path / "web.stdout"
    r = LogRotator(str(log), max_bytes=100, max_files=2)
    it = follow(str(log), from_end_bytes=None, poll=0.01)
    append(log, b"a" * 60)
    first = await collect(it, b"a" * 60)
    append(log, b"b" * 60)  # not yet read by the follower when the rotation happens
    assert r.rotate_if_needed()
    append(log, b"c" * 10)
    rest = await collect(it, b"b" * 60 + b"c" * 10)
    assert first + rest == b"a" * 60 + b"b" * 60 + b"c" * 10


async def test_follow_waits_for_a_missing_file(tmp_path: Path) -> None:
    log = tmp_path / "web.stdout"
    it = follow(str(log), from_end_bytes=100, poll=0.01)
    pending = asyncio.ensure_future(collect(it, b"hi\n"))
    await asyncio.sleep(0.05)
    append(log, b"hi\n")
    assert await pending == b"hi\n"


async def test_watcher_rotates_registered_files_only(tmp_path: Path) -> None:
    a, b = tmp_path / "a.stdout", tmp_path / "b.stdout"
    append(a, b"x" * 200)
    append(b, b"y" * 200)
    w = LogWatcher(max_bytes=100, max_files=1, interval=0.01)
    w.add(str(a))
    w.add(str(b))
    w.remove(str(b))
    assert w.paths == [str(a)]
    async with asyncio.timeout(2):
        async with asyncio.TaskGroup() as tg:
            run = tg.create_task(w.run())
            while not (tmp_path / "a.stdout.1").exists():
                await asyncio.sleep(0.01)
            run.cancel()
    assert a.stat().st_size == 0
    assert not (tmp_path / "b.stdout.1").exists()
