"""A driver's `config` block described as data, so one description serves everyone.

    drivers/schemas.py declares ConfigSchema(fields...) per driver
        ├── the driver's validate_config (at start, on the node)
        ├── model.spec.validate (job validate, plan, run; the server before it stores)
        └── docs/job-spec.md (model/spec_doc.py)

`problems()` returns every problem as (path inside the config, message), each path a tuple
such as ("args", 1); callers prefix it with where the config is. Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Literal

from podium.model.show import show, unknown_field

Kind = Literal["string", "strings", "string_map", "bool", "number", "integer", "choice", "ports"]
Where = tuple[str | int, ...]

KIND_WORDS: dict[str, str] = {
    "string": "string",
    "strings": "list of strings",
    "string_map": "mapping of strings to strings",
    "bool": "boolean",
    "number": "number",
    "integer": "integer",
    "choice": "string",
    "ports": "list of port labels",
}


@dataclass(frozen=True)
class ConfigField:
    name: str
    kind: Kind
    help: str  # what it means (docs)
    example: object  # a value that is valid (docs; tested)
    required: bool = False
    default: str = ""  # what leaving it out means, in words (docs)
    nonempty: bool = False  # strings (and items of lists of strings) may not be blank
    exec_safe: bool = False  # handed to exec or the OS: no NUL character
    minimum: float | None = None  # numbers
    choices: tuple[str, ...] = ()
    # A further rule for a value of the right kind (each item, for a list): a message or "".
    check: Callable[[Any], str] | None = None

    def type_words(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(f"`{c}`" for c in self.choices)
        return KIND_WORDS[self.kind]


@dataclass(frozen=True)
class ConfigSchema:
    driver: str
    summary: str  # one paragraph for the docs
    fields: tuple[ConfigField, ...]
    example: dict[str, Any] = field(default_factory=dict)  # a whole valid config (docs; tested)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def problems(
        self, config: dict[str, Any], *, port_labels: Collection[str] | None = None
    ) -> list[tuple[Where, str]]:
        """Every problem with `config`; `port_labels`, when known, are the group's ports."""
        out: list[tuple[Where, str]] = []
        for key in config:
            if key not in self.names:
                out.append(((str(key),), unknown_field(key, self.names)))
        for f in self.fields:
            if f.name not in config:
                if f.required:
                    out.append(((f.name,), "required field is missing"))
                continue
            out.extend(_check(f, config[f.name], port_labels))
        return out

    def messages(self, config: dict[str, Any]) -> list[str]:
        """The problems as "path: message" lines, as a driver reports them."""
        return [f"{render(where)}: {message}" for where, message in self.problems(config)]


def render(where: Where) -> str:
    """("args", 1) -> "args[1]"."""
    out = ""
    for part in where:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _check(f: ConfigField, value: object, ports: Collection[str] | None) -> list[tuple[Where, str]]:
    name: Where = (f.name,)
    if f.kind == "string":
        return _string(f, value, name)
    if f.kind in ("strings", "ports"):
        if not isinstance(value, list):
            return [(name, f"expected a {KIND_WORDS[f.kind]}, got {show(value)}")]
        out: list[tuple[Where, str]] = []
        for i, item in enumerate(value):
            found = _string(f, item, (*name, i))
            if not found and f.kind == "ports" and ports is not None and item not in ports:
                known = ", ".join(sorted(ports)) or "none; declare one under network.ports"
                found = [((*name, i), f"expected a port label of the group (it has: {known}), "
                                      f"got {show(item)}")]  # fmt: skip
            out += found
        return out
    if f.kind == "string_map":
        if not isinstance(value, dict):
            return [(name, f"expected a mapping of strings to strings, got {show(value)}")]
        out = []
        for k, v in value.items():
            if not isinstance(k, str) or not k:
                out.append(((*name, str(k)), f"expected a non-empty string as key, got {show(k)}"))
            elif not isinstance(v, str):
                out.append(((*name, k), f"expected a string, got {show(v)}"))
        if not out and f.check is not None and (message := f.check(value)):
            out.append((name, message))
        return out
    if f.kind == "bool":
        return (
            []
            if isinstance(value, bool)
            else [(name, f"expected true or false, got {show(value)}")]
        )
    if f.kind == "choice":
        if isinstance(value, str) and value in f.choices:
            return []
        options = ", ".join(f'"{c}"' for c in f.choices)
        return [(name, f"expected one of {options}, got {show(value)}")]
    if f.kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            return [(name, f"expected an integer, got {show(value)}")]
        return []
    # number
    low = f.minimum if f.minimum is not None else -math.inf
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < low
    ):
        at_least = f" of at least {f.minimum:g}" if f.minimum is not None else ""
        return [(name, f"expected a number{at_least}, got {show(value)}")]
    return []


def _string(f: ConfigField, value: object, where: Where) -> list[tuple[Where, str]]:
    if not isinstance(value, str):
        return [(where, f"expected a string, got {show(value)}")]
    if f.nonempty and not value.strip():
        return [(where, f"expected a non-empty string, got {show(value)}")]
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return [(where, "contains invalid unicode (a lone surrogate)")]
    if f.exec_safe and "\x00" in value:
        return [(where, "must not contain a NUL character")]
    if f.check is not None and (message := f.check(value)):
        return [(where, message)]
    return []
