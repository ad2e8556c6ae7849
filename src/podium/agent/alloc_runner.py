"""One alloc on this node: its directories, env, tasks and health checks, and its status.

AllocRunner.run()
  TaskGroup: TaskRunner per task | CheckRunner per service check (once tasks run)
             | deployment timers | check sync
  status: pending -> running -> complete | failed ; healthy when every task runs
          and every check passed since the tasks' latest start
  reports: task changes and check status flips at once; a check's new output or
           time alone at most every CHECK_SYNC seconds (fresh, without flooding)
stop():    stop every task (signal, grace, kill) -> complete
restart(): restart every task in place
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from podium.agent.deploy_health import (
    CheckStreak,
    DeploymentHealth,
    Observation,
    counts_as_healthy,
)
from podium.agent.health import CheckRunner, TaskExec
from podium.agent.interpolate import render
from podium.agent.logs import pipe_path
from podium.agent.task_runner import TaskHooks, TaskRunner
from podium.agent.template_runner import ServiceWatch, TemplateRunner
from podium.agent.templates import DataSource, TemplateHook, needs_templates
from podium.drivers.base import Driver, ExecDriver, ListenerDriver, TaskConfig, TaskHandle
from podium.errors import DriverError, TaskNotFound
from podium.model.types import (
    Allocation,
    AllocUpdate,
    ClientStatus,
    EnvRef,
    Group,
    Job,
    Node,
    TaskEvent,
    TaskState,
)
from podium.runtime.ids import short_alloc
from podium.runtime.logfiles import read_tail

if TYPE_CHECKING:
    from podium.agent.metrics import AgentMetrics

log = logging.getLogger(__name__)

PAYLOAD_FILE = "payload"  # a dispatched run's payload, in each task's dir

CHECK_SYNC = 5.0  # seconds: the most often a check's output or time alone is reported


def _no_ports() -> Mapping[int, str]:
    return {}


@dataclass
class AllocHooks:
    report: Callable[[AllocUpdate], None]  # coalesced by the agent's reporter
    save: Callable[[str, dict[str, TaskHandle]], None]  # persist this alloc's handles
    metrics: AgentMetrics | None = None  # health check results and latency
    # The node's own listening ports (agent and server API, proxy, ingress) -> what they
    # are: checks never probe them.
    own_ports: Callable[[], Mapping[int, str]] = field(default=_no_ports)
    # Configs, secrets and services for templates (None: a group that has templates fails).
    data: DataSource | None = None
    watch_service: ServiceWatch | None = None


def task_env(
    alloc: Allocation,
    job: Job,
    group: Group,
    task_name: str,
    node: Node,
    alloc_dir: str,
    task_dir: str,
    user_env: Mapping[str, str | EnvRef],
) -> dict[str, str]:
    """The task's environment: podium's variables and the user's strings, ${...} filled in.
    Values read from configs and secrets are not here: the templates hook adds them after
    this is used to fill in the task's config (a secret never lands in a command line)."""
    env = {
        "PODIUM_ALLOC_ID": alloc.id,
        "PODIUM_ALLOC_NAME": alloc.name,
        "PODIUM_ALLOC_INDEX": str(alloc.index),
        "PODIUM_JOB": job.name,
        "PODIUM_NAMESPACE": job.namespace,
        "PODIUM_GROUP": group.name,
        "PODIUM_TASK": task_name,
        "PODIUM_ALLOC_DIR": alloc_dir,
        "PODIUM_TASK_DIR": task_dir,
        "PODIUM_NODE_ID": node.id,
        "PODIUM_NODE_NAME": node.name,
        "PODIUM_IP": node.address,
    }
    for key, value in {**job.meta, **group.meta}.items():
        env[f"PODIUM_META_{_env_name(key)}"] = value
    if job.payload:
        env["PODIUM_PAYLOAD_FILE"] = os.path.join(task_dir, PAYLOAD_FILE)
    for label, port in alloc.ports.items():
        key = label.upper().replace("-", "_")
        env[f"PODIUM_PORT_{key}"] = str(port)
        env[f"PODIUM_ADDR_{key}"] = f"{node.address}:{port}"
    variables = {
        **env,
        "node.name": node.name,
        "node.id": node.id,
        "node.address": node.address,
        "node.datacenter": node.datacenter,
        **{f"node.labels.{k}": v for k, v in node.labels.items()},
    }
    for k, v in user_env.items():
        if isinstance(v, str):
            env[k] = render(v, {**variables, **env})
    env.setdefault("PATH", os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"))
    return env


def cpu_per_core(node: Node) -> int:
    """What one core of `node` counts in cpu units (MHz): the base of a task's CPU quota."""
    return node.cpu_per_core


def _env_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", key).upper()


def write_payload(job: Job, task_dir: str) -> None:
    """A dispatched run's payload, in the task's own dir (readable by the task only)."""
    if not job.payload:
        return
    path = os.path.join(task_dir, PAYLOAD_FILE)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(base64.b64decode(job.payload))


class AllocRunner:
    def __init__(
        self,
        alloc: Allocation,
        job: Job,
        node: Node,
        drivers: dict[str, Driver],
        data_dir: str,
        hooks: AllocHooks,
        *,
        recovered: dict[str, TaskHandle] | None = None,
    ) -> None:
        group = job.group(alloc.group)
        if group is None:
            raise ValueError(f"job {job.name} v{job.version} has no group {alloc.group!r}")
        self.alloc = alloc
        self.job = job
        self.group = group
        self.node = node
        self.hooks = hooks
        self.alloc_dir = os.path.join(data_dir, "allocs", alloc.id)
        self.handles: dict[str, TaskHandle] = dict(recovered or {})
        self.events: list[TaskEvent] = []
        self.tasks: dict[str, TaskRunner] = {}
        self.checks: list[CheckRunner] = []
        self.oom_kills: dict[str, int] = {}  # task -> OOM kills seen by this runner
        self.restart_seq = alloc.restart_seq
        self.client_status: ClientStatus = "pending"
        self.description = ""
        self.finished = asyncio.Event()
        self._stop_requested = False
        self._all_running = asyncio.Event()
        self._healthy_since = 0.0
        self._checks_epoch = 0.0  # the tasks' latest start the checks were reset for
        self._checks_unsynced = False  # a check result not reported yet
        # Judged here only while the deployment that placed this copy waits for a verdict.
        self.deploy: DeploymentHealth | None = None
        if alloc.deployment_id and alloc.deployment_healthy is None:
            self.deploy = DeploymentHealth(group.update, started=alloc.create_time or time.time())
        self._deploy_wake = asyncio.Event()
        self._base_env: dict[str, dict[str, str]] = {}
        self._task_dirs: dict[str, str] = {}
        self._build(drivers, recovered or {})
        self.templates: TemplateRunner | None = None
        self.templates_version = job.version  # the job version its templates were given
        if needs_templates(group):
            if hooks.data is None or hooks.watch_service is None:
                raise ValueError("this agent cannot render templates")
            hook = TemplateHook(alloc, group, node, hooks.data, self._task_dirs, self._base_env)
            self.templates = TemplateRunner(self, hook, watch=hooks.watch_service)

    def _build(self, drivers: dict[str, Driver], recovered: dict[str, TaskHandle]) -> None:
        shared = os.path.join(self.alloc_dir, "alloc")
        os.makedirs(shared, exist_ok=True)
        batch = self.job.type in ("batch", "cron")
        for t in self.group.tasks:
            task_dir = os.path.join(self.alloc_dir, t.name)
            os.makedirs(os.path.join(task_dir, "logs"), exist_ok=True)
            write_payload(self.job, task_dir)
            env = task_env(
                self.alloc, self.job, self.group, t.name, self.node, shared, task_dir, t.env
            )
            self._base_env[t.name], self._task_dirs[t.name] = env, task_dir
            cfg = TaskConfig(
                alloc_id=self.alloc.id,
                task=t.name,
                driver_config=render(t.config, env),
                env=env,
                alloc_dir=shared,
                task_dir=task_dir,
                stdout_path=(out := os.path.join(task_dir, "logs", f"{t.name}.stdout")),
                stderr_path=(err := os.path.join(task_dir, "logs", f"{t.name}.stderr")),
                stdout_pipe=pipe_path(out),
                stderr_pipe=pipe_path(err),
                cpu=t.resources.cpu,
                cpu_per_core=cpu_per_core(self.node),
                memory_mb=t.resources.memory,
                pids=t.resources.pids,
                keep_exit=batch,
                labels={
                    "podium.alloc_id": self.alloc.id,
                    "podium.job": self.job.name,
                    "podium.group": self.group.name,
                    "podium.task": t.name,
                },
            )
            driver = drivers.get(t.driver)
            prior = self.alloc.task_states.get(t.name)
            state = TaskState(restarts=prior.restarts) if prior else TaskState()
            hooks = TaskHooks(changed=self._changed, event=self._event, handle=self._handle)
            runner = TaskRunner(
                t.name,
                driver,  # type: ignore[arg-type]  # None: marked failed just below
                cfg,
                t.restart or self.group.restart,
                batch=batch,
                hooks=hooks,
                kill_signal=t.kill_signal,
                kill_timeout=t.kill_timeout,
                recovered=recovered.get(t.name),
                state=state,
            )
            if driver is None:
                runner.state = TaskState(
                    state="dead",
                    failed=True,
                    message=f"driver {t.driver!r} is not available on this node",
                )
            self.tasks[t.name] = runner
        run_in_task = self._exec_in(next(iter(self.tasks.values()))) if self.tasks else None
        for svc in self.group.services:
            for chk in svc.checks:
                label = chk.port or svc.port
                port = self.alloc.ports.get(label, 0)
                self.checks.append(
                    CheckRunner(
                        chk,
                        address=self.node.address,
                        port=port,
                        on_result=self._check_result,
                        run_in_task=run_in_task,
                        own_ports=self.hooks.own_ports,
                        owner=self._owns,
                        observe=self._check_observer(svc.name, chk.name),
                    )
                )

    @staticmethod
    def _exec_in(task: TaskRunner) -> TaskExec | None:
        """Command checks run inside the group's first task (its cgroup, its container)."""
        driver = task.driver
        if not isinstance(driver, ExecDriver):
            return None

        async def run(command: list[str], timeout: float) -> tuple[int, bytes]:
            if task.handle is None:
                raise TaskNotFound(f"task {task.name} is not running")
            return await driver.exec(task.handle, command, timeout=timeout)

        return run

    async def _owns(self, port: int) -> bool | None:
        """Whether one of the alloc's tasks listens on `port` (None: no driver can tell)."""
        unknown = False
        for t in self.tasks.values():
            if t.handle is None:
                continue
            if not isinstance(t.driver, ListenerDriver):
                unknown = True
                continue
            try:
                if await t.driver.listens(t.handle, port):
                    return True
            except (DriverError, OSError):
                unknown = True
        return None if unknown else False

    # ------------------------------------------------------------ callbacks

    def _check_observer(self, service: str, check: str) -> Callable[[str, float], None] | None:
        metrics = self.hooks.metrics
        if metrics is None:
            return None
        labels = (self.alloc.namespace, self.alloc.job, self.group.name, check or service)
        return lambda status, seconds: metrics.check(labels, status, seconds)

    def _event(self, ev: TaskEvent) -> None:
        if ev.type == "task.oom_killed":
            self.oom_kills[ev.task] = self.oom_kills.get(ev.task, 0) + 1
        self.events.append(ev)
        self._changed()

    def _handle(self, task: str, handle: TaskHandle | None) -> None:
        if handle is None:
            self.handles.pop(task, None)
        else:
            self.handles[task] = handle
        self.hooks.save(self.alloc.id, dict(self.handles))

    def _changed(self) -> None:
        """A task changed, or a check's status flipped: report now."""
        self._refresh()
        self._report()

    def _check_result(self, check: CheckRunner, flipped: bool) -> None:
        if flipped:
            self._changed()
            return
        # Same status: judged now (failures in a row count), reported within CHECK_SYNC.
        if self._refresh():
            self._report()
        else:
            self._checks_unsynced = True

    def _report(self) -> None:
        self._checks_unsynced = False
        self.hooks.report(self.update())

    def _refresh(self) -> bool:
        """Recompute status and health from the tasks and checks; True when the
        deployment verdict was just given (worth reporting at once)."""
        states = [r.state for r in self.tasks.values()]
        all_running = bool(states) and all(s.state == "running" for s in states)
        if all_running:
            self._all_running.set()
        latest_start = max((s.started_at for s in states), default=0.0)
        if latest_start > self._checks_epoch:
            # A task (re)started: what the checks saw before says nothing about it.
            self._checks_epoch = latest_start
            for c in self.checks:
                c.reset(latest_start, self.group.update.check_grace)
        if any(s.failed for s in states):
            status: ClientStatus = "failed"
            bad = next(n for n, r in self.tasks.items() if r.state.failed)
            self.description = f"task {bad} failed: {self.tasks[bad].state.message}"
        elif all(s.state == "dead" for s in states):
            status = "complete"
            self.description = "stopped" if self._stop_requested else "all tasks completed"
        elif all_running:
            status = "running"
            self.description = "all tasks running"
        else:
            status = "running" if self.client_status == "running" else "pending"
            self.description = "; ".join(
                f"{n}: {r.state.message}"
                for n, r in self.tasks.items()
                if r.state.state != "running"
            )
        self.client_status = status
        good = counts_as_healthy(
            self.group.update,
            tasks_running=all_running,
            checks_passing=all(c.status.status == "passing" for c in self.checks),
        )
        if not good:
            self._healthy_since = 0.0
        elif not self._healthy_since:
            self._healthy_since = time.time()
        return self._judge_deployment(good, states)

    def _judge_deployment(self, good: bool, states: list[TaskState]) -> bool:
        d = self.deploy
        if d is None or d.verdict is not None:
            return False
        obs = Observation(
            healthy=good and self.client_status == "running",
            restarts=sum(s.restarts for s in states),
            failed=self.description if self.client_status == "failed" else "",
            last_exit=self._last_exit,
            checks=[CheckStreak(c.check.name, c.failures, c.status.output) for c in self.checks],
        )
        verdict = d.observe(time.time(), obs)
        self._deploy_wake.set()
        if verdict is None:
            return False
        kind = "alloc.deployment_healthy" if verdict else "alloc.deployment_unhealthy"
        self.events.append(TaskEvent(type=kind, message=d.why))
        return True

    def _last_exit(self) -> str:
        """The latest exit of a task that exited, with the last line it wrote to stderr
        (e.g. "Address already in use"): what a user needs to see first."""
        exited = [r for r in self.tasks.values() if r.state.finished_at]
        if not exited:
            return ""
        r = max(exited, key=lambda r: r.state.finished_at)
        s = r.state
        how = f"killed by signal {s.signal}" if s.signal else f"exited with code {s.exit_code}"
        lines = read_tail(r.cfg.stderr_path, 2048).decode("utf-8", "replace").splitlines()
        last = next((ln.strip() for ln in reversed(lines) if ln.strip()), "")
        return f"task {r.name} {how}" + (f": {last[:200]}" if last else "")

    async def _watch_deployment(self) -> None:
        """Wake for the deployment's timers (min_healthy_time, healthy_deadline)."""
        d = self.deploy
        while d is not None and d.verdict is None:
            wait = d.next_check(time.time()) - time.time()
            self._deploy_wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.05, wait)):
                    await self._deploy_wake.wait()
            if d.verdict is None:
                self._changed()

    async def _sync_checks(self) -> None:
        """Report check results that changed only in output or time, at most every
        CHECK_SYNC seconds: `alloc status` stays fresh, the server is not flooded."""
        while True:
            await asyncio.sleep(CHECK_SYNC)
            if self._checks_unsynced:
                self._report()

    def healthy(self) -> bool | None:
        """Every task running and every check passing since their latest start (None:
        not known yet). A task between restarts is not healthy, whatever answers its port."""
        states = [r.state for r in self.tasks.values()]
        if self.client_status == "failed":
            return False
        if not all(s.state == "running" for s in states):
            started = any(s.started_at or s.restarts for s in states)
            return False if started and self.client_status == "running" else None
        if any(c.status.status == "pending" for c in self.checks):
            return None
        return all(c.status.status == "passing" for c in self.checks)

    def update(self) -> AllocUpdate:
        events, self.events = self.events, []
        return AllocUpdate(
            id=self.alloc.id,
            client_status=self.client_status,
            client_description=self.description,
            task_states={
                n: TaskState(**{f: getattr(r.state, f) for f in r.state.__struct_fields__})
                for n, r in self.tasks.items()
            },
            checks=[c.status for c in self.checks],
            healthy=self.healthy(),
            healthy_since=self._healthy_since,
            deployment_healthy=self.deploy.verdict if self.deploy else None,
            deployment_health_time=self.deploy.decided_at if self.deploy else 0.0,
            deployment_health_description=self.deploy.why if self.deploy else "",
            events=events,
        )

    # ----------------------------------------------------------------- life

    async def run(self) -> None:
        try:
            recovering = any(r.handle is not None for r in self.tasks.values())
            if self.templates is not None and not await self.templates.prepare(
                recovering=recovering
            ):
                self.finished.set()
                self._changed()  # failed (or stopped) before any task started
                return
            async with asyncio.TaskGroup() as tg:
                for r in self.tasks.values():
                    if r.state.state != "dead":
                        tg.create_task(r.run(), name=f"task:{short_alloc(self.alloc.id)}:{r.name}")
                helpers = [
                    tg.create_task(self._run_checks()),
                    tg.create_task(self._watch_deployment()),
                    tg.create_task(self._sync_checks()),
                ]
                if self.templates is not None:
                    helpers.append(tg.create_task(self.templates.run()))
                self._changed()
                await self._tasks_done()
                for h in helpers:
                    h.cancel()
            if self.templates is not None:  # the alloc ended: its secrets go
                await self.templates.hook.cleanup()
        finally:
            self.finished.set()
        self._changed()

    async def _tasks_done(self) -> None:
        while not all(r.done for r in self.tasks.values()):
            await asyncio.sleep(0.1)
            if any(r.state.failed for r in self.tasks.values()) and not self._stop_requested:
                # One task failing fails the alloc: stop its siblings.
                await self.stop(reason="a sibling task failed")

    async def _run_checks(self) -> None:
        if not self.checks:
            return
        await self._all_running.wait()
        async with asyncio.TaskGroup() as tg:
            for c in self.checks:
                tg.create_task(c.run())

    @property
    def stopping(self) -> bool:
        return self._stop_requested

    async def stop(self, *, reason: str = "stop requested", drain: bool = False) -> None:
        """Stop every task. With `drain` (the server stopped the alloc, so it has left the
        catalog already) wait the group's shutdown_delay first: clients move away."""
        if self._stop_requested:
            return
        self._stop_requested = True
        delay = self.group.shutdown_delay
        if drain and delay > 0 and self.client_status == "running":
            log.info(
                "alloc %s: shutdown_delay %.1fs before stopping", short_alloc(self.alloc.id), delay
            )
            await asyncio.sleep(delay)
        log.info("stopping alloc %s (%s): %s", short_alloc(self.alloc.id), self.alloc.name, reason)
        await asyncio.gather(*(r.stop() for r in self.tasks.values()), return_exceptions=True)

    async def restart(self) -> None:
        await asyncio.gather(*(r.restart() for r in self.tasks.values()), return_exceptions=True)

    async def wait_stopped(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.finished.wait()
