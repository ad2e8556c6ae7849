"""`podium server members`: which servers are up, which one leads and since when."""

from __future__ import annotations

import time

import click

from podium.api.client import Client
from podium.cli.main import addr_option, json_option
from podium.cli.output import ago, print_json, table


@click.command()
@json_option("the servers")
@addr_option
def members(as_json: bool, addr: str | None) -> None:
    """The servers of this cluster; the leader is marked, with when it took the lead."""
    rows = Client(addr).request("GET", "/v1/status/members")
    if as_json:
        print_json(rows)
        return
    table(
        ["ID", "ADDRESS", "ROLE", "LEADER SINCE", "STARTED", "TLS"],
        [
            [
                r["id"],
                r["address"],
                "leader" if r["leader"] else "follower",
                _since(r["leader_since"]) if r["leader"] else "-",
                ago(r["started"]),
                "OFF (--insecure)" if r.get("insecure") else "mutual",
            ]
            for r in rows
        ],
    )
    if any(r.get("insecure") for r in rows):
        click.echo(
            "WARNING: TLS is off on a server (--insecure): anyone who reaches it can run "
            "anything on every node; see docs/security.md",
            err=True,
        )
    if not any(r["leader"] for r in rows):
        click.echo("no leader right now (an election is under way, or the store is down)")


def _since(ts: float | None) -> str:
    if not ts:
        return "-"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
    return f"{stamp} ({ago(ts)})"
