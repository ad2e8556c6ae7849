"""The docker driver for real: the Engine API on this machine, a local busybox image.

Driver-level checks (logs, exec, stats, ports, labels, volumes, adoption) and one job run
end to end in `podium dev`: HTTP on a dynamic port, alloc logs, exec, restart on crash, stop.
"""

# Short blocking calls (docker CLI, small files) are fine in these tests; where the driver
# must work meanwhile (log streaming), they wait with `await_until` instead.
# ruff: noqa: ASYNC221, ASYNC240

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from integration.cluster import DevCluster, free_port, http_get, wait_until
from integration.docker_image import IMAGE, ensure_image, remove_containers, require_docker
from podium.drivers.base import TaskConfig, TaskHandle
from podium.drivers.docker import DockerDriver, container_name
from podium.errors import DriverError, ValidationError
from podium.model import spec

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("_image")]


@pytest.fixture(scope="module")
def _image() -> None:
    require_docker()
    ensure_image()


def test_job_spec_refuses_bad_docker_config_with_paths() -> None:
    """Pure: no engine needed. What is wrong on any node is refused at submission."""
    doc = {
        "name": "j",
        "groups": [
            {
                "name": "g",
                "tasks": [
                    {
                        "name": "t",
                        "driver": "docker",
                        "config": {
                            "image": IMAGE,
                            "args": "not-a-list",
                            "labels": {"podium.job": "x"},
                            "init": "yes",
                            "volumes": ["../../etc:/x", "data:/d:rx", "a:relative", "ok:/ok:ro"],
                        },
                    }
                ],
            }
        ],
    }
    with pytest.raises(ValidationError) as info:
        spec.validate(spec.canonicalize(doc))
    found = {p.path: p.message for p in info.value.problems}
    base = "groups[0].tasks[0].config"
    assert "escapes the alloc dir" in found[f"{base}.volumes[0]"]
    assert "mode must be ro or rw" in found[f"{base}.volumes[1]"]
    assert "must be an absolute path" in found[f"{base}.volumes[2]"]
    assert f"{base}.volumes[3]" not in found
    assert f"{base}.args" in found and f"{base}.init" in found and f"{base}.labels" in found


@pytest.fixture
async def driver() -> AsyncIterator[DockerDriver]:
    d = DockerDriver()
    node = f"test-{uuid.uuid4().hex[:8]}"
    d.test_node = node  # type: ignore[attr-defined]
    try:
        yield d
    finally:
        remove_containers(f"podium.node_id={node}")


def _cfg(d: DockerDriver, tmp: Path, config: dict[str, Any], **env: str) -> TaskConfig:
    alloc = uuid.uuid4().hex[:12]
    alloc_dir = tmp / alloc / "alloc"
    task_dir = tmp / alloc / "web"
    return TaskConfig(
        alloc_id=alloc,
        task="web",
        driver_config={"image": IMAGE, **config},
        env={"GREETING": "hello", "PODIUM_NODE_ID": d.test_node, **env},  # type: ignore[attr-defined]
        alloc_dir=str(alloc_dir),
        task_dir=str(task_dir),
        stdout_path=str(task_dir / "logs" / "web.stdout"),
        stderr_path=str(task_dir / "logs" / "web.stderr"),
        memory_mb=32,
        cpu=200,
        cpu_per_core=1000,
        pids=64,
        labels={
            "podium.alloc_id": alloc,
            "podium.job": "j",
            "podium.group": "g",
            "podium.task": "web",
        },
    )


async def await_until(pred: Any, *, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = pred()
        except (OSError, ValueError):
            last = None
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def _get(port: int) -> str:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/", timeout=1).text
    except httpx.HTTPError:
        return ""


def _inspect(cid: str) -> dict[str, Any]:
    out = subprocess.run(
        ["docker", "inspect", cid], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    return dict(json.loads(out)[0])


async def test_container_carries_labels_limits_user_workdir_and_env(
    driver: DockerDriver, tmp_path: Path
) -> None:
    cfg = _cfg(
        driver,
        tmp_path,
        {
            "command": "sh",
            "args": ["-c", "id -u; pwd; echo $GREETING; echo oops >&2; sleep 1000"],
            "user": "65534",
            "work_dir": "/tmp",
            "labels": {"team": "infra"},
        },
    )
    h = await driver.start(cfg)
    info = _inspect(h.state["id"])
    labels = info["Config"]["Labels"]
    assert labels["podium.alloc_id"] == cfg.alloc_id and labels["podium.task"] == "web"
    assert labels["podium.job"] == "j" and labels["podium.group"] == "g"
    assert labels["team"] == "infra"
    assert info["HostConfig"]["Memory"] == 32 * 1024 * 1024
    assert info["HostConfig"]["CpuShares"] == 200
    # A hard CPU limit (a CFS quota: 200 of 1000 per core = 0.2 cpu), not only shares,
    # and a bound on processes (a fork bomb in one container cannot starve the node).
    assert info["HostConfig"]["NanoCpus"] == 200_000_000
    assert info["HostConfig"]["PidsLimit"] == 64
    assert info["Name"] == "/" + container_name(cfg.alloc_id, "web")
    # Logs stream into the same files as the process driver's, stdout and stderr apart.
    async with _waiting(driver, h):
        await await_until(
            lambda: Path(cfg.stdout_path).read_text() == "65534\n/tmp\nhello\n",
            timeout=10,
            what="stdout in the task's log file",
        )
        await await_until(  # written last by the script, so it may trail stdout
            lambda: Path(cfg.stderr_path).read_text() == "oops\n", timeout=10, what="stderr"
        )
        code, out = await driver.exec(h, ["sh", "-c", "echo $GREETING; exit 4"])
        assert (code, out) == (4, b"hello\n")
        # An interactive exec: stdin in, stdout and stderr apart, the exit code; then a TTY.
        assert await _session(driver, h, ["sh", "-c", "cat; echo err >&2; exit 3"], b"hi\n") == (
            3,
            b"hi\n",
            b"err\n",
        )
        code, out, _ = await _session(driver, h, ["sh"], b"tty; exit 5\n", tty=True)
        assert code == 5 and b"/dev/pts/" in out, out
        stats = await driver.stats(h)
        assert stats.pids >= 1 and 0 < stats.memory_bytes < 32 * 1024 * 1024
        assert stats.cpu_seconds > 0 and stats.memory_limit_bytes > 0
        await driver.stop(h, timeout=2)


async def _session(
    d: DockerDriver, h: TaskHandle, cmd: list[str], stdin: bytes, *, tty: bool = False
) -> tuple[int, bytes, bytes]:
    s = await d.exec_session(h, cmd, tty=tty)
    got: dict[int, bytes] = {1: b"", 2: b""}

    async def read(tag: int, r: asyncio.StreamReader) -> None:
        while chunk := await r.read(4096):
            got[tag] += chunk

    async with asyncio.timeout(20), asyncio.TaskGroup() as tg:
        for work in s.background():
            tg.create_task(work)
        for tag, r in s.streams:
            tg.create_task(read(tag, r))
        await s.write(stdin)
        if not tty:
            await s.close_stdin()
    code = await s.wait()
    await s.kill()
    return code, got[1], got[2]


@contextlib.asynccontextmanager
async def _waiting(d: DockerDriver, h: TaskHandle) -> AsyncIterator[None]:
    """Run the driver's wait (which pumps the logs) alongside the body, as the agent does."""
    task = asyncio.create_task(d.wait(h))
    try:
        yield
    finally:
        with contextlib.suppress(DriverError):
            await d.stop(h, timeout=1)
        async with asyncio.timeout(15):
            await task


async def test_ports_are_published_on_the_node_address(
    driver: DockerDriver, tmp_path: Path
) -> None:
    port = free_port()
    cfg = _cfg(
        driver,
        tmp_path,
        {"command": "httpd", "args": ["-f", "-p", str(port), "-h", "/www"], "ports": ["http"]},
        PODIUM_PORT_HTTP=str(port),
        PODIUM_IP="127.0.0.1",
    )
    h = await driver.start(cfg)
    body = wait_until(
        lambda: httpx.get(f"http://127.0.0.1:{port}/", timeout=1).text,
        timeout=10,
        what="httpd in the container to answer",
    )
    assert body == "hello from podium\n"
    bindings = _inspect(h.state["id"])["HostConfig"]["PortBindings"]
    assert bindings == {f"{port}/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    # On the node's network: nothing published, the task binds the node port itself.
    port2 = free_port()
    h2 = await driver.start(
        _cfg(
            driver,
            tmp_path,
            {
                "command": "httpd",
                "args": ["-f", "-p", f"127.0.0.1:{port2}", "-h", "/www"],
                "ports": ["http"],
                "network_mode": "host",
            },
            PODIUM_PORT_HTTP=str(port2),
            PODIUM_IP="127.0.0.1",
        )
    )
    assert _inspect(h2.state["id"])["HostConfig"]["NetworkMode"] == "host"
    await await_until(
        lambda: _get(port2) == "hello from podium\n", timeout=10, what="httpd on the host network"
    )
    with pytest.raises(DriverError, match="no port 'admin'"):
        await driver.start(_cfg(driver, tmp_path, {"command": "true", "ports": ["admin"]}))


async def test_volumes_allow_alloc_dir_and_host_volumes_and_refuse_escapes(
    tmp_path: Path,
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "data.txt").write_text("from the host volume\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    d = DockerDriver(host_volumes={"shared": str(shared)})
    d.test_node = f"test-{uuid.uuid4().hex[:8]}"  # type: ignore[attr-defined]
    try:
        cfg = _cfg(
            d,
            tmp_path,
            {
                "command": "sh",
                "args": ["-c", "cat /data/data.txt; echo hi > /scratch/f; echo ok > /alloc/x"],
                "volumes": [f"{shared}:/data:ro", "scratch:/scratch"],
            },
        )
        h = await d.start(cfg)
        res = await d.wait(h)
        assert res.exit_code == 0, Path(cfg.stderr_path).read_text()
        assert Path(cfg.stdout_path).read_text() == "from the host volume\n"
        assert (Path(cfg.task_dir) / "scratch" / "f").read_text() == "hi\n"
        assert (Path(cfg.alloc_dir) / "x").read_text() == "ok\n"
        await d.destroy(h)
        link = Path(cfg.task_dir) / "sneaky"
        link.symlink_to(outside)
        for vol, why in [
            ("../../../etc:/x", "escapes the alloc dir"),
            (f"{outside}:/x", "outside the node's host volumes"),
            ("/etc:/x", "outside the node's host volumes"),
            (f"{shared}/../outside:/x", "outside the node's host volumes"),
            ("sneaky:/x", "escapes the alloc dir"),
            ("scratch:relative", "must be an absolute path"),
        ]:
            bad = _cfg(d, tmp_path, {"command": "true", "volumes": [vol]})
            Path(bad.task_dir).mkdir(parents=True, exist_ok=True)
            if vol.startswith("sneaky"):
                (Path(bad.task_dir) / "sneaky").symlink_to(outside)
            with pytest.raises(DriverError, match=why):
                await d.start(bad)
    finally:
        remove_containers(f"podium.node_id={d.test_node}")  # type: ignore[attr-defined]


async def test_running_container_of_the_task_is_adopted_never_duplicated(
    driver: DockerDriver, tmp_path: Path
) -> None:
    cfg = _cfg(driver, tmp_path, {"command": "sleep", "args": ["1000"]})
    first = await driver.start(cfg)
    # The agent lost its state and starts the task again: the same container comes back.
    again = await DockerDriver().start(cfg)
    assert again.state["id"] == first.state["id"]
    found = await driver.list_handles(driver.test_node)  # type: ignore[attr-defined]
    assert [h.state["id"] for h in found] == [first.state["id"]]
    assert found[0].alloc_id == cfg.alloc_id and found[0].task == "web"


async def test_image_archive_is_loaded_when_the_image_is_missing(
    driver: DockerDriver, tmp_path: Path
) -> None:
    tag = f"podium-test-archive:{uuid.uuid4().hex[:8]}"
    archive = tmp_path / "image.tar"
    subprocess.run(["docker", "tag", IMAGE, tag], check=True, timeout=30)
    try:
        subprocess.run(["docker", "save", "-o", str(archive), tag], check=True, timeout=60)
        subprocess.run(["docker", "rmi", tag], check=True, capture_output=True, timeout=30)
        h = await driver.start(
            _cfg(driver, tmp_path, {"image": tag, "image_archive": str(archive), "command": "true"})
        )
        assert (await driver.wait(h)).exit_code == 0
        await driver.destroy(h)
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, timeout=30)


async def test_fingerprint_is_unhealthy_when_no_engine_answers(tmp_path: Path) -> None:
    fp = await DockerDriver(socket_path=str(tmp_path / "no.sock")).fingerprint()
    assert not fp.detected and not fp.healthy and "no docker engine" in fp.description
    fp = await DockerDriver().fingerprint()
    assert fp.detected and fp.healthy and fp.attributes["driver.docker.version"]


# ── end to end in `podium dev` ─────────────────────────────────────────────────────────


def node_id(c: DevCluster) -> str:
    return (c.data_dir / "agent" / "node-id").read_text().strip()


def containers(c: DevCluster) -> list[dict[str, Any]]:
    out = subprocess.run(
        [
            "docker",
            "ps",
            "--no-trunc",
            "--format",
            "{{json .}}",
            "--filter",
            f"label=podium.node_id={node_id(c)}",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return [json.loads(line) for line in out.splitlines()]


@pytest.fixture
def docker_dev(tmp_path: Path) -> Iterator[DevCluster]:
    c = DevCluster(tmp_path / "dev").start()
    try:
        yield c
    finally:
        c.stop()
        c.kill_leftovers()
        with contextlib.suppress(OSError):
            remove_containers(f"podium.node_id={node_id(c)}")


WEB = f"""
name: dweb
groups:
  - name: g
    restart: {{attempts: 3, interval: 1m, delay: 0.2s, mode: delay}}
    network: {{ports: {{http: {{}}}}}}
    services:
      - name: dweb
        port: http
        checks: [{{type: http, path: /, interval: 1s, timeout: 1s}}]
    tasks:
      - name: web
        driver: docker
        kill_timeout: 3s
        resources: {{cpu: 100, memory: 32}}
        config:
          image: {IMAGE}
          command: sh
          args: ["-c", "echo serving on $PODIUM_PORT_HTTP; exec httpd -f -vv -p $PODIUM_PORT_HTTP -h /www"]
          ports: [http]
"""


def _alloc(c: DevCluster, job: str) -> dict[str, Any]:
    allocs = [
        a
        for a in c.cli_json("job", "status", job)["allocations"]
        if a["desired_status"] == "run" and a["client_status"] == "running"
    ]
    assert len(allocs) == 1, allocs
    return dict(allocs[0])


def test_docker_job_serves_logs_execs_restarts_and_stops(
    docker_dev: DevCluster, tmp_path: Path
) -> None:
    c = docker_dev
    spec = tmp_path / "dweb.yaml"
    spec.write_text(textwrap.dedent(WEB))
    res = c.cli("job", "run", str(spec), timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr + c.logs()
    a = _alloc(c, "dweb")
    short, port = a["id"][:8], a["ports"]["http"]
    assert http_get(port) == 200  # on the node address, through the published port
    assert httpx.get(f"http://127.0.0.1:{port}/").text == "hello from podium\n"
    [ctr] = containers(c)
    assert f"127.0.0.1:{port}->{port}/tcp" in ctr["Ports"]
    # Logs: stdout from the shell, stderr from httpd's request log.
    out = wait_until(
        lambda: c.cli("alloc", "logs", short, "--stdout").stdout,
        timeout=10,
        what="stdout log lines",
    )
    assert out == f"serving on {port}\n"
    err = wait_until(
        lambda: "url:/" in (s := c.cli("alloc", "logs", short, "--stderr").stdout) and s,
        timeout=10,
        what="httpd's request log on stderr",
    )
    assert "response:200" in err
    res = c.cli("alloc", "exec", short, "--", "sh", "-c", "echo $PODIUM_PORT_HTTP; exit 3")
    assert res.returncode == 3 and res.stdout.strip() == str(port), res.stdout + res.stderr
    # Crash: the container dies; the restart policy brings up a new one on the same port.
    subprocess.run(["docker", "kill", ctr["ID"]], check=True, capture_output=True, timeout=30)
    wait_until(
        lambda: (
            [x["ID"] for x in containers(c)] not in ([], [ctr["ID"]])
            and http_get(port, timeout=0.5) == 200
        ),
        timeout=20,
        what="a new container serving again",
    )
    status = c.cli_json("alloc", "status", short)
    assert status["task_states"]["web"]["restarts"] == 1, status["task_states"]
    assert len(containers(c)) == 1
    # Stop: the container is gone, the alloc complete.
    c.cli("job", "stop", "dweb", check=True, timeout=30)
    wait_until(lambda: containers(c) == [], timeout=15, what="the container to be removed")
    wait_until(
        lambda: c.cli_json("alloc", "status", short)["client_status"] == "complete",
        timeout=10,
        what="the alloc to complete",
    )
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=1)


def test_docker_job_on_a_node_without_engine_is_not_placed(tmp_path: Path) -> None:
    env = {"PODIUM_DOCKER_SOCKET": str(tmp_path / "absent.sock")}
    c = DevCluster(tmp_path / "dev")
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        c.start()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        node = c.api("GET", "/v1/nodes")[0]
        assert node["drivers"]["docker"]["healthy"] is False
        spec = tmp_path / "dweb.yaml"
        spec.write_text(textwrap.dedent(WEB))
        res = c.cli("job", "run", str(spec), timeout=30)
        out = res.stdout + res.stderr
        assert res.returncode != 0, out
        assert "filtered by driver (driver docker" in out and "Traceback" not in out, out
        assert "0/1 nodes fit" in out, out
    finally:
        c.stop()
        c.kill_leftovers()
