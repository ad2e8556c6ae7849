"""The agent's log relay: tasks write into pipes it owns; it writes rotated, bounded files.

    task stdout ──FIFO (logs/NAME.stdout.pipe)──> LogRelay thread ──splice──> RotatingFile
    agent HTTP ── logfiles.read_tail / follow ──> `podium alloc logs [-f] [--tail N]`

One thread for the whole node polls every pipe (no helper process per task). A task that
writes faster than the relay can store is held back by the full pipe (backpressure); the
files never pass `max_files * max_file_size`.

Surviving an agent restart: each pipe is a named FIFO in the task's log dir. The task's
stdout is opened read-write on it (see drivers.process), so the task is itself a reader
and never gets SIGPIPE while no agent runs; its output waits in the pipe (up to its size,
then the task blocks), and the agent that comes back opens the FIFO by name and reads on.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import selectors
import stat
import threading
from dataclasses import dataclass, field

from podium.runtime.logfiles import CHUNK, LogLimits, RotatingFile

log = logging.getLogger(__name__)

PIPE_SIZE = 1024 * 1024  # bytes a task may write ahead of the relay (and while it is away)


def pipe_path(path: str) -> str:
    """The FIFO that feeds log file `path`."""
    return f"{path}.pipe"


def open_pipe(path: str) -> int:
    """Make the FIFO if missing and open it read-write, non-blocking: as a reader that is
    also a writer it never reads EOF, whoever comes and goes on the other side."""
    fifo = pipe_path(path)
    os.makedirs(os.path.dirname(fifo) or ".", exist_ok=True)
    try:
        mode = os.stat(fifo).st_mode
        if not stat.S_ISFIFO(mode):
            os.remove(fifo)
            raise FileNotFoundError(fifo)
    except FileNotFoundError:
        os.mkfifo(fifo, 0o600)
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    with contextlib.suppress(OSError):  # beyond /proc/sys/fs/pipe-max-size for non-root
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    return fd


@dataclass(eq=False)
class _Stream:
    path: str
    fd: int
    out: RotatingFile
    closing: threading.Event = field(default_factory=threading.Event)


class LogRelay:
    """Moves every registered pipe into its rotated files, on one thread. `add` / `remove`
    from the event loop at any time; `run()` owns the thread."""

    def __init__(self, limits: LogLimits | None = None) -> None:
        self.limits = limits or LogLimits()
        self._streams: dict[str, _Stream] = {}
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._changes: list[tuple[str, _Stream]] = []
        self._lock = threading.Lock()
        self._stopping = False

    @property
    def paths(self) -> list[str]:
        return list(self._streams)

    def add(self, path: str) -> None:
        """Start relaying into `path` (idempotent); its FIFO exists once this returns."""
        if path in self._streams:
            return
        s = _Stream(path, open_pipe(path), RotatingFile(path, self.limits))
        self._streams[path] = s
        self._change("add", s)

    def written(self, path: str) -> int:
        """Bytes relayed into `path` since this relay began (0 when not relayed)."""
        s = self._streams.get(path)
        return s.out.written if s is not None else 0

    def remove(self, path: str) -> None:
        """Stop relaying into `path` once what is in its pipe is written; the FIFO goes."""
        s = self._streams.pop(path, None)
        if s is not None:
            self._change("remove", s)

    def _change(self, what: str, s: _Stream) -> None:
        with self._lock:
            self._changes.append((what, s))
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    async def run(self) -> None:
        done = asyncio.Event()
        loop = asyncio.get_running_loop()

        def serve() -> None:
            try:
                self._serve()
            finally:
                loop.call_soon_threadsafe(done.set)

        thread = threading.Thread(target=serve, name="log-relay", daemon=True)
        thread.start()
        try:
            await done.wait()
        finally:
            self._stopping = True
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")
            await asyncio.to_thread(thread.join, 5.0)
            for s in self._streams.values():
                os.close(s.fd)  # the FIFOs stay: tasks live on, a later agent reads on
                s.out.close()
            self._streams.clear()

    def _serve(self) -> None:
        while not self._stopping:
            for key, _ in self._selector.select():
                if key.data is None:
                    self._apply_changes()
                else:
                    self._move(key.data)

    def _apply_changes(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass
        with self._lock:
            changes, self._changes = self._changes, []
        for what, s in changes:
            if what == "add":
                self._selector.register(s.fd, selectors.EVENT_READ, s)
                continue
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(s.fd)
            self._move(s, until_empty=True)
            os.close(s.fd)
            s.out.close()
            with contextlib.suppress(FileNotFoundError):
                os.remove(pipe_path(s.path))

    def _move(self, s: _Stream, *, until_empty: bool = False) -> None:
        """Up to a few chunks from the pipe into the file (all of it with `until_empty`,
        which is at most a pipe's worth once no writer is left)."""
        budget = 2 * PIPE_SIZE if until_empty else 4 * CHUNK
        while budget > 0:
            try:
                room = s.out.room()
                n = _splice(s.fd, s.out.fd, min(CHUNK, room))
            except BlockingIOError:
                return  # the pipe is empty
            except OSError as e:  # a full disk: drop this chunk, keep the task unblocked
                log.warning("writing %s: %s", s.path, e)
                with contextlib.suppress(OSError):
                    os.read(s.fd, CHUNK)
                return
            if n == 0:
                return
            s.out.wrote(n)
            budget -= n


def _splice(src: int, dst: int, n: int) -> int:
    """Pipe to file in the kernel (splice(2)); read and write where there is none."""
    if hasattr(os, "splice"):
        # NONBLOCK: the relay's own end counts as a writer, so an empty pipe would block.
        return os.splice(src, dst, n, flags=os.SPLICE_F_NONBLOCK)
    data = os.read(src, n)
    return os.write(dst, data) if data else 0
