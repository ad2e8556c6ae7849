"""An interactive exec: a command in a task's context with stdin, output streams, a TTY.

    exec_session(handle, command, tty=...) -> ExecSession
      write(data) / close_stdin()    what the user types (pipe, or the pty's master)
      streams                        (1, stdout) and (2, stderr); one merged stream on a TTY
      resize(rows, cols)             the TTY's window size (TIOCSWINSZ)
      wait() -> exit code; kill()    the whole session's process group

`spawn` is the part every driver that runs local processes shares; a driver decides the
environment, directory and cgroup (`wrap`: an argv wrapper such as its cgroup-join shell).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import shutil
import signal
import struct
import subprocess
import termios
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from podium.drivers.base import TaskHandle
from podium.errors import DriverError


class CommandNotFound(DriverError):
    """The command to exec does not exist (bad input: 400, naming it)."""

    status_code = 400


class ExecSession(Protocol):
    """One running exec: what the agent's exec WebSocket pumps."""

    streams: list[tuple[int, asyncio.StreamReader]]  # (1 stdout | 2 stderr, reader)

    def background(self) -> list[Coroutine[Any, Any, None]]:
        """Work that must run while the session lives (e.g. splitting one stream in two)."""
        ...

    async def write(self, data: bytes) -> None: ...

    async def close_stdin(self) -> None: ...

    async def resize(self, rows: int, cols: int) -> None: ...

    async def wait(self) -> int:
        """The command's exit code (128+N when killed by signal N)."""
        ...

    async def kill(self) -> None: ...


@dataclass
class ProcessSession:
    """A local process: pipes, or a pseudo-terminal whose master we hold."""

    proc: asyncio.subprocess.Process
    streams: list[tuple[int, asyncio.StreamReader]]
    stdin: asyncio.StreamWriter | None = None
    master: int | None = None  # the pty's master fd (tty sessions)
    _closed: list[int] = field(default_factory=list)

    def background(self) -> list[Coroutine[Any, Any, None]]:
        return []

    async def write(self, data: bytes) -> None:
        if self.master is not None:
            await _write_fd(self.master, data)
            return
        if self.stdin is None or self.stdin.is_closing():
            return
        self.stdin.write(data)
        with contextlib.suppress(ConnectionError):
            await self.stdin.drain()

    async def close_stdin(self) -> None:
        if self.master is not None:
            # A TTY has no half-close: send the terminal's end-of-file character.
            await self.write(b"\x04")
            return
        if self.stdin is None:
            return
        self.stdin.close()
        with contextlib.suppress(ConnectionError):
            await self.stdin.wait_closed()

    async def resize(self, rows: int, cols: int) -> None:
        if self.master is None:
            return
        rows, cols = max(1, min(rows, 1000)), max(1, min(cols, 1000))
        with contextlib.suppress(OSError):
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    async def wait(self) -> int:
        code = await self.proc.wait()
        return 128 - code if code < 0 else code  # killed by signal N: 128+N, as a shell says

    async def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()
        self.close()

    def close(self) -> None:
        if self.stdin is not None:
            self.stdin.close()
        if self.master is not None and self.master not in self._closed:
            self._closed.append(self.master)
            asyncio.get_running_loop().remove_reader(self.master)
            with contextlib.suppress(OSError):
                os.close(self.master)


@runtime_checkable
class SessionExecDriver(Protocol):
    async def exec_session(
        self, handle: TaskHandle, command: list[str], *, tty: bool = False
    ) -> ExecSession: ...


# A session leader that opens a terminal gets it as its controlling terminal: the shell
# (made leader by start_new_session) reopens the pty's slave by path, then execs the
# command. No Python runs between fork and exec (the agent has threads).
_TTY_HELPER = 'p=$1; shift; exec 0<>"$p" 1>&0 2>&0 "$@"'


async def spawn(
    command: list[str],
    *,
    env: dict[str, str] | None,
    cwd: str | None,
    tty: bool,
    wrap: Callable[[list[str]], list[str]] = list,
    check: Callable[[str], None] | None = None,
) -> ExecSession:
    """Start `command` in its own session, with pipes or on a new pseudo-terminal.

    `wrap` turns an argv into the one to spawn (a driver's cgroup joins, say); `check`
    raises FileNotFoundError/PermissionError for a command that cannot run, before any
    process is made (a wrapper shell would only exit 127)."""
    if not command or not all(isinstance(c, str) and c for c in command):
        raise DriverError("command: expected a non-empty list of strings")
    try:
        (check or _default_check(env))(command[0])
    except FileNotFoundError:
        raise CommandNotFound(f"exec: {command[0]!r} not found") from None
    except PermissionError:
        raise CommandNotFound(f"exec: {command[0]!r} is not executable") from None
    loop = asyncio.get_running_loop()
    if not tty:
        try:
            proc = await asyncio.create_subprocess_exec(
                *wrap(command),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        except (OSError, subprocess.SubprocessError) as e:
            raise DriverError(f"exec: {command[0]}: {e}") from None
        assert proc.stdout is not None and proc.stderr is not None and proc.stdin is not None
        return ProcessSession(proc, [(1, proc.stdout), (2, proc.stderr)], stdin=proc.stdin)

    master, slave = pty.openpty()
    argv = wrap(["/bin/sh", "-c", _TTY_HELPER, "podium-tty", os.ttyname(slave), *command])
    base = env if env is not None else dict(os.environ)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env={**base, "TERM": base.get("TERM", "xterm")},
            start_new_session=True,
        )
    except (OSError, subprocess.SubprocessError) as e:
        os.close(master)
        raise DriverError(f"exec: {command[0]}: {e}") from None
    finally:
        os.close(slave)
    # The master is read with add_reader (a pty is neither a pipe nor a socket to every
    # event loop); it reads EIO once the last process holding the terminal exits: EOF.
    reader = asyncio.StreamReader()
    os.set_blocking(master, False)

    def readable() -> None:
        try:
            data = os.read(master, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            reader.feed_data(data)
        else:
            loop.remove_reader(master)
            reader.feed_eof()

    loop.add_reader(master, readable)
    return ProcessSession(proc, [(1, reader)], master=master)


def _default_check(env: dict[str, str] | None) -> Callable[[str], None]:
    def check(command: str) -> None:
        path = (env or os.environ).get("PATH", os.defpath)
        if "/" not in command and shutil.which(command, path=path) is None:
            raise FileNotFoundError(command)

    return check


async def _write_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            await asyncio.sleep(0.01)  # the terminal's input buffer is full: let it drain
            continue
        except OSError:
            return  # the session ended
        view = view[n:]
