"""`podium events`: what happened, from the server's event ring; `-f` follows it live."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from podium.api.client import Client
from podium.cli.main import addr_option, namespace_option
from podium.cli.output import alloc_short, console, print_json
from podium.server.events import TOPICS, topic_of

COLORS = {
    "alloc": "cyan",
    "job": "green",
    "node": "yellow",
    "deployment": "magenta",
    "service": "blue",
    "scaling": "bright_green",
}


def _line(ev: dict[str, Any]) -> str:
    t = ev["time"]
    stamp = time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 1000):03d}"
    color = COLORS.get(topic_of(ev["type"]), "white")
    who = " ".join(
        part
        for part in (
            ev.get("job") or "",
            f"service={ev['service']}" if ev.get("service") else "",
            alloc_short(ev["alloc"]) if ev.get("alloc") else "",
            f"node={ev['node'][:8]}" if ev.get("node") else "",
        )
        if part
    )
    msg = ev.get("message", "").replace("[", "\\[")
    return f"{stamp} [dim]{ev['seq']:>7}[/] [{color}]{ev['type']:<24}[/] {who}  {msg}"


@click.command()
@click.option("-f", "--follow", is_flag=True, help="Keep printing events as they happen")
@click.option(
    "--topic",
    "topics",
    multiple=True,
    type=click.Choice(TOPICS),
    help="Only these topics (repeat): the first word of the type; task and template events "
    "are alloc's",
)
@click.option("--key", default="", help="Only events of this job, alloc (id or prefix) or node")
@click.option("--since", default=None, help="Only events this recent: a duration (10m, 2h)")
@click.option("--index", type=click.IntRange(min=0), default=None, help="Only after this index")
@click.option("--limit", default=100, show_default=True, help="Past events shown (0: all kept)")
@click.option("--json", "as_json", is_flag=True, help="JSON (one object a line with -f)")
@namespace_option
@addr_option
def events(
    follow: bool,
    topics: tuple[str, ...],
    key: str,
    since: str | None,
    index: int | None,
    limit: int,
    as_json: bool,
    namespace: str | None,
    addr: str | None,
) -> None:
    """Events: placements, task exits and restarts, health changes, nodes, deployments.

    Filters combine (Nomad style: --topic alloc --key web). An index (the second column)
    replays from a point: `podium events --index N -f` misses nothing after N.
    """
    if since is not None and index is not None:
        raise click.UsageError("give --since or --index, not both")
    params: dict[str, Any] = {"limit": limit}
    if topics:
        params["topic"] = ",".join(topics)
    if key:
        params["key"] = key
    if since is not None:
        params["since"] = since
    if index is not None:
        params["index"] = index
    if namespace:
        params["namespace"] = namespace
    c = Client(addr)
    if not follow:
        evs = c.events(**params)
        if as_json:
            print_json(evs)
        for ev in [] if as_json else evs:
            console.print(_line(ev), soft_wrap=True)
        return
    params["follow"] = "true"
    try:
        for line in c.stream_lines("/v1/events", params=params):
            if line.startswith("event: lagged"):
                raise click.ClickException("fell too far behind the server; follow again")
            if not line.startswith("data: "):
                continue  # ids, heartbeats, blank separators
            ev = json.loads(line[6:])
            if as_json:
                sys.stdout.write(json.dumps(ev, sort_keys=True) + "\n")
                sys.stdout.flush()
            else:
                console.print(_line(ev), soft_wrap=True)
    except KeyboardInterrupt:
        pass
