"""Task logs: one writer rotating by rename within the bound; tail and follow read across
rotated files; the relay moves pipes into files with backpressure and outlives no task."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from podium.agent.logs import LogRelay, open_pipe, pipe_path
from podium.runtime.logfiles import LogLimits, RotatingFile, follow, read_tail, tail_bytes


def names(tmp: Path) -> list[str]:
    return sorted(p.name for p in tmp.iterdir())


def on_disk(tmp: Path, stem: str = "web.stdout") -> bytes:
    """The whole stream as kept: oldest rotated file first."""
    files = sorted(
        (p for p in tmp.iterdir() if p.name.startswith(stem) and not p.name.endswith(".pipe")),
        key=lambda p: -int(p.name.rsplit(".", 1)[1]) if p.name != stem else 1,
    )
    return b"".join(p.read_bytes() for p in files)


def test_rotation_by_rename_keeps_max_files_within_the_bound(tmp_path: Path) -> None:
    log = tmp_path / "web.stdout"
    f = RotatingFile(str(log), LogLimits(max_file_size=1000, max_files=3))
    data = b"".join(b"%05d\n" % i for i in range(2000))  # 12,000 bytes
    for i in range(0, len(data), 700):  # writes that straddle file ends
        f.write(data[i : i + 700])
    f.close()
    assert names(tmp_path) == ["web.stdout", "web.stdout.1", "web.stdout.2"]
    sizes = [(tmp_path / n).stat().st_size for n in names(tmp_path)]
    assert all(s <= 1000 for s in sizes) and sum(sizes) <= 3000
    assert data.endswith(on_disk(tmp_path))  # the newest bytes, none lost or repeated inside
    assert len(on_disk(tmp_path)) == 3000  # 12 files filled exactly: the newest 3 kept


def test_a_reopened_writer_continues_at_the_end(tmp_path: Path) -> None:
    log = tmp_path / "web.stdout"
    limits = LogLimits(max_file_size=100, max_files=2)
    f = RotatingFile(str(log), limits)
    f.write(b"a" * 60)
    f.close()
    g = RotatingFile(str(log), limits)  # an agent that came back
    g.write(b"b" * 60)
    g.close()
    assert log.read_bytes() == b"b" * 20 and (tmp_path / "web.stdout.1").read_bytes() == (
        b"a" * 60 + b"b" * 40
    )


def test_read_tail_reads_across_rotated_files(tmp_path: Path) -> None:
    log = tmp_path / "web.stdout"
    f = RotatingFile(str(log), LogLimits(max_file_size=10, max_files=4))
    f.write(b"0123456789abcdefghijKLM")  # path.2: 0-9, path.1: a-j, path: KLM
    f.close()
    assert read_tail(str(log), 3) == b"KLM"
    assert read_tail(str(log), 8) == b"fghijKLM"  # the tail right after a rotation
    assert read_tail(str(log), 1000) == b"0123456789abcdefghijKLM"
    assert read_tail(str(tmp_path / "missing"), 10) == b""


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        LogLimits(max_file_size=0)
    with pytest.raises(ValueError):
        LogLimits(max_files=0)


async def collect(it: AsyncIterator[bytes], want: bytes) -> bytes:
    got = b""
    async with asyncio.timeout(2):
        while len(got) < len(want):
            got += await anext(it)
    return got


async def test_follow_from_end_then_new_output(tmp_path: Path) -> None:
    log = tmp_path / "web.stdout"
    f = RotatingFile(str(log), LogLimits(max_file_size=10, max_files=3))
    f.write(b"old lines\nlast\n")  # "last\n" straddles a rotation
    it = follow(str(log), from_end_bytes=7, poll=0.01)
    assert await collect(it, b"s\nlast\n") == b"s\nlast\n"
    f.write(b"new\n")
    assert await collect(it, b"new\n") == b"new\n"


async def test_follow_across_rotations_loses_and_repeats_nothing(tmp_path: Path) -> None:
    log = tmp_path / "web.stdout"
    f = RotatingFile(str(log), LogLimits(max_file_size=100, max_files=4))
    it = follow(str(log), from_end_bytes=None, poll=0.01)
    f.write(b"a" * 60)
    first = await collect(it, b"a" * 60)
    f.write(b"b" * 60 + b"c" * 100 + b"d" * 10)  # two rotations before the follower looks
    rest = await collect(it, b"b" * 60 + b"c" * 100 + b"d" * 10)
    assert first + rest == b"a" * 60 + b"b" * 60 + b"c" * 100 + b"d" * 10


async def test_follow_waits_for_a_missing_file(tmp_path: Path) -> None:
    log = tmp_path / "web.stdout"
    it = follow(str(log), from_end_bytes=100, poll=0.01)
    pending = asyncio.ensure_future(collect(it, b"hi\n"))
    await asyncio.sleep(0.05)
    RotatingFile(str(log), LogLimits()).write(b"hi\n")
    assert await pending == b"hi\n"


async def test_relay_moves_a_pipe_into_bounded_files_with_backpressure(tmp_path: Path) -> None:
    """A writer far faster than the files allow is held back by the full pipe; the files
    hold the newest bytes within the bound; removing drains the pipe and deletes it."""
    log = tmp_path / "web.stdout"
    relay = LogRelay(LogLimits(max_file_size=64 * 1024, max_files=3))
    relay.add(str(log))
    writer = os.open(pipe_path(str(log)), os.O_RDWR)  # as a task's stdout is opened
    data = b"".join(b"%07d\n" % i for i in range(200_000))  # 1.6 MB

    def write_all() -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(writer, view[:65536]) :]

    async with asyncio.TaskGroup() as tg:
        run = tg.create_task(relay.run())
        t = threading.Thread(target=write_all)
        t.start()
        await asyncio.to_thread(t.join, 10)
        assert not t.is_alive()
        relay.remove(str(log))
        async with asyncio.timeout(5):
            while Path(pipe_path(str(log))).exists():  # noqa: ASYNC240 - a local stat
                await asyncio.sleep(0.01)
        run.cancel()
    os.close(writer)
    kept = on_disk(tmp_path)
    assert len(kept) <= 3 * 64 * 1024
    assert data.endswith(kept) and len(kept) > 2 * 64 * 1024


async def test_a_pipe_outlives_the_relay_and_the_next_one_reads_on(tmp_path: Path) -> None:
    """The agent's restart: output written while no relay runs waits in the FIFO."""
    log = tmp_path / "web.stdout"
    fd = open_pipe(str(log))  # a first agent made the FIFO
    writer = os.open(pipe_path(str(log)), os.O_RDWR)
    os.close(fd)  # ... and died
    os.write(writer, b"while away\n")
    relay = LogRelay()
    relay.add(str(log))
    async with asyncio.TaskGroup() as tg:
        run = tg.create_task(relay.run())
        async with asyncio.timeout(5):
            while read_tail(str(log), 100) != b"while away\n":
                await asyncio.sleep(0.01)
        run.cancel()
    os.close(writer)
    assert Path(pipe_path(str(log))).exists()  # noqa: ASYNC240 - kept for the task and the next agent


def test_tail_bytes_counts_lines_from_the_end(tmp_path: Path) -> None:
    log = tmp_path / "out.log"

    def tail(data: bytes, n: int, **kw: int) -> bytes:
        log.write_bytes(data)
        return data[len(data) - tail_bytes(str(log), n, **kw) :]

    assert tail_bytes(str(tmp_path / "missing"), 3) == 0
    assert tail(b"a\nb\nc\n", 2) == b"b\nc\n"
    assert tail(b"a\nb\nc", 1) == b"c"  # an unfinished last line is a line
    assert tail(b"a\nb\nc\n", 9) == b"a\nb\nc\n"
    assert tail(b"a\nb\nc\n", 0) == b""
    many = b"".join(b"line %d\n" % i for i in range(50_000))  # more than one read
    assert tail(many, 2) == b"line 49998\nline 49999\n"
    assert tail(many, 20_000).count(b"\n") == 20_000
    assert len(tail(many, 50_000, limit=1000)) == 1000  # bounded


def test_tail_bytes_reaches_into_rotated_files(tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    Path(f"{log}.1").write_bytes(b"old 1\nold 2\n")
    log.write_bytes(b"new 1\n")
    n = tail_bytes(str(log), 2)
    assert read_tail(str(log), n) == b"old 2\nnew 1\n"
