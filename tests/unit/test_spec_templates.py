"""Job files: a task's templates and env read from configs and secrets."""

from __future__ import annotations

from typing import Any

import pytest

from podium.errors import Problem, ValidationError
from podium.model import spec
from podium.model.diff import diff
from podium.model.types import EnvRef, Job


def _doc(template: dict[str, Any] | None = None, **task: Any) -> dict[str, Any]:
    t: dict[str, Any] = {"name": "t", "config": {"command": "x"}, **task}
    if template is not None:
        t["templates"] = [{"destination": "app.conf", "data": "x", **template}]
    return {"name": "j", "groups": [{"name": "g", "tasks": [t]}]}


def _load(doc: dict[str, Any]) -> Job:
    return spec.validate(spec.canonicalize(doc))


def _problems(doc: dict[str, Any]) -> list[Problem]:
    with pytest.raises(ValidationError) as e:
        _load(doc)
    return e.value.problems


def test_defaults_follow_the_job_type() -> None:
    t = _load(_doc({})).groups[0].tasks[0].templates[0]
    assert (t.change_mode, t.change_signal, t.splay, t.perms, t.env) == (
        "rolling", "SIGHUP", 5.0, "", False,
    )  # fmt: skip
    batch = _load({**_doc({}), "type": "batch"}).groups[0].tasks[0].templates[0]
    assert batch.change_mode == "restart"
    system = _load({**_doc({}), "type": "system"}).groups[0].tasks[0].templates[0]
    assert system.change_mode == "restart"
    t = _load(_doc({"change_signal": "usr1", "splay": "30s"})).groups[0].tasks[0].templates[0]
    assert (t.change_signal, t.splay) == ("SIGUSR1", 30.0)


@pytest.mark.parametrize(
    ("template", "path", "fragment"),
    [
        ({"destination": "/etc/passwd"}, "destination", "inside the task's directory"),
        ({"destination": "../x"}, "destination", "no '..'"),
        ({"destination": "a//b"}, "destination", "inside the task's directory"),
        ({"destination": "logs/x"}, "destination", "logs/ holds the task's own logs"),
        ({"data": ""}, "", "expected data"),
        ({"data": "", "source": "app.conf.j2"}, "source", "read by the podium CLI"),
        ({"change_mode": "reload"}, "change_mode", 'one of "rolling"'),
        ({"change_signal": "SIGNOPE"}, "change_signal", "a signal name"),
        ({"perms": 640}, "perms", "quoted"),
        ({"perms": "0999"}, "perms", "octal"),
        ({"splay": "-1s"}, "splay", "not negative"),
        ({"env": True, "change_mode": "signal"}, "change_mode", "cannot change a running"),
        ({"reads": ["nope"]}, "reads[0]", "expected config:PATH"),
        ({"destinaton": "x"}, "destinaton", 'did you mean "destination"'),
    ],
)
def test_template_rules(template: dict[str, Any], path: str, fragment: str) -> None:
    where = "groups[0].tasks[0].templates[0]" + (f".{path}" if path else "")
    found = _problems(_doc(template))
    assert any(p.path == where and fragment in p.message for p in found), found


def test_two_templates_may_not_share_a_destination() -> None:
    doc = _doc({})
    doc["groups"][0]["tasks"][0]["templates"].append({"destination": "app.conf", "data": "y"})
    found = _problems(doc)
    assert found[0].path == "groups[0].tasks[0].templates[1].destination"
    assert "also the destination of groups[0].tasks[0].templates[0]" in found[0].message


def test_env_read_from_a_secret_or_config() -> None:
    job = _load(_doc(env={"PW": {"secret": "db/password"}, "HOST": {"config": "db/s", "key": "h"}}))
    env = job.groups[0].tasks[0].env
    assert env["PW"] == EnvRef(secret="db/password", key="value")
    assert env["HOST"] == EnvRef(config="db/s", key="h")


def test_a_secret_env_var_may_not_reach_a_command_line() -> None:
    doc = _doc(env={"PW": {"secret": "db/password"}})
    doc["groups"][0]["tasks"][0]["config"] = {"command": "app", "args": ["--pw", "${PW}"]}
    found = _problems(doc)
    assert found[0].path == "groups[0].tasks[0].config.args[1]"
    assert "would show in the process list" in found[0].message


def test_diffs_show_a_secret_env_by_its_path() -> None:
    old = {"env": {"PW": {"secret": "db/a", "config": "", "key": "value"}}}
    new = {"env": {"PW": {"secret": "db/b", "config": "", "key": "value"}}}
    (change,) = diff(old, new)
    assert (change.path, change.old, change.new) == ("env.PW", "<secret:db/a>", "<secret:db/b>")


def test_pins_are_set_by_the_server_and_not_part_of_the_spec() -> None:
    job = _load({**_doc({}), "config_versions": {"config:db/s": 3}})
    assert job.config_versions == {"config:db/s": 3}
    assert "config_versions" not in spec.user_spec(job)
    found = _problems({**_doc({}), "config_versions": {"db/s": 3}})
    assert found[0].path == 'config_versions["db/s"]'
