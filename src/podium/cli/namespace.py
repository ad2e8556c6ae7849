"""`podium namespace …`: create, list, status, delete (refused while it holds anything)."""

from __future__ import annotations

from typing import Any

import click

from podium.api.client import Client
from podium.cli.main import addr_option
from podium.cli.output import console, print_json, table


@click.group()
def namespace() -> None:
    """Namespaces: each job, alloc, deployment, service and event belongs to one."""


@namespace.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON")
@addr_option
def list_(as_json: bool, addr: str | None) -> None:
    """Namespaces you may read, with their jobs and live allocations."""
    rows = Client(addr).request("GET", "/v1/namespaces")
    if as_json:
        print_json(rows)
        return
    table(
        ["NAME", "JOBS", "ALLOCS", "DESCRIPTION"],
        [[r["name"], r["jobs"], r["allocations"], r["description"] or "-"] for r in rows],
    )


@namespace.command()
@click.argument("name")
@click.option("--description", default="", help="What it is for (shown in lists)")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON")
@addr_option
def create(name: str, description: str, as_json: bool, addr: str | None) -> None:
    """Create namespace NAME."""
    out = Client(addr).request(
        "POST", "/v1/namespaces", json={"name": name, "description": description}
    )
    if as_json:
        print_json(out)
        return
    console.print(f"namespace {out['name']} created")


@namespace.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON")
@addr_option
def status(name: str, as_json: bool, addr: str | None) -> None:
    """A namespace: what it holds, against its quota."""
    out = Client(addr).request("GET", f"/v1/namespace/{name}")
    if as_json:
        print_json(out)
        return
    _show(out)


def _show(out: dict[str, Any]) -> None:
    console.print(f"namespace {out['name']}: {out['jobs']} job(s), {out['allocations']} "
                  "live allocation(s)")  # fmt: skip
    quota, used = out.get("quota") or {}, out["used"]
    table(
        ["", "USED", "QUOTA"],
        [
            [f"{field} ({unit})", used[field], quota.get(field) or "-"]
            for field, unit in (
                ("cpu", "MHz"),
                ("memory", "MB"),
                ("allocs", "allocations"),
                ("jobs", "jobs"),
            )
        ],
    )


@namespace.group()
def quota() -> None:
    """A namespace's quota: the most its live allocations and jobs may hold."""


@quota.command("set")
@click.argument("name")
@click.option("--cpu", default=0, help="MHz over all live allocations (0: no limit)")
@click.option("--memory", default=0, help="MB over all live allocations (0: no limit)")
@click.option("--allocs", default=0, help="Live allocations (0: no limit)")
@click.option("--jobs", default=0, help="Jobs not stopped (0: no limit)")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON")
@addr_option
def quota_set(
    name: str, cpu: int, memory: int, allocs: int, jobs: int, as_json: bool, addr: str | None
) -> None:
    """Set NAME's quota (every figure 0: none). A submission or scale past it is refused;
    what runs already is never stopped."""
    body = {"cpu": cpu, "memory": memory, "allocs": allocs, "jobs": jobs}
    out = Client(addr).request("PUT", f"/v1/namespace/{name}/quota", json=body)
    if as_json:
        print_json(out)
        return
    _show(out)


@namespace.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON")
@addr_option
def delete(name: str, as_json: bool, addr: str | None) -> None:
    """Delete namespace NAME (refused while it holds jobs, configs or secrets)."""
    out = Client(addr).request("DELETE", f"/v1/namespace/{name}")
    if as_json:
        print_json(out)
        return
    console.print(f"namespace {name} deleted")
