"""What `job plan` says about a job's templates and the configs and secrets it reads.

    render_check: every template rendered (in the server's TemplateWorker, bounded) with
                  the data its pins name, on a node the plan would use, with placeholder
                  ports: a missing key, a bad filter or a syntax error is a validation
                  error at its path ("line 3: ..."), before anything runs
    config_changes: for each config or secret whose pinned version would move, the live
                  copies it touches and how: replaced (rolling) or restart/signal/noop in place

Rendered text is thrown away: a plan never returns it (it may hold secrets).
"""

from __future__ import annotations

from typing import Any

import msgspec

from podium.errors import Problem, ValidationError
from podium.model import data as datamodel
from podium.model.types import Allocation, Group, Job, Node, Plan, Task
from podium.scheduler.reconcile import Reconciliation
from podium.server import configs
from podium.server.catalog import Catalog
from podium.server.keyring import Keyring
from podium.server.state import ClusterState
from podium.templates import sandbox
from podium.templates.jobs import endpoint_view, node_view, path_of, sites
from podium.templates.worker import TemplateWorker


async def render_check(
    state: ClusterState,
    keyring: Keyring,
    worker: TemplateWorker,
    job: Job,
    plan: Plan,
    catalog: Catalog,
) -> None:
    """Raise ValidationError naming every template of `job` that does not render."""
    found = sites(job)
    if not found:
        return
    needs_secrets = any(r.startswith("secret:") for r in job.config_versions)
    config_data, secret_data = await configs.pinned_data(
        state, keyring, job.namespace, job.config_versions, secrets=needs_secrets
    )
    problems: list[Problem] = []
    for at, template in found:
        group = job.groups[at[0]]
        task = group.tasks[at[1]]
        services = {
            name: [
                endpoint_view(msgspec.to_builtins(e))
                for e in catalog.endpoints(job.namespace, name)
            ]
            for name in datamodel.service_reads(template)
        }
        inputs = sandbox.Inputs(
            configs=config_data,
            secrets=secret_data,
            services=services,
            env=_placeholder_env(job, group, task),
            node=node_view(_node_for(state, plan, job, group)),
            versions=job.config_versions,
        )
        try:
            await worker.render(path_of(at), template.data, inputs)
        except sandbox.TemplateError as e:
            problems.append(
                Problem(path_of(at), f"line {e.line}: {e.reason}" if e.line else e.reason)
            )
    if problems:
        raise ValidationError(problems)


def _node_for(state: ClusterState, plan: Plan, job: Job, group: Group) -> Node | None:
    """A node the group would run on: a planned placement's, a live copy's, or any ready one."""
    for p in plan.placements:
        if p.group == group.name and p.node_id in state.nodes:
            return state.nodes[p.node_id]
    for a in state.allocs_of_job(job.namespace, job.name):
        if a.group == group.name and a.live and a.node_id in state.nodes:
            return state.nodes[a.node_id]
    return next((n for n in state.nodes.values() if n.status == "ready"), None)


def _placeholder_env(job: Job, group: Group, task: Task) -> dict[str, str]:
    """The task's environment as far as it is known before placement (ports are 0)."""
    env = {
        "PODIUM_JOB": job.name,
        "PODIUM_NAMESPACE": job.namespace,
        "PODIUM_GROUP": group.name,
        "PODIUM_TASK": task.name,
        "PODIUM_ALLOC_INDEX": "0",
        "PODIUM_ALLOC_ID": "",
        "PODIUM_ALLOC_NAME": f"{job.name}.{group.name}[0]",
    }
    for label in group.network.ports:
        key = label.upper().replace("-", "_")
        env[f"PODIUM_PORT_{key}"] = "0"
        env[f"PODIUM_ADDR_{key}"] = "0.0.0.0:0"
    for k, v in task.env.items():
        if isinstance(v, str):
            env[k] = v
    return env


def config_changes(
    current: Job | None, candidate: Job, allocs: list[Allocation], rec: Reconciliation
) -> list[dict[str, Any]]:
    """Each pin that would move, and what happens to each live copy that reads it."""
    if current is None or current.stop:
        return []
    out = []
    for ref in sorted(set(current.config_versions) | set(candidate.config_versions)):
        old, new = current.config_versions.get(ref), candidate.config_versions.get(ref)
        if old == new or old is None or new is None:
            continue
        touched = []
        for a in allocs:
            group = candidate.group(a.group)
            if not a.live or group is None:
                continue
            action = _action(candidate.type, group, ref)
            if action:
                touched.append({"id": a.id, "name": a.name, "action": action})
        out.append({"ref": ref, "from": old, "to": new, "allocs": touched})
    return out


def _action(job_type: str, group: Group, ref: str) -> str:
    """replace (rolling) | restart | signal | noop | "" (the group does not read it)."""
    if ref in datamodel.rolling_refs(job_type, group):
        return "replace"
    modes: set[str] = set()
    for task in group.tasks:
        modes.update(t.change_mode for t in task.templates if ref in t.reads)
        if ref in datamodel.env_refs(task).values():
            modes.add("restart")
    for mode in ("restart", "signal", "noop"):
        if mode in modes:
            return mode
    return ""
