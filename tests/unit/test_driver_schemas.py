"""Each driver's config schema, one description used by the driver at start and by job
validation (`podium job validate`, the server) before anything is stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from podium.drivers.docker import DockerDriver
from podium.drivers.mock import MockDriver
from podium.drivers.process import ProcessDriver
from podium.errors import Problem, ValidationError
from podium.model import spec
from support.cli import no_traceback, run_cli


def problems(task: dict[str, Any]) -> list[Problem]:
    doc = {
        "name": "j",
        "groups": [{"name": "g", "network": {"ports": {"http": {}}}, "tasks": [task]}],
    }
    try:
        spec.validate(spec.canonicalize(doc))
    except ValidationError as e:
        return e.problems
    return []


T = "groups[0].tasks[0]"


def test_a_misspelt_config_key_is_refused_with_the_near_name() -> None:
    (p,) = problems({"name": "t", "config": {"command": "echo", "arg": ["hi"]}})
    assert p.path == f"{T}.config.arg"
    assert 'unknown field (did you mean "args"?)' in p.message
    assert "command, args, work_dir" in p.message
    (p,) = problems({"name": "t", "driver": "docker", "config": {"image": "x", "enviroment": {}}})
    assert p.path == f"{T}.config.enviroment" and "valid fields are: image" in p.message


def test_a_misspelt_driver_is_refused_with_the_near_name() -> None:
    (p,) = problems({"name": "t", "driver": "proces", "config": {"command": "echo"}})
    assert p.path == f"{T}.driver"
    assert 'did you mean "process"?' in p.message
    assert "docker" in p.message and "process" in p.message
    (p,) = problems({"name": "t", "driver": "qemu", "config": {"image": "vm.qcow2"}})
    assert (
        p.path == f"{T}.driver"
        and "unknown driver" in p.message
        and "did you mean" not in p.message
    )


DRIVERS = {
    "process": ProcessDriver(use_cgroups=False),
    "docker": DockerDriver(),
    "mock": MockDriver(),
}
CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("process", {"command": "sleep", "args": ["1"], "work_dir": "sub"}),
    ("process", {}),
    ("process", {"command": "", "args": "1"}),
    ("process", {"command": "x", "args": ["a", 2], "bogus": 1}),
    ("process", {"command": "x", "work_dir": 3}),
    ("docker", {"image": "redis:7", "ports": ["http"], "volumes": ["data:/data:ro"]}),
    ("docker", {"image": "", "init": "yes", "network_mode": "overlay"}),
    ("docker", {"image": "x", "labels": {"podium.job": "x"}, "volumes": ["nocolon", "a:b:zz"]}),
    ("docker", {"image": "x", "volumes": ["../../etc:/etc"], "entrypoint": "sh"}),
    ("mock", {"run_for": -1, "exit_code": True, "stdout": 3, "fail_stop": "no"}),
    ("mock", {"run_for": 2.5, "exit_code": 3}),
]


@pytest.mark.parametrize(("driver", "config"), CONFIGS)
def test_the_driver_and_the_validator_judge_a_config_alike(
    driver: str, config: dict[str, Any]
) -> None:
    """One schema: what the job validator says about a config, the driver says at start."""
    at_start = sorted(DRIVERS[driver].validate_config(config))
    prefix = f"{T}.config."
    validated = sorted(
        f"{p.path.removeprefix(prefix)}: {p.message}"
        for p in problems({"name": "t", "driver": driver, "config": config})
    )
    assert validated == at_start


def test_the_model_repeats_no_drivers_config() -> None:
    source = Path(spec.__file__).read_text()
    for key in ("image_archive", "network_mode", "entrypoint", "work_dir", '"volumes"'):
        assert key not in source, f"model/spec.py spells the driver field {key}"


def test_validate_refuses_a_file_larger_than_the_server_accepts(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    filler = "# " + "x" * 1000 + "\n"
    path.write_text(
        "name: big\ngroups: [{name: g, tasks: [{name: t, config: {command: x}}]}]\n"
        + filler * 10_500
    )
    result = run_cli("job", "validate", str(path))
    no_traceback(result)
    assert result.exit_code == 1
    assert "4 MiB" in result.output and str(path) in result.output
