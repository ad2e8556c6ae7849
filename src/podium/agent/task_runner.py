"""One task's life on the node: start through its driver, wait, apply the restart policy.

start (or recover a saved handle) -> running -> exit
    -> batch and exit 0: dead, done
    -> otherwise: restart after `delay` while fewer than `attempts` restarts
       happened within `interval`; past that, mode `fail` fails the task and
       mode `delay` waits for the interval to pass, then goes on.
stop(): the driver's signal, grace, kill; the task ends `dead`, not failed.
restart(): stop and start again now, outside the policy's count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from podium.drivers.base import Driver, ExitResult, TaskConfig, TaskHandle
from podium.errors import DriverError
from podium.model.types import RestartPolicy, TaskEvent, TaskState

log = logging.getLogger(__name__)


@dataclass
class TaskHooks:
    """How a TaskRunner tells its AllocRunner what happened (no I/O of its own)."""

    changed: Callable[[], None]
    event: Callable[[TaskEvent], None]
    handle: Callable[[str, TaskHandle | None], None]  # persist (or forget) the handle


def describe_exit(res: ExitResult) -> str:
    if res.oom_killed:
        return "killed: out of memory (OOM)"
    if res.error:
        return res.error
    if res.signal:
        return f"killed by signal {res.signal}"
    return f"exited with code {res.exit_code}"


class TaskRunner:
    def __init__(
        self,
        name: str,
        driver: Driver,
        cfg: TaskConfig,
        policy: RestartPolicy,
        *,
        batch: bool,
        hooks: TaskHooks,
        kill_signal: str = "SIGTERM",
        kill_timeout: float = 5.0,
        recovered: TaskHandle | None = None,
        state: TaskState | None = None,
    ) -> None:
        self.name = name
        self.driver = driver
        self.cfg = cfg
        self.policy = policy
        self.batch = batch
        self.hooks = hooks
        self.kill_signal = kill_signal
        self.kill_timeout = kill_timeout
        self.state = state or TaskState()
        self.handle: TaskHandle | None = recovered
        self._stopping = False
        self._restart_now = asyncio.Event()
        self._restart_stopped = asyncio.Event()
        self._restart_times: list[float] = []

    @property
    def done(self) -> bool:
        return self.state.state == "dead"

    def _set(self, **kw: object) -> None:
        for k, v in kw.items():
            setattr(self.state, k, v)
        self.hooks.changed()

    def _event(self, type_: str, message: str) -> None:
        self.hooks.event(TaskEvent(type=type_, message=message, task=self.name))

    async def run(self) -> None:
        handle = self.handle
        # A task that ended while the agent was down goes through the restart policy like
        # any other exit (counted once), instead of being started afresh unnoticed.
        lost: ExitResult | None = None
        if handle is not None and not await self._recover(handle):
            handle = None
            lost = ExitResult(error="exited while the agent was down")
        while not self._stopping:
            if lost is not None:
                res, lost = lost, None
            elif handle is None:
                handle = await self._start()
                if handle is None:
                    res = ExitResult(error=self.state.message)
                else:
                    res = await self.driver.wait(handle)
            else:
                res = await self.driver.wait(handle)
            if handle is not None:
                with contextlib.suppress(Exception):
                    await self.driver.destroy(handle)
                self.hooks.handle(self.name, None)
            handle = self.handle = None
            if self._stopping:
                break
            if self._restart_now.is_set():
                # Let restart()'s stop finish its sweep of the task's cgroup first, or it
                # would kill the new process, which reuses that cgroup.
                await self._restart_stopped.wait()
                self._restart_stopped.clear()
                self._restart_now.clear()
                self._set(
                    restarts=self.state.restarts + 1, last_restart=time.time(), state="pending"
                )
                self._event("task.restarted", "restarted by request")
                continue
            self._set(
                exit_code=res.exit_code,
                signal=res.signal,
                oom_killed=res.oom_killed,
                finished_at=time.time(),
            )
            if self.batch and res.successful:
                self._set(state="dead", failed=False, message="completed")
                self._event("task.completed", "exited with code 0")
                return
            msg = describe_exit(res)
            self._event("task.oom_killed" if res.oom_killed else "task.exited", msg)
            delay = self._next_delay()
            if delay is None:
                self._set(
                    state="dead",
                    failed=True,
                    message=f"{msg}; restart policy exhausted "
                    f"({self.policy.attempts} attempts in {self.policy.interval:g}s)",
                )
                self._event("task.failed", self.state.message)
                return
            self._set(state="pending", message=f"{msg}; restarting in {delay:g}s")
            self._event("task.restarting", f"{msg}; restarting in {delay:g}s")
            try:
                async with asyncio.timeout(delay):
                    await self._restart_now.wait()  # a user restart or stop cuts the wait short
            except TimeoutError:
                pass
            self._restart_now.clear()
            if not self._stopping:
                self._restart_times.append(time.monotonic())
                self._set(restarts=self.state.restarts + 1, last_restart=time.time())
        if self.state.state != "dead":
            self._set(state="dead", message=self.state.message or "stopped")

    def _next_delay(self) -> float | None:
        """Seconds before the next restart, or None when the policy says fail."""
        p = self.policy
        now = time.monotonic()
        self._restart_times = [t for t in self._restart_times if now - t < p.interval]
        if len(self._restart_times) < p.attempts:
            return p.delay
        if p.mode == "fail":
            return None
        # mode delay: wait until the oldest restart leaves the window.
        return max(p.delay, p.interval - (now - self._restart_times[0]))

    async def _start(self) -> TaskHandle | None:
        self._set(state="pending", message="starting")
        try:
            handle = await self.driver.start(self.cfg)
        except (DriverError, OSError, ValueError) as e:
            self._set(message=f"failed to start: {e}")
            self._event("task.start_failed", str(e))
            return None
        self.handle = handle
        self.hooks.handle(self.name, handle)
        pid = int(handle.state.get("pid", 0) or 0)
        self._set(
            state="running",
            started_at=time.time(),
            pid=pid,
            message="running",
            exit_code=None,
            signal=None,
            oom_killed=False,
        )
        self._event("task.started", f"started (pid {pid})" if pid else "started")
        return handle

    async def _recover(self, handle: TaskHandle) -> bool:
        try:
            alive = await self.driver.recover(handle)
        except DriverError:
            alive = False
        if alive:
            pid = int(handle.state.get("pid", 0) or 0)
            self._set(
                state="running",
                pid=pid,
                started_at=handle.started_at or self.state.started_at,
                message="running (re-adopted)",
            )
            if await self._still_running(handle):
                self._event("task.recovered", f"re-adopted after agent restart (pid {pid})")
            else:
                self._event("task.recovered", "ended while the agent was down; its exit is known")
            return True
        # Release what the gone task left behind (its cgroup) before starting afresh.
        with contextlib.suppress(DriverError, OSError):
            await self.driver.destroy(handle)
        self.hooks.handle(self.name, None)
        self._event("task.lost", "was gone when the agent restarted")
        return False

    async def _still_running(self, handle: TaskHandle) -> bool:
        try:
            return await self.driver.inspect(handle)
        except DriverError:
            return False

    async def stop(self) -> None:
        """Stop for good: signal, grace, kill. Returns when the task is down."""
        self._stopping = True
        self._restart_now.set()
        handle = self.handle
        if handle is not None:
            try:
                await self.driver.stop(handle, signal=self.kill_signal, timeout=self.kill_timeout)
            except DriverError as e:
                log.warning("stopping task %s: %s", self.name, e)

    async def restart(self) -> None:
        """Restart in place now (a user's `alloc restart`)."""
        self._restart_stopped.clear()
        self._restart_now.set()
        handle = self.handle
        try:
            if handle is not None:
                await self.driver.stop(handle, signal=self.kill_signal, timeout=self.kill_timeout)
        except DriverError as e:
            log.warning("restarting task %s: %s", self.name, e)
        finally:
            self._restart_stopped.set()
