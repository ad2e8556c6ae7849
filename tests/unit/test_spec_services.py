"""Job spec fields of service discovery: service meta and ingress, task upstreams,
group shutdown_delay — their defaults and each validation rule with its path."""

from __future__ import annotations

from typing import Any

import pytest

from podium.errors import Problem, ValidationError
from podium.model import spec
from podium.model.types import Job


def job_doc() -> dict[str, Any]:
    return {
        "name": "web",
        "groups": [
            {
                "name": "g",
                "network": {"ports": {"http": {}}},
                "services": [{"name": "web", "port": "http"}],
                "tasks": [
                    {"name": "a", "config": {"command": "true"}},
                    {"name": "b", "config": {"command": "true"}},
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


def test_defaults() -> None:
    group = load(job_doc()).groups[0]
    assert group.shutdown_delay == 0.0
    assert group.services[0].meta == {} and group.services[0].ingress is None
    assert group.tasks[0].upstreams == []


def test_full_declaration() -> None:
    doc = job_doc()
    group = doc["groups"][0]
    group["shutdown_delay"] = "1500ms"
    group["services"][0].update(meta={"version": 2}, ingress={"host": "Api.Example.com"})
    group["tasks"][0]["upstreams"] = [
        {"service": "api", "local_port": 9001},
        {"service": "db", "local_port": 9002, "mode": "http", "policy": "least_conn"},
    ]
    loaded = load(doc).groups[0]
    assert loaded.shutdown_delay == 1.5
    service = loaded.services[0]
    assert service.meta == {"version": "2"}
    assert service.ingress is not None
    assert (service.ingress.host, service.ingress.path) == ("Api.Example.com", "/")
    ups = loaded.tasks[0].upstreams
    assert [(u.service, u.local_port, u.mode, u.policy) for u in ups] == [
        ("api", 9001, "tcp", "round_robin"),
        ("db", 9002, "http", "least_conn"),
    ]
    again = spec.canonicalize(spec.job_to_dict(load(doc)))
    assert spec.validate(again) == load(doc)


U0 = ("groups", 0, "tasks", 0, "upstreams")
RULES: list[tuple[tuple[Any, ...], object, str, str]] = [
    (("groups", 0, "shutdown_delay"), "soon", "groups[0].shutdown_delay", "duration"),
    (("groups", 0, "shutdown_delay"), -1, "groups[0].shutdown_delay", ""),
    (("groups", 0, "services", 0, "meta"), ["x"], "groups[0].services[0].meta", "mapping"),
    (("groups", 0, "services", 0, "meta"), {"k": [1]}, "groups[0].services[0].meta.k", "string"),
    (
        ("groups", 0, "services", 0, "ingress"),
        {"host": "a b"},
        "groups[0].services[0].ingress.host",
        "a host name",
    ),
    (
        ("groups", 0, "services", 0, "ingress"),
        {"host": "api.local:8080"},
        "groups[0].services[0].ingress.host",
        "no port",
    ),
    (
        ("groups", 0, "services", 0, "ingress"),
        {"path": "api"},
        "groups[0].services[0].ingress.path",
        'starting with "/"',
    ),
    (
        ("groups", 0, "services", 0, "ingress"),
        {"hots": "x"},
        "groups[0].services[0].ingress.hots",
        'did you mean "host"',
    ),
    (U0, {"service": "api"}, "groups[0].tasks[0].upstreams", "a list of upstreams"),
    (U0, [{"local_port": 9001}], "groups[0].tasks[0].upstreams[0].service", "required"),
    (U0, [{"service": "api"}], "groups[0].tasks[0].upstreams[0].local_port", "required"),
    (
        U0,
        [{"service": "API", "local_port": 9001}],
        "groups[0].tasks[0].upstreams[0].service",
        "a service name",
    ),
    (
        U0,
        [{"service": "api", "local_port": 70000}],
        "groups[0].tasks[0].upstreams[0].local_port",
        "from 1 to 65535",
    ),
    (
        U0,
        [{"service": "api", "local_port": "9001"}],
        "groups[0].tasks[0].upstreams[0].local_port",
        "integer",
    ),
    (
        U0,
        [{"service": "api", "local_port": 9001, "mode": "udp"}],
        "groups[0].tasks[0].upstreams[0].mode",
        '"tcp", "http"',
    ),
    (
        U0,
        [{"service": "api", "local_port": 9001, "policy": "random"}],
        "groups[0].tasks[0].upstreams[0].policy",
        "least_conn",
    ),
    (
        U0,
        [{"service": "api", "local_port": 9001}, {"service": "db", "local_port": 9001}],
        "groups[0].tasks[0].upstreams[1].local_port",
        "also used by groups[0].tasks[0].upstreams[0]",
    ),
]


@pytest.mark.parametrize(("keys", "value", "path", "fragment"), RULES)
def test_rule(keys: tuple[Any, ...], value: object, path: str, fragment: str) -> None:
    doc = job_doc()
    target: Any = doc
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = value
    found = problems(doc)
    assert any(p.path == path and fragment in p.message for p in found), found


def test_local_port_is_unique_across_the_groups_tasks() -> None:
    doc = job_doc()
    tasks = doc["groups"][0]["tasks"]
    tasks[0]["upstreams"] = [{"service": "api", "local_port": 9001}]
    tasks[1]["upstreams"] = [{"service": "api", "local_port": 9001}]
    assert problems(doc) == [
        Problem(
            "groups[0].tasks[1].upstreams[0].local_port",
            "port 9001 is also used by groups[0].tasks[0].upstreams[0]",
        )
    ]
