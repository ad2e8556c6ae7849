"""Templates: the sandbox (pure), the worker process (bounded), a job's template checks."""

from __future__ import annotations

import pytest

from podium.model import spec
from podium.model.types import Job
from podium.templates import jobs as template_jobs
from podium.templates.sandbox import MAX_OUTPUT, Inputs, TemplateError, parse, render

INPUTS = Inputs(
    configs={"db/settings": {"host": "db1", "port": "5432"}},
    secrets={"db/password": {"value": "s3cr3t-canary"}},
    services={"api": [{"address": "10.0.0.1", "port": 8080, "node": "n1", "tags": []}]},
    env={"PODIUM_PORT_HTTP": "20001"},
    node={"name": "n1", "labels": {"zone": "a"}},
    versions={"config:db/settings": 4},
)


def _error(text: str) -> TemplateError:
    with pytest.raises(TemplateError) as e:
        render("app.conf", text, INPUTS)
    return e.value


def test_renders_configs_secrets_env_node_and_services() -> None:
    text = (
        'host={{ config("db/settings")["host"] }}:{{ config("db/settings").port }}\n'
        'pw={{ secret("db/password")["value"] }}\n'
        "port={{ env.PODIUM_PORT_HTTP }} zone={{ node.labels.zone }}\n"
        '{% for e in service("api") %}peer={{ e.address }}:{{ e.port }}{% endfor %}\n'
    )
    assert render("app.conf", text, INPUTS) == (
        "host=db1:5432\npw=s3cr3t-canary\nport=20001 zone=a\npeer=10.0.0.1:8080\n"
    )


def test_a_missing_key_names_the_template_line_object_version_and_keys() -> None:
    e = _error('a\nb\nhost={{ config("db/settings")["hots"] }}')
    assert (e.name, e.line) == ("app.conf", 3)
    assert "config 'db/settings' version 4 has no key 'hots' (it has: host, port)" in e.reason


def test_a_syntax_error_has_its_line() -> None:
    e = _error("ok\n{% if x %}\nno end")
    assert e.line == 2 and "endif" in e.reason


def test_reading_what_the_job_does_not_read_is_an_error() -> None:
    assert "config 'other/thing' does not exist" in _error('{{ config("other/thing") }}').reason


def test_the_sandbox_refuses_attributes_and_mutation() -> None:
    assert "unsafe" in _error("{{ ''.__class__.__mro__ }}").reason
    assert "unsafe" in _error("{% set l = [1] %}{{ l.append(2) }}").reason


def test_huge_powers_repetitions_and_outputs_are_refused() -> None:
    assert "power" in _error("{{ 9 ** 999999 }}").reason
    assert "repeated sequence" in _error("{{ 'x' * 100000000 }}").reason
    big = "{% for i in range(100000) %}" + "x" * 100 + "{% endfor %}"
    assert f"more than {MAX_OUTPUT}" in _error(big).reason


def test_an_error_never_shows_a_secret_value() -> None:
    e = _error('{{ {}[secret("db/password")["value"]] }}')
    assert "s3cr3t-canary" not in str(e)
    assert "<secret:db/password>" in e.reason
    e = _error('{{ secret("db/password")["value"] ~ undefined_thing.x }}')
    assert "s3cr3t-canary" not in str(e)


def test_parse_finds_literal_reads_and_refuses_computed_ones() -> None:
    p = parse("t", '{{ config("db/settings") }}{{ secret("db/pw") }}{{ service("api") }}')
    assert (p.reads, p.services, p.problems) == (
        ["config:db/settings", "secret:db/pw"],
        ["api"],
        [],
    )
    bad = parse("t", "x\n{{ config(name) }}")
    assert bad.problems[0].line == 2
    assert "literal string" in bad.problems[0].reason
    assert "a path such as" in parse("t", '{{ config("../etc") }}').problems[0].reason
    assert parse("t", "{{" * 100000).problems  # too deep: a problem, not a crash


def _job(templates: list[dict[str, object]]) -> Job:
    raw = {
        "name": "j",
        "groups": [
            {
                "name": "g",
                "tasks": [{"name": "t", "config": {"command": "x"}, "templates": templates}],
            }
        ],
    }
    return spec.validate(spec.canonicalize(raw))


def test_job_check_sets_reads_and_names_the_path_of_each_problem() -> None:
    job = _job(
        [
            {"destination": "a.conf", "data": '{{ config("db/settings")["host"] }}'},
            {"destination": "b.conf", "data": "line\n{{ broken"},
        ]
    )
    checked, problems = template_jobs.check(job)
    assert checked.groups[0].tasks[0].templates[0].reads == ["config:db/settings"]
    assert [p.path for p in problems] == ["groups[0].tasks[0].templates[1].data"]
    assert problems[0].message.startswith("line 2: ")
