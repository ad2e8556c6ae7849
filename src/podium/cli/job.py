"""`podium job …`: run, plan, status, stop, history, validate."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from podium.api.client import Client
from podium.cli.main import addr_option
from podium.cli.output import ago, console, err_console, failure_lines, print_json, table
from podium.model import spec as jobspec


def _read(path: str) -> dict[str, Any]:
    """Parse the file locally (syntax errors with line numbers); the server validates fully."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise click.ClickException(f"cannot read {path}: {e.strerror}") from None
    doc: dict[str, Any] = jobspec.parse_job_text(text, filename=path)
    return doc


@click.group()
def job() -> None:
    """Submit and inspect jobs."""


@job.command()
@click.argument("file")
@addr_option
def validate(file: str, addr: str | None) -> None:
    """Check a job file: every problem, with its path. Works without a server."""
    raw = _read(file)
    j = jobspec.validate(jobspec.canonicalize(raw))
    console.print(
        f"[green]ok[/] job {j.name!r}: {len(j.groups)} group(s), "
        f"{sum(g.count for g in j.groups)} alloc(s)"
    )


@job.command()
@click.argument("file")
@click.option("--detach", is_flag=True, help="Return once submitted; do not wait")
@click.option(
    "--check-index",
    type=int,
    default=None,
    help="Refuse if the job changed since `job plan` printed this index",
)
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait for health")
@addr_option
def run(file: str, detach: bool, check_index: int | None, timeout: float, addr: str | None) -> None:
    """Submit a job and follow it until every copy is running and healthy."""
    raw = _read(file)
    c = Client(addr)
    resp = c.register_job(raw, check_index=check_index)
    name = resp["name"]
    what = "registered" if resp["changed"] else "unchanged"
    console.print(f"job {name!r} version {resp['version']} {what} (index {resp['index']})")
    if detach:
        return
    sys.exit(_monitor(c, name, resp["version"], timeout))


def _monitor(c: Client, name: str, version: int, timeout: float) -> int:
    """Progress until healthy (0), failed (1) or the timeout (1)."""
    deadline = time.monotonic() + timeout
    last = ""
    first_failure_at: float | None = None
    with console.status("placing…") as status:
        while time.monotonic() < deadline:
            s = c.job(name)
            jobd = s["job"]
            cur = [
                a
                for a in s["allocations"]
                if a["job_version"] == jobd["version"] and a["desired_status"] == "run"
            ]
            groups = s["groups"]
            desired = sum(g["desired"] for g in groups.values())
            placed = len(cur)
            running = sum(1 for a in cur if a["client_status"] == "running")
            healthy = sum(1 for a in cur if a["client_status"] == "running" and a["healthy"])
            complete = sum(1 for a in cur if a["client_status"] == "complete")
            line = f"{placed}/{desired} placed, {running} running, {healthy} healthy" + (
                f", {complete} complete" if complete else ""
            )
            status.update(line)
            if line != last:
                if not console.is_terminal:
                    console.print(line)
                last = line
            if s["placement_failures"]:
                # Give the scheduler one more round (capacity may be freeing up), then report.
                first_failure_at = first_failure_at or time.monotonic()
                if time.monotonic() - first_failure_at > 1.0:
                    status.stop()
                    err_console.print("[red]placement failed:[/]")
                    for ln in failure_lines(s["placement_failures"]):
                        err_console.print(f"  {ln}", markup=False)
                    return 1
            else:
                first_failure_at = None
            failed = [a for a in cur if a["client_status"] == "failed"]
            if failed:
                status.stop()
                err_console.print(f"[red]{len(failed)} allocation(s) failed:[/]")
                for a in failed:
                    err_console.print(
                        f"  {a['name']} ({a['id'][:8]}): {a['client_description']}", markup=False
                    )
                return 1
            if jobd["type"] in ("batch", "cron"):
                if s["status"] == "complete":
                    console.print(f"[green]job {name!r} complete[/]: {line}")
                    return 0
            elif desired and healthy >= desired:
                console.print(f"[green]job {name!r} healthy[/]: {line}")
                return 0
            elif desired == 0 and not cur:
                console.print(f"job {name!r}: nothing to run (count 0)")
                return 0
            time.sleep(0.2)
    err_console.print(f"[red]timed out after {timeout:g}s[/]: {last}")
    return 1


@job.command()
@click.argument("file")
@click.option("--json", "as_json", is_flag=True)
@addr_option
def plan(file: str, as_json: bool, addr: str | None) -> None:
    """Dry run: what would change and what the scheduler would do. Changes nothing."""
    raw = _read(file)
    p = Client(addr).plan_job(raw)
    if as_json:
        print_json(p)
        return
    if not p["changed"]:
        console.print("no changes")
    for d in p["diff"]:
        sign = {"added": "[green]+[/]", "removed": "[red]-[/]", "changed": "[yellow]~[/]"}[
            d["kind"]
        ]
        detail = (
            f"{d['old']!r} => {d['new']!r}"
            if d["kind"] == "changed"
            else repr(d["new"] if d["kind"] == "added" else d["old"])
        )
        console.print(f"{sign} {d['path']}: {detail}", markup=True, highlight=False)
    console.print(
        f"scheduler: {p['create']} to create, {p['replace']} to replace, "
        f"{p['stop']} to stop, {p['unchanged']} unchanged"
    )
    for ln in failure_lines(p["failures"]):
        err_console.print(f"[red]would fail:[/] {ln}")
    console.print(
        f"\nindex {p['index']}: to run exactly this plan, "
        f"`podium job run --check-index {p['index']} {file}`"
    )
    if p["failures"]:
        sys.exit(1)


@job.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True)
@addr_option
def status(name: str | None, as_json: bool, addr: str | None) -> None:
    """A job's groups and allocations (all jobs without NAME)."""
    c = Client(addr)
    if name is None:
        jobs = c.jobs()
        if as_json:
            print_json(jobs)
            return
        table(
            ["NAME", "TYPE", "VERSION", "STATUS", "SUBMITTED"],
            [
                [j["name"], j["type"], j["version"], j["status"], ago(j["submit_time"])]
                for j in jobs
            ],
        )
        return
    s = c.job(name)
    if as_json:
        print_json(s)
        return
    j = s["job"]
    console.print(
        f"[bold]{j['name']}[/]  type={j['type']}  version={j['version']}  "
        f"status={s['status']}  namespace={j['namespace']}"
    )
    table(
        [
            "GROUP",
            "DESIRED",
            "PENDING",
            "RUNNING",
            "HEALTHY",
            "COMPLETE",
            "FAILED",
            "LOST",
            "RESTARTS",
        ],
        [
            [
                g,
                v["desired"],
                v["pending"],
                v["running"],
                v["healthy"],
                v["complete"],
                v["failed"],
                v["lost"],
                v["restarts"],
            ]
            for g, v in s["groups"].items()
        ],
    )
    for ln in failure_lines(s["placement_failures"]):
        err_console.print(f"[red]placement failure:[/] {ln}")
    console.print()
    table(
        [
            "ID",
            "NAME",
            "NODE",
            "VERSION",
            "DESIRED",
            "STATUS",
            "HEALTHY",
            "RESTARTS",
            "PORTS",
            "CREATED",
        ],
        [
            [
                a["id"][:8],
                a["name"],
                a["node_name"],
                a["job_version"],
                a["desired_status"],
                a["client_status"],
                {True: "yes", False: "no", None: "-"}[a["healthy"]],
                a["restarts"],
                ",".join(f"{k}={v}" for k, v in a["ports"].items()),
                ago(a["create_time"]),
            ]
            for a in s["allocations"]
        ],
    )


@job.command()
@click.argument("name")
@click.option("--purge", is_flag=True, help="Remove the job and its history entirely")
@click.option("--detach", is_flag=True, help="Return at once; do not wait for allocs to stop")
@click.option("--timeout", default=120.0, show_default=True)
@addr_option
def stop(name: str, purge: bool, detach: bool, timeout: float, addr: str | None) -> None:
    """Stop every allocation of a job."""
    c = Client(addr)
    ids = [a["id"] for a in c.allocs(job=name)]
    c.stop_job(name, purge=purge)
    console.print(f"job {name!r} {'purged' if purge else 'stopping'}")
    if detach:
        return
    deadline = time.monotonic() + timeout
    with console.status("stopping…") as st:
        while time.monotonic() < deadline:
            allocs = [a for a in c.allocs(job=name) if a["id"] in ids]
            live = [a for a in allocs if a["client_status"] in ("pending", "running")]
            st.update(f"{len(ids) - len(live)}/{len(ids)} allocations stopped")
            if not live:
                console.print(f"[green]job {name!r} stopped[/]: {len(ids)} allocation(s) down")
                return
            time.sleep(0.2)
    err_console.print("[red]timed out waiting for allocations to stop[/]")
    sys.exit(1)


@job.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@addr_option
def history(name: str, as_json: bool, addr: str | None) -> None:
    """Every version of a job, newest first, with what changed."""
    vs = Client(addr).job_versions(name)
    if as_json:
        print_json(vs)
        return
    for v in vs:
        console.print(f"[bold]version {v['version']}[/]  submitted {ago(v['submit_time'])}")
        for d in v["diff"]:
            console.print(f"    {d['kind']:8} {d['path']}", markup=False)
