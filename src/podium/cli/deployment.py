"""`podium deployment …`: list, status (live progress), promote, fail, pause, resume."""

from __future__ import annotations

import sys
import time
from typing import Any

import click
from rich.live import Live
from rich.table import Table

from podium.api.client import Client
from podium.cli.main import addr_option, namespace_option
from podium.cli.output import ago, console, err_console, failure_lines, print_json, table

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
@click.option("--json", "as_json", is_flag=True)
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
            [d["id"][:8], d["job"], d["job_version"], d["status"], d["status_description"],
             ago(d["create_time"])]
            for d in ds
        ],
    )  # fmt: skip


@deployment.command()
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
@click.option("--watch", "-w", is_flag=True, help="Follow live until the deployment ends")
@click.option("--timeout", default=600.0, show_default=True, help="Seconds to follow")
@namespace_option
@addr_option
def status(
    ref: str, as_json: bool, watch: bool, timeout: float, namespace: str | None, addr: str | None
) -> None:
    """A deployment (by job name or id): per group desired, canaries, placed, healthy.
    Exit status with --watch: 0 successful, 1 failed or cancelled, 2 still running."""
    c = Client(addr, namespace=namespace)
    view = c.deployment(ref)
    if as_json and not watch:
        print_json(view)
        return
    if not watch:
        console.print(render(view))
        return
    sys.exit(follow(c, view["deployment"]["id"], timeout=timeout, as_json=as_json))


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
        f"deployment {d['id'][:8]} v{d['job_version']} {d['status']}: "
        f"{'; '.join(parts)} — {d['status_description']}"
    )


def render(view: dict[str, Any]) -> Table:
    d = view["deployment"]
    color = _COLOR.get(d["status"], "white")
    t = Table(
        title=(
            f"deployment {d['id'][:8]}  job {d['job']} version {d['job_version']}  "
            f"[{color}]{d['status']}[/]: {d['status_description']}"
        ),
        title_justify="left",
    )
    for col in ("GROUP", "DESIRED", "CANARIES", "PROMOTED", "PLACED", "HEALTHY", "UNHEALTHY",
                "PROGRESS DEADLINE"):  # fmt: skip
        t.add_column(col)
    now = time.time()
    for g, v in d["groups"].items():
        left = v["require_progress_by"] - now if v["require_progress_by"] else None
        t.add_row(
            g,
            str(v["desired_total"]),
            str(v["desired_canaries"]),
            "yes" if v["promoted"] else ("-" if not v["desired_canaries"] else "no"),
            str(v["placed"]),
            f"[green]{v['healthy']}[/]",
            f"[red]{v['unhealthy']}[/]" if v["unhealthy"] else "0",
            "-" if left is None or d["status"] in _DONE else f"{max(0.0, left):.0f}s",
        )
    return t


def _act(
    action: str,
    ref: str,
    addr: str | None,
    namespace: str | None,
    groups: list[str] | None = None,
) -> None:
    view = Client(addr, namespace=namespace).deployment_action(ref, action, groups=groups)
    d = view["deployment"]
    console.print(f"deployment {d['id'][:8]} ({d['job']} v{d['job_version']}): {d['status']}"
                  f" — {d['status_description']}", markup=False)  # fmt: skip


@deployment.command()
@click.argument("ref")
@click.option("--group", "groups", multiple=True, help="Only these groups (default: all)")
@namespace_option
@addr_option
def promote(ref: str, groups: tuple[str, ...], namespace: str | None, addr: str | None) -> None:
    """Promote the canaries: the rest of the old copies roll to the new version."""
    _act("promote", ref, addr, namespace, list(groups) or None)


@deployment.command()
@click.argument("ref")
@namespace_option
@addr_option
def fail(ref: str, namespace: str | None, addr: str | None) -> None:
    """Fail a deployment now (rolls back to the last stable version with auto_revert)."""
    _act("fail", ref, addr, namespace)


@deployment.command()
@click.argument("ref")
@namespace_option
@addr_option
def pause(ref: str, namespace: str | None, addr: str | None) -> None:
    """Pause a rollout: nothing more is replaced until `resume`."""
    _act("pause", ref, addr, namespace)


@deployment.command()
@click.argument("ref")
@namespace_option
@addr_option
def resume(ref: str, namespace: str | None, addr: str | None) -> None:
    """Resume a paused rollout."""
    _act("resume", ref, addr, namespace)
