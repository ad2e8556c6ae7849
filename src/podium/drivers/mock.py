"""The `mock` driver: tasks that live only in memory, for testing the agent without processes.

Config: `run_for` (seconds, default forever), `exit_code` (int, default 0), `start_error`
(start raises DriverError with it), `fail_stop` (stop raises DriverError), `stdout` (a line
appended to the task's stdout file at start, so log paths can be tested).

Tasks are kept in a registry shared by every MockDriver in the process (unless one is
passed), so a fresh driver instance can `recover` them as after an agent restart.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shlex
import time
from dataclasses import dataclass, field
from typing import Any

from podium.drivers import schemas
from podium.drivers.base import (
    ExitResult,
    Fingerprint,
    TaskConfig,
    TaskHandle,
    TaskStats,
    parse_signal,
    refuse_invalid,
)
from podium.errors import DriverError, TaskNotFound


@dataclass(slots=True)
class MockTask:
    deadline: float | None  # time.monotonic() of the natural exit; None = runs until stopped
    exit_code: int
    fail_stop: bool
    result: ExitResult | None = None  # set when stopped
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    signals: list[int] = field(default_factory=list)  # received without stopping

    def exited(self) -> ExitResult | None:
        if self.result is not None:
            return self.result
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return ExitResult(exit_code=self.exit_code)
        return None


@dataclass(slots=True)
class MockRegistry:
    tasks: dict[str, MockTask] = field(default_factory=dict)
    ids: itertools.count[int] = field(default_factory=itertools.count)


_SHARED = MockRegistry()


class MockDriver:
    name = "mock"

    def __init__(self, *, registry: MockRegistry | None = None) -> None:
        self._reg = registry if registry is not None else _SHARED

    async def fingerprint(self) -> Fingerprint:
        return Fingerprint(
            detected=True,
            healthy=True,
            description="in-memory tasks for tests",
            attributes={"driver.mock": "1"},
        )

    def validate_config(self, config: dict[str, Any]) -> list[str]:
        return schemas.MOCK.messages(config)

    async def start(self, cfg: TaskConfig) -> TaskHandle:
        c = cfg.driver_config
        refuse_invalid(self, c)
        if c.get("start_error"):
            raise DriverError(str(c["start_error"]))
        if c.get("stdout"):
            _append(cfg.stdout_path, str(c["stdout"]) + "\n")
        run_for = c.get("run_for")
        task_id = f"mock-{next(self._reg.ids)}"
        self._reg.tasks[task_id] = MockTask(
            deadline=None if run_for is None else time.monotonic() + float(run_for),
            exit_code=int(c.get("exit_code", 0)),
            fail_stop=bool(c.get("fail_stop", False)),
        )
        return TaskHandle(
            driver=self.name,
            alloc_id=cfg.alloc_id,
            task=cfg.task,
            state={"id": task_id},
            started_at=time.time(),
        )

    def _task(self, handle: TaskHandle) -> MockTask | None:
        return self._reg.tasks.get(str(handle.state.get("id", "")))

    async def wait(self, handle: TaskHandle) -> ExitResult:
        t = self._task(handle)
        if t is None:
            return ExitResult(error="exited while not supervised")
        while (res := t.exited()) is None:
            timeout = None if t.deadline is None else max(0.0, t.deadline - time.monotonic())
            try:
                async with asyncio.timeout(timeout):
                    await t.stopped.wait()
            except TimeoutError:
                pass
        return res

    async def stop(
        self, handle: TaskHandle, *, signal: str = "SIGTERM", timeout: float = 5.0
    ) -> None:
        sig = parse_signal(signal)
        t = self._task(handle)
        if t is None or t.exited() is not None:
            return
        if t.fail_stop:
            raise DriverError("mock: stop failed (fail_stop)")
        t.result = ExitResult(exit_code=128 + sig, signal=sig)
        t.stopped.set()

    async def signal(self, handle: TaskHandle, signal: str) -> None:
        t = self._task(handle)
        if t is None or t.exited() is not None:
            raise TaskNotFound(f"mock task {handle.task} is not running")
        t.signals.append(parse_signal(signal))

    async def destroy(self, handle: TaskHandle) -> None:
        t = self._reg.tasks.pop(str(handle.state.get("id", "")), None)
        if t is not None and t.exited() is None:  # destroying a live task kills it
            t.result = ExitResult(exit_code=137, signal=9)
            t.stopped.set()

    async def inspect(self, handle: TaskHandle) -> bool:
        t = self._task(handle)
        return t is not None and t.exited() is None

    async def recover(self, handle: TaskHandle) -> bool:
        return await self.inspect(handle)

    async def stats(self, handle: TaskHandle) -> TaskStats:
        running = await self.inspect(handle)
        return TaskStats(
            cpu_percent=0.0, memory_bytes=1024 * 1024 if running else 0, pids=1 if running else 0
        )

    async def exec(
        self, handle: TaskHandle, command: list[str], *, timeout: float = 30.0
    ) -> tuple[int, bytes]:
        if not await self.inspect(handle):
            raise TaskNotFound(f"task {handle.task} is not running")
        return 0, (shlex.join(command) + "\n").encode()


def _append(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "a") as f:
        f.write(text)
