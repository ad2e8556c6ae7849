"""`podium node …`: status, eligibility."""

from __future__ import annotations

import time

import click

from podium.api.client import Client
from podium.cli.main import addr_option
from podium.cli.output import ago, console, print_json, table


@click.group()
def node() -> None:
    """Inspect and manage nodes."""


def _status_word(n: dict) -> str:  # type: ignore[type-arg]
    word = n["status"]
    if n["drain"]:
        word += ",draining"
    if not n["eligible"]:
        word += ",ineligible"
    return str(word)


@node.command()
@click.argument("node_id", required=False)
@click.option("--json", "as_json", is_flag=True)
@addr_option
def status(node_id: str | None, as_json: bool, addr: str | None) -> None:
    """Nodes with their resources used and free (one node with NODE)."""
    c = Client(addr)
    nodes = [c.node(node_id)] if node_id else c.nodes()
    if as_json:
        print_json(nodes[0] if node_id else nodes)
        return
    table(
        [
            "ID",
            "NAME",
            "ADDRESS",
            "STATUS",
            "ALLOCS",
            "CPU USED/TOTAL",
            "MEMORY USED/TOTAL (MB)",
            "DRIVERS",
            "REGISTERED",
        ],
        [
            [
                n["id"][:8],
                n["name"],
                n["address"],
                _status_word(n),
                n["allocations"],
                f"{n['used']['cpu']}/{n['resources']['cpu']}",
                f"{n['used']['memory']}/{n['resources']['memory']}",
                ",".join(k for k, v in n["drivers"].items() if v["healthy"]),
                ago(n["register_time"]),
            ]
            for n in nodes
        ],
    )
    if node_id and nodes:
        n = nodes[0]
        console.print("\nlabels: " + (", ".join(f"{k}={v}" for k, v in n["labels"].items()) or "-"))
        for k, v in sorted(n["attributes"].items()):
            console.print(f"  {k} = {v}", markup=False)


@node.command()
@click.argument("node_id")
@click.option("--enable/--disable", "enable", required=True, help="Allow or refuse new placements")
@addr_option
def eligibility(node_id: str, enable: bool, addr: str | None) -> None:
    """Allow or refuse new placements on a node (running work stays)."""
    n = Client(addr).request("POST", f"/v1/node/{node_id}/eligibility", json={"eligible": enable})
    console.print(f"node {n['name']} is now {'eligible' if enable else 'ineligible'}")


@node.command()
@click.argument("node_id")
@click.option("--deadline", default=None, help="After this long (e.g. 10m), force the rest away")
@click.option("--detach", is_flag=True, help="Return once the drain has started")
@click.option("--disable", is_flag=True, help="Cancel a drain in progress")
@click.option("--timeout", default=3600.0, show_default=True, help="Seconds to follow progress")
@addr_option
def drain(
    node_id: str,
    deadline: str | None,
    detach: bool,
    disable: bool,
    timeout: float,
    addr: str | None,
) -> None:
    """Move every alloc off a node, each group's `migrate.max_parallel` at a time.

    When nothing is left the node becomes ineligible; `podium node eligibility
    NODE --enable` lets work back onto it.
    """
    c = Client(addr)
    n = c.drain_node(node_id, enable=not disable, deadline=deadline)
    if disable:
        console.print(f"node {n['name']}: drain cancelled")
        return
    console.print(f"node {n['name']} draining: {n['allocations']} allocs to move")
    if detach:
        return
    end = time.monotonic() + timeout
    last = ""
    while time.monotonic() < end:
        n = c.node(n["id"])
        if not n["drain"]:
            console.print(f"node {n['name']} drained: no allocs left; it is now ineligible")
            return
        mine = c.allocs(node=n["id"])
        moving = sorted(
            a["name"]
            for a in mine
            if a["desired_status"] == "stop" and a["client_status"] in ("pending", "running")
        )
        line = f"{n['allocations']} allocs left" + (
            f"; stopping {', '.join(moving)}" if moving else ""
        )
        if line != last:
            console.print(line, markup=False)
            last = line
        time.sleep(0.5)
    raise click.ClickException(f"node {n['name']} still draining after {timeout:g}s")
