"""The process driver on this machine: env, cwd, logs, killing whole trees, OOM, recovery."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from podium.drivers.base import TaskConfig, TaskHandle
from podium.drivers.process import ProcessDriver, TaskCgroup, detect_cgroups, limited_argv
from podium.errors import DriverError, TaskNotFound

pytestmark = pytest.mark.integration

CGROUP_PARENT = f"podium-test-proc-{os.getpid()}"


class Harness:
    def __init__(self, tmp: Path, driver: ProcessDriver) -> None:
        self.tmp = tmp
        self.driver = driver
        self.handles: list[tuple[ProcessDriver, TaskHandle]] = []

    async def cleanup(self) -> None:
        for d, handle in self.handles:
            with contextlib.suppress(DriverError):
                await d.stop(handle, timeout=0.5)
            await d.destroy(handle)
        remove_test_cgroups()

    def cfg(self, config: dict[str, Any], **kw: Any) -> TaskConfig:
        alloc = uuid.uuid4().hex[:12]
        task_dir = self.tmp / alloc / "web"
        base: dict[str, Any] = dict(
            alloc_id=alloc,
            task="web",
            driver_config=config,
            env={"GREETING": "hello"},
            alloc_dir=str(self.tmp / alloc),
            task_dir=str(task_dir),
            stdout_path=str(task_dir / "logs" / "web.stdout"),
            stderr_path=str(task_dir / "logs" / "web.stderr"),
        )
        return TaskConfig(**{**base, **kw})

    async def start(self, config: dict[str, Any], **kw: Any) -> tuple[TaskConfig, TaskHandle]:
        cfg = self.cfg(config, **kw)
        h = await self.driver.start(cfg)
        self.handles.append((self.driver, h))
        return cfg, h


def read(*parts: str) -> str:
    return Path(*parts).read_text()


def write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Path(path).write_text(text)


def sh(script: str) -> dict[str, Any]:
    return {"command": "sh", "args": ["-c", script]}


def remove_test_cgroups() -> None:
    for d in ("memory", "cpu", ""):
        with contextlib.suppress(OSError):
            os.rmdir(os.path.join("/sys/fs/cgroup", d, CGROUP_PARENT))


@pytest.fixture(params=["cgroups", "rlimits"])
async def hx(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    driver = ProcessDriver(cgroup_parent=CGROUP_PARENT, use_cgroups=request.param == "cgroups")
    h = Harness(tmp_path, driver)
    try:
        yield h
    finally:
        await h.cleanup()


@pytest.fixture
async def cg(tmp_path: Path) -> AsyncIterator[Harness]:
    """Cgroups only: skips (saying why) where this host has none we may write; fails
    instead where the test command found them usable (PODIUM_REQUIRE_CGROUPS=1, set by
    scripts/test.sh through scripts/ensure-cgroups.sh)."""
    driver = ProcessDriver(cgroup_parent=CGROUP_PARENT)
    cgroups = driver.cgroups()
    missing = {"memory", "cpu", "pids"} - cgroups.controllers
    if cgroups.version == "none" or missing:
        reason = (
            f"cgroups here ({cgroups.version}) cannot limit {', '.join(sorted(missing))}; "
            "memory limits fall back to RLIMIT_DATA"
        )
        if os.environ.get("PODIUM_REQUIRE_CGROUPS") == "1":
            pytest.fail(f"PODIUM_REQUIRE_CGROUPS=1, but {reason}")
        print(reason)
        pytest.skip(reason)
    h = Harness(tmp_path, driver)
    try:
        yield h
    finally:
        await h.cleanup()


async def test_env_cwd_and_log_files(hx: Harness) -> None:
    cfg, h = await hx.start(sh('echo "$GREETING"; pwd; echo "path=$PATH"; echo oops >&2'))
    res = await hx.driver.wait(h)
    assert res.successful
    out = read(cfg.stdout_path).splitlines()
    assert out[0] == "hello"
    assert out[1] == cfg.task_dir
    assert out[2] == f"path={os.environ['PATH']}"  # the agent's PATH when the task has none
    assert read(cfg.stderr_path) == "oops\n"


async def test_work_dir_and_appending_logs(hx: Harness) -> None:
    cfg = hx.cfg({**sh("pwd"), "work_dir": "sub"})
    write(os.path.join(cfg.task_dir, "sub", ".keep"), "")
    write(cfg.stdout_path, "before restart\n")
    h = await hx.driver.start(cfg)
    hx.handles.append((hx.driver, h))
    assert (await hx.driver.wait(h)).successful
    assert read(cfg.stdout_path) == f"before restart\n{cfg.task_dir}/sub\n"


async def test_missing_work_dir_and_command(hx: Harness) -> None:
    with pytest.raises(DriverError, match="work_dir"):
        await hx.start({**sh("true"), "work_dir": "nope"})
    with pytest.raises(DriverError, match="not found"):
        await hx.start({"command": "podium-no-such-command"})


def test_validate_config_messages() -> None:
    d = ProcessDriver(use_cgroups=False)
    assert d.validate_config({"command": "sleep", "args": ["1"]}) == []
    assert d.validate_config({}) == ["command: required field is missing"]
    assert d.validate_config({"command": " "}) == ['command: expected a non-empty string, got " "']
    assert d.validate_config({"command": "x", "args": "1"}) == [
        'args: expected a list of strings, got "1"'
    ]
    assert d.validate_config({"command": "x", "args": ["a", 2]}) == [
        "args[1]: expected a string, got 2"
    ]


async def test_stop_kills_setsid_grandchild_that_ignores_term(hx: Harness) -> None:
    script = "setsid sh -c 'trap \"\" TERM; sleep 1000' & trap '' TERM; sleep 1000"
    _, h = await hx.start(sh(script))
    main = psutil.Process(h.state["pid"])
    tree: list[psutil.Process] = []
    for _ in range(100):  # until the whole tree is up: sh, sleep, setsid sh, its sleep
        tree = [main, *main.children(recursive=True)]
        if len(tree) >= 4:
            break
        await asyncio.sleep(0.02)
    assert len(tree) >= 4, tree
    assert len({os.getsid(p.pid) for p in tree}) == 2  # one escaped into its own session

    t0 = time.monotonic()
    await hx.driver.stop(h, timeout=1)
    assert time.monotonic() - t0 < 1.5
    alive = [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == []
    res = await hx.driver.wait(h)
    assert res.signal == signal.SIGKILL
    zombies = [c for c in psutil.Process().children() if c.status() == psutil.STATUS_ZOMBIE]
    assert zombies == []


async def test_oom_is_reported(cg: Harness) -> None:
    script = "b=bytearray(200*1024*1024); import time; time.sleep(5)"
    _, h = await cg.start({"command": "python3", "args": ["-c", script]}, memory_mb=50)
    async with asyncio.timeout(10):
        res = await cg.driver.wait(h)
    assert res.oom_killed and res.signal == signal.SIGKILL, res


async def test_rlimit_fallback_bounds_memory(tmp_path: Path) -> None:
    hx = Harness(tmp_path, ProcessDriver(use_cgroups=False))
    script = "b=bytearray(500*1024*1024)"
    _, h = await hx.start({"command": "python3", "args": ["-c", script]}, memory_mb=50)
    res = await hx.driver.wait(h)
    assert res.exit_code == 1 and not res.oom_killed  # MemoryError, not a kill
    await hx.driver.destroy(h)


async def test_cgroup_is_made_and_removed(cg: Harness) -> None:
    """Every limit, read back from the files of whichever cgroup version this host has."""
    _, h = await cg.start(
        {"command": "sleep", "args": ["1000"]}, memory_mb=70, cpu=300, cpu_per_core=1000, pids=50
    )
    paths = h.state["cgroups"]
    version = h.state["cgroup_version"]
    pid = str(h.state["pid"])
    if version == "v1":
        assert set(paths) == {"memory", "cpu", "pids"}, paths
        assert int(read(paths["memory"], "memory.limit_in_bytes")) == 70 * 1024 * 1024
        assert read(paths["cpu"], "cpu.shares").strip() == "300"
        assert read(paths["cpu"], "cpu.cfs_period_us").strip() == "100000"
        assert read(paths["cpu"], "cpu.cfs_quota_us").strip() == "30000"  # 0.3 of a core
        assert read(paths["pids"], "pids.max").strip() == "50"
        for d in paths.values():  # the task sits in every hierarchy that limits it
            assert pid in read(d, "cgroup.procs").split(), d
    else:
        assert version == "v2", version
        d = paths["unified"]
        assert int(read(d, "memory.max")) == 70 * 1024 * 1024
        assert read(d, "cpu.max").split() == ["30000", "100000"]
        assert read(d, "pids.max").strip() == "50"
        assert pid in read(d, "cgroup.procs").split()
    await cg.driver.stop(h, timeout=1)
    await cg.driver.destroy(h)
    assert not any(map(os.path.exists, paths.values()))


async def test_cpu_quota_holds(cg: Harness) -> None:
    """A busy loop with cpu 200 of 1000 per core gets about 0.2 of a core, not a whole one."""
    _, h = await cg.start(
        {"command": "python3", "args": ["-c", "while True: pass"]}, cpu=200, cpu_per_core=1000
    )
    proc = psutil.Process(int(h.state["pid"]))
    await asyncio.sleep(0.5)  # past the interpreter's start
    t = proc.cpu_times()
    before, t0 = t.user + t.system, time.monotonic()
    await asyncio.sleep(2.0)
    t = proc.cpu_times()
    share = (t.user + t.system - before) / (time.monotonic() - t0)
    assert 0.05 < share < 0.3, f"the task used {share:.2f} of a core; its quota is 0.2"


async def test_pids_limit_holds(cg: Harness) -> None:
    """A task that forks without end stops at its pids limit; the node keeps its pids."""
    script = "for i in $(seq 40); do sleep 30 & done; sleep 30"
    cfg, h = await cg.start(sh(script), pids=10)
    members: list[int] = []
    for _ in range(100):
        await asyncio.sleep(0.05)
        members = h_members(h)
        if "fork" in read(cfg.stderr_path).lower():
            break
    assert 1 <= len(members) <= 10, members
    assert "fork" in read(cfg.stderr_path).lower()


def h_members(h: TaskHandle) -> list[int]:
    paths = h.state["cgroups"]
    d = paths.get("pids") or paths.get("unified") or ""
    return [int(p) for p in read(d, "cgroup.procs").split()]


async def test_tasks_start_without_preexec_fn(hx: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """preexec_fn runs Python in the forked child of a threaded process (the agent has
    threads: to_thread, the store's, the resolver's), where a lock held by another thread at
    fork time deadlocks it. Tasks (and exec'd commands) must be started without it."""
    seen: list[object] = []
    real = subprocess.Popen.__init__

    def spy(self: subprocess.Popen[bytes], *args: Any, **kw: Any) -> None:
        seen.append(kw.get("preexec_fn"))
        real(self, *args, **kw)

    monkeypatch.setattr(subprocess.Popen, "__init__", spy)
    _, h = await hx.start({"command": "sleep", "args": ["1000"]})
    code, out = await hx.driver.exec(h, ["echo", "hi"])
    assert (code, out) == (0, b"hi\n")
    assert len(seen) == 2 and seen == [None, None], seen


async def test_recovery_by_new_instance_then_external_kill(hx: Harness) -> None:
    _, h = await hx.start({"command": "sleep", "args": ["1000"]})
    fresh = ProcessDriver(
        cgroup_parent=CGROUP_PARENT, use_cgroups=hx.driver.cgroups().version != "none"
    )
    h2 = TaskHandle(
        driver=h.driver,
        alloc_id=h.alloc_id,
        task=h.task,
        state=json.loads(json.dumps(h.state)),
        started_at=h.started_at,
    )
    assert await fresh.recover(h2)
    code, out = await fresh.exec(h2, ["sh", "-c", 'echo "$GREETING"'])  # env from /proc
    assert (code, out) == (0, b"hello\n")

    async def kill_soon() -> None:
        await asyncio.sleep(0.2)
        os.kill(h.state["pid"], signal.SIGKILL)

    async with asyncio.timeout(5):
        res, _ = await asyncio.gather(fresh.wait(h2), kill_soon())
    assert res.exit_code is None and res.error == "exited while not supervised"
    assert not await fresh.recover(h2)
    await fresh.destroy(h2)


async def test_a_kept_exit_outlives_the_driver(hx: Harness, tmp_path: Path) -> None:
    """keep_exit (batch tasks): a task that ends while no agent runs is recovered with how
    it ended (code or signal), so it is judged, not run again; a supervised one ends as
    before, a stop's signal included."""
    go = tmp_path / "go"
    fresh = ProcessDriver(
        cgroup_parent=CGROUP_PARENT, use_cgroups=hx.driver.cgroups().version != "none"
    )
    script = f"until [ -e {go} ]; do sleep 0.02; done; exit 7"
    _, coded = await hx.start(sh(script), keep_exit=True)
    _, killed = await hx.start({"command": "sleep", "args": ["1000"]}, keep_exit=True)
    _, unkept = await hx.start(sh(script))
    victim = next(p for p in psutil.Process(killed.state["pid"]).children() if p.name() == "sleep")
    victim.kill()
    go.touch()
    async with asyncio.timeout(5):
        while await hx.driver.inspect(coded) or await hx.driver.inspect(killed):
            await asyncio.sleep(0.02)
    assert await fresh.recover(coded) and await fresh.recover(killed)
    assert not await fresh.inspect(coded)
    assert (await fresh.wait(coded)).exit_code == 7
    res = await fresh.wait(killed)
    assert (res.exit_code, res.signal) == (137, signal.SIGKILL)
    async with asyncio.timeout(5):
        while await hx.driver.inspect(unkept):
            await asyncio.sleep(0.02)
    assert not await fresh.recover(unkept)  # its exit went with its parent
    _, stopped = await hx.start({"command": "sleep", "args": ["1000"]}, keep_exit=True)
    await hx.driver.stop(stopped, timeout=2)
    res = await hx.driver.wait(stopped)
    assert (res.exit_code, res.signal) == (143, signal.SIGTERM)


async def test_recover_refuses_reused_pid(hx: Harness) -> None:
    _, h = await hx.start({"command": "sleep", "args": ["1000"]})
    forged = TaskHandle(
        driver="process",
        alloc_id=h.alloc_id,
        task=h.task,
        state={**h.state, "create_time": h.state["create_time"] - 100},
    )
    assert not await ProcessDriver(use_cgroups=False).recover(forged)


async def test_exec_output_cwd_and_timeout(hx: Harness) -> None:
    cfg, h = await hx.start({"command": "sleep", "args": ["1000"]})
    code, out = await hx.driver.exec(h, ["sh", "-c", 'echo "$GREETING"; pwd; exit 4'])
    assert code == 4 and out == f"hello\n{cfg.task_dir}\n".encode()
    with pytest.raises(DriverError, match="timed out"):
        await hx.driver.exec(h, ["sleep", "10"], timeout=0.2)
    with pytest.raises(DriverError, match="not found"):
        await hx.driver.exec(h, ["podium-no-such-command"])
    if h.state["cgroup_version"] == "v1":  # exec'd commands run inside the task's cgroup
        _, procs = await hx.driver.exec(h, ["cat", "/proc/self/cgroup"])
        assert CGROUP_PARENT.encode() in procs
    await hx.driver.stop(h, timeout=1)
    with pytest.raises(TaskNotFound):
        await hx.driver.exec(h, ["true"])


async def test_stats(hx: Harness) -> None:
    _, h = await hx.start(
        sh("while :; do :; done & b=$(head -c 20000000 /dev/zero | tr '\\0' x); sleep 1000"),
        cpu=1000,  # a whole core (the quota): the busy loop shows well over 10%
    )
    await asyncio.sleep(0.5)
    s = await hx.driver.stats(h)
    assert s.memory_bytes > 0 and s.pids >= 2
    assert s.cpu_percent > 10  # the busy loop
    assert s.cpu_seconds > 0.1
    await asyncio.sleep(0.3)
    later = await hx.driver.stats(h)
    assert later.cpu_seconds > s.cpu_seconds  # a counter: it grows while the loop spins
    if hx.driver.cgroups().version != "none":
        assert later.memory_limit_bytes == 64 * 1024 * 1024  # the task's memory: 64 (MB)


async def test_fingerprint_reports_cgroups() -> None:
    fp = await ProcessDriver(cgroup_parent=CGROUP_PARENT).fingerprint()
    remove_test_cgroups()
    assert fp.attributes["driver.process.cgroups"] in ("v1", "v2", "none")
    fp = await ProcessDriver(use_cgroups=False).fingerprint()
    assert fp.attributes["driver.process.cgroups"] == "none"
    assert fp.attributes["driver.process.memory_limit"] == "rlimit_data"


UNIFIED = "/sys/fs/cgroup/unified"  # the hybrid layout's cgroup2 mount, without controllers
V2_TOP = "/sys/fs/cgroup" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else UNIFIED


def test_detects_no_memory_controller_as_none(tmp_path: Path) -> None:
    assert detect_cgroups(str(tmp_path)).version == "none"  # not a cgroup fs at all
    if os.path.exists(os.path.join(UNIFIED, "cgroup.controllers")):
        controllers = read(UNIFIED, "cgroup.controllers").split()
        if "memory" not in controllers:  # hybrid: memory is bound to v1
            assert detect_cgroups(UNIFIED, f"{CGROUP_PARENT}-v2").version == "none"
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(UNIFIED, f"{CGROUP_PARENT}-v2"))


async def test_v2_membership_and_kill() -> None:
    """The v2 half of TaskCgroup (procs, cgroup.kill, rmdir) on a real cgroup2 mount."""
    d = os.path.join(V2_TOP, f"{CGROUP_PARENT}-v2kill")
    try:
        os.makedirs(d, exist_ok=True)
    except OSError as e:
        reason = f"no writable cgroup2 mount here ({e})"
        print(reason)
        pytest.skip(reason)
    cg = TaskCgroup("v2", {"unified": d})
    try:
        argv = ["sh", "-c", "setsid sleep 1000 & sleep 1000"]
        proc = await asyncio.create_subprocess_exec(
            *limited_argv(argv, joins=cg.join_files(), data_limit=None), start_new_session=True
        )
        for _ in range(100):
            if len(cg.procs()) >= 3:
                break
            await asyncio.sleep(0.02)
        assert proc.pid in cg.procs() and len(cg.procs()) == 3
        assert cg.oom_kills() == 0
        while not cg.kill_members():
            await asyncio.sleep(0.01)
        assert await proc.wait() == -signal.SIGKILL
    finally:
        removed = False
        for _ in range(50):
            if removed := cg.remove():
                break
            await asyncio.sleep(0.02)
    assert removed


async def test_lost_handle_start_adopts_the_running_process(hx: Harness) -> None:
    """An agent that lost its state file starts the task again: the driver must adopt the
    process still running, never run a second copy."""
    cfg, h = await hx.start({"command": "sleep", "args": ["1000"]})
    pid = int(h.state["pid"])
    fresh = ProcessDriver(
        cgroup_parent=CGROUP_PARENT, use_cgroups=hx.driver.cgroups().version != "none"
    )
    again = await fresh.start(cfg)
    hx.handles.append((fresh, again))
    assert int(again.state["pid"]) == pid
    same_task = [
        p
        for p in psutil.process_iter()
        if _env(p).get("PODIUM_ALLOC_ID") == cfg.alloc_id and p.status() != psutil.STATUS_ZOMBIE
    ]
    assert [p.pid for p in same_task] == [pid]
    assert await fresh.inspect(again)
    await fresh.stop(again, timeout=1)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def _env(p: psutil.Process) -> dict[str, str]:
    try:
        return p.environ()
    except (psutil.Error, OSError):
        return {}
