"""`podium job scaling status NAME`: what the autoscaler sees and did for a job's groups."""

from __future__ import annotations

import time
from typing import Any

import click

from podium.api.client import Client
from podium.cli.main import addr_option, namespace_option
from podium.cli.output import ago, console, print_json, table


@click.group()
def scaling() -> None:
    """Groups that scale themselves (a group's `scaling` block)."""


@scaling.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="The whole status as JSON")
@namespace_option
@addr_option
def status(name: str, as_json: bool, namespace: str | None, addr: str | None) -> None:
    """Figures, forecast, the last decisions and the next allowed change of each group."""
    data = Client(addr, namespace=namespace).job_scaling(name)
    if as_json:
        print_json(data)
        return
    for i, g in enumerate(data["groups"]):
        if i:
            console.print()
        _group(g)
    if data.get("leader"):
        console.print(f"\nlive figures: on the leader, {data['leader']}", markup=False)


def _group(g: dict[str, Any]) -> None:
    copies = "copy" if g["count"] == 1 else "copies"
    head = f"group {g['group']}: {g['count']} {copies} (min {g['min']}, max {g['max']})"
    if g.get("looked_at"):
        head += f", looked at {ago(g['looked_at'])}"
    if g.get("next_look"):
        head += f", next look {_when(g['next_look'])}"
    console.print(head, markup=False, highlight=False, style="bold")
    for f in g.get("figures", []):
        console.print(f"  {f['text']}", markup=False, highlight=False)
    fc = g.get("forecast")
    if fc:
        console.print(f"  {fc['text']}", markup=False, highlight=False)
    if g.get("wanted") is not None:
        console.print(f"  wanted: {g['wanted']}", markup=False)
    if g.get("held"):
        line = f"  held: {g['held']}"
        if g.get("next_change"):
            line += f" (next change {_when(g['next_change'])})"
        console.print(line, markup=False, highlight=False)
    elif g.get("live"):
        console.print("  next change: at the next look, if the figures ask for one", markup=False)
    if g.get("idle_for") is not None and g["min"] == 0:
        console.print(f"  idle for {g['idle_for']:.0f}s", markup=False)
    if g.get("note"):
        console.print(f"  ({g['note']})", markup=False, highlight=False)
    decisions = g.get("decisions", [])
    if decisions:
        rows = [[ago(d["time"]), d["before"], d["after"], d["reason"], d.get("held", "")]
                for d in decisions[:10]]  # fmt: skip
        table(["WHEN", "FROM", "TO", "WHY", "HELD"], rows, title=None)
    else:
        console.print("  no change yet", markup=False)


def _when(t: float) -> str:
    d = t - time.time()
    return "now" if d <= 0.5 else f"in {d:.0f}s"
