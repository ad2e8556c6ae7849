"""A job's templates, checked: syntax, and what each reads (set as `Template.reads`).

    job ──sites()──> (path, template) ──parse (here: the CLI; or a TemplateWorker: servers)
        ──> problems at groups[0].tasks[0].templates[1].data ("line 3: ...")
        ──> the job with every template's `reads` set

Servers parse through their worker (a template's text never runs on their event loop);
the CLI parses in its own process (`job validate` needs no server).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from podium.errors import Problem
from podium.model.types import Job, Node, Template
from podium.templates import sandbox

Site = tuple[tuple[int, int, int], Template]  # (group, task, template) indexes


def sites(job: Job) -> list[Site]:
    return [
        ((gi, ti, xi), template)
        for gi, g in enumerate(job.groups)
        for ti, t in enumerate(g.tasks)
        for xi, template in enumerate(t.templates)
    ]


def path_of(at: tuple[int, int, int], field: str = "data") -> str:
    gi, ti, xi = at
    return f"groups[{gi}].tasks[{ti}].templates[{xi}].{field}"


def _apply(
    job: Job, parsed: dict[tuple[int, int, int], sandbox.Parsed]
) -> tuple[Job, list[Problem]]:
    problems = [
        Problem(path_of(at), f"line {p.line}: {p.reason}" if p.line else p.reason)
        for at, result in parsed.items()
        for p in result.problems
    ]
    groups = []
    for gi, g in enumerate(job.groups):
        tasks = []
        for ti, t in enumerate(g.tasks):
            templates = [
                msgspec.structs.replace(x, reads=_reads(parsed[(gi, ti, xi)]))
                for xi, x in enumerate(t.templates)
            ]
            tasks.append(msgspec.structs.replace(t, templates=templates) if templates else t)
        groups.append(msgspec.structs.replace(g, tasks=tasks))
    return msgspec.structs.replace(job, groups=groups), problems


def _reads(parsed: sandbox.Parsed) -> list[str]:
    return sorted([*parsed.reads, *(f"service:{s}" for s in parsed.services)])


def check(job: Job) -> tuple[Job, list[Problem]]:
    """In this process (the CLI)."""
    if not any(t.templates for g in job.groups for t in g.tasks):
        return job, []
    parsed = {at: sandbox.parse(path_of(at), x.data) for at, x in sites(job)}
    return _apply(job, parsed)


async def check_with(
    job: Job, parse: Callable[[str, str], Awaitable[sandbox.Parsed]]
) -> tuple[Job, list[Problem]]:
    """Through `parse` (a TemplateWorker's: bounded, off the event loop)."""
    if not any(t.templates for g in job.groups for t in g.tasks):
        return job, []
    parsed = {at: await parse(path_of(at), x.data) for at, x in sites(job)}
    return _apply(job, parsed)


def node_view(node: Node | None) -> dict[str, Any]:
    """What a template sees as `node`."""
    if node is None:
        return {
            "id": "",
            "name": "",
            "address": "",
            "datacenter": "",
            "labels": {},
            "attributes": {},
        }
    return {
        "id": node.id,
        "name": node.name,
        "address": node.address,
        "datacenter": node.datacenter,
        "labels": dict(node.labels),
        "attributes": dict(node.attributes),
    }


def endpoint_view(endpoint: dict[str, Any]) -> dict[str, Any]:
    """What a template sees of one healthy endpoint (from the catalog's JSON)."""
    return {
        "address": endpoint.get("address", ""),
        "port": endpoint.get("port", 0),
        "node": endpoint.get("node_name", ""),
        "alloc": endpoint.get("alloc_id", ""),
        "tags": list(endpoint.get("tags", [])),
        "meta": dict(endpoint.get("meta", {})),
    }
