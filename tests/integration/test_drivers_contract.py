"""One contract suite, run against every driver: what the task runner relies on."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from integration.docker_image import IMAGE, ensure_image, remove_containers, require_docker
from podium.drivers.base import Driver, TaskConfig, TaskHandle
from podium.drivers.docker import DockerDriver
from podium.drivers.mock import MockDriver
from podium.drivers.process import ProcessDriver
from podium.errors import DriverError

pytestmark = pytest.mark.integration

CGROUP_PARENT = f"podium-test-{os.getpid()}"


@dataclass
class Kit:
    """A driver plus the configs that make its tasks behave a given way."""

    driver: Driver
    new_driver: Callable[[], Driver]  # a fresh instance, as after an agent restart
    forever: dict[str, Any]
    exit_3: dict[str, Any]
    start_error: dict[str, Any]
    tmp: Path
    handles: list[tuple[Driver, TaskHandle]] = field(default_factory=list)

    def cfg(self, config: dict[str, Any]) -> TaskConfig:
        alloc = uuid.uuid4().hex[:12]
        task_dir = self.tmp / alloc / "web"
        return TaskConfig(
            alloc_id=alloc,
            task="web",
            driver_config=config,
            env={"GREETING": "hello"},
            alloc_dir=str(self.tmp / alloc),
            task_dir=str(task_dir),
            stdout_path=str(task_dir / "logs" / "web.stdout"),
            stderr_path=str(task_dir / "logs" / "web.stderr"),
            memory_mb=64,
        )

    async def start(self, config: dict[str, Any]) -> TaskHandle:
        h = await self.driver.start(self.cfg(config))
        self.handles.append((self.driver, h))
        return h


def _process_kit(tmp: Path) -> Kit:
    def make() -> Driver:
        return ProcessDriver(cgroup_parent=CGROUP_PARENT)

    return Kit(
        driver=make(),
        new_driver=make,
        tmp=tmp,
        forever={"command": "sleep", "args": ["1000"]},
        exit_3={"command": "sh", "args": ["-c", "exit 3"]},
        start_error={"command": "/nonexistent/podium-test-binary"},
    )


def _mock_kit(tmp: Path) -> Kit:
    return Kit(
        driver=MockDriver(),
        new_driver=MockDriver,
        tmp=tmp,
        forever={},
        exit_3={"run_for": 0.05, "exit_code": 3},
        start_error={"start_error": "boom"},
    )


def _docker_kit(tmp: Path) -> Kit:
    require_docker()
    ensure_image()
    return Kit(
        driver=DockerDriver(),
        new_driver=DockerDriver,
        tmp=tmp,
        forever={"image": IMAGE, "command": "sleep", "args": ["1000"]},
        exit_3={"image": IMAGE, "command": "sh", "args": ["-c", "exit 3"]},
        start_error={"image": "podium-test-absent/nothing:never"},  # no such image anywhere
    )


KITS = {"process": _process_kit, "mock": _mock_kit, "docker": _docker_kit}


def remove_test_cgroups(parent: str = CGROUP_PARENT) -> None:
    for d in ("memory", "cpu", ""):
        with contextlib.suppress(OSError):
            os.rmdir(os.path.join("/sys/fs/cgroup", d, parent))


@pytest.fixture(params=list(KITS))
async def kit(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Kit]:
    k = KITS[request.param](tmp_path)
    try:
        yield k
    finally:
        for d, h in k.handles:
            with contextlib.suppress(DriverError):
                await d.stop(h, timeout=0.5)
            await d.destroy(h)
        remove_test_cgroups()
        if request.param == "docker":  # and anything a failed test left behind
            for _, h in k.handles:
                remove_containers(f"podium.alloc_id={h.alloc_id}")


def roundtrip(h: TaskHandle) -> TaskHandle:
    """What the agent's state file does to a handle."""
    return TaskHandle(
        driver=h.driver,
        alloc_id=h.alloc_id,
        task=h.task,
        state=json.loads(json.dumps(h.state)),
        started_at=h.started_at,
    )


async def test_fingerprint_detects(kit: Kit) -> None:
    fp = await kit.driver.fingerprint()
    assert fp.detected and fp.healthy


async def test_start_inspect_wait_gives_exit_code(kit: Kit) -> None:
    h = await kit.start(kit.exit_3)
    assert h.driver == kit.driver.name and h.alloc_id and h.task == "web"
    res = await kit.driver.wait(h)
    assert res.exit_code == 3 and not res.successful and not res.oom_killed
    assert await kit.driver.inspect(h) is False


async def test_running_task_is_inspected_alive(kit: Kit) -> None:
    h = await kit.start(kit.forever)
    assert await kit.driver.inspect(h) is True


async def test_stop_with_grace(kit: Kit) -> None:
    h = await kit.start(kit.forever)
    t0 = time.monotonic()
    await kit.driver.stop(h, signal="SIGTERM", timeout=5)
    assert time.monotonic() - t0 < 2, "a task that honours SIGTERM must not wait out the grace"
    res = await kit.driver.wait(h)
    assert res.signal == signal.SIGTERM and res.exit_code == 128 + signal.SIGTERM
    assert await kit.driver.inspect(h) is False


async def test_stop_rejects_unknown_signal(kit: Kit) -> None:
    h = await kit.start(kit.forever)
    with pytest.raises(DriverError, match="signal"):
        await kit.driver.stop(h, signal="SIGNOPE")


async def test_start_error_surfaces_as_driver_error(kit: Kit) -> None:
    with pytest.raises(DriverError):
        await kit.start(kit.start_error)


async def test_bad_config_is_rejected(kit: Kit) -> None:
    problems = kit.driver.validate_config({**kit.forever, "bogus": 1})
    assert any(p.startswith("bogus:") for p in problems)
    with pytest.raises(DriverError, match="bogus"):
        await kit.start({**kit.forever, "bogus": 1})


async def test_recover_live_task_from_new_instance(kit: Kit) -> None:
    h = await kit.start(kit.forever)
    fresh = kit.new_driver()
    h2 = roundtrip(h)
    assert await fresh.recover(h2) is True
    assert await fresh.inspect(h2) is True
    await fresh.stop(h2, timeout=2)
    res = await fresh.wait(h2)
    assert not res.successful
    await fresh.destroy(h2)


async def test_recover_gone_task_is_false(kit: Kit) -> None:
    h = await kit.start(kit.exit_3)
    await kit.driver.wait(h)
    await kit.driver.destroy(h)
    assert await kit.new_driver().recover(roundtrip(h)) is False


async def test_destroy_is_idempotent(kit: Kit) -> None:
    h = await kit.start(kit.forever)
    await kit.driver.stop(h, timeout=1)
    await kit.driver.destroy(h)
    await kit.driver.destroy(h)
    assert await kit.driver.inspect(h) is False


async def test_destroy_of_running_task_kills_it(kit: Kit) -> None:
    h = await kit.start(kit.forever)
    await kit.driver.destroy(h)
    assert await kit.driver.inspect(h) is False
