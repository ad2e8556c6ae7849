"""Job files: parsing, the defaults canonicalize fills, and each validation rule with its path."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from podium.errors import Problem, ValidationError
from podium.model import spec
from podium.model.types import Job

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# The job in DESIGN.md, word for word but for one wrapped line.
DESIGN_JOB = """\
name: web
type: service            # service | batch | system | cron
namespace: default
priority: 50
groups:
  - name: frontend
    count: 3
    constraints:
      - {attribute: "${node.labels.zone}", operator: "=", value: "a"}
    restart: {attempts: 3, interval: 5m, delay: 1s, mode: delay}
    update: {max_parallel: 1, min_healthy_time: 5s, healthy_deadline: 1m,
             auto_revert: true, canary: 0}
    network:
      ports: {http: {}}                  # dynamic; {static: 8080} for a fixed one
    services:
      - name: web
        port: http
        checks: [{type: http, path: /, interval: 2s, timeout: 1s}]
    tasks:
      - name: server
        driver: process                  # or docker: {image: ..., ports: [http]}
        config: {command: python3, args: ["-m", "http.server", "${PODIUM_PORT_HTTP}"]}
        resources: {cpu: 100, memory: 64}   # MHz-equivalent shares, MB
        env: {GREETING: hello}
"""


def minimal(**job: Any) -> dict[str, Any]:
    """The smallest valid job, with top-level overrides."""
    doc: dict[str, Any] = {
        "name": "app",
        "groups": [{"name": "main", "tasks": [{"name": "run", "config": {"command": "true"}}]}],
    }
    doc.update(job)
    return doc


def rich() -> dict[str, Any]:
    """A valid job with ports, services, checks and two tasks: the base for rule tests."""
    return {
        "name": "web",
        "groups": [
            {
                "name": "frontend",
                "network": {"ports": {"http": {}, "admin": {"static": 9000}}},
                "services": [{"name": "web", "port": "http", "checks": [{"type": "http"}]}],
                "tasks": [
                    {"name": "server", "config": {"command": "python3", "args": ["-m", "x"]}},
                    {"name": "sidecar", "config": {"command": "sleep"}},
                ],
            }
        ],
    }


def load(doc: dict[str, Any]) -> Job:
    return spec.validate(spec.canonicalize(doc))


def problems(doc: dict[str, Any]) -> list[Problem]:
    with pytest.raises(ValidationError) as info:
        load(doc)
    return info.value.problems


# ------------------------------------------------------------------ parsing


def test_design_example_loads() -> None:
    job = spec.load_job(DESIGN_JOB, filename="web.yaml")
    assert job.key == "default/web"
    group = job.groups[0]
    assert (group.name, group.count) == ("frontend", 3)
    assert group.constraints[0].attribute == "${node.labels.zone}"
    assert (group.restart.interval, group.restart.mode) == (300.0, "delay")
    assert (group.update.min_healthy_time, group.update.healthy_deadline) == (5.0, 60.0)
    assert group.update.auto_revert is True
    assert group.network.ports["http"].static == 0
    check = group.services[0].checks[0]
    assert (check.name, check.port, check.interval, check.timeout) == ("web-http-0", "http", 2, 1)
    task = group.tasks[0]
    assert task.config["args"] == ["-m", "http.server", "${PODIUM_PORT_HTTP}"]
    assert task.env == {"GREETING": "hello"}
    assert task.restart == group.restart


@pytest.mark.parametrize("name", ["web.yaml", "batch.yaml"])
def test_examples_load(name: str) -> None:
    path = EXAMPLES / name
    job = spec.load_job(path.read_text(), filename=str(path))
    assert job.groups and job.groups[0].tasks


def test_web_example_is_what_the_docs_promise() -> None:
    job = spec.load_job((EXAMPLES / "web.yaml").read_text())
    group = job.groups[0]
    assert (job.name, job.type, group.count) == ("web", "service", 3)
    assert group.services[0].checks[0].interval == 1.0
    assert group.restart.delay == 1.0
    assert "${PODIUM_PORT_HTTP}" in group.tasks[0].config["args"]


def test_batch_example() -> None:
    job = spec.load_job((EXAMPLES / "batch.yaml").read_text())
    assert (job.type, job.groups[0].count) == ("batch", 2)
    assert job.groups[0].tasks[0].config == {"command": "sh", "args": ["-c", "echo hello; sleep 1"]}


def test_json_job_file() -> None:
    job = spec.load_job(json.dumps(minimal()), filename="app.json")
    assert job.name == "app"


def test_json_through_yaml_parser_too() -> None:
    assert spec.load_job(json.dumps(minimal())).name == "app"


def test_yaml_syntax_error_names_line_and_column() -> None:
    with pytest.raises(ValidationError) as info:
        spec.parse_job_text("name: web\ngroups: [\n  - a: b\n", filename="bad.yaml")
    (problem,) = info.value.problems
    assert problem.path == ""
    assert problem.message.startswith("bad.yaml: invalid YAML at line 3, column")


def test_json_syntax_error_names_line_and_column() -> None:
    with pytest.raises(ValidationError) as info:
        spec.parse_job_text('{"name": "web",\n "groups": [}', filename="bad.json")
    assert "invalid JSON at line 2, column" in info.value.problems[0].message


@pytest.mark.parametrize(
    ("text", "got"),
    [
        ("- name: web\n", "got a list"),
        ("just a string\n", 'got "just a string"'),
        ("42\n", "got 42"),
        ("", "got an empty document"),
        ("# only a comment\n", "got an empty document"),
    ],
)
def test_top_level_must_be_a_mapping(text: str, got: str) -> None:
    with pytest.raises(ValidationError) as info:
        spec.parse_job_text(text)
    (problem,) = info.value.problems
    assert problem.path == ""
    assert problem.message.startswith("expected a job: a mapping")
    assert problem.message.endswith(got)


def test_duplicate_yaml_key_is_an_error() -> None:
    with pytest.raises(ValidationError) as info:
        spec.parse_job_text("name: a\ncount: 1\nname: b\n")
    assert 'duplicate key "name"' in str(info.value)
    assert "line 3, column 1" in str(info.value)


def test_yaml_merge_keys_may_override() -> None:
    text = "base: &b {a: 1, b: 2}\nother:\n  <<: *b\n  a: 3\n"
    assert spec.parse_job_text(text)["other"] == {"a": 3, "b": 2}


def test_duplicate_json_key_is_an_error() -> None:
    with pytest.raises(ValidationError, match='duplicate key "name"'):
        spec.parse_job_text('{"name": "a", "name": "b"}', filename="x.json")


@pytest.mark.parametrize(
    "text",
    [
        "name: " + "9" * 5000 + "\n",  # beyond Python's int-from-string limit
        "when: 2024-13-45\n",  # looks like a date, is not one
        "[" * 5000 + "]" * 5000,
        "a: !!python/object:os.system {}\n",  # unsafe tags are refused
        "a: \x00\n",
        "\t- x\n",
    ],
)
def test_hostile_text_gives_a_validation_error(text: str) -> None:
    with pytest.raises(ValidationError):
        spec.parse_job_text(text)


def test_alias_bomb_is_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    with pytest.raises(ValidationError, match="too large"):
        spec.parse_job_text("\n".join(lines) + "\nname: x\n")


def test_recursive_alias_is_refused() -> None:
    with pytest.raises(ValidationError):
        spec.parse_job_text("name: x\nmeta: &m {self: *m}\n")


# ---------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (5, 5.0),
        (1.5, 1.5),
        (0, 0.0),
        ("500ms", 0.5),
        ("5s", 5.0),
        ("1m30s", 90.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1.5h", 5400.0),
        ("1h2m3s", 3723.0),
        ("250us", 0.00025),
        (" 10s ", 10.0),
        ("30", 30.0),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert spec.parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (-1, "not negative"),
        ("-5s", "not negative"),
        ("5 parsecs", "expected a duration"),
        ("", "expected a duration"),
        ("s", "expected a duration"),
        ("5x", "expected a duration"),
        (True, "expected a duration"),
        (None, "got null"),
        ([5], "got a list"),
        (float("nan"), "expected a duration"),
        (float("inf"), "at most 3650d"),
        (10**100, "at most 3650d"),
        ("99999d", "at most 3650d"),
        ("1" * 100 + "s", "expected a duration"),
    ],
)
def test_parse_duration_rejects(value: object, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        spec.parse_duration(value)


# ----------------------------------------------------------------- defaults


def test_every_default_is_filled() -> None:
    job = load(minimal())
    assert (job.namespace, job.type, job.priority, job.schedule) == ("default", "service", 50, "")
    group = job.groups[0]
    assert group.count == 1
    assert (group.restart.attempts, group.restart.interval) == (3, 300.0)
    assert (group.restart.delay, group.restart.mode) == (1.0, "fail")
    assert group.reschedule.unlimited and group.reschedule.delay_function == "exponential"
    assert (group.update.max_parallel, group.update.canary) == (1, 0)
    assert (group.update.unhealthy_after, group.update.check_grace) == (3, 5.0)
    task = group.tasks[0]
    assert (task.driver, task.kill_signal, task.kill_timeout) == ("process", "SIGTERM", 5.0)
    assert (task.resources.cpu, task.resources.memory) == (100, 64)
    assert task.restart == group.restart


def test_canonical_document_is_complete() -> None:
    doc = spec.canonicalize(minimal())
    group = doc["groups"][0]
    for key in ("count", "restart", "reschedule", "update", "network", "services", "meta"):
        assert key in group
    for key in ("driver", "config", "resources", "env", "restart", "kill_signal", "kill_timeout"):
        assert key in group["tasks"][0]


def test_batch_defaults() -> None:
    group = load(minimal(type="batch")).groups[0]
    assert (group.restart.attempts, group.restart.interval) == (3, 86400.0)
    assert (group.reschedule.attempts, group.reschedule.unlimited) == (1, False)


def test_task_restart_inherits_the_groups_field_by_field() -> None:
    doc = minimal()
    doc["groups"][0]["restart"] = {"attempts": 7, "delay": "2s"}
    doc["groups"][0]["tasks"][0]["restart"] = {"delay": "10s"}
    group = load(doc).groups[0]
    assert (group.restart.attempts, group.restart.delay) == (7, 2.0)
    restart = group.tasks[0].restart
    assert restart is not None
    assert (restart.attempts, restart.delay, restart.interval) == (7, 10.0, 300.0)


def test_check_defaults() -> None:
    doc = rich()
    doc["groups"][0]["services"][0]["checks"] = [{}, {"type": "tcp", "port": "admin"}]
    checks = load(doc).groups[0].services[0].checks
    assert [(c.name, c.type, c.port) for c in checks] == [
        ("web-http-0", "http", "http"),
        ("web-tcp-1", "tcp", "admin"),
    ]
    assert (checks[0].path, checks[0].method, checks[0].interval, checks[0].timeout) == (
        "/",
        "GET",
        2.0,
        1.0,
    )


def test_null_means_default() -> None:
    doc = minimal(priority=None, meta=None, type=None)
    doc["groups"][0].update(count=None, restart=None, network=None, services=None)
    doc["groups"][0]["tasks"][0].update(env=None, resources={"cpu": None}, kill_timeout=None)
    job = load(doc)
    assert (job.priority, job.type, job.groups[0].count) == (50, "service", 1)
    assert job.groups[0].tasks[0].resources.cpu == 100


def test_friendly_coercions() -> None:
    doc = minimal(meta={"build": 42})
    group = doc["groups"][0]
    group["network"] = {"ports": {"http": None, "admin": 9000}}
    group["constraints"] = [
        {"attribute": "${meta.zone}", "operator": "==", "value": 1},
        {"attribute": "attr.kernel.version", "operator": "version", "value": ">= 5.4, < 7"},
    ]
    group["services"] = [{"name": "s", "checks": [{"type": "command", "command": "curl -f 'x y'"}]}]
    task = group["tasks"][0]
    task.update(env={"DEBUG": True, "N": 3, "RATE": 0.5}, kill_signal="int")
    task["resources"] = {"memory": "2GB"}
    job = load(doc)
    g = job.groups[0]
    assert job.meta == {"build": "42"}
    assert g.network.ports["http"].static == 0 and g.network.ports["admin"].static == 9000
    assert (g.constraints[0].attribute, g.constraints[0].operator) == ("${node.labels.zone}", "=")
    assert g.constraints[0].value == "1"
    assert g.constraints[1].attribute == "${node.attributes.kernel.version}"
    assert g.services[0].checks[0].command == ["curl", "-f", "x y"]
    assert g.tasks[0].env == {"DEBUG": "true", "N": "3", "RATE": "0.5"}
    assert (g.tasks[0].kill_signal, g.tasks[0].resources.memory) == ("SIGINT", 2048)


def test_ports_as_a_list_of_labels() -> None:
    doc = minimal()
    doc["groups"][0]["network"] = {"ports": ["http", "grpc"]}
    assert set(load(doc).groups[0].network.ports) == {"http", "grpc"}


def test_canonicalize_leaves_its_input_alone_and_is_idempotent() -> None:
    raw = rich()
    before = copy.deepcopy(raw)
    once = spec.canonicalize(raw)
    assert raw == before
    assert spec.canonicalize(once) == once


def test_job_to_dict_round_trips() -> None:
    job = spec.load_job(DESIGN_JOB)
    as_dict = spec.job_to_dict(job)
    assert as_dict["groups"][0]["restart"]["interval"] == 300.0
    assert load(as_dict) == job
    assert load(json.loads(json.dumps(as_dict))) == job


def test_canonicalize_keeps_garbage_for_validate() -> None:
    doc = {"name": "x", "groups": {"oops": 1}, "priority": "high"}
    out = spec.canonicalize(doc)
    assert out["groups"] == {"oops": 1} and out["priority"] == "high"
    assert spec.canonicalize([1, 2]) == [1, 2]  # type: ignore[arg-type, comparison-overlap]


# ---------------------------------------------------------------- the rules

DELETE = object()


def _set(doc: dict[str, Any], keys: tuple[Any, ...], value: object) -> None:
    target: Any = doc
    for key in keys[:-1]:
        target = target.setdefault(key, {}) if isinstance(target, dict) else target[key]
    if value is DELETE:
        del target[keys[-1]]
    elif isinstance(target, list) and keys[-1] == len(target):
        target.append(value)
    else:
        target[keys[-1]] = value


G = ("groups", 0)
T0 = (*G, "tasks", 0)
S0 = (*G, "services", 0)
C0 = (*S0, "checks", 0)

RULES: list[tuple[tuple[Any, ...], object, str, str]] = [
    # (where, value, the problem's path, a fragment of its message)
    (("name",), "Web_1", "name", "expected a job name of 1-63 lowercase letters"),
    (("name",), "wéb", "name", 'got "wéb"'),
    (("name",), "a" * 64, "name", "1-63"),
    (("name",), "-web", "name", "starting and ending with a letter or digit"),
    (("name",), DELETE, "name", "required field is missing"),
    (("name",), None, "name", "got null"),
    (("namespace",), "Prod", "namespace", "expected a namespace name"),
    (("type",), "daemon", "type", 'expected one of "service", "batch", "system", "cron"'),
    (("priority",), 0, "priority", "expected an integer from 1 to 100, got 0"),
    (("priority",), 101, "priority", "from 1 to 100"),
    (("priority",), "high", "priority", 'expected a positive integer, got "high"'),
    (("priority",), True, "priority", "got true"),
    (("priority",), 10**100, "priority", "got an integer too large to use"),
    (("schedule",), "* * * * *", "schedule", 'only a "cron" job takes a schedule'),
    (("meta",), {"k": [1]}, "meta.k", "expected a string, got a list"),
    (("meta",), [], "meta", "expected a mapping of strings to strings"),
    (("version",), -1, "version", "from 0"),
    (("surprise",), 1, "surprise", "unknown field; valid fields are: name, namespace"),
    (("groups",), [], "groups", "a job needs at least one group"),
    (("groups",), {"frontend": {}}, "groups", "expected a list of groups, got a mapping"),
    (G, [], "groups[0]", "expected a mapping, got a list"),
    (G, None, "groups[0]", "expected a mapping, got null"),
    ((*G, "name"), "Front End", "groups[0].name", "expected a group name"),
    ((*G, "count"), -1, "groups[0].count", "expected an integer from 0 to 10000, got -1"),
    ((*G, "count"), 10_001, "groups[0].count", "from 0 to 10000"),
    ((*G, "count"), 2.5, "groups[0].count", "expected a non-negative integer, got 2.5"),
    ((*G, "resart"), {}, "groups[0].resart", 'unknown field (did you mean "restart"?)'),
    ((*G, "spread"), "yes", "groups[0].spread", 'expected true or false, got "yes"'),
    ((*G, "tasks"), [], "groups[0].tasks", "a group needs at least one task"),
    ((*G, "tasks", 1, "name"), "server", "groups[0].tasks[1].name", 'duplicate task name "server"'),
    ((*G, "restart", "mode"), "maybe", "groups[0].restart.mode", 'one of "fail", "delay"'),
    ((*G, "restart", "attempts"), -1, "groups[0].restart.attempts", "from 0 to 1000"),
    ((*G, "restart", "interval"), "0s", "groups[0].restart.interval", "greater than 0"),
    ((*G, "restart", "delay"), "soon", "groups[0].restart.delay", "expected a duration"),
    ((*G, "restart"), [], "groups[0].restart", "expected a mapping, got a list"),
    (
        (*G, "reschedule"),
        {"delay": "10s", "max_delay": "5s"},
        "groups[0].reschedule.max_delay",
        "must be at least delay",
    ),
    (
        (*G, "reschedule", "delay_function"),
        "fibonacci",
        "groups[0].reschedule.delay_function",
        '"constant", "exponential"',
    ),
    (
        (*G, "update"),
        {"min_healthy_time": "1m", "healthy_deadline": "30s"},
        "groups[0].update.healthy_deadline",
        "must be longer than min_healthy_time",
    ),
    ((*G, "update", "canary"), -1, "groups[0].update.canary", "from 0 to 10000"),
    ((*G, "update", "unhealthy_after"), -1, "groups[0].update.unhealthy_after", "from 0 to 1000"),
    ((*G, "update", "unhealthy_after"), 2.5, "groups[0].update.unhealthy_after", "integer"),
    ((*G, "update", "check_grace"), "soon", "groups[0].update.check_grace", "duration"),
    ((*G, "update", "check_grace"), "-1s", "groups[0].update.check_grace", ""),
    # resources
    ((*T0, "resources", "memory"), "lots", "groups[0].tasks[0].resources.memory", ""),
    ((*T0, "resources", "memory"), 0, "groups[0].tasks[0].resources.memory", "from 1 to"),
    ((*T0, "resources", "pids"), -1, "groups[0].tasks[0].resources.pids", "from 0 to"),
    (
        (*T0, "resources", "memory"),
        10**100,
        "groups[0].tasks[0].resources.memory",
        "expected an integer from 1 to 10000000 (MB), got an integer too large to use",
    ),
    ((*T0, "resources", "cpu"), 0, "groups[0].tasks[0].resources.cpu", "1 to 1000000 (MHz)"),
    ((*T0, "resources", "gpu"), 1, "groups[0].tasks[0].resources.gpu", "valid fields are: cpu"),
    ((*T0, "resources"), [], "groups[0].tasks[0].resources", "expected a mapping, got a list"),
    # tasks, drivers, env
    ((*T0, "name"), "Server", "groups[0].tasks[0].name", "expected a task name"),
    ((*T0, "driver"), "", "groups[0].tasks[0].driver", "expected a non-empty string"),
    ((*T0, "driver"), 3, "groups[0].tasks[0].driver", "expected a string, got 3"),
    ((*T0, "config"), "python3", "groups[0].tasks[0].config", "expected a mapping"),
    ((*T0, "config", "command"), DELETE, "groups[0].tasks[0].config.command", "required"),
    ((*T0, "config", "command"), "", "groups[0].tasks[0].config.command", "non-empty string"),
    ((*T0, "config", "command"), "a\x00b", "groups[0].tasks[0].config.command", "NUL"),
    ((*T0, "config", "args"), "-m x", "groups[0].tasks[0].config.args", "a list of strings"),
    ((*T0, "config", "args", 1), 7, "groups[0].tasks[0].config.args[1]", "expected a string"),
    ((*T0, "config", "big"), 10**100, "groups[0].tasks[0].config.big", "fits in 64 bits"),
    ((*T0, "config", "nan"), float("nan"), "groups[0].tasks[0].config.nan", "a finite number"),
    ((*T0, "config", "when"), {1, 2}, "groups[0].tasks[0].config.when", "got a set"),
    ((*T0, "env"), {"1A": "x"}, 'groups[0].tasks[0].env["1A"]', "environment variable name"),
    ((*T0, "env"), {"A-B": "x"}, "groups[0].tasks[0].env.A-B", "environment variable name"),
    ((*T0, "env"), {"A": None}, "groups[0].tasks[0].env.A", "expected a string, got null"),
    ((*T0, "env"), {"A": {"b": 1}}, "groups[0].tasks[0].env.A.b", "valid fields are: secret"),
    ((*T0, "env"), {"A": {"b": 1}}, "groups[0].tasks[0].env.A", "exactly one of secret"),
    (
        (*T0, "env"),
        {"A": {"secret": "x", "config": "y"}},
        "groups[0].tasks[0].env.A",
        "exactly one",
    ),
    ((*T0, "env"), {"A": {"secret": "../x"}}, "groups[0].tasks[0].env.A.secret", "a path such as"),
    (
        (*T0, "env"),
        {"A": {"config": "a", "key": "b c"}},
        "groups[0].tasks[0].env.A.key",
        "a key of",
    ),
    ((*T0, "env"), ["A=1"], "groups[0].tasks[0].env", "expected a mapping"),
    ((*T0, "kill_signal"), "SIGFOO", "groups[0].tasks[0].kill_signal", "a signal name"),
    ((*T0, "kill_timeout"), "-1s", "groups[0].tasks[0].kill_timeout", "not negative"),
    ((*T0, "restart"), {"mode": "x"}, "groups[0].tasks[0].restart.mode", "one of"),
    ((*T0, "restart"), "never", "groups[0].tasks[0].restart", "expected a mapping"),
    # ports
    (
        (*G, "network", "ports", "admin", "static"),
        70000,
        "groups[0].network.ports.admin.static",
        "a port number from 1 to 65535, or 0 for a dynamic port, got 70000",
    ),
    (
        (*G, "network", "ports", "admin", "static"),
        -1,
        "groups[0].network.ports.admin.static",
        "got -1",
    ),
    (
        (*G, "network", "ports", "1http"),
        {},
        'groups[0].network.ports["1http"]',
        "a port label",
    ),
    (
        (*G, "network", "ports", "HTTP"),
        {},
        "groups[0].network.ports.HTTP",
        'collides with "http": both are PODIUM_PORT_HTTP',
    ),
    (
        (*G, "network", "ports", "other"),
        {"static": 9000},
        "groups[0].network.ports.other.static",
        'port 9000 is also used by "admin"',
    ),
    ((*G, "network", "ports"), "http", "groups[0].network.ports", "a mapping of port labels"),
    ((*G, "network", "mode"), "host", "groups[0].network.mode", "unknown field"),
    # services and checks
    ((*S0, "name"), "Web", "groups[0].services[0].name", "expected a service name"),
    ((*S0, "name"), DELETE, "groups[0].services[0].name", "required field is missing"),
    ((*S0, "port"), "grpc", "groups[0].services[0].port", "(it has: admin, http)"),
    ((*S0, "tags"), ["a", 1], "groups[0].services[0].tags[1]", "expected a string"),
    (
        (*G, "services", 1),
        {"name": "web"},
        "groups[0].services[1].name",
        'duplicate service name "web"',
    ),
    ((*C0, "type"), "grpc", "groups[0].services[0].checks[0].type", '"http", "tcp", "command"'),
    ((*C0, "port"), "grpc", "groups[0].services[0].checks[0].port", "a port label of the group"),
    ((*C0, "path"), "health", "groups[0].services[0].checks[0].path", 'starting with "/"'),
    # CR/LF would end the request line and inject headers; spaces split it.
    ((*C0, "path"), "/a\r\nX-Evil: 1", "groups[0].services[0].checks[0].path", "no spaces, CR"),
    ((*C0, "path"), "/a b", "groups[0].services[0].checks[0].path", "no spaces, CR"),
    ((*C0, "path"), "/a\x00", "groups[0].services[0].checks[0].path", "control characters"),
    ((*C0, "path"), "/" + "a" * 1024, "groups[0].services[0].checks[0].path", "at most 1024"),
    ((*C0, "method"), "FETCH", "groups[0].services[0].checks[0].method", '"GET", "HEAD"'),
    ((*C0, "interval"), 0, "groups[0].services[0].checks[0].interval", "greater than 0"),
    ((*C0, "timeout"), "0s", "groups[0].services[0].checks[0].timeout", "greater than 0"),
    (
        (*C0, "timeout"),
        "5s",
        "groups[0].services[0].checks[0].timeout",
        "must not be longer than the interval (2.0s)",
    ),
    (
        (*S0, "checks", 1),
        {"type": "tcp", "name": "web-http-0"},
        "groups[0].services[0].checks[1].name",
        'duplicate check name "web-http-0"',
    ),
    (
        (*S0, "checks"),
        [{"type": "command"}],
        "groups[0].services[0].checks[0].command",
        "a command check needs a command",
    ),
    (
        (*S0, "checks"),
        [{"type": "command", "command": ["ok", 1]}],
        "groups[0].services[0].checks[0].command[1]",
        "expected a string",
    ),
    # constraints
    (
        (*G, "constraints"),
        [{"attribute": "${node.labels.zone}", "operator": "~", "value": "a"}],
        "groups[0].constraints[0].operator",
        'expected one of "=", "!=", "regexp", "version", "set_contains", "distinct_hosts"',
    ),
    (
        (*G, "constraints"),
        [{"attribute": "zone", "value": "a"}],
        "groups[0].constraints[0].attribute",
        "an attribute such as ${node.name}",
    ),
    (
        (*G, "constraints"),
        [{"attribute": "${node.labels.zone}", "operator": "regexp", "value": "(a"}],
        "groups[0].constraints[0].value",
        'expected a regular expression, got "(a"',
    ),
    (  # RE2 has no backreferences (they need backtracking): refused with its reason
        (*G, "constraints"),
        [{"attribute": "${node.labels.zone}", "operator": "regexp", "value": "(a)\\1"}],
        "groups[0].constraints[0].value",
        "invalid escape sequence: \\1",
    ),
    (
        (*G, "constraints"),
        [{"attribute": "${node.labels.zone}", "operator": "regexp", "value": "(?=a)b"}],
        "groups[0].constraints[0].value",
        "invalid perl operator: (?=",
    ),
    (
        (*G, "constraints"),
        [{"attribute": "${node.attributes.os.version}", "operator": "version", "value": "new"}],
        "groups[0].constraints[0].value",
        'a version constraint such as ">= 1.2, < 2"',
    ),
    (
        (*G, "constraints"),
        [{"attribute": "${node.labels.x}", "operator": "set_contains", "value": "a,,b"}],
        "groups[0].constraints[0].value",
        "comma-separated",
    ),
    (
        ("constraints",),
        [{"attribute": "${node.name}", "value": ["a"]}],
        "constraints[0].value",
        "expected a string, got a list",
    ),
    (("constraints",), {"a": 1}, "constraints", "expected a list of constraints"),
]


@pytest.mark.parametrize(("keys", "value", "path", "fragment"), RULES)
def test_rule(keys: tuple[Any, ...], value: object, path: str, fragment: str) -> None:
    doc = rich()
    _set(doc, keys, value)
    found = problems(doc)
    assert any(p.path == path and fragment in p.message for p in found), found


def test_memory_message_is_exact() -> None:
    doc = rich()
    doc["groups"][0]["tasks"][1]["resources"] = {"memory": "lots"}
    assert problems(doc) == [
        Problem(
            "groups[0].tasks[1].resources.memory", 'expected a positive integer (MB), got "lots"'
        )
    ]
    assert str(ValidationError(problems(doc))) == (
        'groups[0].tasks[1].resources.memory: expected a positive integer (MB), got "lots"'
    )


def test_valid_variants() -> None:
    doc = rich()
    group = doc["groups"][0]
    group["constraints"] = [
        {"operator": "distinct_hosts"},
        {"attribute": "${node.datacenter}", "operator": "!=", "value": "dc2"},
        {"attribute": "${node.labels.tier}", "operator": "set_contains", "value": "a,b"},
        {"attribute": "${node.attributes.kernel}", "operator": "version", "value": ">= 1.2, < 2"},
        {"attribute": "${node.address}", "operator": "!=", "value": "10.0.0.1"},
    ]
    group["count"] = 0
    group["tasks"][1] = {"name": "db", "driver": "docker", "config": {"image": "redis:7"}}
    group["services"][0]["checks"].append({"type": "command", "command": ["true"]})
    job = load(doc)
    assert job.groups[0].tasks[1].driver == "docker"
    assert len(job.groups[0].constraints) == 5


def test_unknown_drivers_are_refused_before_placement() -> None:
    doc = minimal()
    doc["groups"][0]["tasks"][0].update(driver="qemu", config={"image": "vm.qcow2"})
    (problem,) = problems(doc)
    assert problem.path == "groups[0].tasks[0].driver"
    assert problem.message.startswith('unknown driver "qemu"; podium\'s drivers are: docker')


def test_docker_config() -> None:
    doc = rich()
    doc["groups"][0]["tasks"][1] = {"name": "db", "driver": "docker", "config": {"ports": ["x"]}}
    paths = {p.path for p in problems(doc)}
    assert paths == {"groups[0].tasks[1].config.image", "groups[0].tasks[1].config.ports[0]"}


def test_http_check_needs_a_port() -> None:
    doc = rich()
    del doc["groups"][0]["services"][0]["port"]
    (problem,) = problems(doc)
    assert problem == Problem(
        "groups[0].services[0].checks[0].port",
        "an http check needs a port: set it here or on the service",
    )


def test_inherited_port_problem_is_reported_once() -> None:
    doc = rich()
    doc["groups"][0]["services"][0]["port"] = "grpc"
    assert [p.path for p in problems(doc)] == ["groups[0].services[0].port"]


def test_cron_needs_a_schedule() -> None:
    assert [p.path for p in problems(minimal(type="cron"))] == ["schedule"]
    bad = problems(minimal(type="cron", schedule="every day"))
    assert "a cron schedule of 5 fields" in bad[0].message
    job = load(minimal(type="cron", schedule="*/5 * * * *"))
    assert job.periodic is not None and job.periodic.schedule == ["*/5 * * * *"]
    assert job.schedule == ""  # the short form is moved into periodic
    assert load(minimal(type="cron", schedule="@daily")).type == "cron"


def test_periodic_forms_and_defaults() -> None:
    short = load(minimal(type="cron", schedule="0 9 * * 1-5"))
    long = load(minimal(type="batch", periodic={"schedule": "0 9 * * 1-5"}))
    assert short == long and long.type == "cron"  # one canonical form
    p = long.periodic
    assert p is not None
    assert (p.time_zone, p.concurrency, p.starting_deadline, p.suspend) == (
        "UTC",
        "allow",
        0,
        False,
    )
    assert (p.successful_history, p.failed_history) == (3, 1)
    several = load(
        minimal(
            type="cron",
            periodic={
                "schedule": ["*/2 * * * * *", "@hourly"],  # 6 fields: seconds first
                "time_zone": "Europe/Berlin",
                "concurrency": "forbid",
                "starting_deadline": "30s",
            },
        )
    )
    assert several.periodic is not None and several.periodic.starting_deadline == 30.0
    assert several.groups[0].completions == 1  # a cron job's groups are batch groups


@pytest.mark.parametrize(
    ("doc", "path", "message"),
    [
        (minimal(type="service", periodic={"schedule": "* * * * *"}), "periodic", "only a batch"),
        (minimal(type="cron", schedule="61 * * * *"), "periodic.schedule", "a cron schedule"),
        (minimal(type="cron", schedule="0 0 31 2 *"), "periodic.schedule", "a cron schedule"),
        (
            minimal(type="cron", schedule="@daily", periodic={"time_zone": "Mars/Base"}),
            "periodic.time_zone",
            "an IANA time zone",
        ),
        (
            minimal(type="cron", periodic={"schedule": "@daily", "concurrency": "sometimes"}),
            "periodic.concurrency",
            'one of "allow", "forbid", "replace"',
        ),
        (
            minimal(type="cron", schedule="@daily", periodic={"schedule": "@hourly"}),
            "schedule",
            "give the schedule once",
        ),
        (
            minimal(type="system", parameterized={}),
            "parameterized",
            "only a batch job can be dispatched",
        ),
        (
            minimal(type="batch", parameterized={"payload": "maybe"}),
            "parameterized.payload",
            '"optional", "required", "forbidden"',
        ),
        (
            minimal(type="batch", parameterized={"meta_required": ["a"], "meta_optional": ["a"]}),
            "parameterized.meta_optional[0]",
            "also listed in meta_required",
        ),
    ],
)
def test_periodic_and_parameterized_rules(doc: dict[str, Any], path: str, message: str) -> None:
    found = problems(doc)
    assert any(p.path == path and message in p.message for p in found), found


def test_batch_group_fields() -> None:
    doc = minimal(type="batch")
    doc["groups"][0] |= {"completions": 10, "parallelism": 3, "active_deadline": "1m"}
    g = load(doc).groups[0]
    assert (g.count, g.completions, g.parallelism, g.backoff_limit) == (10, 10, 3, 6)
    assert g.active_deadline == 60.0
    g = load(minimal(type="batch")).groups[0]  # defaults: all at once, as before
    assert (g.count, g.completions, g.parallelism, g.active_deadline) == (1, 1, 1, 0.0)
    service = load(minimal()).groups[0]
    assert (service.completions, service.parallelism, service.backoff_limit) == (None, None, None)
    for key, value in (("parallelism", 2), ("completions", 1), ("backoff_limit", 1)):
        doc = minimal()
        doc["groups"][0][key] = value
        assert [p.path for p in problems(doc)] == [f"groups[0].{key}"]
    doc = minimal(type="batch")
    doc["groups"][0] |= {"count": 2, "completions": 3, "parallelism": 0}
    assert [p.path for p in problems(doc)] == ["groups[0].parallelism", "groups[0].completions"]


def test_system_jobs_outrank_others_by_default() -> None:
    assert load(minimal(type="system")).priority == 100
    assert load(minimal(type="service")).priority == 50
    assert load(minimal(type="system", priority=20)).priority == 20


def test_system_jobs_are_accepted() -> None:
    assert load(minimal(type="system")).type == "system"


def test_server_fields_are_accepted_but_not_advertised() -> None:
    job = load(minimal(version=3, stop=False, submit_time=12.5, revision=9))
    assert job.version == 3
    found = problems(minimal(nmae="x"))
    assert "version" not in found[0].message
    assert 'did you mean "name"' in found[0].message


def test_several_problems_reported_at_once() -> None:
    doc = rich()
    doc["name"] = "Bad Name"
    doc["priority"] = 1000
    group = doc["groups"][0]
    group["count"] = -5
    group["tasks"][0]["resources"] = {"cpu": "fast", "memory": -1}
    group["tasks"][1]["env"] = {"OK": "1", "2BAD": "x"}
    group["services"][0]["port"] = "nope"
    doc["groups"].append({"name": "frontend", "tasks": []})
    paths = [p.path for p in problems(doc)]
    assert paths == [
        "name",
        "priority",
        "groups[0].count",
        "groups[0].services[0].port",
        "groups[0].tasks[0].resources.cpu",
        "groups[0].tasks[0].resources.memory",
        'groups[0].tasks[1].env["2BAD"]',
        "groups[1].tasks",
        "groups[1].name",
    ]


def test_validate_rejects_a_non_mapping() -> None:
    with pytest.raises(ValidationError) as info:
        spec.validate([])  # type: ignore[arg-type]
    assert info.value.problems == [Problem("", "expected a mapping, got a list")]


def test_validate_alone_applies_struct_defaults() -> None:
    job = spec.validate(
        {
            "name": "x",
            "groups": [{"name": "g", "tasks": [{"name": "t", "config": {"command": "c"}}]}],
        }
    )
    assert job.groups[0].count == 1


def test_oversized_lists_are_refused_quickly() -> None:
    doc = rich()
    doc["groups"][0]["tasks"] = doc["groups"][0]["tasks"] * 600
    found = problems(doc)
    assert [p.path for p in found] == ["groups[0].tasks"]
    assert "at most 1000 tasks, got 1200" in found[0].message


def test_deep_config_is_refused() -> None:
    deep: Any = "leaf"
    for _ in range(100):
        deep = {"k": deep}
    doc = rich()
    doc["groups"][0]["tasks"][0]["config"]["deep"] = deep
    (problem,) = problems(doc)
    assert problem.path.startswith("groups[0].tasks[0].config.deep.k.k")
    assert "nested more than 32 levels" in problem.message


def test_messages_survive_lone_surrogates() -> None:
    doc = minimal(name="\ud800")
    (problem,) = problems(doc)
    str(problem).encode("utf-8")  # would raise if the surrogate leaked into the message
