"""`podium service …`: the catalog — which services exist and their healthy endpoints."""

from __future__ import annotations

import sys

import click

from podium.api.client import Client
from podium.cli.main import addr_option, json_option, namespace_option
from podium.cli.output import alloc_short, console, err_console, print_json, table


@click.group()
def service() -> None:
    """Inspect services: healthy endpoints drawn from running allocations."""


@service.command("list")
@json_option("the services")
@namespace_option
@addr_option
def list_(namespace: str | None, as_json: bool, addr: str | None) -> None:
    """Every service with its healthy and total copies, tags and ingress routes."""
    rows = Client(addr).services(namespace=namespace)["services"]
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("no services")
        return
    table(
        ["NAME", "NAMESPACE", "HEALTHY", "TAGS", "INGRESS"],
        [
            [
                r["name"],
                r["namespace"],
                f"{r['healthy']}/{r['total']}",
                ",".join(r["tags"]) or "-",
                ", ".join(f"{i['host'] or '*'}{i['path']}" for i in r["ingress"]) or "-",
            ]
            for r in rows
        ],
    )


@service.command()
@click.argument("name")
@click.option("--tag", default="", help="Only endpoints carrying this tag")
@json_option("the service and its healthy endpoints")
@namespace_option
@addr_option
def status(name: str, tag: str, as_json: bool, namespace: str | None, addr: str | None) -> None:
    """A service's healthy endpoints (address:port, node, alloc, tags)."""
    c = Client(addr, namespace=namespace)
    namespace = c.ns()
    data = c.service(name, tag=tag)
    if as_json:
        print_json(data)
        if not data["known"]:
            sys.exit(1)
        return
    if not data["known"]:
        err_console.print(f"[red]Error:[/] no service {name!r} in namespace {namespace!r}")
        sys.exit(1)
    endpoints = data["endpoints"]
    console.print(f"service {name}: {len(endpoints)} healthy endpoint(s)")
    if endpoints:
        table(
            ["ADDRESS", "NODE", "ALLOC", "JOB", "TAGS"],
            [
                [
                    f"{e['address']}:{e['port']}",
                    e["node_name"],
                    alloc_short(e["alloc_id"]),
                    f"{e['job']}.{e['group']}",
                    ",".join(e["tags"]) or "-",
                ]
                for e in endpoints
            ],
        )
