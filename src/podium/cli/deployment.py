"""`podium deployment …`: list, status (live progress), promote, fail, pause, resume."""

from __future__ import annotations

import sys
import time
from typing import Any

import click
from rich.live import Live

from podium.api.client import Client
from podium.cli.main import addr_option, json_option, namespace_option, timeout_option
from podium.cli.output import (
    ago,
    console,
    err_console,
    failure_lines,
    make_table,
    print_json,
    short_id,
    table,
)
from podium.errors import NotFound

_DONE = ("successful", "failed", "cancelled")
_COLOR = {
    "running": "cyan",
    "paused": "yellow",
    "successful": "green",
    "failed": "red",
    "cancelled": "dim",
}


@click.group()
def deployment() -> None:
    """Follow and steer rollouts of new job versions."""


@deployment.command("list")
@click.option("--job", default="", help="Only this job's deployments")
@json_option("the deployments")
@namespace_option
@addr_option
def list_(job: str, as_json: bool, namespace: str | None, addr: str | None) -> None:
    """Every deployment, newest first."""
    ds = Client(addr, namespace=namespace).deployments(job=job)
    if as_json:
        print_json(ds)
        return
    table(
        ["ID", "JOB", "VERSION", "STATUS", "DESCRIPTION", "CREATED"],
        [
            [short_id(d["id"]), d["job"], d["job_version"], d["status"], d["status_description"],
             ago(d["create_time"])]
            for d in ds
        ],
    )  # fmt: skip


@deployment.command()
@click.argument("ref")
@json_option("the deployment and its allocations (with --watch: each change)")
@click.option(
    "--watch",
    "-w",
    is_flag=True,
    help="Follow live until it ends; when the job's latest deployment has ended already, "
    "wait for the next one",
)
@timeout_option(600.0, "the deployment to end (with --watch)")
@namespace_option
@addr_option
def status(
    ref: str, as_json: bool, watch: bool, timeout: float, namespace: str | None, addr: str | None
) -> None:
    """A deployment (by job name or id): per group desired, canaries, placed, healthy.
    Exit status with --watch: 0 successful, 1 failed or cancelled, 2 still running."""
    c = Client(addr, namespace=namespace)
    if not watch:
        view = c.deployment(ref)
        if as_json:
            print_json(view)
        else:
            console.print(render(view))
        return
    deadline = time.monotonic() + timeout
    dep_id = _to_watch(c, ref, deadline)
    if dep_id is None:
        sys.exit(2)
    sys.exit(follow(c, dep_id, timeout=max(0.0, deadline - time.monotonic()), as_json=as_json))


def _to_watch(c: Client, ref: str, deadline: float) -> str | None:
    """The deployment `--watch` follows: REF's; or, when REF names a job whose latest
    deployment has ended (or that has none yet), the next one. None: none came in time."""
    try:
        view = c.deployment(ref)
    except NotFound:
        c.job(ref)  # no such job either: that NotFound is the error to show
        view = None
    d = view["deployment"] if view else None
    if d is not None and (d["status"] not in _DONE or d["job"] != ref):
        return str(d["id"])  # still running, or asked for by id: follow (or show) it
    seen = d["job_version"] if d else -1
    said = (
        f"deployment {short_id(d['id'])} of job {ref!r} (version {seen}) is {d['status']}"
        if d
        else f"job {ref!r} has no deployment yet"
    )
    err_console.print(f"{said}; waiting for the next deployment (Ctrl-C to stop)", markup=False)
    while time.monotonic() < deadline:
        time.sleep(0.25)
        for nxt in c.deployments(job=ref):
            if nxt["job_version"] > seen:
                return str(nxt["id"])
    err_console.print(f"no new deployment of job {ref!r} came in time", markup=False)
    return None


def follow(c: Client, dep_id: str, *, timeout: float, as_json: bool = False, job: str = "") -> int:
    """Live progress until the deployment ends: 0 successful, 1 failed/cancelled, 2 timeout.
    With `job`, a placement failure that lasts over a second ends it too (1), with why."""
    deadline = time.monotonic() + timeout
    view = c.deployment(dep_id)
    unplaced = _Unplaced(c, job)
    if as_json or not console.is_terminal:
        last = ""
        while True:
            d = view["deployment"]
            line = _line(d)
            if line != last:
                if as_json:
                    print_json(view)
                else:
                    console.print(line, markup=False, highlight=False)
                last = line
            if d["status"] in _DONE or time.monotonic() > deadline or unplaced.failed():
                break
            time.sleep(0.25)
            view = c.deployment(dep_id)
    else:
        with Live(render(view), console=console, refresh_per_second=8) as live:
            while view["deployment"]["status"] not in _DONE and time.monotonic() < deadline:
                time.sleep(0.25)
                view = c.deployment(dep_id)
                live.update(render(view))
                if unplaced.failed():
                    break
    if unplaced.lines:
        err_console.print("[red]placement failed:[/]")
        for ln in unplaced.lines:
            err_console.print(f"  {ln}", markup=False)
        return 1
    d = view["deployment"]
    if d["status"] == "successful":
        return 0
    return 1 if d["status"] in _DONE else 2


class _Unplaced:
    """Whether the job's copies cannot be placed (for a second: capacity may be freeing)."""

    def __init__(self, c: Client, job: str) -> None:
        self.c, self.job = c, job
        self.since: float | None = None
        self.lines: list[str] = []

    def failed(self) -> bool:
        if not self.job:
            return False
        failures = self.c.job(self.job)["placement_failures"]
        if not failures:
            self.since = None
            return False
        self.since = self.since or time.monotonic()
        if time.monotonic() - self.since <= 1.0:
            return False
        self.lines = failure_lines(failures)
        return True


def _line(d: dict[str, Any]) -> str:
    parts = [
        f"{g}: {v['healthy']}/{v['desired_total']} healthy"
        + (f", canaries {v['desired_canaries']}" if v["desired_canaries"] else "")
        + (" (promoted)" if v["promoted"] else "")
        + (f", {v['unhealthy']} unhealthy" if v["unhealthy"] else "")
        for g, v in d["groups"].items()
    ]
    return (
        f"deployment {short_id(d['id'])} v{d['job_version']} {d['status']}: "
        f"{'; '.join(parts)} — {d['status_description']}"
    )


def render(view: dict[str, Any]) -> Any:
    d = view["deployment"]
    color = _COLOR.get(d["status"], "white")
    now = time.time()
    rows = []
    for g, v in d["groups"].items():
        left = v["require_progress_by"] - now if v["require_progress_by"] else None
        rows.append(
            [
                g,
                v["desired_total"],
                v["desired_canaries"],
                "yes" if v["promoted"] else ("-" if not v["desired_canaries"] else "no"),
                v["placed"],
                f"[green]{v['healthy']}[/]",
                f"[red]{v['unhealthy']}[/]" if v["unhealthy"] else "0",
                "-" if left is None or d["status"] in _DONE else f"{max(0.0, left):.0f}s",
            ]
        )
    return make_table(
        ["GROUP", "DESIRED", "CANARIES", "PROMOTED", "PLACED", "HEALTHY", "UNHEALTHY",
         "PROGRESS DEADLINE"],
        rows,
        title=(
            f"deployment {short_id(d['id'])}  job {d['job']} version {d['job_version']}  "
            f"[{color}]{d['status']}[/]: {d['status_description']}"
        ),
    )  # fmt: skip


def _act(
    action: str,
    ref: str,
    addr: str | None,
    namespace: str | None,
    as_json: bool,
    groups: list[str] | None = None,
) -> None:
    view = Client(addr, namespace=namespace).deployment_action(ref, action, groups=groups)
    if as_json:
        print_json(view)
        return
    d = view["deployment"]
    console.print(f"deployment {short_id(d['id'])} ({d['job']} v{d['job_version']}): "
                  f"{d['status']} — {d['status_description']}", markup=False)  # fmt: skip


@deployment.command()
@click.argument("ref")
@click.option("--group", "groups", multiple=True, help="Only these groups (default: all)")
@json_option("the deployment as changed")
@namespace_option
@addr_option
def promote(
    ref: str, groups: tuple[str, ...], as_json: bool, namespace: str | None, addr: str | None
) -> None:
    """Promote the canaries: the rest of the old copies roll to the new version."""
    _act("promote", ref, addr, namespace, as_json, list(groups) or None)


@deployment.command()
@click.argument("ref")
@json_option("the deployment as changed")
@namespace_option
@addr_option
def fail(ref: str, as_json: bool, namespace: str | None, addr: str | None) -> None:
    """Fail a deployment now (rolls back to the last stable version with auto_revert)."""
    _act("fail", ref, addr, namespace, as_json)


@deployment.command()
@click.argument("ref")
@json_option("the deployment as changed")
@namespace_option
@addr_option
def pause(ref: str, as_json: bool, namespace: str | None, addr: str | None) -> None:
    """Pause a rollout: nothing more is replaced until `resume`."""
    _act("pause", ref, addr, namespace, as_json)


@deployment.command()
@click.argument("ref")
@json_option("the deployment as changed")
@namespace_option
@addr_option
def resume(ref: str, as_json: bool, namespace: str | None, addr: str | None) -> None:
    """Resume a paused rollout."""
    _act("resume", ref, addr, namespace, as_json)
