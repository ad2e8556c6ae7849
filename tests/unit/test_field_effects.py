"""Every field a job file accepts has an effect: a field added without one fails here.

FIELDS lists every user field of the job model (walked from `types.Job`; server fields
excepted), each with its proof:
- `Differs(base, change, observer)`: run here. The observer is the part of podium that
  consumes the field (the scheduler's plan, the agent's task setup, the reconciler's
  rollout and reschedule decisions, deployment health, a health probe against a real
  loopback server, the catalog's endpoint, the proxy's upstream listener, the cron
  schedule, dispatch's checks); it must see something different once the field changes.
- `Proven(test)`: a behavioural test elsewhere shows the effect end to end (a drain, a
  partition, the cron controller over time); it must exist.
`test_every_field_has_a_proof` fails for a model field missing from FIELDS.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import msgspec
import pytest

from podium.agent.alloc_runner import AllocHooks, AllocRunner
from podium.agent.deploy_health import (
    CheckStreak,
    DeploymentHealth,
    Observation,
    counts_as_healthy,
)
from podium.agent.health import CheckRunner, run_check
from podium.agent.proxy_manager import ProxyManager
from podium.autoscale import Reading, Series, Situation, Window, decide, forecast, propose
from podium.autoscale.forecast import step_for
from podium.autoscale.hpa import Proposal
from podium.model import spec
from podium.model import types as T
from podium.model.cron import next_time
from podium.scheduler import ClusterSnapshot, reconcile, schedule
from podium.scheduler.batch import progress
from podium.scheduler.preempt import Candidate
from podium.server.catalog import Catalog, _endpoint
from podium.server.dispatch import check as dispatch_check
from podium.server.state import ClusterState
from podium.store.memory import MemoryStore
from support.builders import make_alloc, make_node

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_700_000_000.0
AGENT_TEMPLATES = "tests/integration/test_agent_templates.py::test_files_modes_tmpfs_and_env"
SERVER_FIELDS = {"version", "stop", "submit_time", "submitted_by", "stable", "parent", "payload"}
SERVER_FIELDS |= {"revision", "config_versions"}


# ------------------------------------------------------------------ documents


def service() -> dict[str, Any]:
    return {
        "name": "app",
        "namespace": "default",
        "priority": 50,
        "meta": {"team": "a"},
        "constraints": [{"attribute": "${node.labels.zone}", "operator": "!=", "value": "c"}],
        "groups": [
            {
                "name": "web",
                "count": 3,
                "constraints": [
                    {"attribute": "${node.labels.rack}", "operator": "!=", "value": "r2"}
                ],
                "network": {"ports": {"http": {}, "admin": {}}},
                "meta": {"tier": "front"},
                "services": [
                    {
                        "name": "web",
                        "port": "http",
                        "tags": ["v1"],
                        "meta": {"weight": "2"},
                        "checks": [{"type": "http", "path": "/ok", "timeout": "100ms"}],
                    }
                ],
                "tasks": [
                    {
                        "name": "server",
                        "config": {"command": "sleep", "args": ["1"]},
                        "env": {"A": "1"},
                        "resources": {"cpu": 300, "memory": 64},
                        "kill_signal": "SIGINT",
                        "kill_timeout": "3s",
                        "upstreams": [{"service": "api", "local_port": 19001}],
                    }
                ],
            }
        ],
    }


def roomy() -> dict[str, Any]:
    """Without the group's constraint: three nodes to choose from."""
    doc = service()
    doc["groups"][0]["constraints"] = []
    return doc


def spread() -> dict[str, Any]:
    doc = roomy()
    doc["groups"][0] |= {
        "count": 6,
        "spread": [
            {"attribute": "${node.labels.zone}", "weight": 80, "targets": {"a": 80, "b": 20}},
            {"attribute": "${node.labels.rack}", "weight": 20},
        ],
    }
    return doc


def limited() -> dict[str, Any]:
    """A reschedule policy with every field away from its default."""
    doc = service()
    doc["groups"][0]["reschedule"] = {"attempts": 2, "interval": 120, "unlimited": False,
                                      "delay": 5, "max_delay": 60,
                                      "delay_function": "exponential"}  # fmt: skip
    return doc


def commanded() -> dict[str, Any]:
    doc = service()
    doc["groups"][0]["services"][0]["checks"] = [{"type": "command", "command": ["true"]}]
    return doc


def slow() -> dict[str, Any]:
    """Its check asks a path that answers after 0.3 s (over the 0.1 s timeout)."""
    doc = service()
    doc["groups"][0]["services"][0]["checks"][0]["path"] = "/slow"
    return doc


def big() -> dict[str, Any]:
    """Needs more room than the nodes have free: only preemption places all of it."""
    doc = service()
    doc["groups"][0]["count"] = 3
    doc["groups"][0]["tasks"][0]["resources"]["cpu"] = 1500
    return doc


def batch() -> dict[str, Any]:
    doc = service()
    doc["type"] = "batch"
    doc["groups"][0] |= {"count": 6, "parallelism": 3, "backoff_limit": 3, "active_deadline": 0}
    return doc


def cron() -> dict[str, Any]:
    doc = batch()
    doc["periodic"] = {"schedule": "0 9 * * *", "time_zone": "Europe/Berlin"}
    return doc


def dispatch() -> dict[str, Any]:
    doc = batch()
    doc["parameterized"] = {"payload": "optional", "meta_required": ["x"], "meta_optional": []}
    return doc


def scaled() -> dict[str, Any]:
    """An autoscaled group with every kind of policy."""
    doc = service()
    doc["groups"][0]["count"] = 2
    doc["groups"][0]["scaling"] = {
        "min": 1, "max": 8, "interval": 15, "scale_down_window": 60, "tolerance": 0.1,
        "idle_timeout": 300,
        "policies": [
            {"metric": "cpu", "target": 60}, {"metric": "rps", "target": 10},
            {"metric": "latency_p95", "target": 0.2}, {"metric": "concurrency", "target": 4},
            {"prometheus": "sum(a)", "target": 5},
            {"predictive": {"metric": "rps", "season": 3600, "lead": 300}},
        ],
    }  # fmt: skip
    return doc


def sleeper() -> dict[str, Any]:
    doc = scaled()
    doc["groups"][0]["scaling"] |= {"min": 0, "hold_timeout": 20, "hold_requests": 50}
    doc["groups"][0]["scaling"]["policies"].pop()  # no forecast to keep it awake
    return doc


def load(doc: dict[str, Any]) -> T.Job:
    return spec.validate(spec.canonicalize(doc))


def put(doc: dict[str, Any], path: str, value: Any) -> None:
    """Set `a.b.0.c` in a document (list indexes as numbers)."""
    *parents, last = path.split(".")
    node: Any = doc
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


# ------------------------------------------------------------------ observers

NODES = [
    make_node("a", labels={"zone": "a", "rack": "r1"}, drivers=("process", "docker"),
              cpu=2000, memory=2000),
    make_node("b", labels={"zone": "b", "rack": "r2"}, cpu=2000, memory=2000),
    make_node("c", labels={"zone": "c", "rack": "r1"}, datacenter="dc2", cpu=2000, memory=2000),
    make_node("d", labels={"zone": "a", "rack": "r2"}, cpu=2000, memory=2000),
]  # fmt: skip
OTHER = make_alloc("other", node="a", cpu=1000, memory=100, id="other-0")  # priority 40


def plan(job: T.Job) -> Any:
    """What the scheduler does with the job on NODES, where a priority-40 job runs."""
    snap = ClusterSnapshot.build(NODES, [OTHER])
    rec = reconcile(job, [], {n.id: n for n in NODES}, now=NOW)
    p = schedule(
        snap,
        job,
        rec,
        eval_id="e",
        now=NOW,
        preempt=lambda node_id: [Candidate(OTHER, 40)] if node_id == "a" else [],
    )
    placed = [
        (a.namespace, a.job, a.name, a.node_id, a.ports, msgspec.to_builtins(a.resources))
        for a in p.placements
    ]
    return placed, [f.message for f in p.failures], [x.alloc_id for x in p.preemptions]


def agent(job: T.Job, tmp: Path) -> Any:
    """How the agent sets the first group's tasks and checks up."""
    alloc = make_alloc(job, group=job.groups[0].name, node="a", ports={"http": 20001})
    hooks = AllocHooks(report=lambda u: None, save=lambda alloc_id, handles: None)
    drivers: dict[str, Any] = {"process": object(), "docker": object()}
    runner = AllocRunner(alloc, job, NODES[0], drivers, str(tmp / "data"), hooks)
    tasks = []
    for r in runner.tasks.values():
        env = {k: v for k, v in r.cfg.env.items() if k != "PATH"}
        tasks.append((r.name, env, r.cfg.driver_config, r.cfg.cpu, r.cfg.memory_mb, r.cfg.pids,
                      r.kill_signal, r.kill_timeout, r.batch, restarts(r)))  # fmt: skip
    checks = [(c.status.name, c.port) for c in runner.checks]
    return tasks, checks


def restarts(r: Any) -> list[float | None]:
    """The task runner's restart decisions after exits 30 s apart (its restart policy)."""
    out: list[float | None] = []
    r._restart_times = []
    for i in range(6):
        delay = r._next_delay()
        out.append(delay)
        if delay is None:
            break
        r._restart_times.append(time.monotonic() - 30 * (6 - i))
    return out


def rollout(job: T.Job) -> Any:
    """A new version of a 4-copy group over old copies: the deployment's decisions."""
    job = msgspec.structs.replace(job, version=1, submit_time=NOW)
    g = job.groups[0]
    job = msgspec.structs.replace(job, groups=[msgspec.structs.replace(g, count=4)])
    old = [make_alloc(job, group=g.name, index=i, node="b", version=0, id=f"old-{i}",
                      group_hash="old") for i in range(4)]  # fmt: skip
    rec = reconcile(job, old, {n.id: n for n in NODES}, now=NOW)
    dep = rec.deployment
    groups = {k: msgspec.to_builtins(v) for k, v in dep.groups.items()} if dep else {}
    return (
        [(p.index, p.reason, p.canary) for p in rec.place],
        [s.alloc_id for s in rec.stop],
        groups,
    )


def health(job: T.Job) -> Any:
    """The agent's deployment-health verdicts, its tasks running throughout: checks pass
    from 2 s on; never pass (no answer); or fail from the start (HTTP 500), failures in a
    row counted by a CheckRunner as on the agent."""
    update = job.groups[0].update
    out = []
    for passing_from in (2.0, 10_000.0):
        h = DeploymentHealth(update, started=0.0)
        t = 0.0
        while h.verdict is None and t < 1000:
            ok = counts_as_healthy(update, tasks_running=True, checks_passing=t >= passing_from)
            h.observe(t, Observation(healthy=ok, restarts=0))
            t += 0.5
        out.append((h.verdict, h.decided_at))
    runner = CheckRunner(T.Check(name="c"), address="127.0.0.1", port=1,
                         on_result=lambda *_: None)  # fmt: skip
    runner.reset(0.0, update.check_grace)
    h, t = DeploymentHealth(update, started=0.0), 0.0
    while h.verdict is None and t < 1000:
        runner._record(t, "critical", "HTTP 500")
        streak = CheckStreak("c", runner.failures, "HTTP 500")
        ok = counts_as_healthy(update, tasks_running=True, checks_passing=False)
        h.observe(t, Observation(healthy=ok, restarts=0, checks=[streak]))
        t += 0.5
    out.append((h.verdict, h.decided_at))
    return out


def reschedule(job: T.Job) -> Any:
    """Decisions about a copy that failed after 0-3 earlier reschedules, 50 s apart."""
    out = []
    for k in range(4):
        failed = make_alloc(job, group=job.groups[0].name, node="b", client="failed",
                            modify_time=NOW - 1, id="f", reschedule_count=k,
                            reschedule_times=[NOW - 50 * (k - j) for j in range(k)])  # fmt: skip
        rec = reconcile(job, [failed], {n.id: n for n in NODES}, now=NOW)
        out.append(([p.reason for p in rec.place], rec.reschedule_later,
                    [a.id for a in rec.exhausted]))  # fmt: skip
    return out


def lost(job: T.Job) -> Any:
    down = msgspec.structs.replace(NODES[1], status="down", status_time=NOW - 10)
    nodes = {n.id: n for n in NODES} | {"b": down}
    a = make_alloc(job, group=job.groups[0].name, node="b", id="x")
    rec = reconcile(job, [a], nodes, now=NOW)
    return [p.reason for p in rec.place], rec.reschedule_later


def batch_run(job: T.Job) -> Any:
    """A batch group mid-way: 2 done, 1 running, 2 failed tries."""
    g = job.groups[0].name
    have = [make_alloc(job, group=g, index=0, node="b", client="complete", id="c0"),
            make_alloc(job, group=g, index=1, node="b", client="complete", id="c1"),
            make_alloc(job, group=g, index=2, node="b", client="running", id="r2"),
            make_alloc(job, group=g, index=3, node="b", client="failed", id="f3",
                       reschedule_count=1, modify_time=NOW - 100)]  # fmt: skip
    job = msgspec.structs.replace(job, submit_time=NOW - 60)
    rec = reconcile(job, have, {n.id: n for n in NODES}, now=NOW)
    line = progress(job, job.groups[0], have, NOW).line()
    return [(p.index, p.reason) for p in rec.place], [s.reason for s in rec.stop], line


def endpoint(job: T.Job) -> Any:
    alloc = make_alloc(job, group="web", node="a", ports={"http": 20001, "admin": 8081})
    return msgspec.to_builtins(_endpoint(alloc, job.groups[0].services[0], NODES[0]))


def cron_times(job: T.Job) -> Any:
    assert job.periodic is not None
    t, out = NOW, []
    for _ in range(3):
        t = next_time(job.periodic, t)
        out.append(t)
    return out


def dispatched(job: T.Job) -> Any:
    tries = [({}, b""), ({"x": "1"}, b""), ({"x": "1"}, b"data"), ({"x": "1", "y": "2"}, b"")]
    return [[str(p) for p in dispatch_check(job, meta, payload)] for meta, payload in tries]


async def _probe_server() -> tuple[asyncio.Server, int, list[str]]:
    """A loopback HTTP server: 200 for GET /ok, 404 otherwise, 405 for other methods; it
    answers /slow after 0.3 s. Records each request line."""
    seen: list[str] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = (await reader.readline()).decode()
        seen.append(line.strip())
        method, path, _ = ([*line.split(), "", "", ""])[:3]
        if path == "/slow":
            await asyncio.sleep(0.3)
        code = 405 if method != "GET" else 200 if path in ("/ok", "/slow") else 404
        writer.write(f"HTTP/1.0 {code} X\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], seen


async def _in_task(command: list[str], timeout: float) -> tuple[int, bytes]:
    """A stand-in for the driver's exec, which runs a command check inside the task."""
    proc = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    return proc.returncode or 0, out


def probe(job: T.Job) -> Any:
    """One health probe of the first check against the loopback server, and how many
    probes its runner makes in 0.35 s."""

    async def go() -> Any:
        server, port, seen = await _probe_server()
        chk = job.groups[0].services[0].checks[0]
        try:
            status, output = await run_check(
                chk, address="127.0.0.1", port=port, run_in_task=_in_task
            )
            runner = CheckRunner(chk, address="127.0.0.1", port=port, run_in_task=_in_task,
                                 on_result=lambda *_: None)  # fmt: skip
            seen.clear()
            task = asyncio.create_task(runner.run())
            await asyncio.sleep(0.35)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return status, output.split(":")[0], len(seen)
        finally:
            server.close()
            await server.wait_closed()

    return asyncio.run(go())


def upstream(job: T.Job) -> Any:
    """What the node's proxy is asked to listen for, for the task's upstreams."""

    class Recorder:
        def __init__(self) -> None:
            self.calls: list[Any] = []

        async def listen_upstream(self, key: str, host: str, port: int, config: Any) -> None:
            self.calls.append((key, host, port, msgspec.to_builtins(config)))

    async def go() -> Any:
        pm = ProxyManager(None)  # type: ignore[arg-type]
        pm.proxy = Recorder()  # type: ignore[assignment]
        pm._watch = lambda namespace, name: None  # type: ignore[method-assign]
        pm.ready.set()
        await pm.ensure("alloc", job.namespace, job.groups[0].tasks[0].upstreams)
        return pm.proxy.calls  # type: ignore[attr-defined]

    return asyncio.run(go())


# The figures each policy reads in `autoscaled` (a look's load, scaled down over time).
FIGURES = {"cpu": 90.0, "memory": 30.0, "rps": 42.0, "latency_p95": 0.35, "concurrency": 9.0}
QUERIES = {"sum(a)": 17.0, "sum(b)": 3.0}


def demand(metric: str, t: float) -> float:
    """An hourly ramp per forecast metric (rps, concurrency, cpu cores): 5 to 35 requests/s."""
    scale = {"rps": 1.0, "concurrency": 0.4, "cpu": 0.05}[metric]
    return scale * (5 + 30 * (t % 3600) / 3600)


def autoscaled(job: T.Job) -> Any:
    """The autoscaler's decisions for the first group over looks `interval` apart while
    its load falls (after a rollout holds the second look) and then stops."""
    sc = job.groups[0].scaling
    if sc is None:
        return None
    window, count, last_change, out = Window(), job.groups[0].count, 0.0, []
    series = Series(step=60.0)
    t = NOW - 7200
    while t < NOW:  # two hours of history for the forecast
        for p in sc.policies:
            if p.predictive is not None:
                series.step = step_for(p.predictive.season, p.predictive.lead)
                series.add(t, demand(p.predictive.metric, t), 60, keep=10_000)
        t += 60
    for i, load in enumerate((1.0, 1.0, 0.3, 0.3, 0.1, 0.1, 0.0, 0.0)):
        now = NOW + i * sc.interval
        proposals, fc = [], None
        for p in sc.policies:
            if p.predictive is not None:
                f = forecast(series, now, p.predictive.season, p.predictive.lead)
                got = math.ceil(f.value / p.target) if f is not None else None
                fc = Proposal("forecast", got, f"forecast {f}")
                continue
            value = QUERIES.get(p.prometheus, FIGURES.get(p.metric, 0.0)) * load
            copies = (value,) * count if p.metric in ("cpu", "memory") else ()
            proposals.append(propose(Reading(p.metric, p.target, value=value, copies=copies),
                                     count, sc.tolerance))  # fmt: skip
        situation = Situation(
            now=now, current=count, proposals=tuple(proposals), forecast=fc,
            idle_for=max(0.0, now - NOW - 6 * sc.interval + 200), last_change=last_change,
            rollout="deployment d of version 2 is rolling out" if i == 1 else "",
        )  # fmt: skip
        d = decide(sc, situation, window)
        if d.count != count:
            last_change, count = now, d.count
        out.append((d.count, d.wanted, d.held, d.reason))
    return out


def sleeping(job: T.Job) -> Any:
    """What the catalog tells proxies about the job's services: may they sleep, how long
    does a request wait for them."""
    state = ClusterState(MemoryStore())
    state.jobs[job.key] = job
    catalog = Catalog(state)
    return [catalog.wake(job.namespace, svc.name) for g in job.groups for svc in g.services]


# -------------------------------------------------------------------- proofs


@dataclass(frozen=True)
class Differs:
    base: Callable[[], dict[str, Any]]
    change: dict[str, Any]  # path -> new value, applied to the base document
    observer: Callable[..., Any]


@dataclass(frozen=True)
class Proven:
    test: str  # "tests/...py::test_name"


G = "groups.0"
TASK = f"{G}.tasks.0"
CHECK = f"{G}.services.0.checks.0"


def d(base: Callable[[], dict[str, Any]], observer: Callable[..., Any], **change: Any) -> Differs:
    return Differs(base, {k.replace("__", "."): v for k, v in change.items()}, observer)


def D(path: str, value: Any, observer: Callable[..., Any], base: Any = service) -> Differs:
    return Differs(base, {path: value}, observer)


FIELDS: dict[str, Differs | Proven] = {
    "name": D("name", "other-name", plan),
    "namespace": D("namespace", "team-b", plan),
    "type": D("type", "system", plan),
    "priority": D("priority", 30, plan, big),
    "schedule": Differs(
        lambda: {**batch(), "type": "cron", "schedule": "0 9 * * *"},
        {"schedule": "0 10 * * *"},
        cron_times,
    ),
    "periodic": D("periodic", None, plan, cron),
    "periodic.schedule": D("periodic.schedule", "0 10 * * *", cron_times, cron),
    "periodic.time_zone": D("periodic.time_zone", "Asia/Tokyo", cron_times, cron),
    "periodic.concurrency": Proven(
        "tests/unit/test_periodic.py::test_concurrency_forbid_skips_a_run_while_the_last_one_runs"
    ),
    "periodic.starting_deadline": Proven(
        "tests/unit/test_periodic.py::test_starting_deadline_skips_a_late_run_with_an_event"
    ),
    "periodic.successful_history": Proven(
        "tests/unit/test_periodic.py::test_history_limits_purge_the_oldest_finished_runs"
    ),
    "periodic.failed_history": Proven(
        "tests/unit/test_periodic.py::test_history_limits_purge_the_oldest_finished_runs"
    ),
    "periodic.suspend": Proven(
        "tests/unit/test_periodic.py::"
        "test_suspend_launches_nothing_and_stop_and_purge_take_the_runs_along"
    ),
    "parameterized": D("parameterized", None, plan, dispatch),
    "parameterized.payload": D("parameterized.payload", "forbidden", dispatched, dispatch),
    "parameterized.meta_required": D("parameterized.meta_required", [], dispatched, dispatch),
    "parameterized.meta_optional": D("parameterized.meta_optional", ["y"], dispatched, dispatch),
    "constraints.attribute": D("constraints.0.attribute", "${node.labels.rack}", plan),  # != a
    "constraints.operator": D("constraints.0.operator", "=", plan),
    "constraints.value": D("constraints.0.value", "a", plan),
    "meta": D("meta", {"team": "b"}, agent),
    "groups.name": D(f"{G}.name", "api", plan),
    "groups.count": D(f"{G}.count", 4, plan),
    "groups.constraints.attribute": D(f"{G}.constraints.0.attribute", "${node.name}", plan),
    "groups.constraints.operator": D(f"{G}.constraints.0.operator", "=", plan),
    "groups.constraints.value": D(f"{G}.constraints.0.value", "r1", plan),
    "groups.restart.attempts": D(f"{G}.restart", {"attempts": 1}, agent),
    "groups.restart.interval": D(f"{G}.restart", {"interval": "10s"}, agent),
    "groups.restart.delay": D(f"{G}.restart", {"delay": "3s"}, agent),
    "groups.restart.mode": D(f"{G}.restart", {"mode": "delay"}, agent),
    "groups.reschedule.attempts": D(f"{G}.reschedule.attempts", 3, reschedule, limited),
    "groups.reschedule.interval": D(f"{G}.reschedule.interval", 30, reschedule, limited),
    "groups.reschedule.delay": D(f"{G}.reschedule.delay", 2, reschedule, limited),
    "groups.reschedule.max_delay": D(f"{G}.reschedule.max_delay", 8, reschedule, limited),
    "groups.reschedule.delay_function": D(
        f"{G}.reschedule.delay_function", "constant", reschedule, limited
    ),
    "groups.reschedule.unlimited": D(f"{G}.reschedule.unlimited", True, reschedule, limited),
    "groups.update.max_parallel": D(f"{G}.update", {"max_parallel": 2}, rollout),
    "groups.update.min_healthy_time": D(f"{G}.update", {"min_healthy_time": 1}, health),
    "groups.update.healthy_deadline": D(f"{G}.update", {"healthy_deadline": 60}, health),
    "groups.update.progress_deadline": D(f"{G}.update", {"progress_deadline": 900}, rollout),
    "groups.update.auto_revert": D(f"{G}.update", {"auto_revert": False}, rollout),
    "groups.update.auto_promote": D(f"{G}.update", {"auto_promote": True}, rollout),
    "groups.update.canary": D(f"{G}.update", {"canary": 1}, rollout),
    "groups.update.health_check": D(f"{G}.update", {"health_check": "task_states"}, health),
    "groups.update.unhealthy_after": D(f"{G}.update", {"unhealthy_after": 1}, health),
    "groups.update.check_grace": D(f"{G}.update", {"check_grace": 1}, health),
    "groups.network.ports": D(f"{G}.network.ports", {"http": {}, "web": {}, "admin": {}}, plan),
    "groups.network.ports.static": D(f"{G}.network.ports.admin", {"static": 9090}, plan),
    "groups.services.name": D(f"{G}.services.0.name", "www", endpoint),
    "groups.services.port": D(f"{G}.services.0.port", "admin", endpoint),
    "groups.services.tags": D(f"{G}.services.0.tags", ["v2"], endpoint),
    "groups.services.meta": D(f"{G}.services.0.meta", {"weight": "5"}, endpoint),
    "groups.services.ingress": Proven(
        "tests/integration/test_service_discovery.py::test_ingress_routes_by_host_and_path"
    ),
    "groups.services.ingress.host": Proven(
        "tests/integration/test_service_discovery.py::test_ingress_routes_by_host_and_path"
    ),
    "groups.services.ingress.path": Proven(
        "tests/integration/test_service_discovery.py::test_ingress_routes_by_host_and_path"
    ),
    "groups.services.checks.name": D(f"{CHECK}.name", "alive", agent),
    "groups.services.checks.type": D(f"{CHECK}.type", "tcp", probe),
    "groups.services.checks.port": D(f"{CHECK}.port", "admin", agent),
    "groups.services.checks.path": D(f"{CHECK}.path", "/missing", probe),
    "groups.services.checks.method": D(f"{CHECK}.method", "HEAD", probe),
    "groups.services.checks.command": D(f"{CHECK}.command", ["false"], probe, commanded),
    "groups.services.checks.interval": D(f"{CHECK}.interval", 0.1, probe),
    "groups.services.checks.timeout": D(f"{CHECK}.timeout", "500ms", probe, slow),
    "groups.tasks.name": D(f"{TASK}.name", "worker", agent),
    "groups.tasks.driver": d(
        roomy, plan, **{f"{TASK}__driver": "docker", f"{TASK}__config": {"image": "x"}}
    ),
    "groups.tasks.config": D(f"{TASK}.config", {"command": "sleep", "args": ["2"]}, agent),
    "groups.tasks.resources.cpu": D(f"{TASK}.resources.cpu", 400, plan),
    "groups.tasks.resources.memory": D(f"{TASK}.resources.memory", 128, plan),
    # The task's pids limit, handed to the driver (which sets pids.max: test_process_driver).
    "groups.tasks.resources.pids": D(f"{TASK}.resources.pids", 64, agent),
    "groups.tasks.env": D(f"{TASK}.env", {"A": "2"}, agent),
    # Configs and secrets: rendered by the agent's template hook, rolled out by the server.
    "groups.tasks.env.secret": Proven(AGENT_TEMPLATES),
    "groups.tasks.env.config": Proven(AGENT_TEMPLATES),
    "groups.tasks.env.key": Proven(AGENT_TEMPLATES),
    "groups.tasks.templates.destination": Proven(AGENT_TEMPLATES),
    "groups.tasks.templates.data": Proven(AGENT_TEMPLATES),
    "groups.tasks.templates.perms": Proven(AGENT_TEMPLATES),
    "groups.tasks.templates.env": Proven(AGENT_TEMPLATES),
    "groups.tasks.templates.source": Proven(
        "tests/integration/test_config_rollout.py::"
        "test_a_config_change_rolls_out_one_copy_at_a_time_and_a_bad_one_rolls_back"
    ),
    "groups.tasks.templates.change_mode": Proven(
        "tests/unit/test_configs.py::test_only_rolling_reads_change_the_groups_hash"
    ),
    "groups.tasks.templates.change_signal": Proven(
        "tests/integration/test_config_rollout.py::"
        "test_signal_mode_serves_the_new_value_from_the_same_process"
    ),
    "groups.tasks.templates.splay": Proven(
        "tests/integration/test_config_rollout.py::"
        "test_restart_mode_restarts_each_copy_after_its_own_splay"
    ),
    "groups.tasks.templates.reads": Proven(
        "tests/unit/test_configs.py::test_a_change_moves_each_reader_to_a_new_version_once"
    ),
    "groups.tasks.restart": D(f"{TASK}.restart", {"attempts": 0}, agent),
    "groups.tasks.restart.attempts": D(f"{TASK}.restart", {"attempts": 1}, agent),
    "groups.tasks.restart.interval": D(f"{TASK}.restart", {"interval": "10s"}, agent),
    "groups.tasks.restart.delay": D(f"{TASK}.restart", {"delay": "4s"}, agent),
    "groups.tasks.restart.mode": D(f"{TASK}.restart", {"mode": "delay"}, agent),
    "groups.tasks.kill_signal": D(f"{TASK}.kill_signal", "SIGTERM", agent),
    "groups.tasks.kill_timeout": D(f"{TASK}.kill_timeout", "9s", agent),
    "groups.tasks.upstreams.service": D(f"{TASK}.upstreams.0.service", "db", upstream),
    "groups.tasks.upstreams.local_port": D(f"{TASK}.upstreams.0.local_port", 19002, upstream),
    "groups.tasks.upstreams.mode": D(f"{TASK}.upstreams.0.mode", "http", upstream),
    "groups.tasks.upstreams.policy": D(f"{TASK}.upstreams.0.policy", "least_conn", upstream),
    "groups.tasks.upstreams.namespace": D(f"{TASK}.upstreams.0.namespace", "shared", upstream),
    "groups.spread": D(f"{G}.spread", True, plan, roomy),
    "groups.spreads.attribute": D(f"{G}.spread.0.attribute", "${node.labels.rack}", plan, spread),
    "groups.spreads.weight": D(f"{G}.spread.0.weight", 1, plan, spread),
    "groups.spreads.targets": D(f"{G}.spread.0.targets", {"a": 20, "b": 80}, plan, spread),
    "groups.meta": D(f"{G}.meta", {"tier": "back"}, agent),
    "groups.migrate.max_parallel": Proven(
        "tests/unit/test_drain_disconnect.py::test_drain_marks_at_most_max_parallel_per_group"
    ),
    "groups.disconnect.stop_after_disconnect": Proven(
        "tests/unit/test_drain_disconnect.py::test_stop_after_disconnect_picks_only_groups_that_ask"
    ),
    "groups.disconnect.lost_after": D(f"{G}.disconnect", {"lost_after": 60}, lost),
    "groups.disconnect.reconcile": Proven(
        "tests/unit/test_reconnect.py::test_keep_replacement_stops_the_original"
    ),
    "groups.shutdown_delay": Proven(
        "tests/integration/test_service_discovery.py::"
        "test_shutdown_delay_leaves_the_catalog_before_the_signal"
    ),
    "groups.completions": D(f"{G}.completions", 8, batch_run, lambda: _no_count(batch())),
    "groups.parallelism": D(f"{G}.parallelism", 4, batch_run, batch),
    "groups.backoff_limit": D(f"{G}.backoff_limit", 0, batch_run, batch),
    "groups.active_deadline": D(f"{G}.active_deadline", 30, batch_run, batch),
    "groups.scaling": D(f"{G}.scaling", None, autoscaled, scaled),
    "groups.scaling.min": D(f"{G}.scaling.min", 0, sleeping, scaled),
    "groups.scaling.max": D(f"{G}.scaling.max", 4, autoscaled, scaled),
    "groups.scaling.policies.metric": D(
        f"{G}.scaling.policies.0.metric", "memory", autoscaled, scaled
    ),
    "groups.scaling.policies.prometheus": D(
        f"{G}.scaling.policies.4.prometheus", "sum(b)", autoscaled, scaled
    ),
    "groups.scaling.policies.target": D(f"{G}.scaling.policies.1.target", 2, autoscaled, scaled),
    "groups.scaling.policies.predictive": D(
        f"{G}.scaling.policies.5", {"metric": "rps", "target": 10}, autoscaled, scaled
    ),
    "groups.scaling.policies.predictive.metric": D(
        f"{G}.scaling.policies.5.predictive.metric", "concurrency", autoscaled, scaled
    ),
    "groups.scaling.policies.predictive.season": D(
        f"{G}.scaling.policies.5.predictive.season", 1800, autoscaled, scaled
    ),
    "groups.scaling.policies.predictive.lead": D(
        f"{G}.scaling.policies.5.predictive.lead", 1200, autoscaled, scaled
    ),
    "groups.scaling.interval": D(f"{G}.scaling.interval", 40, autoscaled, scaled),
    "groups.scaling.cooldown": D(f"{G}.scaling.cooldown", 100, autoscaled, scaled),
    "groups.scaling.scale_down_window": D(f"{G}.scaling.scale_down_window", 0, autoscaled, scaled),
    "groups.scaling.tolerance": D(f"{G}.scaling.tolerance", 0.5, autoscaled, scaled),
    "groups.scaling.idle_timeout": D(f"{G}.scaling.idle_timeout", 100, autoscaled, sleeper),
    "groups.scaling.hold_timeout": D(f"{G}.scaling.hold_timeout", 60, sleeping, sleeper),
    "groups.scaling.hold_requests": D(f"{G}.scaling.hold_requests", 5, sleeping, sleeper),
    "groups.scaling.during_rollout": D(f"{G}.scaling.during_rollout", True, autoscaled, scaled),
}


def _no_count(doc: dict[str, Any]) -> dict[str, Any]:
    del doc["groups"][0]["count"]
    doc["groups"][0]["completions"] = 6
    return doc


def model_fields() -> list[str]:
    """Every user field of the job model that a proof must cover: leaves; optional
    blocks whose presence changes what a job is (periodic, parameterized, ingress, a
    task's own restart policy); maps whose keys are the user's names (port labels).
    Lists of structs are covered by their fields."""
    out: list[str] = []

    def walk(kind: type, prefix: str) -> None:
        hints = get_type_hints(kind)
        for name in kind.__struct_fields__:  # type: ignore[attr-defined]
            path = prefix + name
            if not prefix and name in SERVER_FIELDS:
                continue
            hint = hints[name]
            parts = get_args(hint) or (hint,)
            keyed = get_origin(hint) is dict
            structs = []
            for part in parts:
                for inner in get_args(part) or (part,):
                    if isinstance(inner, type) and issubclass(inner, msgspec.Struct):
                        structs.append(inner)
            optional = type(None) in parts
            if not structs or keyed or (optional and get_origin(hint) is not list):
                out.append(path)
            for struct in structs:
                walk(struct, path + ".")

    walk(T.Job, "")
    return out


def test_every_field_has_a_proof() -> None:
    fields = model_fields()
    missing = [f for f in fields if f not in FIELDS]
    stale = [f for f in FIELDS if f not in fields]
    assert not missing, f"fields with no proof that they have an effect: {missing}"
    assert not stale, f"proofs for fields the model does not have: {stale}"


@pytest.mark.parametrize("field", sorted(k for k, v in FIELDS.items() if isinstance(v, Proven)))
def test_proving_tests_exist(field: str) -> None:
    proof = FIELDS[field]
    assert isinstance(proof, Proven)
    path, _, name = proof.test.partition("::")
    tree = ast.parse((ROOT / path).read_text())
    names = {
        n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    assert name in names, f"{field}: {proof.test} does not exist"


@pytest.mark.parametrize("field", sorted(k for k, v in FIELDS.items() if isinstance(v, Differs)))
def test_changing_the_field_changes_what_podium_does(field: str, tmp_path: Path) -> None:
    proof = FIELDS[field]
    assert isinstance(proof, Differs)
    before = proof.base()
    after = copy.deepcopy(before)
    for path, value in proof.change.items():
        put(after, path, value)
    observe = proof.observer
    args = (tmp_path / "before",) if observe is agent else ()
    seen = observe(load(before), *args)
    args = (tmp_path / "after",) if observe is agent else ()
    assert observe(load(after), *args) != seen, f"{field} changed and nothing else did"
