"""Deterministic breakage of a valid job document, for fuzz tests of everything that takes jobs.

    mutate(doc, rng) -> a mutated deep copy: 1-3 edits at places `rng` picks

The same seed gives the same documents, so a failure reproduces from its seed. Every
document stays JSON-encodable by `json.dumps` (string keys, nesting well under the
recursion limit), so API tests can send them as they are.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from typing import Any

Slot = tuple[Any, Any]  # (container, key or index) naming one value inside the document

MAX_SLOTS = 5000
MAX_WALK_DEPTH = 16

ODD_VALUES: tuple[Any, ...] = (
    None,
    "",
    " ",
    0,
    -1,
    -(10**100),
    10**100,
    2**64,
    1.5,
    -0.5,
    float("nan"),
    float("inf"),
    True,
    False,
    "ünïcødé ☃",
    "名前",
    "emoji 🚀",
    "\x00nul",
    "\ud800",
    "a" * 5000,
    "${node.name}",
    "5s",
    "-5s",
    "1e400",
    "99999999999999999999999",
    "NaN",
    [],
    {},
    [1, "two", None],
    {"x": 1},
    {"static": 80},
)

UNKNOWN_KEYS = ("extra", "Name", "nmae", "count ", "", "ünï", "$ref", "__proto__", "0")


def valid_job() -> dict[str, Any]:
    """A valid job using most of the spec, a rich starting point for mutations."""
    return {
        "name": "web",
        "type": "service",
        "priority": 60,
        "constraints": [{"attribute": "${node.datacenter}", "value": "dc1"}],
        "meta": {"team": "web"},
        "groups": [
            {
                "name": "frontend",
                "count": 2,
                "constraints": [
                    {"attribute": "${node.labels.zone}", "operator": "regexp", "value": "^a"},
                    {"operator": "distinct_hosts"},
                ],
                "restart": {"attempts": 2, "interval": "1m", "delay": "1s", "mode": "fail"},
                "update": {"max_parallel": 1, "min_healthy_time": "2s", "healthy_deadline": "1m"},
                "network": {"ports": {"http": {}, "admin": {"static": 9000}}},
                "services": [
                    {
                        "name": "web",
                        "port": "http",
                        "tags": ["v1"],
                        "checks": [
                            {"type": "http", "path": "/health", "interval": "2s", "timeout": "1s"},
                            {"type": "tcp", "port": "admin"},
                        ],
                    }
                ],
                "tasks": [
                    {
                        "name": "server",
                        "driver": "process",
                        "config": {"command": "python3", "args": ["-m", "http.server"]},
                        "resources": {"cpu": 200, "memory": 128},
                        "env": {"GREETING": "hello", "WORKERS": 4},
                        "kill_timeout": "3s",
                    },
                    {"name": "sidecar", "config": {"command": "sleep", "args": ["1000"]}},
                ],
            },
            {
                "name": "worker",
                "tasks": [{"name": "work", "config": {"command": "sleep", "args": ["60"]}}],
            },
        ],
    }


def mutate(doc: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A deep copy of `doc` with one to three random edits; `doc` itself is untouched."""
    out = copy.deepcopy(doc)
    for _ in range(rng.randint(1, 3)):
        rng.choice(MUTATIONS)(out, rng)
    return out


def _slots(doc: dict[str, Any]) -> list[Slot]:
    """Every (container, key) in the document, breadth first, bounded."""
    slots: list[Slot] = []
    queue: list[tuple[Any, int]] = [(doc, 0)]
    while queue and len(slots) < MAX_SLOTS:
        container, depth = queue.pop(0)
        keys = list(container) if isinstance(container, dict) else range(len(container))
        for key in keys:
            slots.append((container, key))
            value = container[key]
            if isinstance(value, dict | list) and depth < MAX_WALK_DEPTH:
                queue.append((value, depth + 1))
    return slots


def _pick(doc: dict[str, Any], rng: random.Random, want: type | tuple[type, ...] = object) -> Slot:
    matching = [s for s in _slots(doc) if isinstance(s[0][s[1]], want)]
    return rng.choice(matching) if matching else (doc, rng.choice(list(doc) or ["name"]))


def _containers(doc: dict[str, Any], kind: type) -> list[Any]:
    found = [s[0][s[1]] for s in _slots(doc) if isinstance(s[0][s[1]], kind)]
    return [doc, *found] if kind is dict else found


def _deep(rng: random.Random, depth: int) -> Any:
    value: Any = rng.choice(("leaf", 1, None))
    for _ in range(depth):
        value = [value] if rng.random() < 0.5 else {"k": value}
    return value


def replace_with_odd_value(doc: dict[str, Any], rng: random.Random) -> None:
    container, key = _pick(doc, rng)
    container[key] = copy.deepcopy(rng.choice(ODD_VALUES))


def delete_field(doc: dict[str, Any], rng: random.Random) -> None:
    container = rng.choice(_containers(doc, dict))
    if container:
        del container[rng.choice(list(container))]


def add_unknown_field(doc: dict[str, Any], rng: random.Random) -> None:
    container = rng.choice(_containers(doc, dict))
    container[rng.choice(UNKNOWN_KEYS)] = rng.choice(("x", 1, None, [], {}))


def list_for_mapping(doc: dict[str, Any], rng: random.Random) -> None:
    container, key = _pick(doc, rng, dict)
    container[key] = [container[key]]


def mapping_for_list(doc: dict[str, Any], rng: random.Random) -> None:
    container, key = _pick(doc, rng, list)
    value = container[key]
    container[key] = {str(i): v for i, v in enumerate(value)} if isinstance(value, list) else {}


def wrong_scalar_type(doc: dict[str, Any], rng: random.Random) -> None:
    container, key = _pick(doc, rng, (str, int, float, bool))
    value = container[key]
    if isinstance(value, bool):
        container[key] = "yes" if value else 0
    elif isinstance(value, int | float):
        container[key] = rng.choice((str(value), [value], bool(value)))
    else:
        container[key] = rng.choice((len(value), [value], {"value": value}, True))


def extreme_number(doc: dict[str, Any], rng: random.Random) -> None:
    container, key = _pick(doc, rng, (int, float))
    container[key] = rng.choice((-1, 0, -(10**100), 10**100, 2**63, 10**6 + 1, 65536, -0.0, 1e308))


def negate_number(doc: dict[str, Any], rng: random.Random) -> None:
    container, key = _pick(doc, rng, (int, float))
    value = container[key]
    if isinstance(value, int | float) and not isinstance(value, bool):
        container[key] = -value - 1


def odd_string(doc: dict[str, Any], rng: random.Random) -> None:
    container, key = _pick(doc, rng, str)
    value = container[key] if isinstance(container[key], str) else "x"
    container[key] = rng.choice(
        (
            "",
            value.upper(),
            value + "_Ünï",
            value * 100,
            "-" + value,
            value + "\n",
            "🚀" + value,
            value.replace("s", "ſ"),
            "x" * 64,
        )
    )


def deep_nesting(doc: dict[str, Any], rng: random.Random) -> None:
    container, key = _pick(doc, rng)
    container[key] = _deep(rng, rng.choice((5, 40, 150)))


def null_value(doc: dict[str, Any], rng: random.Random) -> None:
    container, key = _pick(doc, rng)
    container[key] = None


def empty_collection(doc: dict[str, Any], rng: random.Random) -> None:
    container, key = _pick(doc, rng, (list, dict))
    container[key] = type(container[key])()


def duplicate_list_item(doc: dict[str, Any], rng: random.Random) -> None:
    lists = [x for x in _containers(doc, list) if x]
    if lists:
        target = rng.choice(lists)
        target.append(copy.deepcopy(rng.choice(target)))


def huge_list(doc: dict[str, Any], rng: random.Random) -> None:
    container, key = _pick(doc, rng, list)
    value = container[key]
    item = value[0] if isinstance(value, list) and value else "x"
    # Shared references, as YAML aliases make them: cheap, and a case of its own.
    container[key] = [item] * rng.choice((50, 1001))


MUTATIONS: tuple[Callable[[dict[str, Any], random.Random], None], ...] = (
    replace_with_odd_value,
    delete_field,
    add_unknown_field,
    list_for_mapping,
    mapping_for_list,
    wrong_scalar_type,
    extreme_number,
    negate_number,
    odd_string,
    deep_nesting,
    null_value,
    empty_collection,
    duplicate_list_item,
    huge_list,
)
