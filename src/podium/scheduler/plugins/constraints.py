"""Attribute constraints: `${node.…}` interpolation and the =, !=, regexp, version
and set_contains operators (distinct_hosts lives in filters.DistinctHostsFilter).

Constraints are compiled once per cycle into predicates over a Node; the framework
caches the answer per node because it does not depend on usage.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable

from podium.model.pattern import PatternError, compile_pattern
from podium.model.types import Constraint, Group, Node
from podium.scheduler.framework import SUCCESS, Code, CycleContext, Status
from podium.scheduler.snapshot import NodeState

Lookup = Callable[[Node], str | None]
Check = Callable[[Node], bool]

_REF = re.compile(r"\$\{([^}]*)\}")


def _ref(path: str) -> Lookup:
    """One `${...}` reference: node.name, node.datacenter, node.id, node.address,
    node.labels.X, node.attributes.X (and Nomad's short forms meta.X, attr.X)."""
    simple = {
        "node.name": lambda n: n.name,
        "node.id": lambda n: n.id,
        "node.datacenter": lambda n: n.datacenter,
        "node.address": lambda n: n.address,
    }
    if path in simple:
        return simple[path]
    for prefix, field in (
        ("node.labels.", "labels"),
        ("meta.", "labels"),
        ("node.attributes.", "attributes"),
        ("attr.", "attributes"),
    ):
        if path.startswith(prefix):
            key = path[len(prefix) :]
            if field == "labels":
                return lambda n: n.labels.get(key)
            return lambda n: n.attributes.get(key)
    return lambda n: None


def interpolate(text: str) -> Lookup:
    """Compile `text` into a lookup; None from the lookup means a reference is missing."""
    refs = _REF.findall(text)
    if not refs:
        return lambda n: text
    if _REF.fullmatch(text):
        return _ref(refs[0])
    lookups = [_ref(r) for r in refs]
    pieces = _REF.split(text)  # literal, ref, literal, ref, ..., literal

    def render(n: Node) -> str | None:
        out = []
        for i, piece in enumerate(pieces):
            if i % 2 == 0:
                out.append(piece)
                continue
            value = lookups[i // 2](n)
            if value is None:
                return None
            out.append(value)
        return "".join(out)

    return render


# ------------------------------------------------------------------ versions

_VERSION = re.compile(r"v?(\d+(?:\.\d+)*)")
_CLAUSE = re.compile(r"\s*(>=|<=|!=|==|~>|>|<|=)?\s*(\S+)\s*")


def parse_version(text: str) -> tuple[int, ...] | None:
    """The numeric dotted prefix: "1.10.3-beta" -> (1, 10, 3)."""
    m = _VERSION.match(text.strip())
    return tuple(int(x) for x in m.group(1).split(".")) if m else None


def _cmp(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    width = max(len(a), len(b))
    a, b = a + (0,) * (width - len(a)), b + (0,) * (width - len(b))
    return (a > b) - (a < b)


_ALLOWED = {  # operator -> the comparison results it accepts
    "=": (0,),
    "==": (0,),
    "!=": (-1, 1),
    ">": (1,),
    ">=": (0, 1),
    "<": (-1,),
    "<=": (-1, 0),
}


def version_matcher(spec: str) -> Callable[[str], bool]:
    """A predicate for a spec like ">= 1.2, < 2" or "~> 1.4" (all clauses must hold)."""
    clauses: list[tuple[tuple[int, ...], tuple[int, ...]]] = []  # (version, allowed cmp)
    for clause in spec.split(","):
        m = _CLAUSE.fullmatch(clause)
        want = parse_version(m.group(2)) if m else None
        if m is None or want is None:
            return lambda v: False  # validation reports bad specs; here they match nothing
        op = m.group(1) or "="
        if op == "~>":
            # Pessimistic: ~> 1.4 allows >= 1.4, < 2; ~> 1.4.2 allows >= 1.4.2, < 1.5.
            upper = (*want[:-2], want[-2] + 1) if len(want) > 1 else (want[0] + 1,)
            clauses += [(want, _ALLOWED[">="]), (upper, _ALLOWED["<"])]
        else:
            clauses.append((want, _ALLOWED[op]))

    seen: dict[str, bool] = {}  # nodes share a handful of versions: parse each once

    def match(value: str) -> bool:
        hit = seen.get(value)
        if hit is None:
            v = parse_version(value)
            hit = v is not None and all(_cmp(v, w) in ok for w, ok in clauses)
            if len(seen) >= 1024:
                seen.clear()
            seen[value] = hit
        return hit

    return match


# --------------------------------------------------------------- operators


def compile_constraint(c: Constraint) -> Check | None:
    """A predicate over a node, or None for operators this filter does not judge."""
    left, right = interpolate(c.attribute), interpolate(c.value)
    op = c.operator
    if op == "distinct_hosts":
        return None
    literal = _REF.search(c.value) is None  # the usual case: compared with a constant
    if op == "=":
        if literal:
            value = c.value
            return lambda n: left(n) == value  # a missing attribute (None) is not equal
        return lambda n: (lv := left(n)) is not None and lv == right(n)
    if op == "!=":
        # As in Nomad: a missing attribute is "not equal".
        if literal:
            value = c.value
            return lambda n: left(n) != value
        return lambda n: left(n) != right(n)
    if op == "regexp":
        try:  # RE2: linear time, so a pattern from a job file cannot stall the loop
            pattern = compile_pattern(c.value)
        except PatternError:  # validation refuses these; a stored one matches nothing
            return lambda n: False
        return lambda n: (lv := left(n)) is not None and pattern.search(lv) is not None
    if op == "version":
        matches = version_matcher(c.value)
        return lambda n: (lv := left(n)) is not None and matches(lv)
    if op == "set_contains":
        want = {x.strip() for x in c.value.split(",") if x.strip()}

        def contains(n: Node) -> bool:
            lv = left(n)
            return lv is not None and want <= {x.strip() for x in lv.split(",")}

        return contains
    return lambda n: False


class ConstraintsFilter:
    """Job and group constraints on node attributes."""

    name = "constraints"
    static = True

    def applies(self, ctx: CycleContext, group: Group) -> bool:
        # Each predicate with the one rejection it gives, made once per cycle, not per node.
        compiled: list[tuple[Check, Status]] = []
        for c in (*ctx.job.constraints, *group.constraints):
            check = compile_constraint(c)
            if check is not None:
                why = f"constraint {c.attribute} {c.operator} {c.value} failed"
                compiled.append((check, Status(Code.UNSCHEDULABLE, why)))
        ctx.data[self.name] = compiled
        return bool(compiled)

    def signature(self, ctx: CycleContext, group: Group) -> Hashable:
        return tuple(
            (c.attribute, c.operator, c.value) for c in (*ctx.job.constraints, *group.constraints)
        )

    def filter(self, ctx: CycleContext, node: NodeState, group: Group) -> Status:
        compiled: list[tuple[Check, Status]] = ctx.data[self.name]  # type: ignore[assignment]
        n = node.node
        for check, rejected in compiled:
            if not check(n):
                return rejected
        return SUCCESS
