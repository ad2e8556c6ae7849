"""Printing for people (Rich tables) and for programs (`--json`)."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from rich.console import Console
from rich.table import Table

# Piped output (scripts, tests) gets wide lines instead of Rich's 80-column default.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 240)
err_console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 240)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def table(columns: list[str], rows: list[list[Any]], *, title: str | None = None) -> None:
    t = Table(title=title, show_edge=False, box=None, header_style="bold", pad_edge=False)
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*("" if v is None else str(v) for v in r))
    console.print(t)


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
