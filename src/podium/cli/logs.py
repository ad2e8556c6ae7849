"""`podium logs JOB [GROUP]`: the logs of every copy of a job, merged in time order."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click
from rich.markup import escape

from podium.api.client import Client
from podium.cli.main import addr_option, namespace_option
from podium.cli.output import alloc_short, console, err_console

PALETTE = ("cyan", "green", "yellow", "magenta", "blue", "red", "bright_cyan", "bright_green")


@click.command()
@click.argument("job")
@click.argument("group", required=False, default="")
@click.option("--task", default="", help="Only this task (default: every task of the group)")
@click.option("-f", "--follow", is_flag=True, help="Keep printing, from new copies too")
@click.option("--since", default=None, help="Only lines this recent: a duration (10m, 2h)")
@click.option("--grep", default="", help="Only lines matching this RE2 regular expression")
@click.option("--stdout", "only", flag_value="stdout", default=None, help="Only stdout")
@click.option("--stderr", "only", flag_value="stderr", help="Only stderr")
@click.option("--alloc", default="", help="Only this copy (alloc id or prefix)")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line")
@namespace_option
@addr_option
def logs(
    job: str,
    group: str,
    task: str,
    follow: bool,
    since: str | None,
    grep: str,
    only: str | None,
    alloc: str,
    as_json: bool,
    namespace: str | None,
    addr: str | None,
) -> None:
    """Every copy's lines, each prefixed with its alloc (short id) and node: stdout and
    stderr, a stderr line marked `stderr` (--stdout or --stderr for one stream, unmarked).

    Past lines come in time order (to the second the agent saw them); with -f new lines
    follow as they are written, and copies that start later (a rolling update, a
    reschedule, a scale-up) join without a restart of the command.
    """
    params: dict[str, Any] = {
        "namespace": namespace or "default",
        "type": only or "both",
        "follow": "true" if follow else "false",
    }
    for key, value in (("group", group), ("task", task), ("grep", grep), ("alloc", alloc)):
        if value:
            params[key] = value
    if since is not None:
        params["since"] = since
    colors: dict[str, str] = {}
    tty = sys.stdout.isatty()
    try:
        for raw in Client(addr).stream_lines(f"/v1/job/{job}/logs", params=params):
            if not raw:
                continue
            line = json.loads(raw)
            if "retention" in line:
                kept = line["retention"]
                if not as_json:
                    err_console.print(
                        f"[dim]each task keeps its last {kept['max_bytes'] // (1024 * 1024)} MiB "
                        f"of logs per stream ({kept['max_files']} files)[/]"
                    )
                continue
            if as_json:
                sys.stdout.write(json.dumps(line, sort_keys=True) + "\n")
                sys.stdout.flush()
                continue
            prefix = f"{alloc_short(line['alloc'])} {line['node']}"
            marked = only is None and line.get("stream") == "stderr"
            if not tty:
                if marked:
                    prefix += " stderr"
                sys.stdout.write(f"{prefix} | {line['line']}\n")
                sys.stdout.flush()
                continue
            color = colors.setdefault(line["alloc"], PALETTE[len(colors) % len(PALETTE)])
            stamp = time.strftime("%H:%M:%S", time.localtime(line["time"]))
            mark = " [red]stderr[/]" if marked else ""
            console.print(
                f"[dim]{stamp}[/] [{color}]{escape(prefix)}[/]{mark} {escape(line['line'])}",
                soft_wrap=True,
            )
    except KeyboardInterrupt:
        pass
