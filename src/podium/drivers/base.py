"""The driver contract: how the agent runs one task, whatever runs it.

A driver is small: fingerprint, start, wait, stop, destroy, inspect, recover.
Optional abilities (stats, exec) are separate small protocols. Drivers never
call the API or the store: the agent's task runner drives them and reports.

    task runner --start(TaskConfig)--> driver --> TaskHandle (persisted by the agent)
                --wait(handle)------>          --> ExitResult
                --stop(handle, sig, grace)-->
                --recover(handle)---> (after an agent restart: re-adopt, never restart)
"""

from __future__ import annotations

import signal as _signal
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from podium.errors import DriverError

DEFAULT_PIDS = 4096  # processes and threads per task when neither task nor agent says


@dataclass(frozen=True, slots=True)
class TaskConfig:
    """Everything a driver needs to start one task (already interpolated)."""

    alloc_id: str
    task: str
    driver_config: dict[str, Any]  # the task's `config` block, ${...} resolved
    env: dict[str, str]
    alloc_dir: str  # shared by the group's tasks
    task_dir: str  # private to this task; logs live in task_dir/logs
    stdout_path: str  # the log files (read by `alloc logs`)
    stderr_path: str
    cpu: int = 100  # MHz-equivalent shares; also the hard limit, as a fraction of a core:
    cpu_per_core: int = 1000  # what one of this node's cores counts in those units
    memory_mb: int = 64
    pids: int = 0  # most processes (and threads) the task may have; 0 = the driver's default
    labels: dict[str, str] = field(default_factory=dict)
    # FIFOs the agent's log relay reads into those files (rotated, bounded); a driver whose
    # task writes to a file descriptor opens these instead of the files. "" = none.
    stdout_pipe: str = ""
    stderr_pipe: str = ""
    # The task's exit decides its alloc (batch, cron): a driver keeps the exit status where
    # a restarted agent finds it, so a task that ended while the agent was down is judged
    # by how it ended, not run again.
    keep_exit: bool = False


@dataclass(slots=True)
class TaskHandle:
    """What the agent saves to re-find a running task after it restarts.

    `state` is driver-specific and JSON-serializable (pid and start time for a
    process, container id for a container).
    """

    driver: str
    alloc_id: str
    task: str
    state: dict[str, Any]
    started_at: float = 0.0


@dataclass(frozen=True, slots=True)
class ExitResult:
    exit_code: int | None = None
    signal: int | None = None
    oom_killed: bool = False
    error: str = ""

    @property
    def successful(self) -> bool:
        return self.exit_code == 0 and not self.oom_killed and not self.error


@dataclass(frozen=True, slots=True)
class Fingerprint:
    detected: bool
    healthy: bool
    description: str = ""
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TaskStats:
    cpu_percent: float
    memory_bytes: int
    pids: int
    cpu_seconds: float = 0.0  # used since the task started (a counter)
    memory_limit_bytes: int = 0  # 0: the driver does not know it


@runtime_checkable
class Driver(Protocol):
    name: str

    async def fingerprint(self) -> Fingerprint: ...

    def validate_config(self, config: dict[str, Any]) -> list[str]:
        """Problems with a task's `config` block as 'field: message' strings (empty = fine)."""
        ...

    async def start(self, cfg: TaskConfig) -> TaskHandle: ...

    async def wait(self, handle: TaskHandle) -> ExitResult:
        """Block until the task exits; works for started and recovered handles."""
        ...

    async def stop(
        self, handle: TaskHandle, *, signal: str = "SIGTERM", timeout: float = 5.0
    ) -> None:
        """Signal, wait up to `timeout`, then kill everything the task started."""
        ...

    async def destroy(self, handle: TaskHandle) -> None:
        """Release whatever is left (cgroups, containers). Idempotent."""
        ...

    async def inspect(self, handle: TaskHandle) -> bool:
        """True while the task runs."""
        ...

    async def recover(self, handle: TaskHandle) -> bool:
        """Re-adopt a task after an agent restart. False if it is gone."""
        ...


@runtime_checkable
class StatsDriver(Protocol):
    async def stats(self, handle: TaskHandle) -> TaskStats: ...


@runtime_checkable
class ListenerDriver(Protocol):
    """A driver whose tasks listen on the host's ports themselves (no proxy in between), so it
    can tell whether a port that answers is the task's or some other process's."""

    async def listens(self, handle: TaskHandle, port: int) -> bool:
        """True when a process of the task listens on TCP `port`."""
        ...


@runtime_checkable
class ExecDriver(Protocol):
    async def exec(
        self, handle: TaskHandle, command: list[str], *, timeout: float = 30.0
    ) -> tuple[int, bytes]:
        """Run a command inside the task's context; (exit code, combined output)."""
        ...


@runtime_checkable
class SignalDriver(Protocol):
    async def signal(self, handle: TaskHandle, signal: str) -> None:
        """Send `signal` to the running task, which keeps running (a template's change)."""
        ...


def parse_signal(name: str) -> int:
    """The number of a stop signal given as "SIGTERM", "TERM", "term" or "15"."""
    s = name.strip().upper()
    try:
        if s.isdigit():
            return int(_signal.Signals(int(s)))
        return int(_signal.Signals[s if s.startswith("SIG") else f"SIG{s}"])
    except (KeyError, ValueError):
        raise DriverError(f"signal: unknown signal {name!r}") from None


def refuse_invalid(driver: Driver, config: dict[str, Any]) -> None:
    """Raise DriverError naming every problem with `config`, before anything starts."""
    problems = driver.validate_config(config)
    if problems:
        raise DriverError("; ".join(problems))
