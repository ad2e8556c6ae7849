"""The house's one-way data flow, checked: pure rooms import no I/O, drivers call no API."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "podium"

# room -> modules it must never import (prefix match)
FORBIDDEN = {
    "scheduler": (
        "podium.store",
        "podium.server",
        "podium.agent",
        "podium.drivers",
        "podium.api",
        "asyncio",
        "socket",
        "sqlite3",
        "httpx",
        "subprocess",
        "time",
        "random",
        "os",
    ),
    "model": (
        "podium.store",
        "podium.server",
        "podium.agent",
        "podium.drivers",
        "podium.api",
        "podium.scheduler",
        "asyncio",
        "socket",
        "sqlite3",
        "httpx",
        "subprocess",
    ),
    # The autoscaler's maths: figures in, a count and its reason out (no clock, no I/O).
    "autoscale": (
        "podium.store",
        "podium.server",
        "podium.agent",
        "podium.drivers",
        "podium.api",
        "podium.proxy",
        "podium.scheduler",
        "asyncio",
        "socket",
        "sqlite3",
        "httpx",
        "subprocess",
        "time",
        "random",
        "os",
    ),
    "drivers": ("podium.api", "podium.server", "podium.store", "podium.scheduler", "podium.agent"),
    "store": ("podium.server", "podium.agent", "podium.drivers", "podium.scheduler", "podium.api"),
    "agent": ("podium.server", "podium.store", "podium.scheduler"),
    # User templates are parsed and rendered here, in a worker process: no cluster state.
    "templates": (
        "podium.store",
        "podium.server",
        "podium.agent",
        "podium.drivers",
        "podium.api",
        "podium.scheduler",
        "socket",
        "sqlite3",
        "httpx",
    ),
    # Trust is below the server and the agent: both use it, it uses neither.
    "tls": ("podium.server", "podium.agent", "podium.drivers", "podium.scheduler", "podium.api"),
}


# The one door between rooms that are otherwise apart: the model reads each driver's config
# schema (pure data) so job validation knows it; that module must itself stay pure.
ALLOWED = {"model": ("podium.drivers.schemas",)}
PURE = {
    "drivers/schemas.py": (
        "podium.drivers.docker_volumes",
        "podium.model.config_schema",
        "posixpath",
        "__future__",
    )
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_room_imports_stay_in_their_lane(room: str) -> None:
    bad = []
    for path in sorted((SRC / room).rglob("*.py")):
        if room == "scheduler" and path.name == "simulate.py":
            continue  # builds fake clusters for benchmarks; seeded randomness is its job
        for mod in _imports(path):
            if mod in ALLOWED.get(room, ()):
                continue
            if any(mod == f or mod.startswith(f + ".") for f in FORBIDDEN[room]):
                bad.append(f"{path.relative_to(SRC)} imports {mod}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("module", sorted(PURE))
def test_what_the_model_may_read_from_other_rooms_stays_pure(module: str) -> None:
    extra = set(_imports(SRC / module)) - set(PURE[module])
    assert not extra, f"{module} imports {sorted(extra)}: it must stay pure data"
