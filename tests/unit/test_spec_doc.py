"""docs/job-spec.md is generated from the model and cannot drift: regenerated and compared;
every field the validator accepts is on the page, and every example on the page is accepted."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from podium.drivers.schemas import SCHEMAS
from podium.errors import ValidationError
from podium.model import spec, spec_doc
from podium.model import types as t
from support.cli import no_traceback, run_cli

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "job-spec.md"


def problems(doc: dict[str, Any]) -> list[Any]:
    try:
        spec.validate(spec.canonicalize(doc))
    except ValidationError as e:
        return e.problems
    return []


def test_the_page_is_what_the_model_generates() -> None:
    assert PAGE.read_text() == spec_doc.markdown(), (
        "docs/job-spec.md is stale: .venv/bin/python -m podium.model.spec_doc > docs/job-spec.md"
    )


def test_the_base_document_is_valid() -> None:
    assert problems(spec_doc.base_doc()) == []


@pytest.mark.parametrize("section", spec_doc.SECTIONS, ids=lambda s: s.anchor)
def test_every_documented_field_is_accepted_with_its_example(section: spec_doc.Section) -> None:
    for name, (_, example) in spec_doc.MEANINGS[section.anchor].items():
        value = yaml.safe_load(example)
        if section.kind is t.Group and name == "tasks":
            value = spec_doc.base_doc()["groups"][0]["tasks"]  # "[...]" on the page
        if section.kind is t.Job and name == "groups":
            value = spec_doc.base_doc()["groups"]
        doc = spec_doc.example_doc(section, name, value)  # in a job of the type it needs
        if section.kind is t.Task and name == "driver":
            doc["groups"][0]["tasks"][0]["config"] = SCHEMAS[value].example
            doc["groups"][0]["network"]["ports"]["db"] = {}
        if section.kind is t.EnvRef and name == "config":
            del spec_doc.at(doc, section.path)["secret"]  # the page says: one or the other
        found = problems(doc)
        assert not found, f"{section.anchor}.{name}: example {example!r} is refused: {found}"


@pytest.mark.parametrize("driver", sorted(SCHEMAS))
def test_every_documented_config_field_is_accepted_with_its_example(driver: str) -> None:
    schema = SCHEMAS[driver]
    configs = [schema.example] + [{**schema.example, f.name: f.example} for f in schema.fields]
    for config in configs:
        doc = spec_doc.with_value((*spec_doc.TASK, "driver"), driver)
        doc["groups"][0]["network"]["ports"]["db"] = {}
        doc["groups"][0]["tasks"][0]["config"] = config
        assert not problems(doc), f"{driver}: {config} is refused: {problems(doc)}"


def _vocabulary() -> set[str]:
    """Every name a user might try as a field: all fields of all kinds and driver configs,
    and the aliases canonicalize is known to take."""
    words = {"target", "spread", "ports", "mode", "image", "command", "port", "checks"}
    for section in spec_doc.SECTIONS:
        words |= {f.name for f in msgspec.structs.fields(section.kind)}
    for schema in SCHEMAS.values():
        words |= set(schema.names)
    return words


@pytest.mark.parametrize("section", spec_doc.SECTIONS, ids=lambda s: s.anchor)
def test_every_field_the_validator_accepts_is_documented(section: spec_doc.Section) -> None:
    documented = set(spec_doc.MEANINGS[section.anchor]) | set(
        spec_doc.ALIASES.get(section.anchor, {})
    )
    for word in sorted(_vocabulary() - documented):
        path = (*section.path, word)
        # `spread: [...]` is stored as `spreads`; problems name it as written.
        where = spec_doc.render_path(path).replace(".spreads[", ".spread[")
        for value in (1, None, "x"):
            found = problems(spec_doc.with_value(path, value))
            unknown = [
                p for p in found if p.path == where and p.message.startswith("unknown field")
            ]
            assert unknown, (
                f"{where}: {value!r} is accepted, but not documented in {section.anchor}"
            )


def test_every_documented_alias_is_accepted() -> None:
    for anchor, aliases in spec_doc.ALIASES.items():
        section = next(s for s in spec_doc.SECTIONS if s.anchor == anchor)
        for alias, field in aliases.items():
            example = yaml.safe_load(spec_doc.MEANINGS[anchor][field][1])
            assert not problems(spec_doc.with_value((*section.path, alias), example))


@pytest.mark.parametrize("driver", sorted(SCHEMAS))
def test_every_config_field_a_driver_accepts_is_documented(driver: str) -> None:
    page = PAGE.read_text()
    block = page.split(f"### config: {driver}\n", 1)[1].split("\n## ", 1)[0].split("\n### ")[0]
    rows = set(re.findall(r"^\| `([a-z_]+)` \|", block, re.M))
    assert rows == set(SCHEMAS[driver].names)


@pytest.mark.parametrize(
    ("path", "anchor"),
    [
        ("", "job"),
        ("name", "job"),
        ("groups[0].count", "group"),
        ("groups[0].update.max_parallel", "update"),
        ("groups[1].tasks[0].restart.delay", "restart"),
        ("groups[0].tasks[0].resources.memory", "resources"),
        ("groups[0].services[0].checks[2].interval", "check"),
        ("groups[0].network.ports.http.static", "port"),
        ('groups[0].network.ports["1x"]', "port"),
        ("groups[0].spread[0].weight", "spread"),
        ("groups[0].tasks[0].config.arg", "config-process"),
        ("constraints[0].operator", "constraint"),
    ],
)
def test_a_problem_links_to_its_section(path: str, anchor: str) -> None:
    assert spec_doc.doc_link(path, {"groups": [{"tasks": [{}]}]}) == f"docs/job-spec.md#{anchor}"
    headings = {
        h.lower().replace(": ", "-") for h in re.findall(r"^##+ (.+)$", PAGE.read_text(), re.M)
    }
    assert anchor in headings


def test_a_docker_tasks_config_links_to_the_docker_section() -> None:
    raw = {"groups": [{"tasks": [{"driver": "process"}, {"driver": "docker"}]}]}
    link = spec_doc.doc_link("groups[0].tasks[1].config.image", raw)
    assert link == "docs/job-spec.md#config-docker"


def test_job_validate_links_each_problem_to_the_page(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: j\ngroups:\n  - name: g\n    update: {max_parallel: -1}\n"
        "    tasks: [{name: t, driver: proces, config: {command: x}}]\n"
    )
    result = run_cli("job", "validate", str(path))
    no_traceback(result)
    assert result.exit_code == 1
    assert "groups[0].update.max_parallel" in result.output
    assert "see docs/job-spec.md#update" in result.output
    assert 'did you mean "process"?' in result.output
    assert "see docs/job-spec.md#task" in result.output


def test_readme_and_docs_stand_alone() -> None:
    """Every relative link in README.md and docs/ names a file in this repository."""
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text()
        assert "../shared" not in text, page
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" in target:
                continue
            assert (page.parent / target).resolve().is_relative_to(ROOT), (page, target)
            assert (page.parent / target).exists(), (page, target)


def test_readme_links_the_job_spec() -> None:
    assert "(docs/job-spec.md)" in (ROOT / "README.md").read_text()
