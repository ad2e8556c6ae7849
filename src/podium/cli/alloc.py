"""`podium alloc …`: list, status, logs, stop, restart, exec."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import click
import msgspec

from podium.api.client import Client
from podium.cli.exec import run_exec
from podium.cli.main import addr_option, json_option, namespace_option
from podium.cli.output import ago, alloc_short, console, mib, print_json, reads, short_id, table


@click.group()
def alloc() -> None:
    """Inspect and act on allocations."""


@alloc.command("list")
@click.option("--job", default=None, help="Only this job's allocations")
@click.option("--node", default=None, help="Only those on this node (id)")
@json_option("the allocations")
@namespace_option
@addr_option
def list_(
    job: str | None, node: str | None, as_json: bool, namespace: str | None, addr: str | None
) -> None:
    """Allocations: every one, or of a job (--job), a node (--node), a namespace (-n)."""
    rows = Client(addr, namespace=namespace).allocs(job=job, node=node)
    rows.sort(key=lambda a: (a["namespace"], a["job"], a["name"], -a["create_time"]))
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("no allocations")
        return
    table(
        ["ID", "NAME", "NAMESPACE", "NODE", "VERSION", "DESIRED", "STATUS", "HEALTHY", "CREATED"],
        [
            [alloc_short(a["id"]), a["name"], a["namespace"], a["node_name"], a["job_version"],
             a["desired_status"], a["client_status"],
             {True: "yes", False: "no", None: "-"}[a["healthy"]], ago(a["create_time"])]
            for a in rows
        ],
    )  # fmt: skip


@alloc.command()
@click.argument("alloc_id")
@json_option("the allocation")
@namespace_option
@addr_option
def status(alloc_id: str, as_json: bool, namespace: str | None, addr: str | None) -> None:
    """One allocation: placement, tasks, checks."""
    c = Client(addr, namespace=namespace)
    a = c.alloc(alloc_id)
    if as_json:
        print_json(msgspec.to_builtins(a))
        return
    console.print(f"[bold]{a.name}[/]  id={alloc_short(a.id)} ({a.id})")
    console.print(
        f"node={a.node_name} ({short_id(a.node_id)})  version={a.job_version}  "
        f"desired={a.desired_status}  status={a.client_status}  healthy={a.healthy}"
    )
    if a.client_description:
        console.print(f"  {a.client_description}", markup=False)
    if a.ports:
        console.print("ports: " + ", ".join(f"{k}={v}" for k, v in a.ports.items()))
    job = c.job_version(a.job, a.job_version, namespace=a.namespace)
    if job.get("config_versions"):
        console.print(f"reads: {reads(job['config_versions'])}", markup=False, highlight=False)
    secret_env = [
        f"{name}=<secret:{ref['secret']}>"
        for t in next((g["tasks"] for g in job["groups"] if g["name"] == a.group), [])
        for name, ref in t["env"].items()
        if isinstance(ref, dict) and ref.get("secret")
    ]
    if secret_env:
        console.print(f"env from secrets: {' '.join(secret_env)}", markup=False, highlight=False)
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
@click.option(
    "--stdout", "only", flag_value="stdout", default=None, help="Only stdout, as it is written"
)
@click.option("--stderr", "only", flag_value="stderr", help="Only stderr, as it is written")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output (Ctrl-C stops)")
@click.option(
    "--tail",
    default=100,
    show_default=True,
    type=click.IntRange(min=0),
    help="Lines from the end of each stream to start with",
)
@namespace_option
@addr_option
def logs(
    alloc_id: str,
    task: str | None,
    only: str | None,
    follow: bool,
    tail: int,
    namespace: str | None,
    addr: str | None,
) -> None:
    """A task's output, read from its node through the server: stdout and stderr, each
    under a `==> stdout <==` / `==> stderr <==` marker (as `tail` shows several files);
    --stdout or --stderr for one stream alone, unmarked."""
    c = Client(addr, namespace=namespace)
    a = c.alloc(alloc_id)
    params = {"lines": str(tail), "follow": "true" if follow else "false"}
    if task:
        params["task"] = task
    path = f"/v1/allocation/{a.id}/logs"
    out = sys.stdout.buffer
    streams = [only] if only else ["stdout", "stderr"]
    try:
        if follow:
            _follow_streams(
                lambda p: Client(addr, namespace=namespace).stream_bytes(path, params=p),
                params,
                streams,
                out,
                marked=only is None,
            )
        else:
            for kind in streams:
                data = b"".join(c.stream_bytes(path, params={**params, "type": kind}))
                if only:
                    out.write(data)
                elif data:
                    out.write(
                        f"==> {kind} <==\n".encode()
                        + data
                        + (b"" if data.endswith(b"\n") else b"\n")
                    )
            out.flush()
    except KeyboardInterrupt:
        pass


def _follow_streams(
    open_stream: Callable[[dict[str, str]], Iterator[bytes]],
    params: dict[str, str],
    streams: list[str],
    out: BinaryIO,
    *,
    marked: bool,
) -> None:
    """Follow each stream in its own thread; whole lines go out, a marker before each run of
    lines from a stream other than the last one shown."""
    lock = threading.Lock()
    last: list[str] = [""]
    failures: list[BaseException] = []

    def pump(kind: str) -> None:
        rest = b""
        try:
            for chunk in open_stream({**params, "type": kind}):
                if not marked:
                    with lock:
                        out.write(chunk)
                        out.flush()
                    continue
                rest += chunk
                whole, sep, rest = rest.rpartition(b"\n")
                if not sep:
                    rest = whole + rest
                    continue
                with lock:
                    if last[0] != kind:
                        out.write(f"==> {kind} <==\n".encode())
                        last[0] = kind
                    out.write(whole + b"\n")
                    out.flush()
        except Exception as e:  # raised again by the main thread, which can exit cleanly
            failures.append(e)

    threads = [threading.Thread(target=pump, args=(k,), daemon=True) for k in streams]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads) and not failures:
        for t in threads:
            t.join(timeout=0.2)
    if failures:
        raise failures[0]


@alloc.command()
@click.argument("alloc_id")
@json_option("the allocation's use, per task")
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
        f"[bold]{a.name}[/]  id={short_id(a.id)}  node={a.node_name}  "
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
@json_option("the allocation as changed")
@namespace_option
@addr_option
def stop(alloc_id: str, as_json: bool, namespace: str | None, addr: str | None) -> None:
    """Stop an allocation; the scheduler places a replacement."""
    a = Client(addr, namespace=namespace).stop_alloc(alloc_id)
    if as_json:
        print_json(a)
        return
    console.print(f"allocation {alloc_short(a['id'])} ({_name(a)}) stopping")


@alloc.command()
@click.argument("alloc_id")
@json_option("the allocation as changed")
@namespace_option
@addr_option
def restart(alloc_id: str, as_json: bool, namespace: str | None, addr: str | None) -> None:
    """Restart an allocation's tasks in place, on the same node."""
    a = Client(addr, namespace=namespace).restart_alloc(alloc_id)
    if as_json:
        print_json(a)
        return
    console.print(f"allocation {alloc_short(a['id'])} ({_name(a)}) restarting")


def _name(a: dict[str, Any]) -> str:
    return f"{a['job']}.{a['group']}[{a['index']}]"


@alloc.command(name="exec", context_settings={"ignore_unknown_options": True})
@click.argument("alloc_id")
@click.option("--task", default=None, help="Task name (default: the first)")
@click.option("-t", "--tty", is_flag=True, help="A terminal (for shells and editors)")
@click.option(
    "-i/-I",
    "--stdin/--no-stdin",
    "stdin",
    default=True,
    show_default=True,
    help="Send this terminal's input to the command",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@namespace_option
@addr_option
def exec_(
    alloc_id: str,
    task: str | None,
    tty: bool,
    stdin: bool,
    command: tuple[str, ...],
    namespace: str | None,
    addr: str | None,
) -> None:
    """Run a command in a task's context, through the server: podium alloc exec ID -- CMD.

    Input is forwarded (`echo hi | podium alloc exec ID -- cat`); -t gives it a terminal
    (window size followed); the exit code is the command's.
    """
    c = Client(addr, namespace=namespace)
    a = c.alloc(alloc_id)
    code = run_exec(c, a.id, list(command), task=task, tty=tty, stdin=stdin)
    sys.exit(code)
