"""`podium top`: nodes, jobs and allocs by CPU or memory, live (every 2 s) or once."""

from __future__ import annotations

import time
from typing import Any

import click
from rich.console import Group
from rich.live import Live
from rich.text import Text

from podium.api.client import Client
from podium.cli.main import addr_option, namespace_option
from podium.cli.output import alloc_short, console, make_table, mib, print_json


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> Any:
    return make_table(columns, [["-" if v is None else v for v in r] for r in rows], title=title)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}%"


def sort_key(by: str) -> Any:
    field = "cpu_percent" if by == "cpu" else "memory_bytes"
    return lambda row: -(row.get(field) or 0)


def render(data: dict[str, Any], *, by: str, limit: int) -> Group:
    nodes = [
        [
            n["name"],
            n["status"],
            _pct(n["cpu_percent"]),
            f"{n['reserved']['cpu']}/{n['offered']['cpu']} MHz",
            f"{mib(n['memory_bytes'])} / {n['offered']['memory']} MiB",
            f"{n['reserved']['memory']} MiB",
        ]
        for n in sorted(data["nodes"], key=sort_key(by))
    ]
    jobs = [
        [j["namespace"], j["job"], j["allocs"], _pct(j["cpu_percent"]),
         mib(j["memory_bytes"]), mib(j["memory_limit_bytes"])]
        for j in sorted(data["jobs"], key=sort_key(by))
    ]  # fmt: skip
    allocs = [
        [alloc_short(a["id"]), a["name"], a["node_name"], _pct(a["cpu_percent"]),
         mib(a["memory_bytes"]), mib(a["memory_limit_bytes"])]
        for a in sorted(data["allocations"], key=sort_key(by))[:limit]
    ]  # fmt: skip
    stamp = time.strftime("%H:%M:%S", time.localtime(data["time"])) if data["time"] else "-"
    return Group(
        Text(f"podium top — sorted by {by}, figures from {stamp} (CPU: % of one core)"),
        _table("nodes", ["NODE", "STATUS", "CPU", "CPU RESERVED", "MEMORY USED", "MEM RESERVED"],
               nodes),
        _table("jobs", ["NAMESPACE", "JOB", "COPIES", "CPU", "MEMORY", "MEM LIMIT"], jobs),
        _table("allocations", ["ID", "NAME", "NODE", "CPU", "MEMORY", "MEM LIMIT"], allocs),
    )  # fmt: skip


@click.command()
@click.option(
    "--sort",
    "by",
    type=click.Choice(["cpu", "memory"]),
    default="cpu",
    show_default=True,
    help="Biggest first by this",
)
@click.option("--once", is_flag=True, help="Print one view and exit (no live refresh)")
@click.option("--json", "as_json", is_flag=True, help="The figures as JSON (implies --once)")
@click.option(
    "--interval",
    default=2.0,
    show_default=True,
    type=click.FloatRange(min=0.5),
    help="Seconds between refreshes",
)
@click.option("--limit", default=20, show_default=True, help="Allocations shown")
@namespace_option
@addr_option
def top(
    by: str,
    once: bool,
    as_json: bool,
    interval: float,
    limit: int,
    namespace: str | None,
    addr: str | None,
) -> None:
    """Live resource use: nodes (used and reserved vs offered), jobs and allocations."""
    c = Client(addr, namespace=namespace)
    if as_json:
        print_json(c.usage())
        return
    if once:
        console.print(render(c.usage(), by=by, limit=limit))
        return
    try:
        with Live(render(c.usage(), by=by, limit=limit), console=console, screen=False) as live:
            while True:
                time.sleep(interval)
                live.update(render(c.usage(), by=by, limit=limit))
    except KeyboardInterrupt:
        pass
