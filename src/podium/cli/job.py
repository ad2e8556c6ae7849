"""`podium job …`: validate, plan, run, list, status, inspect, stop, history, diff, revert,
scale, dispatch, periodic force."""

from __future__ import annotations

import sys
import time
from typing import Any

import click
import yaml

from podium.api.client import Client
from podium.cli import jobfile
from podium.cli.deployment import follow
from podium.cli.main import (
    addr_option,
    json_option,
    namespace_given,
    namespace_option,
    timeout_option,
)
from podium.cli.output import (
    ago,
    alloc_short,
    console,
    diff_lines,
    err_console,
    failure_lines,
    mib,
    print_json,
    progress_to_stderr,
    reads,
    short_id,
    table,
)
from podium.errors import PodiumError
from podium.model.spec import STORED_FIELDS


def _load(file: str, namespace: str | None) -> jobfile.JobFile:
    return jobfile.load(
        file, namespace=namespace, namespace_given=namespace_given(click.get_current_context())
    )


@click.group()
def job() -> None:
    """Submit and inspect jobs."""


@job.command()
@click.argument("file")
@json_option("the job as it would be stored (every default filled in)")
@namespace_option
@addr_option
def validate(file: str, as_json: bool, namespace: str | None, addr: str | None) -> None:
    """Check a job file: every problem, with its path. Works without a server.

    FILE is a job file (YAML, or JSON when it ends in .json); - reads it from stdin.
    """
    loaded = _load(file, namespace)
    if as_json:
        print_json(loaded.wire())
        return
    j = loaded.job
    console.print(
        f"[green]ok[/] job {j.name!r}: {len(j.groups)} group(s), "
        f"{sum(g.count for g in j.groups)} alloc(s)"
    )


@job.command()
@click.argument("file")
@click.option("--detach", is_flag=True, help="Return once submitted; do not wait")
@click.option(
    "--check-index",
    type=int,
    default=None,
    help="Refuse if the job changed since `job plan` printed this index",
)
@timeout_option(300.0, "every copy to be healthy (or the rollout to end)")
@json_option("the job (registered version, status, allocations) once followed")
@namespace_option
@addr_option
def run(
    file: str,
    detach: bool,
    check_index: int | None,
    timeout: float,
    as_json: bool,
    namespace: str | None,
    addr: str | None,
) -> None:
    """Submit a job and follow it until every copy is running and healthy.

    FILE is a job file (YAML, or JSON when it ends in .json); - reads it from stdin.
    The job runs in the namespace the file names, else in -n/PODIUM_NAMESPACE's.
    """
    loaded = _load(file, namespace)
    c = Client(addr, namespace=loaded.job.namespace)
    with progress_to_stderr(as_json):
        resp = c.register_job(loaded.wire(), check_index=check_index)
        name = resp["name"]
        what = "registered" if resp["changed"] else "unchanged"
        console.print(f"job {name!r} version {resp['version']} {what} (index {resp['index']})")
        code = 0 if detach else _follow_version(c, name, resp, timeout)
    if as_json:
        print_json(c.job(name) | {"registered": resp})
    sys.exit(code)


def _follow_version(c: Client, name: str, resp: dict[str, Any], timeout: float) -> int:
    """Follow a submitted version: its deployment if one rolls out, else the copies; a
    cron or parameterized parent runs nothing itself, so that is only said."""
    summary = c.job(name)
    if summary["job"]["type"] == "cron" or summary["job"].get("parameterized"):
        # A parent runs nothing itself: its runs are jobs of their own.
        if summary.get("next_run"):
            when = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(summary["next_run"]))
            console.print(f"next run due {when}; `podium job status {name}` lists the runs")
        else:
            console.print(f"runs start with `podium job dispatch {name}`")
        return 0
    dep_id = _deployment_of(c, name, resp["version"])
    if not dep_id:
        return _monitor(c, name, resp["version"], timeout)
    console.print(f"deployment {short_id(dep_id)} rolling out version {resp['version']}")
    code = follow(c, dep_id, timeout=timeout, job=name)
    return _verdict(c, name, dep_id, code)


def _deployment_of(c: Client, name: str, version: int, wait: float = 5.0) -> str:
    """The deployment that rolls `version` out; "" when the placement controller changed
    things without one (in place, batch and system jobs, max_parallel 0) or could not place."""
    deadline = time.monotonic() + wait
    while True:
        s = c.job(name)
        submitted = s["job"]["submit_time"]
        for d in c.deployments(job=name):
            # Not one left over from a purged job of the same name and version.
            if d["job_version"] == version and d["create_time"] >= submitted:
                return str(d["id"])
        if s["job"]["version"] != version or s["placement_failures"]:
            return ""
        live = [
            a
            for a in s["allocations"]
            if a["desired_status"] == "run" and a["client_status"] in ("pending", "running")
        ]
        desired = sum(g["desired"] for g in s["groups"].values())
        # Deployments are written before the allocs that name them: copies of this version
        # and no deployment means none rolls it out.
        if (live and all(a["job_version"] == version for a in live)) or desired == 0:
            return ""
        if time.monotonic() > deadline:
            return ""
        time.sleep(0.1)


def _verdict(c: Client, name: str, dep_id: str, code: int) -> int:
    """Say how the deployment ended: healthy, or failed with why and what was rolled back."""
    d = c.deployment(dep_id)["deployment"]
    if d["status"] == "successful":
        console.print(
            f"[green]job {name!r} version {d['job_version']} healthy[/]: "
            f"deployment {short_id(dep_id)} successful"
        )
        return 0
    if d["status"] == "failed":
        err_console.print(
            f"[red]deployment {short_id(dep_id)} of version {d['job_version']} failed:[/] "
            f"{d['status_description']}",
            highlight=False,
        )
        if d["reverted_to"] >= 0:
            err_console.print(
                f"rolled back: version {d['reverted_to']}'s spec runs again, as a new version "
                f"(follow it: podium deployment status {name} --watch)",
                markup=False,
                highlight=False,
            )
        else:
            err_console.print("not rolled back: no earlier version of the job deployed healthy")
        return 1
    if d["status"] == "cancelled":
        err_console.print(f"deployment {short_id(dep_id)} cancelled: {d['status_description']}")
    return code or 1


def _monitor(c: Client, name: str, version: int, timeout: float) -> int:
    """Without a deployment: progress until every copy has been healthy for its group's
    min_healthy_time (0), a copy or placement fails (1), or the timeout (1)."""
    deadline = time.monotonic() + timeout
    last = ""
    first_failure_at: float | None = None
    with console.status("placing…") as status:
        while time.monotonic() < deadline:
            s = c.job(name)
            jobd = s["job"]
            cur = [
                a
                for a in s["allocations"]
                if a["job_version"] == jobd["version"] and a["desired_status"] == "run"
            ]
            groups = s["groups"]
            desired = sum(g["desired"] for g in groups.values())
            placed = len(cur)
            running = sum(1 for a in cur if a["client_status"] == "running")
            healthy = sum(1 for a in cur if a["client_status"] == "running" and a["healthy"])
            settled = sum(g["settled"] for g in groups.values())
            complete = sum(1 for a in cur if a["client_status"] == "complete")
            batch = jobd["type"] in ("batch", "cron")
            line = f"{placed}/{desired} placed, {running} running" + (
                f", {complete} complete"  # health is a service's: a batch copy completes
                if batch
                else f", {healthy} healthy"
                + (f" ({settled} for min_healthy_time)" if settled < healthy else "")
                + (f", {complete} complete" if complete else "")
            )
            status.update(line)
            if line != last:
                if not console.is_terminal:
                    console.print(line)
                last = line
            if s["placement_failures"]:
                # Give the scheduler one more round (capacity may be freeing up), then report.
                first_failure_at = first_failure_at or time.monotonic()
                if time.monotonic() - first_failure_at > 1.0:
                    status.stop()
                    err_console.print("[red]placement failed:[/]")
                    for ln in failure_lines(s["placement_failures"]):
                        err_console.print(f"  {ln}", markup=False)
                    return 1
            else:
                first_failure_at = None
            failed = [a for a in cur if a["client_status"] == "failed"]
            if failed:
                status.stop()
                err_console.print(f"[red]{len(failed)} allocation(s) failed:[/]")
                for a in failed:
                    err_console.print(
                        f"  {a['name']} ({alloc_short(a['id'])}): {a['client_description']}",
                        markup=False,
                    )
                return 1
            if batch:
                if s["status"] == "complete":
                    console.print(f"[green]job {name!r} complete[/]: {line}")
                    return 0
            elif desired and settled >= desired:
                console.print(f"[green]job {name!r} healthy[/]: {line}")
                return 0
            elif desired == 0 and not cur:
                console.print(f"job {name!r}: nothing to run (count 0)")
                return 0
            time.sleep(0.2)
    err_console.print(f"[red]timed out after {timeout:g}s[/]: {last}")
    return 1


@job.command()
@click.argument("file")
@json_option("the plan (diff, placements, failures, index)")
@namespace_option
@addr_option
def plan(file: str, as_json: bool, namespace: str | None, addr: str | None) -> None:
    """Dry run: what would change and what the scheduler would do. Changes nothing.

    FILE is a job file (YAML, or JSON when it ends in .json); - reads it from stdin.
    """
    loaded = _load(file, namespace)
    p = Client(addr, namespace=loaded.job.namespace).plan_job(loaded.wire())
    if as_json:
        print_json(p)
        return
    if not p["changed"]:
        console.print("no changes")
    changes = p["diff"]
    if p["changed"] and not p["index"]:
        console.print(f"new job {loaded.job.name!r} (namespace {loaded.job.namespace}):")
        changes = _new_job_changes(changes)
    for line in diff_lines(changes):
        console.print(line, markup=False, highlight=False)
    console.print(
        f"scheduler: {p['create']} to create, {p['replace']} to replace"
        + (f" now and {p['replace_later']} later" if p.get("replace_later") else "")
        + ", "
        f"{p['in_place']} to update in place, {p['stop']} to stop, {p['unchanged']} unchanged"
        + (f"; {p['canaries']} canaries first" if p.get("canaries") else "")
        + ("; as a deployment (rolling, auto-revert per group)" if p.get("deployment") else "")
    )
    preempted = p.get("preemptions") or []
    if preempted:
        console.print(f"[yellow]would preempt {len(preempted)} allocation(s)[/] of lower priority:")
        for x in preempted:
            console.print(
                f"  {x['alloc_name']} ({alloc_short(x['alloc_id'])}, {x['namespace']}/{x['job']}, "
                f"priority {x['priority']}) on {x['node_name']} for {x['for_name']}",
                markup=False,
                highlight=False,
            )
    for change in p.get("config", []):
        touched = ", ".join(f"{a['name']} {a['action']}" for a in change["allocs"]) or "no copy"
        console.print(
            f"{change['ref']} version {change['from']} -> {change['to']}: {touched}",
            markup=False,
            highlight=False,
        )
    for ln in failure_lines(p["failures"]):
        err_console.print(f"[red]would fail:[/] {ln}")
    console.print(
        f"\nindex {p['index']}: to run exactly this plan, "
        f"`podium job run --check-index {p['index']} {file}`"
    )
    if p["failures"]:
        sys.exit(1)


def _new_job_changes(changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A new job's fields, empty ones left out, each group on its own."""
    out = []
    for d in changes:
        if d["kind"] == "added" and d["path"] == "groups" and isinstance(d["new"], list):
            out += [
                {"kind": "added", "path": f"groups[{i}]", "old": None, "new": g}
                for i, g in enumerate(d["new"])
            ]
        elif d["new"] not in ([], {}, "", None):
            out.append(d)
    return out


@job.command("list")
@json_option("the jobs")
@namespace_option
@addr_option
def list_(as_json: bool, namespace: str | None, addr: str | None) -> None:
    """Every job (of one namespace with -n): type, version, status."""
    _list(Client(addr, namespace=namespace), as_json)


def _list(c: Client, as_json: bool) -> None:
    jobs = c.jobs()
    if as_json:
        print_json(jobs)
        return
    if not jobs:
        console.print("no jobs" + (f" in namespace {c.namespace!r}" if c.namespace else ""))
        return
    table(
        ["NAME", "NAMESPACE", "TYPE", "VERSION", "STATUS", "SUBMITTED"],
        [
            [
                j["name"],
                j["namespace"],
                j["type"],
                j["version"],
                j["status"],
                ago(j["submit_time"]),
            ]
            for j in jobs
        ],
    )


@job.command()
@click.argument("name", required=False)
@json_option("the job, its groups and allocations")
@namespace_option
@addr_option
def status(name: str | None, as_json: bool, namespace: str | None, addr: str | None) -> None:
    """A job's groups and allocations (every job, as `job list`, without NAME)."""
    c = Client(addr, namespace=namespace)
    if name is None:
        _list(c, as_json)
        return
    s = c.job(name)
    try:  # what the copies use now, as their agents measure it
        used = c.usage(job=name, namespace=c.ns())["jobs"]
    except PodiumError:
        used = []
    s["usage"] = used[0] if used else None
    if as_json:
        print_json(s)
        return
    j = s["job"]
    console.print(
        f"[bold]{j['name']}[/]  type={j['type']}  version={j['version']}  "
        f"status={s['status']}  namespace={j['namespace']}"
    )
    if s["usage"]:
        u = s["usage"]
        console.print(
            f"usage: cpu {u['cpu_percent']:.1f}% of a core, memory {mib(u['memory_bytes'])} "
            f"of {mib(u['memory_limit_bytes'])} reserved, over {u['allocs']} copies"
        )
    table(
        [
            "GROUP",
            "DESIRED",
            "PENDING",
            "RUNNING",
            "HEALTHY",
            "COMPLETE",
            "FAILED",
            "LOST",
            "RESTARTS",
        ],
        [
            [
                g,
                v["desired"],
                v["pending"],
                v["running"],
                v["healthy"],
                v["complete"],
                v["failed"],
                v["lost"],
                v["restarts"],
            ]
            for g, v in s["groups"].items()
        ],
    )
    for g, v in s["groups"].items():
        if v.get("progress"):
            line = f"progress {g}: {v['progress']}, at most {v['parallelism']} at once"
            console.print(line, markup=False, highlight=False)
        if len(v["versions"]) > 1:  # a rollout under way: the counts above span versions
            parts = [
                f"version {ver}{' (current)' if int(ver) == j['version'] else ''}: "
                f"{n['running']} running, {n['healthy']} healthy"
                + (f", {n['pending']} pending" if n["pending"] else "")
                for ver, n in v["versions"].items()
            ]
            console.print(f"{g}: {'; '.join(parts)}", markup=False, highlight=False)
    if j.get("parent"):
        console.print(f"run of {j['parent']}", markup=False, highlight=False)
    if s.get("next_run"):
        when = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(s["next_run"]))
        console.print(f"next run due {when}", markup=False, highlight=False)
    for ln in failure_lines(s["placement_failures"]):
        err_console.print(f"[red]placement failure:[/] {ln}")
    kids = s.get("children") or []
    if kids:
        console.print()
        table(
            ["RUN", "STATUS", "LAUNCHED"],
            [[k["name"], k["status"], ago(k["submit_time"])] for k in kids],
        )
    if j.get("config_versions"):
        console.print(f"reads: {reads(j['config_versions'])}", markup=False, highlight=False)
    d = s.get("deployment")
    if d:
        console.print(
            f"latest deployment {short_id(d['id'])} (version {d['job_version']}): {d['status']}"
            f" — {d['status_description']}",
            markup=False,
            highlight=False,
        )
    console.print()
    table(
        [
            "ID",
            "NAME",
            "NODE",
            "VERSION",
            "DESIRED",
            "STATUS",
            "HEALTHY",
            "RESTARTS",
            "PORTS",
            "CREATED",
            *(["READS"] if j.get("config_versions") else []),
        ],
        [
            [
                alloc_short(a["id"]),
                a["name"],
                a["node_name"],
                a["job_version"],
                a["desired_status"],
                a["client_status"],
                {True: "yes", False: "no", None: "-"}[a["healthy"]],
                a["restarts"],
                ",".join(f"{k}={v}" for k, v in a["ports"].items()),
                ago(a["create_time"]),
                *(
                    [reads(a.get("config_versions", {}), short=True)]
                    if j.get("config_versions")
                    else []
                ),
            ]
            for a in s["allocations"]
        ],
    )


@job.command()
@click.argument("name")
@click.option("--version", "version", type=click.IntRange(min=0), default=None, help="This version")
@json_option("the spec instead of YAML")
@namespace_option
@addr_option
def inspect(
    name: str, version: int | None, as_json: bool, namespace: str | None, addr: str | None
) -> None:
    """The job's stored spec (the current version, or --version N) as a job file.

    Every default is filled in; edit it and `podium job run` it again:
    podium job inspect web > web.yaml
    """
    c = Client(addr, namespace=namespace)
    stored = c.job_version(name, version) if version is not None else c.job(name)["job"]
    spec = {k: v for k, v in stored.items() if k not in STORED_FIELDS}
    if as_json:
        print_json(spec)
        return
    sys.stdout.write(
        f"# job {stored['name']!r} version {stored['version']} "
        f"(namespace {stored['namespace']}), from `podium job inspect`\n"
        + yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, width=100)
    )


@job.command()
@click.argument("name")
@click.option("--purge", is_flag=True, help="Remove the job and its history entirely")
@click.option("--detach", is_flag=True, help="Return at once; do not wait for allocs to stop")
@timeout_option(120.0, "every allocation to stop")
@json_option("the stopped job (or what was purged)")
@namespace_option
@addr_option
def stop(
    name: str,
    purge: bool,
    detach: bool,
    timeout: float,
    as_json: bool,
    namespace: str | None,
    addr: str | None,
) -> None:
    """Stop every allocation of a job."""
    c = Client(addr, namespace=namespace)
    with progress_to_stderr(as_json):
        code = _stop(c, name, purge=purge, detach=detach, timeout=timeout)
    if as_json:
        print_json({"name": name, "namespace": c.ns(), "purged": True} if purge else c.job(name))
    sys.exit(code)


def _stop(c: Client, name: str, *, purge: bool, detach: bool, timeout: float) -> int:
    # Only the copies that run (or are starting) now: stopped ones of older versions are
    # history, not something this stop does.
    ids = [
        a["id"]
        for a in c.allocs(job=name)
        if a["desired_status"] == "run" and a["client_status"] in ("pending", "running")
    ]
    c.stop_job(name, purge=purge)
    console.print(
        f"job {name!r} {'purged' if purge else 'stopping'}: {len(ids)} allocation(s) running"
    )
    if detach:
        return 0
    deadline = time.monotonic() + timeout
    with console.status("stopping…") as st:
        while time.monotonic() < deadline:
            allocs = [a for a in c.allocs(job=name) if a["id"] in ids]
            live = [a for a in allocs if a["client_status"] in ("pending", "running")]
            st.update(f"{len(ids) - len(live)}/{len(ids)} allocations stopped")
            if not live:
                console.print(
                    f"[green]job {name!r} stopped[/]: {len(ids)} running allocation(s) stopped"
                )
                return 0
            time.sleep(0.2)
    err_console.print("[red]timed out waiting for allocations to stop[/]")
    return 1


@job.command()
@click.argument("name")
@json_option("every version with its diff")
@namespace_option
@addr_option
def history(name: str, as_json: bool, namespace: str | None, addr: str | None) -> None:
    """Every version of a job, newest first, with what changed."""
    vs = Client(addr, namespace=namespace).job_versions(name)
    if as_json:
        print_json(vs)
        return
    for v in vs:
        j = v["job"]
        who = f" by {j['submitted_by']}" if j.get("submitted_by") else ""
        stable = "  [green]stable[/]" if j.get("stable") else ""
        console.print(
            f"[bold]version {v['version']}[/]  submitted {ago(v['submit_time'])}{who}{stable}"
        )
        for d in v["diff"]:
            console.print(f"    {d['kind']:8} {d['path']}", markup=False)


@job.command()
@click.argument("name")
@click.argument("version", type=click.IntRange(min=0))
@click.option("--detach", is_flag=True, help="Return once submitted; do not follow the rollout")
@timeout_option(600.0, "the rollout to end")
@json_option("the job (the new version, status, allocations) once followed")
@namespace_option
@addr_option
def revert(
    name: str,
    version: int,
    detach: bool,
    timeout: float,
    as_json: bool,
    namespace: str | None,
    addr: str | None,
) -> None:
    """Run an earlier version again (as a new version, rolled out like any change)."""
    c = Client(addr, namespace=namespace)
    code = 0
    with progress_to_stderr(as_json):
        resp = c.revert_job(name, version)
        if not resp["changed"]:
            console.print(f"job {name!r} already runs the spec of version {version}")
        else:
            console.print(f"job {name!r} version {resp['version']} = version {version} again")
            if not detach:
                dep_id = _deployment_of(c, name, resp["version"])
                if dep_id:
                    code = follow(c, dep_id, timeout=timeout)
    if as_json:
        print_json(c.job(name) | {"registered": resp})
    sys.exit(code)


@job.command("diff")
@click.argument("name")
@click.argument("v1", type=click.IntRange(min=0))
@click.argument("v2", type=click.IntRange(min=0))
@json_option("the changes")
@namespace_option
@addr_option
def diff_(
    name: str, v1: int, v2: int, as_json: bool, namespace: str | None, addr: str | None
) -> None:
    """What changed between two versions of a job, field by field."""
    from podium.model.diff import diff

    c = Client(addr, namespace=namespace)
    a, b = (
        {k: v for k, v in c.job_version(name, v).items() if k not in STORED_FIELDS}
        for v in (v1, v2)
    )
    changes = [{"path": d.path, "kind": d.kind, "old": d.old, "new": d.new} for d in diff(a, b)]
    if as_json:
        print_json(changes)
        return
    if not changes:
        console.print(f"versions {v1} and {v2} of {name!r} are the same")
    for line in diff_lines(changes):
        console.print(line, markup=False, highlight=False)


@job.command()
@click.argument("name")
@click.argument("group")
@click.argument("count", type=click.IntRange(min=0, max=10_000))
@json_option("the job with its new count")
@namespace_option
@addr_option
def scale(
    name: str, group: str, count: int, as_json: bool, namespace: str | None, addr: str | None
) -> None:
    """Set one group's count: copies are added or removed, none restarted."""
    c = Client(addr, namespace=namespace)
    resp = c.scale_job(name, group, count)
    if as_json:
        print_json(c.job(name) | {"registered": resp})
        return
    what = f"version {resp['version']}" if resp["changed"] else "unchanged"
    console.print(f"job {name!r} group {group!r} count {count}: {what}")


@job.command()
@click.argument("name")
@click.argument("payload_file", required=False)
@click.option("--meta", "metas", multiple=True, metavar="KEY=VALUE", help="Meta for this run")
@json_option("the run it started")
@namespace_option
@addr_option
def dispatch(
    name: str,
    payload_file: str | None,
    metas: tuple[str, ...],
    as_json: bool,
    namespace: str | None,
    addr: str | None,
) -> None:
    """Run a parameterized job once; PAYLOAD_FILE (or - for stdin) becomes its payload."""
    meta: dict[str, str] = {}
    for item in metas:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--meta")
        meta[key] = value
    payload = b""
    if payload_file == "-":
        payload = sys.stdin.buffer.read(64 * 1024 + 1)
    elif payload_file:
        try:
            with open(payload_file, "rb") as f:
                payload = f.read(64 * 1024 + 1)  # the server refuses over 16 KiB, and says so
        except OSError as e:
            raise click.ClickException(f"cannot read {payload_file}: {e.strerror}") from None
    resp = Client(addr, namespace=namespace).dispatch_job(name, meta=meta, payload=payload)
    if as_json:
        print_json(resp)
        return
    console.print(f"dispatched {resp['name']}", markup=False, highlight=False)


@job.group()
def periodic() -> None:
    """Cron jobs."""


@periodic.command()
@click.argument("name")
@json_option("the run it started")
@namespace_option
@addr_option
def force(name: str, as_json: bool, namespace: str | None, addr: str | None) -> None:
    """Start a run of a cron job now (whatever its schedule and concurrency say)."""
    resp = Client(addr, namespace=namespace).force_periodic(name)
    if as_json:
        print_json(resp)
        return
    console.print(f"launched {resp['name']}", markup=False, highlight=False)
