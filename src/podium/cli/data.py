"""`podium config …` and `podium secret …`: versioned data that tasks render.

Both nouns take the same verbs (put, get, history, list, delete). They differ in where
values come from: a config's may be typed (KEY=VALUE); a secret's come from a file
(KEY=@FILE or --from-file KEY=FILE) or stdin (KEY=- or a lone -), never from the command
line (it stays in shell history and shows in `ps`) unless --allow-argv says so.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from podium.api.client import Client
from podium.cli.main import addr_option, json_option, namespace_option
from podium.cli.output import ago, console, print_json, table
from podium.errors import NotFound
from podium.model import data as datamodel


def _check_path(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not datamodel.is_path(value):
        raise click.BadParameter(f"expected {datamodel.PATH_RULE}, got {value!r}")
    return value


_path_argument = click.argument("path", callback=_check_path)


def _read_file(key: str, file: str) -> str:
    try:
        with open(file, "rb") as f:
            raw = f.read(datamodel.MAX_BYTES + 1)
    except OSError as e:
        raise click.BadParameter(f"{key}: cannot read {file}: {e.strerror}") from None
    if len(raw) > datamodel.MAX_BYTES:
        raise click.BadParameter(f"{key}: {file} is larger than 1 MiB")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise click.BadParameter(f"{key}: {file} is not UTF-8 text (offset {e.start})") from None


def _read_stdin(key: str) -> str:
    raw = sys.stdin.buffer.read(datamodel.MAX_BYTES + 1)
    if len(raw) > datamodel.MAX_BYTES:
        raise click.BadParameter(f"{key}: stdin holds more than 1 MiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise click.BadParameter(f"{key}: stdin is not UTF-8 text (offset {e.start})") from None
    return text.removesuffix("\n")  # what `echo` adds


def gather(
    kind: str, pairs: tuple[str, ...], files: tuple[str, ...], *, allow_argv: bool
) -> dict[str, str]:
    """The keys and values a put sends, from KEY=VALUE, KEY=@FILE, KEY=- and --from-file."""
    data: dict[str, str] = {}
    stdin_used = False
    items = [(p, False) for p in pairs] + [(f, True) for f in files]
    for item, from_file in items:
        if item == "-" and not from_file:
            item = "value=-"
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, KEY=@FILE or KEY=-, got {item!r}")
        if key in data:
            raise click.BadParameter(f"key {key!r} is given twice")
        if from_file:
            data[key] = _read_file(key, value)
        elif value == "-":
            if stdin_used:
                raise click.BadParameter("only one key can read stdin")
            stdin_used = True
            data[key] = _read_stdin(key)
        elif value.startswith("@"):
            data[key] = _read_file(key, value[1:])
        elif kind == "secret" and not allow_argv:
            raise click.BadParameter(
                f"{key}: a secret's value on the command line stays in shell history and shows "
                f"in `ps`: use {key}=@FILE, --from-file {key}=FILE or {key}=- (stdin), or "
                "--allow-argv"
            )
        else:
            data[key] = value
    return data


def _print_put(kind: str, resp: dict[str, Any]) -> None:
    rec = resp[kind]
    what = "version" if resp["changed"] else "unchanged, still version"
    console.print(f"{kind} {rec['path']} {what} {rec['version']} (keys: {', '.join(rec['keys'])})")
    for moved in resp["jobs"]:
        dep = moved["deployment_id"]
        if dep:
            how = f"deployment {dep[:8]} rolls out {', '.join(moved['replaced_groups'])}"
        elif moved["replaced_groups"]:
            how = f"{', '.join(moved['replaced_groups'])} replaced"
        else:
            how = "applied in place (restart, signal or noop on each copy)"
        console.print(f"  job {moved['job']}: version {moved['version']}, {how}")


def _follow(c: Client, resp: dict[str, Any], *, timeout: float) -> int:
    """Follow each deployment the put started; 0 when all succeed."""
    from podium.cli.deployment import follow

    worst = 0
    for moved in resp["jobs"]:
        dep = moved["deployment_id"]
        if not dep:
            continue
        deadline = time.monotonic() + 10.0
        while True:  # the placement controller opens it a moment after the put
            try:
                c.deployment(dep)
                break
            except NotFound:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        worst = max(worst, follow(c, dep, timeout=timeout))
    return worst


def _history_table(rows: list[dict[str, Any]]) -> None:
    table(
        ["VERSION", "CREATED", "BY", "KEYS"],
        [
            [r["version"], ago(r["create_time"]), r["created_by"] or "-", ", ".join(r["keys"])]
            for r in rows
        ],
    )


def _list_table(rows: list[dict[str, Any]]) -> None:
    table(
        ["PATH", "NAMESPACE", "VERSION", "KEYS", "USED BY", "UPDATED"],
        [
            [
                r["path"],
                r["namespace"],
                r["version"],
                ", ".join(r["keys"]),
                ", ".join(r["used_by"]) or "-",
                ago(r["create_time"]),
            ]
            for r in rows
        ],
    )


def _noun(kind: str, help_text: str) -> click.Group:
    """The group of verbs for one kind."""

    @click.group(name=kind, help=help_text)
    def group() -> None:
        pass

    @group.command()
    @_path_argument
    @click.argument("pairs", nargs=-1)
    @click.option(
        "--from-file",
        "files",
        multiple=True,
        metavar="KEY=FILE",
        help="A value from a file; repeat",
    )
    @click.option(
        "--cas",
        type=click.IntRange(min=0),
        default=None,
        help="Refuse unless the current version is N (0: must not exist)",
    )
    @click.option("--merge", is_flag=True, help="Keep the current keys not given here")
    @click.option(
        "--allow-argv",
        is_flag=True,
        hidden=kind == "config",
        help="Accept secret values typed on the command line",
    )
    @click.option("--detach", is_flag=True, help="Return at once; do not follow the rollouts")
    @click.option("--timeout", default=600.0, show_default=True, help="Seconds to follow rollouts")
    @json_option("the new version and the jobs it moved")
    @namespace_option
    @addr_option
    def put(
        path: str,
        pairs: tuple[str, ...],
        files: tuple[str, ...],
        cas: int | None,
        merge: bool,
        allow_argv: bool,
        detach: bool,
        timeout: float,
        as_json: bool,
        namespace: str | None,
        addr: str | None,
    ) -> None:
        """A new version of PATH: KEY=VALUE, KEY=@FILE, KEY=- (stdin).

        Every job that reads PATH gets a new version: groups that read it through a
        rolling template roll out as a deployment (followed here, unless --detach), the
        others restart, signal or leave their tasks in place.
        """
        data = gather(kind, pairs, files, allow_argv=allow_argv)
        if not data and not merge:
            raise click.UsageError("give at least one KEY=VALUE, KEY=@FILE, KEY=- or --from-file")
        c = Client(addr, namespace=namespace)
        resp = c.data_put(kind, path, data, cas=cas, merge=merge)
        if as_json:
            print_json(resp)
        else:
            _print_put(kind, resp)
        if not detach and not as_json:
            sys.exit(_follow(c, resp, timeout=timeout))

    @group.command()
    @_path_argument
    @click.option("--version", type=click.IntRange(min=1), default=None, help="An older version")
    @click.option("--reveal", is_flag=True, hidden=kind == "config", help="Print the values")
    @json_option("the version (with values where shown)")
    @namespace_option
    @addr_option
    def get(
        path: str,
        version: int | None,
        reveal: bool,
        as_json: bool,
        namespace: str | None,
        addr: str | None,
    ) -> None:
        """PATH's newest version (or --version N): its keys and values."""
        show_values = kind == "config" or reveal
        rec = Client(addr, namespace=namespace).data_get(
            kind, path, version=version, reveal=show_values and kind == "secret"
        )
        if as_json:
            print_json(rec)
            return
        console.print(
            f"{kind} {rec['path']} version {rec['version']} (namespace {rec['namespace']}, "
            f"{ago(rec['create_time'])}{', by ' + rec['created_by'] if rec['created_by'] else ''})"
        )
        if show_values:
            for key, value in sorted(rec.get("data", {}).items()):
                console.print(f"{key}={value}", markup=False)
        else:
            console.print(f"keys: {', '.join(rec['keys'])} (values: --reveal)")

    @group.command()
    @_path_argument
    @json_option("the versions")
    @namespace_option
    @addr_option
    def history(path: str, as_json: bool, namespace: str | None, addr: str | None) -> None:
        """Every kept version of PATH, newest first."""
        rows = Client(addr, namespace=namespace).data_history(kind, path)
        if as_json:
            print_json(rows)
        else:
            _history_table(rows)

    @group.command("list")
    @click.option("--prefix", default="", help="Only paths starting with this")
    @json_option("the list")
    @namespace_option
    @addr_option
    def list_(prefix: str, as_json: bool, namespace: str | None, addr: str | None) -> None:
        """Every one (of the namespace, if given): version, keys, the jobs that read it."""
        rows = Client(addr).data_list(kind, prefix=prefix, namespace=namespace)
        if as_json:
            print_json(rows)
        elif not rows:
            console.print(f"no {kind}s")
        else:
            _list_table(rows)

    @group.command()
    @_path_argument
    @click.option("--force", is_flag=True, help="Even while a job that runs reads it")
    @json_option("what was deleted")
    @namespace_option
    @addr_option
    def delete(
        path: str, force: bool, as_json: bool, namespace: str | None, addr: str | None
    ) -> None:
        """Remove PATH and its history (refused while a job that runs reads it)."""
        resp = Client(addr, namespace=namespace).data_delete(kind, path, force=force)
        if as_json:
            print_json(resp)
        else:
            console.print(f"{kind} {path} deleted")

    return group


config = _noun(
    "config",
    "Versioned configuration (maps of keys to text) that tasks render through templates.",
)
secret = _noun(
    "secret",
    "Versioned secrets, encrypted at rest; tasks read them through templates or env.",
)
