"""Jinja2's sandbox, bounded, over exactly the data a task may read. Pure: no I/O.

    parse(name, text)            -> Parsed(reads, problems)   syntax, and what it reads
    render(name, text, inputs)   -> text, or TemplateError(name, line, reason)

A template sees:
    config("db/settings")   -> {key: text} of the version the job runs with
    secret("db/password")   -> the same for a secret
    service("api")          -> the healthy endpoints: [{address, port, node, alloc, tags}]
    env                     -> the task's environment (secrets left out)
    node                    -> {id, name, address, datacenter, labels, attributes}

Paths given to config() and secret() must be literal strings: what a job reads is then
known before anything runs (a job version pins each one's version). Attribute access is
the sandbox's (no underscore names, no mutation); `**` and sequence repetition are bounded,
and the output stops at MAX_OUTPUT. Time is bounded by whoever runs this (worker.py runs it
in a child process it kills at the deadline). An error's reason never carries a secret's
value: each is replaced by `<secret:PATH>` (see `redact`).
"""

from __future__ import annotations

import operator
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import jinja2
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from podium.model import data as datamodel

MAX_TEMPLATE = 1024 * 1024  # bytes of template text
MAX_OUTPUT = 1024 * 1024  # bytes of rendered text
MAX_POWER = 4096  # bits of a `**` result
FUNCTIONS = ("config", "secret", "service")


class TemplateError(Exception):
    """Why a template cannot render: its name (the destination), the line, the reason."""

    def __init__(self, name: str, line: int, reason: str) -> None:
        self.name, self.line, self.reason = name, line, reason
        super().__init__(str(self))

    def __str__(self) -> str:
        at = f" line {self.line}" if self.line else ""
        return f"template {self.name}{at}: {self.reason}"


@dataclass
class Parsed:
    reads: list[str] = field(default_factory=list)  # "config:db/settings", sorted
    services: list[str] = field(default_factory=list)  # service names, sorted
    problems: list[TemplateError] = field(default_factory=list)


@dataclass
class Inputs:
    """What one render may read: the pinned data of its job version, and its context."""

    configs: dict[str, dict[str, str]] = field(default_factory=dict)  # path -> data
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    services: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    node: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)  # "config:PATH" -> version


class DataMap(Mapping[str, str]):
    """A config's or secret's keys, read-only, saying which object lacks a key."""

    def __init__(self, what: str, data: dict[str, str]) -> None:
        self._what = what
        self._data = data

    def __getitem__(self, key: str) -> str:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def describe(self) -> str:
        return self._what

    def key_names(self) -> str:
        return ", ".join(sorted(self._data)) or "none"


class _Undefined(jinja2.StrictUndefined):
    @property
    def _undefined_message(self) -> str:
        obj = self._undefined_obj
        if isinstance(obj, DataMap):
            return (
                f"{obj.describe()} has no key {self._undefined_name!r} (it has: {obj.key_names()})"
            )
        return str(super()._undefined_message)


def _bounded_power(left: Any, right: Any) -> Any:
    if (
        isinstance(left, int)
        and isinstance(right, int)
        and right > 0
        and abs(left) > 1
        and left.bit_length() * right > MAX_POWER
    ):
        raise OverflowError(f"a power of more than {MAX_POWER} bits")
    return operator.pow(left, right)


def _bounded_repeat(left: Any, right: Any) -> Any:
    for seq, n in ((left, right), (right, left)):
        if isinstance(seq, str | list | tuple) and isinstance(n, int) and len(seq) * n > MAX_OUTPUT:
            raise OverflowError(f"a repeated sequence longer than {MAX_OUTPUT}")
    return operator.mul(left, right)


class _Environment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"**", "*"})

    def call_binop(self, context: Any, op: str, left: Any, right: Any) -> Any:
        if op == "**":
            return _bounded_power(left, right)
        if op == "*":
            return _bounded_repeat(left, right)
        return super().call_binop(context, op, left, right)


def environment() -> jinja2.Environment:
    return _Environment(
        undefined=_Undefined, autoescape=False, keep_trailing_newline=True, auto_reload=False
    )


_ENV = environment()


def parse(name: str, text: str) -> Parsed:
    """Syntax errors, and every config, secret and service the template reads."""
    out = Parsed()
    if len(text.encode("utf-8", "surrogatepass")) > MAX_TEMPLATE:
        out.problems.append(TemplateError(name, 0, f"is larger than {MAX_TEMPLATE} bytes"))
        return out
    try:
        tree = _ENV.parse(text, name=name)
    except jinja2.TemplateSyntaxError as e:
        out.problems.append(TemplateError(name, e.lineno or 0, e.message or "syntax error"))
        return out
    except RecursionError:
        out.problems.append(TemplateError(name, 0, "nested too deeply"))
        return out
    reads: set[str] = set()
    services: set[str] = set()
    for call in tree.find_all(nodes.Call):
        fn = call.node
        if not (isinstance(fn, nodes.Name) and fn.name in FUNCTIONS):
            continue
        arg = call.args[0] if len(call.args) == 1 and not call.kwargs else None
        literal = arg.value if isinstance(arg, nodes.Const) else None
        if not isinstance(literal, str):
            what = "a service name" if fn.name == "service" else "a path"
            out.problems.append(
                TemplateError(
                    name,
                    call.lineno,
                    f'{fn.name}() takes {what} as one literal string, e.g. {fn.name}("db/settings")'
                    if fn.name != "service"
                    else 'service() takes one literal service name, e.g. service("api")',
                )
            )
            continue
        if fn.name == "service":
            services.add(literal)
        elif not datamodel.is_path(literal):
            out.problems.append(
                TemplateError(
                    name, call.lineno, f"{fn.name}({literal!r}): expected {datamodel.PATH_RULE}"
                )
            )
        else:
            reads.add(datamodel.ref(fn.name, literal))  # type: ignore[arg-type]
    out.reads = sorted(reads)
    out.services = sorted(services)
    return out


def render(name: str, text: str, inputs: Inputs) -> str:
    """The rendered text, or TemplateError with the line and a reason free of secrets."""
    try:
        template = _ENV.from_string(text)
        template.name, template.filename = name, name
        chunks: list[str] = []
        size = 0
        for chunk in template.generate(_context(inputs)):
            size += len(chunk)
            if size > MAX_OUTPUT:
                raise TemplateError(name, 0, f"renders more than {MAX_OUTPUT} bytes")
            chunks.append(chunk)
        return "".join(chunks)
    except TemplateError:
        raise
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(
            name, e.lineno or 0, redact(e.message or "syntax error", inputs)
        ) from None
    except RecursionError:
        raise TemplateError(name, 0, "nested too deeply") from None
    except MemoryError:
        raise TemplateError(name, 0, "needs too much memory") from None
    except Exception as e:
        line = _line_of(e, name)
        reason = str(e) if isinstance(e, jinja2.TemplateError | _Missing) else _describe(e)
        raise TemplateError(name, line, redact(reason, inputs)) from None


class _Missing(LookupError):
    """A config, secret or service the template asks for that its job does not read."""


def _fail(message: str) -> NoReturn:
    raise _Missing(message)


def _context(inputs: Inputs) -> dict[str, Any]:
    def config(path: str) -> DataMap:
        return _lookup("config", path, inputs.configs, inputs)

    def secret(path: str) -> DataMap:
        return _lookup("secret", path, inputs.secrets, inputs)

    def service(service_name: str) -> list[dict[str, Any]]:
        return [dict(e) for e in inputs.services.get(service_name, [])]

    return {
        "config": config,
        "secret": secret,
        "service": service,
        "env": dict(inputs.env),
        "node": dict(inputs.node),
    }


def _lookup(
    kind: datamodel.Kind, path: str, table: dict[str, dict[str, str]], inputs: Inputs
) -> DataMap:
    data = table.get(path)
    if data is None:
        _fail(f"{kind} {path!r} does not exist (or is not one this job reads)")
    version = inputs.versions.get(datamodel.ref(kind, path))
    what = f"{kind} {path!r}" + (f" version {version}" if version else "")
    return DataMap(what, data)


def _line_of(e: BaseException, name: str) -> int:
    """The template line an exception came from (Jinja rewrites tracebacks to point there)."""
    line = 0
    for frame in traceback.extract_tb(e.__traceback__):
        if frame.filename == name and frame.lineno:
            line = frame.lineno
    return line


def _describe(e: Exception) -> str:
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def redact(text: str, inputs: Inputs) -> str:
    """`text` with every secret value in it replaced by `<secret:PATH>` (longest first)."""
    values = [
        (value, path) for path, data in inputs.secrets.items() for value in data.values() if value
    ]
    for value, path in sorted(values, key=lambda v: -len(v[0])):
        if value in text:
            text = text.replace(value, f"<secret:{path}>")
    return text
