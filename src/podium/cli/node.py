"""`podium node …`: status, eligibility, drain, purge."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from podium.api.client import Client
from podium.cli.main import addr_option, json_option, timeout_option
from podium.cli.output import (
    ago,
    console,
    failure_lines,
    print_json,
    progress_to_stderr,
    short_id,
    table,
)


@click.group()
def node() -> None:
    """Inspect and manage nodes."""


def _status_word(n: dict[str, Any]) -> str:
    word = n["status"]
    if n["drain"]:
        word += ",draining"
    if not n["eligible"]:
        word += ",ineligible"
    return str(word)


@node.command()
@click.argument("node_id", required=False)
@json_option("the nodes (one node with NODE)")
@addr_option
def status(node_id: str | None, as_json: bool, addr: str | None) -> None:
    """Nodes with their resources used and free (one node with NODE)."""
    c = Client(addr)
    nodes = [c.node(node_id)] if node_id else c.nodes()
    if as_json:
        print_json(nodes[0] if node_id else nodes)
        return
    table(
        ["ID", "NAME", "ADDRESS", "STATUS", "ALLOCS", "CPU USED/TOTAL", "MEMORY USED/TOTAL (MB)",
         "DRIVERS", "REGISTERED"],
        [
            [short_id(n["id"]), n["name"], n["address"], _status_word(n), n["allocations"],
             f"{n['used']['cpu']}/{n['resources']['cpu']}",
             f"{n['used']['memory']}/{n['resources']['memory']}",
             ",".join(k for k, v in n["drivers"].items() if v["healthy"]),
             ago(n["register_time"])]
            for n in nodes
        ],
    )  # fmt: skip
    if node_id and nodes:
        n = nodes[0]
        console.print("\nlabels: " + (", ".join(f"{k}={v}" for k, v in n["labels"].items()) or "-"))
        for k, v in sorted(n["attributes"].items()):
            console.print(f"  {k} = {v}", markup=False)


@node.command()
@click.argument("node_id")
@click.option("--enable/--disable", "enable", required=True, help="Allow or refuse new placements")
@json_option("the node as changed")
@addr_option
def eligibility(node_id: str, enable: bool, as_json: bool, addr: str | None) -> None:
    """Allow or refuse new placements on a node (running work stays)."""
    n = Client(addr).request("POST", f"/v1/node/{node_id}/eligibility", json={"eligible": enable})
    if as_json:
        print_json(n)
        return
    console.print(f"node {n['name']} is now {'eligible' if enable else 'ineligible'}")


@node.command()
@click.argument("node_id")
@click.option("--deadline", default=None, help="After this long (e.g. 10m), force the rest away")
@click.option("--detach", is_flag=True, help="Return once the drain has started")
@click.option("--disable", is_flag=True, help="Cancel a drain in progress")
@timeout_option(3600.0, "the drain to finish (it goes on after)")
@json_option("the node as changed (once drained, with --detach at once)")
@addr_option
def drain(
    node_id: str,
    deadline: str | None,
    detach: bool,
    disable: bool,
    timeout: float,
    as_json: bool,
    addr: str | None,
) -> None:
    """Move every alloc off a node, each group's `migrate.max_parallel` at a time.

    While it waits, the progress line says what holds it up (no other eligible node,
    the scheduler's filter counts). When nothing is left the node becomes ineligible;
    `podium node eligibility NODE --enable` lets work back onto it.
    """
    c = Client(addr)
    with progress_to_stderr(as_json):
        n = c.drain_node(node_id, enable=not disable, deadline=deadline)
        if disable:
            console.print(f"node {n['name']}: drain cancelled")
            code = 0
        else:
            console.print(f"node {n['name']} draining: {n['allocations']} allocs to move")
            code = 0 if detach else _follow_drain(c, n, timeout)
    if as_json:
        print_json(c.node(n["id"]))
    sys.exit(code)


def _follow_drain(c: Client, n: dict[str, Any], timeout: float) -> int:
    end = time.monotonic() + timeout
    last = ""
    while time.monotonic() < end:
        n = c.node(n["id"])
        if not n["drain"]:
            console.print(f"node {n['name']} drained: no allocs left; it is now ineligible")
            return 0
        line = drain_progress(c, n)
        if line != last:
            console.print(line, markup=False, highlight=False)
            last = line
        time.sleep(0.5)
    console.print(f"node {n['name']} still draining after {timeout:g}s: {last}", markup=False)
    return 1


def drain_progress(c: Client, n: dict[str, Any]) -> str:
    """One line: what is left, what is moving, and what holds the rest up."""
    mine = [a for a in c.allocs(node=n["id"]) if a["client_status"] in ("pending", "running")]
    stopping = sorted(a["name"] for a in mine if a["desired_status"] == "stop")
    line = f"{n['allocations']} allocs left" + (
        f"; stopping {', '.join(stopping)}" if stopping else ""
    )
    waiting = [a for a in mine if a["migrate"] and a["desired_status"] == "run"]
    if not waiting:
        return line
    nodes = c.nodes()
    others = [
        x
        for x in nodes
        if x["id"] != n["id"] and x["status"] == "ready" and x["eligible"] and not x["drain"]
    ]
    blocks = []
    if not others:
        rest = [f"{x['name']} {_status_word(x)}" for x in nodes if x["id"] != n["id"]]
        blocks.append(
            f"no other eligible node ({len(nodes)} node(s): {n['name']} draining"
            + "".join(f", {r}" for r in rest)
            + ")"
        )
    for namespace, job in sorted({(a["namespace"], a["job"]) for a in waiting}):
        groups = {a["group"] for a in waiting if a["job"] == job and a["namespace"] == namespace}
        failures = [
            f for f in c.job(job, namespace=namespace)["placement_failures"] if f["group"] in groups
        ]
        blocks += [f"job {job!r} {ln}" for ln in failure_lines(failures)]
    moving = ", ".join(sorted(a["name"] for a in waiting))
    if blocks:
        return f"{line}; waiting to move {moving}: " + "; ".join(blocks)
    return f"{line}; moving {moving}"


@node.command()
@click.argument("node_id")
@click.option(
    "--force", is_flag=True, help="Purge even a ready node (its agent would register again)"
)
@json_option("the node as it was")
@addr_option
def purge(node_id: str, force: bool, as_json: bool, addr: str | None) -> None:
    """Forget a node that is down for good: its record goes, and copies it still held are
    replaced elsewhere. A ready node is refused unless --force."""
    params = {"force": "true"} if force else {}
    n = Client(addr).request("DELETE", f"/v1/node/{node_id}", params=params)
    if as_json:
        print_json(n)
        return
    console.print(f"node {n['name']} ({short_id(n['id'])}, {n['status']}) purged")
