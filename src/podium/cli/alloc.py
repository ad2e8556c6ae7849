"""`podium alloc …`: status, logs, stop, restart, exec."""

from __future__ import annotations

import sys
from typing import Any

import click
import httpx
import msgspec

from podium.api.client import Client, _check
from podium.cli.main import addr_option, namespace_option
from podium.cli.output import ago, console, mib, print_json, table


@click.group()
def alloc() -> None:
    """Inspect and act on allocations."""


def _agent_url(c: Client, alloc_id: str) -> tuple[str, Any]:
    a = c.alloc(alloc_id)
    node = c.node(a.node_id)
    if not node.get("http_addr"):
        raise click.ClickException(f"node {node['name']} does not expose its agent API")
    return f"http://{node['http_addr']}", a


@alloc.command()
@click.argument("alloc_id")
@click.option("--json", "as_json", is_flag=True)
@namespace_option
@addr_option
def status(alloc_id: str, as_json: bool, namespace: str | None, addr: str | None) -> None:
    """One allocation: placement, tasks, checks."""
    a = Client(addr, namespace=namespace).alloc(alloc_id)
    if as_json:
        print_json(msgspec.to_builtins(a))
        return
    console.print(f"[bold]{a.name}[/]  id={a.id}")
    console.print(
        f"node={a.node_name} ({a.node_id[:8]})  version={a.job_version}  "
        f"desired={a.desired_status}  status={a.client_status}  healthy={a.healthy}"
    )
    if a.client_description:
        console.print(f"  {a.client_description}", markup=False)
    if a.ports:
        console.print("ports: " + ", ".join(f"{k}={v}" for k, v in a.ports.items()))
    table(
        ["TASK", "STATE", "PID", "RESTARTS", "EXIT", "OOM", "STARTED", "MESSAGE"],
        [
            [
                n,
                t.state + (" (failed)" if t.failed else ""),
                t.pid or "-",
                t.restarts,
                "-" if t.exit_code is None else t.exit_code,
                "yes" if t.oom_killed else "",
                ago(t.started_at),
                t.message,
            ]
            for n, t in a.task_states.items()
        ],
    )
    if a.checks:
        console.print()
        table(
            ["CHECK", "STATUS", "OUTPUT", "CHECKED"],
            [[c.name, c.status, c.output.strip()[:60], ago(c.checked_at)] for c in a.checks],
        )


@alloc.command()
@click.argument("alloc_id")
@click.option("--task", default=None, help="Task name (default: the first)")
@click.option("--stderr", is_flag=True, help="Show stderr instead of stdout")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output")
@click.option("--tail", default=65536, show_default=True, help="Bytes from the end to start at")
@namespace_option
@addr_option
def logs(
    alloc_id: str,
    task: str | None,
    stderr: bool,
    follow: bool,
    tail: int,
    namespace: str | None,
    addr: str | None,
) -> None:
    """A task's stdout (or stderr), read from its node."""
    c = Client(addr, namespace=namespace)
    base, a = _agent_url(c, alloc_id)
    params = {
        "type": "stderr" if stderr else "stdout",
        "tail": str(tail),
        "follow": "true" if follow else "false",
    }
    if task:
        params["task"] = task
    url = f"{base}/v1/agent/alloc/{a.id}/logs"
    out = sys.stdout.buffer
    try:
        with httpx.stream("GET", url, params=params, timeout=None) as resp:
            if resp.status_code >= 400:
                resp.read()
                _check(resp)
            for chunk in resp.iter_raw():
                out.write(chunk)
                out.flush()
    except KeyboardInterrupt:
        pass


@alloc.command()
@click.argument("alloc_id")
@click.option("--json", "as_json", is_flag=True)
@namespace_option
@addr_option
def stats(alloc_id: str, as_json: bool, namespace: str | None, addr: str | None) -> None:
    """An allocation's CPU and memory use, per task, as its node measures them now."""
    c = Client(addr, namespace=namespace)
    a = c.alloc(alloc_id)
    u = c.alloc_stats(a.id)
    if as_json:
        print_json(u)
        return
    console.print(
        f"[bold]{a.name}[/]  id={a.id[:8]}  node={a.node_name}  "
        f"cpu={u['cpu_percent']:.1f}% of a core  memory={mib(u['memory_bytes'])} "
        f"of {mib(u['memory_limit_bytes'])}"
    )
    table(
        ["TASK", "CPU", "CPU SECONDS", "MEMORY", "LIMIT", "PIDS"],
        [
            [
                name,
                f"{t['cpu_percent']:.1f}%",
                f"{t['cpu_seconds']:.2f}",
                mib(t["memory_bytes"]),
                mib(t["memory_limit_bytes"]),
                t["pids"],
            ]
            for name, t in u["tasks"].items()
        ],
    )


@alloc.command()
@click.argument("alloc_id")
@namespace_option
@addr_option
def stop(alloc_id: str, namespace: str | None, addr: str | None) -> None:
    """Stop an allocation; the scheduler places a replacement."""
    a = Client(addr, namespace=namespace).stop_alloc(alloc_id)
    console.print(f"allocation {a['id'][:8]} stopping")


@alloc.command()
@click.argument("alloc_id")
@namespace_option
@addr_option
def restart(alloc_id: str, namespace: str | None, addr: str | None) -> None:
    """Restart an allocation's tasks in place, on the same node."""
    a = Client(addr, namespace=namespace).restart_alloc(alloc_id)
    console.print(f"allocation {a['id'][:8]} restarting")


@alloc.command(name="exec", context_settings={"ignore_unknown_options": True})
@click.argument("alloc_id")
@click.option("--task", default=None, help="Task name (default: the first)")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@namespace_option
@addr_option
def exec_(
    alloc_id: str,
    task: str | None,
    command: tuple[str, ...],
    namespace: str | None,
    addr: str | None,
) -> None:
    """Run a command in a task's context: podium alloc exec ID -- CMD ARGS."""
    c = Client(addr, namespace=namespace)
    base, a = _agent_url(c, alloc_id)
    params = {"task": task} if task else {}
    resp = httpx.post(
        f"{base}/v1/agent/alloc/{a.id}/exec",
        params=params,
        json={"command": list(command)},
        timeout=60,
    )
    data = _check(resp)
    sys.stdout.write(data["output"])
    sys.exit(data["exit_code"])
