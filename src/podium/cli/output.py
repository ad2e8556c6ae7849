"""Printing for people (Rich tables, one style) and for programs (`--json`)."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from podium.runtime.ids import short, short_alloc

# Piped output (scripts, tests) gets wide lines instead of Rich's 80-column default.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 240)
err_console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 240)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


@contextlib.contextmanager
def progress_to_stderr(on: bool = True) -> Iterator[None]:
    """Meanwhile, what `console` prints goes to stderr: stdout is left to one JSON document."""
    if not on:
        yield
        return
    console.stderr = True
    try:
        yield
    finally:
        console.stderr = False


def make_table(columns: list[str], rows: list[list[Any]], *, title: str | None = None) -> Table:
    """The one table style: no borders, bold headers (Live displays take it as it is)."""
    t = Table(
        title=title,
        title_justify="left",
        show_edge=False,
        box=None,
        header_style="bold",
        pad_edge=False,
    )
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*("" if v is None else str(v) for v in r))
    return t


def table(columns: list[str], rows: list[list[Any]], *, title: str | None = None) -> None:
    console.print(make_table(columns, rows, title=title))


def short_id(id_: str) -> str:
    """A node's or deployment's id as tables show it (any prefix of it names it)."""
    return short(id_)


def alloc_short(id_: str) -> str:
    """An alloc's id as tables show it: the part that differs between copies first (any
    prefix of it names the alloc; see podium.runtime.ids)."""
    return short_alloc(id_)


def ago(ts: float) -> str:
    if not ts:
        return "-"
    d = max(0.0, time.time() - ts)
    if d < 60:
        return f"{d:.0f}s ago"
    if d < 3600:
        return f"{d / 60:.0f}m ago"
    if d < 86400:
        return f"{d / 3600:.1f}h ago"
    return f"{d / 86400:.1f}d ago"


def mib(n: float | None) -> str:
    """Bytes as MiB for people ("-" when unknown)."""
    return "-" if n is None else f"{n / (1024 * 1024):.1f} MiB"


def value_text(value: Any) -> str:
    """A scalar as YAML writes it; a mapping or list as an indented YAML block."""
    text: str = yaml.safe_dump(value, sort_keys=False, allow_unicode=True, width=100)
    text = text.removesuffix("...\n").rstrip("\n")
    if isinstance(value, dict | list) and value:
        return "\n" + "\n".join(f"    {line}" for line in text.splitlines())
    return text


def _spaced(text: str) -> str:
    return text if text.startswith("\n") else " " + text


def diff_lines(changes: list[dict[str, Any]]) -> list[str]:
    """Field changes (model.diff) as `+ path: value`, `- path: value`, `~ path: old => new`."""
    out = []
    for d in changes:
        if d["kind"] == "changed":
            out.append(f"~ {d['path']}: {value_text(d['old'])} => {value_text(d['new'])}")
        elif d["kind"] == "added":
            out.append(f"+ {d['path']}:" + _spaced(value_text(d["new"])))
        else:
            out.append(f"- {d['path']}:" + _spaced(value_text(d["old"])))
    return out


def failure_lines(failures: list[dict[str, Any]]) -> list[str]:
    """Human reasons for placement failures: which resource, how many nodes."""
    out = []
    for f in failures:
        line = f"group {f['group']!r}: {f['unplaced']} unplaced"
        if f.get("message"):
            line += f" — {f['message']}"
        else:
            parts = [f"{n} nodes exhausted on {r}" for r, n in f.get("nodes_exhausted", {}).items()]
            parts += [f"{n} nodes filtered by {k}" for k, n in f.get("nodes_filtered", {}).items()]
            line += f" — {f.get('nodes_evaluated', 0)} nodes evaluated" + (
                ": " + ", ".join(parts) if parts else ""
            )
        out.append(line)
    return out


def reads(versions: dict[str, int], *, short: bool = False) -> str:
    """ "config web/settings v2, secret web/hmac v1" (short: "web/settings@2 web/hmac@1")."""
    if short:
        return " ".join(f"{r.partition(':')[2]}@{v}" for r, v in sorted(versions.items())) or "-"
    return ", ".join(f"{r.replace(':', ' ', 1)} v{v}" for r, v in sorted(versions.items()))
