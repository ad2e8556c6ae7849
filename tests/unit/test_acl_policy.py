"""The policy language: parsing (every problem named), globs, shorthands, deny wins, the
node/agent/operator areas, and management."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from podium.acl.policy import MANAGEMENT, NOTHING, Acl, parse
from podium.errors import ValidationError

DEPLOYER = """
namespace "team-*" {
  policy = "write"
}
namespace "team-secret" {
  policy = "deny"
}
namespace "default" {
  capabilities = ["list-jobs", "read-job"]
}
node { policy = "read" }
"""


def test_globs_shorthands_and_deny_wins() -> None:
    acl = Acl.merge([parse(DEPLOYER)])
    assert acl.allows("submit-job", "team-a") and acl.allows("alloc-exec", "team-b")
    assert not acl.allows("read-job", "team-secret")  # write via the glob, but deny wins
    assert acl.allows("read-job", "default") and not acl.allows("submit-job", "default")
    assert not acl.allows("read-job", "other")
    assert not acl.allows("read-job", "xteam-a")  # a glob matches the whole name
    assert acl.anywhere("submit-job") and not acl.anywhere("nothing")
    assert acl.readable("default") and not acl.readable("team-secret")
    assert acl.allows_area("node", "read") and not acl.allows_area("node", "write")
    assert not acl.allows_area("operator", "read")


def test_deny_in_one_policy_beats_write_in_another() -> None:
    acl = Acl.merge(
        [
            parse('namespace "*" { policy = "write" }\noperator { policy = "write" }'),
            parse('namespace "prod" { capabilities = ["deny"] }\noperator { policy = "deny" }'),
        ]
    )
    assert acl.allows("submit-job", "dev") and not acl.allows("list-jobs", "prod")
    assert not acl.allows_area("operator", "read")


def test_json_policies_and_the_scale_shorthand() -> None:
    acl = Acl.merge([parse('{"namespace": {"a": {"policy": "scale"}}}')])
    assert acl.allows("scale-job", "a") and not acl.allows("submit-job", "a")


def test_management_and_nothing() -> None:
    assert MANAGEMENT.allows("alloc-exec", "any") and MANAGEMENT.allows_area("operator", "write")
    assert not NOTHING.allows("read-job", "default") and not NOTHING.anywhere("read-job")


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ('namespace "A" { policy = "read" }', "namespace glob"),
        ('namespace "a" { policy = "rw" }', "policy"),
        ('namespace "a" { capabilities = ["fly"] }', "unknown capability 'fly'"),
        ('namespace "a" { }', "expected policy or capabilities"),
        ('node { policy = "admin" }', "read, write or deny"),
        ("quota { cpu = 4 }", "unknown block"),
        ("namespace {", "not a valid policy"),
        ("[1, 2]", "not a valid policy"),
    ],
)
def test_bad_policies_name_the_problem(text: str, names: str) -> None:
    with pytest.raises(ValidationError, match=names):
        parse(text)


def test_every_problem_at_once() -> None:
    with pytest.raises(ValidationError) as e:
        parse('namespace "A" { policy = "read" }\nnode { policy = "x" }\nfoo { }')
    assert len(e.value.problems) == 3


def _ready_policies() -> dict[str, str]:
    """The ready policies docs/security.md offers, by file name."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()
    blocks = re.findall(r"```hcl\n(# (\S+\.hcl).*?)```", text, re.S)
    return {name: body for body, name in blocks}


def test_the_docs_ready_policies_parse_and_mean_what_they_say() -> None:
    ready = _ready_policies()
    assert set(ready) == {"read-only.hcl", "deployer-a.hcl", "operator.hcl"}, set(ready)
    ro = Acl.merge([parse(ready["read-only.hcl"])])
    assert ro.allows("read-job", "any") and not ro.allows("submit-job", "any")
    assert ro.allows_area("operator", "read") and not ro.allows_area("node", "write")
    assert ro.allows_area("agent", "read") and not ro.allows_area("agent", "write")
    dep = Acl.merge([parse(ready["deployer-a.hcl"])])
    assert dep.allows("alloc-exec", "team-a") and not dep.allows("read-job", "team-b")
    op = Acl.merge([parse(ready["operator.hcl"])])
    assert op.allows("submit-job", "x") and op.allows_area("operator", "write")
    assert not op.management
