"""The policy language, parsed and merged: what a set of policies allows (pure, no I/O).

    namespace "team-*" {              # a glob: `*` matches any run of characters
      policy       = "write"          # read | scale | write | deny (a shorthand)
      capabilities = ["alloc-exec"]   # added to what `policy` gives; "deny" denies all
    }
    node     { policy = "read" }      # nodes: list, inspect (read); drain, eligibility (write)
    operator { policy = "read" }      # servers, metrics, usage (read); namespaces (write)
    agent    { policy = "read" }      # the servers (members) and agents (metrics targets) that
                                      # run the cluster; agents' own routes take their certificate

The text is HCL (Nomad's policy syntax) or the same shape in JSON. Merging many policies:
a capability is allowed in a namespace when some rule whose glob matches it grants it and
no matching rule denies (deny wins); node/agent/operator: the highest level granted, unless
one policy says deny.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from podium.errors import Problem, ValidationError

# Namespace capabilities (Nomad's names, those podium has routes for).
CAPABILITIES = (
    "list-jobs",
    "read-job",
    "submit-job",
    "dispatch-job",
    "read-logs",
    "alloc-exec",
    "alloc-lifecycle",
    "scale-job",
    "read-config",
    "write-config",
    "read-secret",
    "write-secret",
    "deny",
)
SHORTHANDS: dict[str, frozenset[str]] = {
    "read": frozenset({"list-jobs", "read-job", "read-config"}),
    "scale": frozenset({"list-jobs", "read-job", "scale-job"}),
    "write": frozenset(CAPABILITIES) - {"deny"},
    "deny": frozenset({"deny"}),
}
AREAS = ("node", "agent", "operator")
LEVELS = {"deny": -1, "": 0, "read": 1, "write": 2}
NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
GLOB = re.compile(r"[a-z0-9*][a-z0-9*-]{0,63}")
MAX_POLICY_BYTES = 64 * 1024


@dataclass(frozen=True)
class NamespaceRule:
    glob: str
    capabilities: frozenset[str]
    _re: re.Pattern[str] = field(compare=False, repr=False, default=re.compile(""))

    @classmethod
    def of(cls, glob: str, capabilities: frozenset[str]) -> NamespaceRule:
        pattern = ".*".join(re.escape(part) for part in glob.split("*"))
        return cls(glob, capabilities, re.compile(pattern))

    def matches(self, namespace: str) -> bool:
        return self._re.fullmatch(namespace) is not None

    @property
    def denies(self) -> bool:
        return "deny" in self.capabilities


@dataclass(frozen=True)
class Rules:
    """One policy's rules."""

    namespaces: tuple[NamespaceRule, ...] = ()
    areas: tuple[tuple[str, str], ...] = ()  # (area, level)


@functools.cache
def _hcl() -> Any:
    """One HCL parser: pyhcl builds its parse tables (~50 ms) for every parser made."""
    from hcl.parser import HclParser

    return HclParser()


def parse(text: str, *, what: str = "rules") -> Rules:
    """A policy's text (HCL or JSON) as Rules; every problem named by its path."""
    if len(text.encode()) > MAX_POLICY_BYTES:
        raise ValidationError([Problem(what, f"expected at most {MAX_POLICY_BYTES} bytes")])
    return _parse(text, what)


@functools.lru_cache(maxsize=256)
def _parse(text: str, what: str) -> Rules:
    """Parsed once per text (the server parses a policy whenever its cache was emptied)."""
    try:
        raw: Any = json.loads(text) if text.lstrip().startswith("{") else _hcl().parse(text)
    except Exception as e:  # pyhcl raises ValueError and its own lexer errors
        raise ValidationError([Problem(what, f"not a valid policy (HCL or JSON): {e}")]) from None
    if not isinstance(raw, dict):
        raise ValidationError([Problem(what, "expected namespace/node/agent/operator blocks")])
    problems: list[Problem] = []
    ns_rules: list[NamespaceRule] = []
    areas: list[tuple[str, str]] = []
    for key, value in raw.items():
        if key == "namespace":
            if not isinstance(value, dict) or not value:
                problems.append(Problem(f"{what}.namespace", 'expected namespace "GLOB" { ... }'))
                continue
            for glob, body in value.items():
                path = f"{what}.namespace[{glob!r}]"
                if not isinstance(glob, str) or not GLOB.fullmatch(glob):
                    problems.append(
                        Problem(path, "expected a namespace glob: a-z, 0-9, '-' and '*'")
                    )
                    continue
                caps = _capabilities(body, path, problems)
                if caps is not None:
                    ns_rules.append(NamespaceRule.of(glob, caps))
        elif key in AREAS:
            level = _area_level(value, f"{what}.{key}", problems)
            if level is not None:
                areas.append((key, level))
        else:
            problems.append(
                Problem(f"{what}.{key}", "unknown block; expected namespace, node, agent, operator")
            )
    if problems:
        raise ValidationError(problems)
    return Rules(tuple(ns_rules), tuple(areas))


def _capabilities(body: Any, path: str, problems: list[Problem]) -> frozenset[str] | None:
    if not isinstance(body, dict):
        problems.append(Problem(path, "expected { policy = ..., capabilities = [...] }"))
        return None
    caps: set[str] = set()
    for k in body:
        if k not in ("policy", "capabilities"):
            problems.append(Problem(f"{path}.{k}", "unknown field; expected policy, capabilities"))
    policy = body.get("policy")
    if policy is not None:
        if policy not in SHORTHANDS:
            problems.append(
                Problem(f"{path}.policy", f"expected one of {sorted(SHORTHANDS)}, got {policy!r}")
            )
        else:
            caps |= SHORTHANDS[policy]
    listed = body.get("capabilities", [])
    if not isinstance(listed, list):
        problems.append(Problem(f"{path}.capabilities", "expected a list of capabilities"))
        listed = []
    for cap in listed:
        if cap not in CAPABILITIES:
            problems.append(
                Problem(
                    f"{path}.capabilities",
                    f"unknown capability {cap!r}; expected one of {list(CAPABILITIES)}",
                )
            )
        else:
            caps.add(cap)
    if policy is None and "capabilities" not in body:
        problems.append(Problem(path, "expected policy or capabilities"))
    return frozenset(caps)


def _area_level(body: Any, path: str, problems: list[Problem]) -> str | None:
    if not isinstance(body, dict) or set(body) != {"policy"}:
        problems.append(Problem(path, 'expected { policy = "read" | "write" | "deny" }'))
        return None
    level = body["policy"]
    if level not in ("read", "write", "deny"):
        problems.append(Problem(f"{path}.policy", f"expected read, write or deny, got {level!r}"))
        return None
    return str(level)


@dataclass(frozen=True)
class Acl:
    """What a caller may do: the merge of its token's policies (or management: all)."""

    management: bool = False
    namespace_rules: tuple[NamespaceRule, ...] = ()
    levels: tuple[tuple[str, int], ...] = ()

    @classmethod
    def merge(cls, rules: Iterable[Rules]) -> Acl:
        ns: list[NamespaceRule] = []
        levels: dict[str, int] = {}
        for r in rules:
            ns.extend(r.namespaces)
            for area, level in r.areas:
                old = levels.get(area, 0)
                new = LEVELS[level]
                levels[area] = -1 if -1 in (old, new) else max(old, new)
        return cls(False, tuple(ns), tuple(sorted(levels.items())))

    def allows(self, capability: str, namespace: str) -> bool:
        """May the caller use `capability` on an object of `namespace`?"""
        if self.management:
            return True
        granted = False
        for rule in self.namespace_rules:
            if rule.matches(namespace):
                if rule.denies:
                    return False
                granted = granted or capability in rule.capabilities
        return granted

    def anywhere(self, capability: str) -> bool:
        """Whether some namespace could grant it (lists, and objects not found)."""
        return self.management or any(
            capability in r.capabilities for r in self.namespace_rules if not r.denies
        )

    def readable(self, namespace: str) -> bool:
        """Some capability in `namespace` (namespace listings show those)."""
        return any(self.allows(c, namespace) for c in CAPABILITIES if c != "deny")

    def level(self, area: str) -> int:
        if self.management:
            return LEVELS["write"]
        return dict(self.levels).get(area, 0)

    def allows_area(self, area: str, level: str) -> bool:
        return self.level(area) >= LEVELS[level]


MANAGEMENT = Acl(management=True)
NOTHING = Acl()
