"""An alloc's templates over its life: rendered before its tasks start, then kept current.

prepare()           before any task starts: render + write; a failure fails the alloc
                    (template name, line, reason in its status and an event)
run()               for the alloc's life:
  submit(job)         the server moved the alloc to a new job version in place (a config
                      or secret read by a restart/signal/noop template changed)
  a service changed   a template reads service("x") and its healthy endpoints moved
    -> render again; for each task whose files or env changed, by change_mode:
       restart   after a random wait of up to `splay` (copies spread out); env too
       signal    change_signal to the running task (it re-reads its file)
       noop      the file is updated, nothing else
       rolling   reached here only by a service change: restarted like `restart`
                 (a config change to a rolling template replaces the copy instead)
    a failed render keeps what runs, with an event saying why
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from typing import TYPE_CHECKING, Any, Protocol

from podium.agent.templates import Change, TemplateHook
from podium.drivers.base import SignalDriver
from podium.errors import PodiumError
from podium.model.types import Job, TaskEvent, TaskState
from podium.runtime.backoff import exponential
from podium.templates.sandbox import TemplateError

if TYPE_CHECKING:
    from podium.agent.alloc_runner import AllocRunner

log = logging.getLogger(__name__)


class ServiceWatch(Protocol):
    async def __call__(self, namespace: str, service: str, index: int) -> int:
        """Block until the service's endpoints change past `index` (or a while), at once
        when `index` < 0; the service's index."""
        ...


class TemplateRunner:
    def __init__(self, runner: AllocRunner, hook: TemplateHook, *, watch: ServiceWatch) -> None:
        self.runner = runner
        self.hook = hook
        self.watch = watch
        self.job = runner.job
        self._want: Job | None = None
        self._services_changed = False
        self._recovered: dict[str, list[Change]] = {}
        self._wake = asyncio.Event()

    # ----------------------------------------------------------- before start

    async def prepare(self, *, recovering: bool) -> bool:
        """Render and write everything; give each task its env. False: the alloc did not
        start (failed, or stopped while the data could not be fetched). Tasks re-adopted
        after an agent restart keep running whatever happens here."""
        attempt = 0
        while True:
            try:
                outputs = await self.hook.render(self.job)
                changes = await self.hook.write(outputs)
                break
            except TemplateError as e:
                failure = str(e)
            except OSError as e:  # the task's directory cannot be written (a full disk)
                failure = f"templates: cannot write: {e.strerror or e}"
            except PodiumError as e:
                if e.retryable and not self.runner.stopping:
                    delay = exponential(attempt, base=0.2, cap=5.0)
                    attempt += 1
                    self.runner.description = f"waiting for template data: {e}"
                    await asyncio.sleep(delay)
                    continue
                failure = f"templates: {e}"
            if recovering:
                self._event("template.failed", f"{failure}; the running tasks keep their files")
                return True
            if self.runner.stopping:
                failure = ""
            self._fail(failure)
            return False
        for name, task in self.runner.tasks.items():
            task.cfg = dataclasses.replace(task.cfg, env=self._env(name))
        if recovering and changes:
            # It changed while the agent was away: act on it once the tasks are re-adopted.
            self._recovered = changes
            self._wake.set()
        return True

    def _fail(self, message: str) -> None:
        """Every task dead before it started: failed with `message`, or stopped ("")."""
        for task in self.runner.tasks.values():
            task.state = TaskState(
                state="dead", failed=bool(message), message=message or "stopped before it started"
            )
        if message:
            self.runner.events.append(TaskEvent(type="template.failed", message=message))

    def _env(self, task: str) -> dict[str, str]:
        return {**self.hook.base_env.get(task, {}), **self.hook.env_of(task)}

    # ----------------------------------------------------------------- life

    def submit(self, job: Job) -> None:
        """Apply `job` (a new version of the alloc's job, changed in place) soon."""
        self._want = job
        self._wake.set()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for name in self.hook.services():
                tg.create_task(self._follow(name), name=f"template-watch:{name}")
            while True:
                await self._wake.wait()
                self._wake.clear()
                recovered, self._recovered = self._recovered, {}
                if recovered:
                    why = "changed while the agent was away"
                    await asyncio.gather(*(self._act(t, c, why) for t, c in recovered.items()))
                job, self._want = self._want, None
                services, self._services_changed = self._services_changed, False
                if job is not None:
                    await self._apply(job, why=_versions_moved(self.job, job))
                    self.job = job
                elif services:
                    await self._apply(self.job, why="a service it reads changed")

    async def _follow(self, service: str) -> None:
        index = -1  # the first look answers at once; later ones block until a change
        while True:
            try:
                new = await self.watch(self.runner.alloc.namespace, service, index)
            except PodiumError as e:
                log.warning("watching service %s for templates: %s", service, e)
                await asyncio.sleep(2.0)
                continue
            if index >= 0 and new != index:
                self._services_changed = True
                self._wake.set()
            index = new

    async def _apply(self, job: Job, *, why: str) -> None:
        try:
            outputs = await self.hook.render(job)
            changes = await self.hook.write(outputs)
        except (TemplateError, PodiumError, OSError) as e:
            self._event("template.failed", f"{e}; the task keeps running with what it has")
            return
        await asyncio.gather(*(self._act(task, found, why) for task, found in changes.items()))

    async def _act(self, task_name: str, changes: list[Change], why: str) -> None:
        task = self.runner.tasks.get(task_name)
        if task is None:
            return
        what = ", ".join(c.template.destination for c in changes)
        restarting = [
            c for c in changes if c.env or c.template.change_mode in ("restart", "rolling")
        ]
        signals = sorted(
            {c.template.change_signal for c in changes if c.template.change_mode == "signal"}
        )
        if restarting:
            splay = max(c.template.splay for c in restarting)
            wait = random.uniform(0, splay) if splay > 0 else 0.0
            self._event(
                "template.changed", f"{what} changed ({why}): restarting in {wait:.1f}s", task_name
            )
            await asyncio.sleep(wait)
            task.cfg = dataclasses.replace(task.cfg, env=self._env(task_name))
            await task.restart()
            return
        for sig in signals:
            await self._signal(task_name, sig, f"{what} changed ({why})")
        if not signals:
            self._event("template.changed", f"{what} changed ({why}): file updated", task_name)

    async def _signal(self, task_name: str, sig: str, what: str) -> None:
        task = self.runner.tasks[task_name]
        driver: Any = task.driver
        if task.handle is None or not isinstance(driver, SignalDriver):
            self._event("template.changed", f"{what}: cannot signal it now; restarting", task_name)
            await task.restart()
            return
        try:
            await driver.signal(task.handle, sig)
        except PodiumError as e:
            self._event("template.changed", f"{what}: {sig} not delivered ({e})", task_name)
            return
        self._event("template.changed", f"{what}: sent {sig}", task_name)

    def _event(self, kind: str, message: str, task: str = "") -> None:
        self.runner.events.append(TaskEvent(type=kind, message=message, task=task))
        self.runner._changed()  # reports, with the event


def _versions_moved(old: Job, new: Job) -> str:
    moved = [
        f"{ref.replace(':', ' ')} v{new.config_versions[ref]}"
        for ref in sorted(new.config_versions)
        if old.config_versions.get(ref) != new.config_versions[ref]
    ]
    return ", ".join(moved) or f"job version {new.version}"
