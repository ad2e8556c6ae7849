"""The `process` driver: a command in its own session, limited by a cgroup or rlimits.

    start ─ open stdout/stderr: the agent's log FIFOs, read-write (else the log files)
          ─ make cgroup (memory, cpu quota, pids) ─ spawn /bin/sh in a new
            session (no preexec_fn) ─ sh writes its pid into each cgroup.procs ─ exec command
    wait  ─ our child: asyncio's Process.wait │ recovered: poll pid + start time, then the
            exit status the helper shell kept (keep_exit: batch tasks), if any
    stop  ─ signal the group ─ grace ─ SIGKILL group + cgroup members + descendants ─ reap
    destroy ─ kill leftovers ─ rmdir the cgroup

Limits: cgroup v1 (`memory/podium/<alloc>-<task>`, `cpu/...`, `pids/...`) or v2 (a child of
`/sys/fs/cgroup/podium`, with memory, cpu and pids delegated): memory, a CFS quota of
`cpu / cpu_per_core` cores (and shares/weight in proportion), and a pids limit. Where no
cgroup is writable the fallback is RLIMIT_DATA, which binds each process on its own: a task
of N processes may use N times its memory, and neither cpu nor pids is limited.

No Python runs between fork and exec: the agent has threads, and a lock one of them held
at fork time would stay locked forever in the child (the danger of `preexec_fn`). The child
is /bin/sh running a fixed script (cgroup joins and `ulimit` are shell builtins), which then
execs the task in place, so the limits hold from the task's first instruction.
The cgroup helpers live here until another driver needs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import resource
import shutil
import signal as _signal
import stat
import subprocess
import time
from dataclasses import dataclass
from typing import Any

import psutil

from podium.drivers import schemas
from podium.drivers.base import (
    DEFAULT_PIDS,
    ExitResult,
    Fingerprint,
    TaskConfig,
    TaskHandle,
    TaskStats,
    parse_signal,
    refuse_invalid,
)
from podium.drivers.exec_session import ExecSession, spawn
from podium.errors import DriverError, TaskNotFound
from podium.runtime.ids import short_alloc

log = logging.getLogger(__name__)

MIB = 1024 * 1024
CPU_PERIOD_US = 100_000  # the CFS period; a task's quota is its share of it
MIN_QUOTA_US = 1000  # the kernel's floor for a quota
# RLIMIT_DATA bounds *mapped* private writable memory, not resident memory: thread stacks
# and allocator arenas count in full, so the fallback limit gets headroom over memory_mb.
# RLIMIT_AS would be stricter still and breaks runtimes that reserve address space up front
# (Go, the JVM, V8, ASan), which is why it is not used.
RLIMIT_DATA_HEADROOM = 2
KILL_DEADLINE = 10.0  # seconds to wait for SIGKILLed processes to vanish before giving up
POLL = 0.1  # how often a recovered (non-child) task is checked
EXEC_OUTPUT_LIMIT = 4 * MIB
EXIT_FILE = ".podium-exit-status"  # in the task dir, for tasks whose exit is kept


# ── cgroups ────────────────────────────────────────────────────────────────────────────


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _counter(text: str | None, key: str) -> int:
    """`key N` from a flat-keyed cgroup file (memory.events, memory.oom_control, memory.stat)."""
    for line in (text or "").splitlines():
        k, _, v = line.partition(" ")
        if k == key and v.strip().isdigit():
            return int(v)
    return 0


@dataclass(frozen=True, slots=True)
class TaskCgroup:
    """One task's cgroup: a directory per v1 controller, or one v2 directory."""

    version: str  # "v1" | "v2"
    paths: dict[str, str]  # v1: {"memory": dir, "cpu": dir}; v2: {"unified": dir}

    @property
    def main(self) -> str:
        """The directory whose cgroup.procs lists every process of the task."""
        return self.paths["unified" if self.version == "v2" else "memory"]

    def join_files(self) -> list[str]:
        """The cgroup.procs file of every directory: a task joins them all (each limits it)."""
        return [os.path.join(d, "cgroup.procs") for d in self.paths.values()]

    def procs(self) -> list[int]:
        return [int(p) for p in (_read(os.path.join(self.main, "cgroup.procs")) or "").split()]

    def oom_kills(self) -> int:
        # v1 has `oom_kill` in memory.oom_control since Linux 4.13; older kernels report 0.
        name = "memory.events" if self.version == "v2" else "memory.oom_control"
        return _counter(_read(os.path.join(self.main, name)), "oom_kill")

    def memory_bytes(self) -> int | None:
        """Working set: usage minus inactive page cache (what `docker stats` shows)."""
        v2 = self.version == "v2"
        usage = _read(os.path.join(self.main, "memory.current" if v2 else "memory.usage_in_bytes"))
        if usage is None or not usage.strip().isdigit():
            return None
        stat = _read(os.path.join(self.main, "memory.stat"))
        inactive = _counter(stat, "inactive_file" if v2 else "total_inactive_file")
        return max(0, int(usage) - inactive)

    def memory_limit(self) -> int:
        """The memory limit in bytes (0 when unlimited or unreadable)."""
        v2 = self.version == "v2"
        raw = _read(os.path.join(self.main, "memory.max" if v2 else "memory.limit_in_bytes"))
        value = (raw or "").strip()
        return int(value) if value.isdigit() and int(value) < 2**62 else 0

    def kill_members(self) -> bool:
        """SIGKILL every member; True when none was left."""
        kill_file = os.path.join(self.main, "cgroup.kill")  # v2, Linux 5.14+: atomic, fork-safe
        if self.version == "v2" and os.path.exists(kill_file):
            with contextlib.suppress(OSError):
                _write(kill_file, "1")
        pids = self.procs()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, _signal.SIGKILL)
        return not pids

    def remove(self) -> bool:
        """rmdir every directory; False while some are still busy."""
        done = True
        for d in self.paths.values():
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass
            except OSError:
                done = False
        return done


@dataclass(frozen=True, slots=True)
class Limits:
    """What one task may use, in the units the cgroup files take."""

    memory_bytes: int
    cpu_shares: int  # cpu.shares (v1) scale, 2..262144; v2 converts to cpu.weight
    cpu_quota_us: int  # per CPU_PERIOD_US
    pids: int

    @classmethod
    def of(cls, *, memory_mb: int, cpu: int, cpu_per_core: int, pids: int) -> Limits:
        quota = cpu * CPU_PERIOD_US // max(1, cpu_per_core)
        return cls(
            memory_bytes=memory_mb * MIB,
            cpu_shares=min(max(2, cpu), 262144),
            cpu_quota_us=max(MIN_QUOTA_US, quota),
            pids=max(1, pids),
        )


@dataclass(frozen=True, slots=True)
class Cgroups:
    """The host's cgroup setup, as detected once: where task cgroups are made, if anywhere,
    and which of cpu and pids can be limited there besides memory."""

    version: str  # "v1" | "v2" | "none"
    root: str = "/sys/fs/cgroup"
    parent: str = "podium"
    controllers: frozenset[str] = frozenset()  # of "memory", "cpu", "pids"

    def create(self, name: str, limits: Limits) -> TaskCgroup:
        """Make (or reuse) the task's cgroup with its limits; OSError if one of them cannot
        be set, leaving nothing behind."""
        made: list[str] = []
        try:
            return self._create(name, limits, made)
        except OSError:
            for d in reversed(made):
                with contextlib.suppress(OSError):
                    os.rmdir(d)
            raise

    def _create(self, name: str, lim: Limits, made: list[str]) -> TaskCgroup:
        if self.version == "v2":
            d = os.path.join(self.root, self.parent, name)
            _mkdir(d, made)
            _write(os.path.join(d, "memory.max"), str(lim.memory_bytes))
            with contextlib.suppress(OSError):  # absent without swap accounting
                _write(os.path.join(d, "memory.swap.max"), "0")
            if "cpu" in self.controllers:
                _write(os.path.join(d, "cpu.weight"), str(_cpu_weight(lim.cpu_shares)))
                _write(os.path.join(d, "cpu.max"), f"{lim.cpu_quota_us} {CPU_PERIOD_US}")
            if "pids" in self.controllers:
                _write(os.path.join(d, "pids.max"), str(lim.pids))
            return TaskCgroup("v2", {"unified": d})
        mem = os.path.join(self.root, "memory", self.parent, name)
        _mkdir(mem, made)
        # memsw must stay >= memory, so the order that works depends on the old values;
        # memory, memsw, memory succeeds from any starting point (raising or lowering).
        limit = str(lim.memory_bytes)
        files = ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "memory.limit_in_bytes")
        for i, f in enumerate(files):
            try:
                _write(os.path.join(mem, f), limit)
            except OSError:
                if i == 2:
                    raise
        paths = {"memory": mem}
        if "cpu" in self.controllers:
            d = os.path.join(self.root, "cpu", self.parent, name)
            _mkdir(d, made)
            _write(os.path.join(d, "cpu.shares"), str(lim.cpu_shares))
            _write(os.path.join(d, "cpu.cfs_period_us"), str(CPU_PERIOD_US))
            _write(os.path.join(d, "cpu.cfs_quota_us"), str(lim.cpu_quota_us))
            paths["cpu"] = d
        if "pids" in self.controllers:
            d = os.path.join(self.root, "pids", self.parent, name)
            _mkdir(d, made)
            _write(os.path.join(d, "pids.max"), str(lim.pids))
            paths["pids"] = d
        return TaskCgroup("v1", paths)


def _mkdir(d: str, made: list[str]) -> None:
    if not os.path.isdir(d):
        os.mkdir(d)
        made.append(d)


def _cpu_weight(shares: int) -> int:
    """cpu.shares (2..262144) to cpu.weight (1..10000), as runc and systemd convert."""
    shares = min(max(shares, 2), 262144)
    return 1 + ((shares - 2) * 9999) // 262142


def detect_cgroups(root: str = "/sys/fs/cgroup", parent: str = "podium") -> Cgroups:
    """v2 when `root` is a unified hierarchy, v1 when it holds a memory controller; either only
    if we can make our parent cgroup there. Otherwise "none" (rlimits)."""
    try:
        if os.path.exists(os.path.join(root, "cgroup.controllers")):
            controllers = _setup_v2(root, parent)
            if "memory" in controllers:
                return Cgroups("v2", root, parent, controllers)
        elif os.path.exists(os.path.join(root, "memory", "memory.limit_in_bytes")):
            d = os.path.join(root, "memory", parent)
            os.makedirs(d, exist_ok=True)
            if os.access(os.path.join(d, "memory.limit_in_bytes"), os.W_OK):
                found = {"memory"}
                for c, probe in (("cpu", "cpu.cfs_quota_us"), ("pids", "pids.max")):
                    if not os.path.exists(os.path.join(root, c, "cgroup.procs")):
                        continue  # that controller is not mounted here
                    with contextlib.suppress(OSError):
                        os.makedirs(os.path.join(root, c, parent), exist_ok=True)
                        if os.access(os.path.join(root, c, parent, probe), os.W_OK):
                            found.add(c)
                return Cgroups("v1", root, parent, frozenset(found))
    except OSError as e:
        log.info("cgroups under %s are not writable (%s); limiting memory with rlimits", root, e)
    return Cgroups("none", root, parent)


def _setup_v2(root: str, parent: str) -> frozenset[str]:
    """Enable memory, cpu and pids for our parent's children; the ones that are enabled."""
    available = (_read(os.path.join(root, "cgroup.controllers")) or "").split()
    if "memory" not in available:
        return frozenset()
    d = os.path.join(root, parent)
    os.makedirs(d, exist_ok=True)
    # Both writes fail harmlessly where already enabled or not allowed (e.g. `root` is not
    # the top and has processes of its own: the no-internal-processes rule).
    for c in ("memory", "cpu", "pids"):
        if c in available:
            with contextlib.suppress(OSError):
                _write(os.path.join(root, "cgroup.subtree_control"), f"+{c}")
            with contextlib.suppress(OSError):
                _write(os.path.join(d, "cgroup.subtree_control"), f"+{c}")
    enabled = (_read(os.path.join(d, "cgroup.subtree_control")) or "").split()
    return frozenset(c for c in ("memory", "cpu", "pids") if c in enabled)


# ── processes ──────────────────────────────────────────────────────────────────────────


def _process(pid: int, create_time: float) -> psutil.Process | None:
    """The live process `pid` if it is still the one that started at `create_time`."""
    if pid <= 0 or create_time <= 0:
        return None
    try:
        p = psutil.Process(pid)
        if abs(p.create_time() - create_time) > 0.05 or p.status() == psutil.STATUS_ZOMBIE:
            return None
        return p
    except psutil.Error:
        return None


def _running(p: psutil.Process) -> bool:
    try:  # is_running() also compares the start time, so a reused pid is not "running"
        return bool(p.is_running() and p.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _tree(p: psutil.Process | None) -> list[psutil.Process]:
    if p is None:
        return []
    try:
        return [p, *p.children(recursive=True)]
    except psutil.Error:
        return [p]


def _same_group(p: psutil.Process, pgid: int) -> bool:
    try:
        return os.getpgid(p.pid) == pgid
    except OSError:
        return False


def _exit_code(rc: int) -> tuple[int, int | None]:
    """(exit code, signal): a signal death reads as 128+N, as shells and Docker report it."""
    return (128 - rc, -rc) if rc < 0 else (rc, None)


def _shell_status(code: int) -> tuple[int, int | None]:
    """(exit code, signal) from a status as a shell's $? gives it (a signal N as 128+N)."""
    return (code, code - 128) if 128 < code <= 128 + 64 else (code, None)


# $1: how many cgroup.procs files follow; then those files; then the data rlimit in KiB
# or "-"; then the soft open-files limit; then the file to keep the exit status in, or "-";
# then the command and its arguments. `echo` and `ulimit` are builtins: the shell's own pid
# joins each cgroup and its own rlimits are set, then `exec` becomes the task (same pid,
# same session). A failed join or ulimit exits 125 with the reason on stderr (the task's
# log), before the task runs at all.
# With an exit file the shell stays as the task's parent instead: the task's exit status
# would otherwise go with the agent when the agent is down (a batch task that ended then
# would run again). It catches the signals a stop sends the group (so the task gets them
# with their default action and the shell outlives it), writes the status and exits with
# it: a death by signal N reads 128+N there, as in any shell.
_EXEC_HELPER = """n=$1; shift
while [ "$n" -gt 0 ]; do
  echo $$ >"$1" || { echo "podium: cannot join cgroup $1" >&2; exit 125; }
  n=$((n - 1)); shift
done
if [ "$1" != - ]; then ulimit -d "$1" || exit 125; fi
ulimit -S -n "$2" 2>/dev/null
keep=$3
shift 3
if [ "$keep" = - ]; then exec "$@"; fi
trap : HUP INT QUIT TERM USR1 USR2 ALRM
"$@"
s=$?
echo "$s" >"$keep"
exit "$s"
"""
# Tasks get the open-files limit the agent itself was started with (the agent raises its
# own: it holds pipes and proxy connections for many tasks).
TASK_NOFILE = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
JOIN_FAILED = 125


def limited_argv(
    argv: list[str], *, joins: list[str], data_limit: int | None, exit_file: str = ""
) -> list[str]:
    """`argv` wrapped so that it starts inside the cgroups whose cgroup.procs files are
    `joins`, with RLIMIT_DATA at `data_limit` bytes (None: unchanged), its exit status
    kept in `exit_file` (if given). Spawn the result with start_new_session=True and no
    preexec_fn."""
    kib = "-" if data_limit is None else str(max(1, data_limit // 1024))
    nofile = "unlimited" if TASK_NOFILE == resource.RLIM_INFINITY else str(TASK_NOFILE)
    return [
        "/bin/sh",
        "-c",
        _EXEC_HELPER,
        "podium-exec",
        str(len(joins)),
        *joins,
        kib,
        nofile,
        exit_file or "-",
        *argv,
    ]


def _resolve(command: str, cwd: str, env: dict[str, str]) -> None:
    """Raise the error exec would give, before spawning: the helper shell would otherwise
    only exit 127 with the reason in the task's log."""
    if "/" in command:
        path = os.path.join(cwd, command)
        if not os.path.exists(path):
            raise FileNotFoundError(command)
        if os.path.isdir(path) or not os.access(path, os.X_OK):
            raise PermissionError(command)
        return
    if shutil.which(command, path=env.get("PATH", os.defpath)) is None:
        raise FileNotFoundError(command)


async def _joined(proc: asyncio.subprocess.Process, cg: TaskCgroup, stderr_path: str) -> None:
    """Return once the helper has joined the task's cgroups (it writes the last cgroup.procs
    right before exec), so that whoever looks at the cgroup from now on finds the task;
    DriverError with the helper's reason if it could not join."""
    last = os.path.dirname(cg.join_files()[-1])
    deadline = time.monotonic() + 10.0
    delay = 0.0005
    while str(proc.pid) not in (_read(os.path.join(last, "cgroup.procs")) or "").split():
        if proc.returncode is not None or time.monotonic() > deadline:
            with contextlib.suppress(asyncio.TimeoutError):
                async with asyncio.timeout(1.0):
                    await proc.wait()
            if proc.returncode == JOIN_FAILED:
                cg.remove()
                why = _last_line(stderr_path) or "see the task's stderr"
                raise DriverError(f"could not join the task's cgroup: {why}")
            return  # the task ran and ended already (or a very slow start: it still runs)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.02)


def _last_line(path: str) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 4096))
            lines = f.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


def _data_limit(memory_mb: int) -> int:
    want = memory_mb * MIB * RLIMIT_DATA_HEADROOM
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    return want if hard == resource.RLIM_INFINITY else min(want, hard)


# ── the driver ─────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class _State:
    """The handle's `state`, typed: everything needed to re-find the task after a restart."""

    pid: int
    pgid: int
    create_time: float
    cwd: str
    cgroup: TaskCgroup | None
    oom_base: int
    exit_file: str = ""  # where the helper shell keeps the task's exit status ("" none)

    @classmethod
    def of(cls, handle: TaskHandle) -> _State:
        s = handle.state
        try:
            cg = s.get("cgroup_version")
            return cls(
                pid=int(s["pid"]),
                pgid=int(s.get("pgid", s["pid"])),
                create_time=float(s["create_time"]),
                cwd=str(s.get("cwd", "")),
                cgroup=TaskCgroup(cg, dict(s["cgroups"])) if cg in ("v1", "v2") else None,
                oom_base=int(s.get("oom_base", 0)),
                exit_file=str(s.get("exit_file", "")),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise DriverError(f"process handle: bad state {s!r}: {e}") from e

    def dump(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "pgid": self.pgid,
            "create_time": self.create_time,
            "cwd": self.cwd,
            "cgroup_version": self.cgroup.version if self.cgroup else "none",
            "cgroups": dict(self.cgroup.paths) if self.cgroup else {},
            "oom_base": self.oom_base,
            "exit_file": self.exit_file,
        }


@dataclass(slots=True)
class _Task:
    proc: asyncio.subprocess.Process | None  # None when recovered: not our child
    env: dict[str, str] | None  # None when recovered: read from /proc instead


def _key(handle: TaskHandle) -> str:
    return f"{handle.alloc_id}/{handle.task}/{handle.state.get('pid')}"


def _work_dir(cfg: TaskConfig) -> str:
    """The task dir, or `work_dir` (relative to it unless absolute)."""
    os.makedirs(cfg.task_dir, exist_ok=True)
    cwd = os.path.normpath(os.path.join(cfg.task_dir, cfg.driver_config.get("work_dir") or "."))
    if not os.path.isdir(cwd):
        raise DriverError(f"work_dir: {cwd} is not a directory")
    return cwd


def _exit_file(cfg: TaskConfig) -> str:
    return os.path.join(cfg.task_dir, EXIT_FILE) if cfg.keep_exit else ""


def _kept_exit(path: str) -> int | None:
    """The exit status the helper shell kept, if it did."""
    text = _read(path) if path else None
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _task_env(env: dict[str, str]) -> dict[str, str]:
    out = dict(env)
    out.setdefault("PATH", os.environ.get("PATH", os.defpath))
    return out


def _open_output(pipe: str, path: str) -> int:
    """The task's stdout or stderr: the agent's FIFO for it when there is one, opened
    read-write (so the task is a reader of its own pipe: while no agent reads it, its output
    waits in the pipe, then it blocks, instead of dying of SIGPIPE); else the file itself."""
    if pipe and stat.S_ISFIFO(_mode(pipe)):
        return os.open(pipe, os.O_RDWR | os.O_CLOEXEC)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)


def _mode(path: str) -> int:
    try:
        return os.stat(path).st_mode
    except OSError:
        return 0


class ProcessDriver:
    """Runs `config.command` with `config.args`; see the module docstring for the flow."""

    name = "process"

    def __init__(
        self,
        *,
        cgroup_root: str = "/sys/fs/cgroup",
        cgroup_parent: str = "podium",
        use_cgroups: bool = True,
        pids_limit: int = DEFAULT_PIDS,
    ) -> None:
        self._pids_limit = pids_limit
        self._cgroup_root = cgroup_root
        self._cgroup_parent = cgroup_parent
        self._use_cgroups = use_cgroups
        self._detected: Cgroups | None = None
        self._tasks: dict[str, _Task] = {}
        self._cpu_samples: dict[str, tuple[float, float]] = {}  # key -> (monotonic, cpu s)

    def cgroups(self) -> Cgroups:
        if self._detected is None:
            self._detected = (
                detect_cgroups(self._cgroup_root, self._cgroup_parent)
                if self._use_cgroups
                else Cgroups("none")
            )
        return self._detected

    async def fingerprint(self) -> Fingerprint:
        cg = self.cgroups()
        limits = "cgroup" if cg.version != "none" else "rlimit_data"
        cpu = "cfs_quota" if "cpu" in cg.controllers else "none"
        pids = "cgroup" if "pids" in cg.controllers else "none"
        return Fingerprint(
            detected=True,
            healthy=True,
            description=f"processes in their own session; memory limited by {limits}, "
            f"cpu by {cpu}, pids by {pids}",
            attributes={
                "driver.process.cgroups": cg.version,
                "driver.process.memory_limit": limits,
                "driver.process.cpu_limit": cpu,
                "driver.process.pids_limit": pids,
            },
        )

    def validate_config(self, config: dict[str, Any]) -> list[str]:
        return schemas.PROCESS.messages(config)

    async def start(self, cfg: TaskConfig) -> TaskHandle:
        refuse_invalid(self, cfg.driver_config)
        command: str = cfg.driver_config["command"]
        args: list[str] = list(cfg.driver_config.get("args", []))
        cwd = _work_dir(cfg)
        env = _task_env(cfg.env)
        # The task's identity rides in its environment: how a lost task is found again.
        env.setdefault("PODIUM_ALLOC_ID", cfg.alloc_id)
        env.setdefault("PODIUM_TASK", cfg.task)
        adopted = self._adopt(cfg, cwd)
        if adopted is not None:
            return adopted
        try:
            _resolve(command, cwd, env)
        except OSError as e:
            raise DriverError(_start_error(command, e)) from e
        cg = self._make_cgroup(cfg)
        data_limit = None if cg else _data_limit(cfg.memory_mb)
        oom_base = cg.oom_kills() if cg else 0  # before the task can run: a reused cgroup counts on
        exit_file = _exit_file(cfg)
        if exit_file:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(exit_file)  # an earlier run's
        argv = limited_argv(
            [command, *args],
            joins=cg.join_files() if cg else [],
            data_limit=data_limit,
            exit_file=exit_file,
        )
        out, err = (
            _open_output(cfg.stdout_pipe, cfg.stdout_path),
            _open_output(cfg.stderr_pipe, cfg.stderr_path),
        )
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        except (OSError, subprocess.SubprocessError) as e:
            if cg:
                cg.remove()
            raise DriverError(_start_error(command, e)) from e
        finally:
            os.close(out)
            os.close(err)
        if cg is not None:
            await _joined(proc, cg, cfg.stderr_path)
        try:  # a task that exits at once may already be reaped: then it cannot be recovered
            create_time = psutil.Process(proc.pid).create_time()
        except psutil.Error:
            create_time = 0.0
        state = _State(proc.pid, proc.pid, create_time, cwd, cg, oom_base, exit_file)
        handle = TaskHandle(
            driver=self.name,
            alloc_id=cfg.alloc_id,
            task=cfg.task,
            state=state.dump(),
            started_at=time.time(),
        )
        self._tasks[_key(handle)] = _Task(proc=proc, env=env)
        return handle

    def _adopt(self, cfg: TaskConfig, cwd: str) -> TaskHandle | None:
        """A live process of this very task (an agent that lost its state file starts it
        again): adopt it rather than run a second copy. It is found in the task's cgroup,
        or, without cgroups, by the alloc and task in its environment; of those, the one
        leading its own process group whose parent is not one of them is the task."""
        cg = self._make_cgroup(cfg, kill_leftovers=False)
        pids = cg.procs() if cg is not None else psutil.pids()
        mine: dict[int, psutil.Process] = {}
        for pid in pids:
            try:
                p = psutil.Process(pid)
                env = p.environ()
            except (psutil.Error, OSError):
                continue
            if env.get("PODIUM_ALLOC_ID") == cfg.alloc_id and env.get("PODIUM_TASK") == cfg.task:
                mine[pid] = p
        leaders = []
        for pid, p in mine.items():
            try:
                if os.getpgid(pid) == pid and p.ppid() not in mine and p.is_running():
                    leaders.append((p.create_time(), pid))
            except (psutil.Error, OSError):
                continue
        if not leaders:
            if cg is not None and cg.procs():
                cg.kill_members()  # leftovers of an earlier run that was never destroyed
            return None
        create_time, pid = min(leaders)
        log.warning(
            "task %s of alloc %s: adopting its running process %d",
            cfg.task,
            short_alloc(cfg.alloc_id),
            pid,
        )
        oom_base = cg.oom_kills() if cg else 0
        state = _State(pid, pid, create_time, cwd, cg, oom_base, _exit_file(cfg))
        handle = TaskHandle(
            driver=self.name,
            alloc_id=cfg.alloc_id,
            task=cfg.task,
            state=state.dump(),
            started_at=create_time,
        )
        self._tasks[_key(handle)] = _Task(proc=None, env=None)
        return handle

    def limits(self, cfg: TaskConfig) -> Limits:
        return Limits.of(
            memory_mb=cfg.memory_mb,
            cpu=cfg.cpu,
            cpu_per_core=cfg.cpu_per_core,
            pids=cfg.pids or self._pids_limit,
        )

    def _make_cgroup(self, cfg: TaskConfig, *, kill_leftovers: bool = True) -> TaskCgroup | None:
        cgroups = self.cgroups()
        if cgroups.version == "none":
            return None
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{cfg.alloc_id}-{cfg.task}")
        try:
            cg = cgroups.create(name, self.limits(cfg))
        except OSError as e:
            log.warning(
                "task %s: no cgroup (%s); limiting memory with rlimits, cpu and pids not at all",
                cfg.task,
                e,
            )
            return None
        if kill_leftovers and cg.procs():  # leftovers of an earlier run never destroyed
            cg.kill_members()
        return cg

    async def wait(self, handle: TaskHandle) -> ExitResult:
        st = _State.of(handle)
        task = self._tasks.get(_key(handle))
        if task is not None and task.proc is not None:
            rc = await task.proc.wait()
            code, sig = _shell_status(rc) if st.exit_file and rc >= 0 else _exit_code(rc)
            oom = self._oom(st) and (sig == _signal.SIGKILL or code != 0)
            return ExitResult(exit_code=code, signal=sig, oom_killed=oom)
        while _process(st.pid, st.create_time) is not None:
            await asyncio.sleep(POLL)
        kept = _kept_exit(st.exit_file)
        if kept is not None:
            code, sig = _shell_status(kept)
            oom = self._oom(st) and (sig == _signal.SIGKILL or code != 0)
            return ExitResult(exit_code=code, signal=sig, oom_killed=oom)
        # Not our child, so its exit status went to its real parent (or init).
        return ExitResult(
            exit_code=None, oom_killed=self._oom(st), error="exited while not supervised"
        )

    def _oom(self, st: _State) -> bool:
        return st.cgroup is not None and st.cgroup.oom_kills() > st.oom_base

    async def stop(
        self, handle: TaskHandle, *, signal: str = "SIGTERM", timeout: float = 5.0
    ) -> None:
        sig = parse_signal(signal)
        st = _State.of(handle)
        task = self._tasks.get(_key(handle))
        main = _process(st.pid, st.create_time)
        # Snapshot before signalling: once the parent dies its children are reparented and
        # are no longer found as descendants (the fallback where there is no cgroup).
        snapshot = _tree(main)
        if main is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(st.pgid, sig)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wait_main(task, st)
            snapshot += _tree(_process(st.pid, st.create_time))  # forked during the grace
        await _kill_all(st.pgid, snapshot, st.cgroup)
        if task is not None and task.proc is not None:
            await task.proc.wait()  # reap: no zombie

    async def signal(self, handle: TaskHandle, signal: str) -> None:
        """`signal` to the task's process group; TaskNotFound when it is not running."""
        sig = parse_signal(signal)
        st = _State.of(handle)
        if _process(st.pid, st.create_time) is None:
            raise TaskNotFound(f"task {handle.task} is not running")
        try:
            os.killpg(st.pgid, sig)
        except ProcessLookupError:
            raise TaskNotFound(f"task {handle.task} is not running") from None

    async def _wait_main(self, task: _Task | None, st: _State) -> None:
        if task is not None and task.proc is not None:
            await task.proc.wait()
            return
        while _process(st.pid, st.create_time) is not None:
            await asyncio.sleep(POLL / 5)

    async def destroy(self, handle: TaskHandle) -> None:
        st = _State.of(handle)
        task = self._tasks.pop(_key(handle), None)
        self._cpu_samples.pop(_key(handle), None)
        await _kill_all(st.pgid, _tree(_process(st.pid, st.create_time)), st.cgroup)
        if task is not None and task.proc is not None:
            await task.proc.wait()
        if st.cgroup is None:
            return
        for _ in range(50):  # a killed member leaves the cgroup a moment after it dies
            if st.cgroup.remove():
                return
            st.cgroup.kill_members()
            await asyncio.sleep(0.02)
        raise DriverError(f"could not remove cgroup {st.cgroup.main}: still busy")

    async def inspect(self, handle: TaskHandle) -> bool:
        st = _State.of(handle)
        task = self._tasks.get(_key(handle))
        if task is not None and task.proc is not None and task.proc.returncode is not None:
            return False
        return _process(st.pid, st.create_time) is not None

    async def listens(self, handle: TaskHandle, port: int) -> bool:
        return await asyncio.to_thread(self._listens, handle, port)

    def _listens(self, handle: TaskHandle, port: int) -> bool:
        st = _State.of(handle)
        procs = _tree(_process(st.pid, st.create_time))
        if st.cgroup is not None:  # also what left the process tree (a double fork)
            known = {p.pid for p in procs}
            for pid in st.cgroup.procs():
                if pid not in known:
                    with contextlib.suppress(psutil.Error):
                        procs.append(psutil.Process(pid))
        for p in procs:
            try:
                conns = p.net_connections(kind="tcp")
            except psutil.Error:
                continue
            if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in conns):
                return True
        return False

    async def recover(self, handle: TaskHandle) -> bool:
        # A task that ended with its exit status kept is re-adopted too: wait() tells how.
        st = _State.of(handle)
        if _process(st.pid, st.create_time) is None and _kept_exit(st.exit_file) is None:
            return False
        self._tasks.setdefault(_key(handle), _Task(proc=None, env=None))
        return True

    async def stats(self, handle: TaskHandle) -> TaskStats:
        st = _State.of(handle)
        key = _key(handle)
        procs = self._members(st)
        if key not in self._cpu_samples:  # the first look needs two samples for a rate
            self._cpu_samples[key] = (time.monotonic(), _cpu_seconds(procs))
            await asyncio.sleep(0.1)
            procs = self._members(st)
        now, cpu = time.monotonic(), _cpu_seconds(procs)
        then, before = self._cpu_samples[key]
        self._cpu_samples[key] = (now, cpu)
        percent = max(0.0, (cpu - before) / max(now - then, 1e-6) * 100)
        mem = st.cgroup.memory_bytes() if st.cgroup else None
        if mem is None:
            mem = sum(_rss(p) for p in procs)
        return TaskStats(
            cpu_percent=round(percent, 2),
            memory_bytes=mem,
            pids=len(procs),
            cpu_seconds=cpu,
            memory_limit_bytes=st.cgroup.memory_limit() if st.cgroup else 0,
        )

    def _members(self, st: _State) -> list[psutil.Process]:
        if st.cgroup is not None:
            found = []
            for pid in st.cgroup.procs():
                with contextlib.suppress(psutil.Error):
                    found.append(psutil.Process(pid))
            return found
        return [p for p in _tree(_process(st.pid, st.create_time)) if _running(p)]

    def _exec_context(self, handle: TaskHandle) -> tuple[_State, dict[str, str]]:
        """A running task's state and environment, for a command run in its context."""
        st = _State.of(handle)
        main = _process(st.pid, st.create_time)
        if main is None:
            raise TaskNotFound(f"task {handle.task} is not running")
        task = self._tasks.get(_key(handle))
        return st, task.env if task is not None and task.env is not None else _environ(main)

    async def exec_session(
        self, handle: TaskHandle, command: list[str], *, tty: bool = False
    ) -> ExecSession:
        """An interactive command in the task's environment, directory and cgroup."""
        st, env = self._exec_context(handle)
        joins = st.cgroup.join_files() if st.cgroup else []
        cwd = st.cwd or os.getcwd()
        return await spawn(
            command,
            env=env,
            cwd=st.cwd or None,
            tty=tty,
            wrap=lambda argv: limited_argv(argv, joins=joins, data_limit=None),
            check=lambda cmd: _resolve(cmd, cwd, env),
        )

    async def exec(
        self, handle: TaskHandle, command: list[str], *, timeout: float = 30.0
    ) -> tuple[int, bytes]:
        st, env = self._exec_context(handle)
        if not command:
            raise DriverError("command: expected a non-empty list of strings")
        argv = limited_argv(
            command, joins=st.cgroup.join_files() if st.cgroup else [], data_limit=None
        )
        try:
            _resolve(command[0], st.cwd or os.getcwd(), env)
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=st.cwd or None,
                env=env,
                start_new_session=True,
            )
        except (OSError, subprocess.SubprocessError) as e:
            raise DriverError(_start_error(command[0], e)) from e
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                out = await _read_capped(proc.stdout, EXEC_OUTPUT_LIMIT)
                code, _ = _exit_code(await proc.wait())
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, _signal.SIGKILL)
            await proc.wait()
            raise DriverError(f"exec: {command[0]} timed out after {timeout:g}s") from None
        return code, out


async def _kill_all(pgid: int, snapshot: list[psutil.Process], cg: TaskCgroup | None) -> None:
    """SIGKILL the group, the cgroup and the snapshot until nothing of the task is left."""
    deadline = time.monotonic() + KILL_DEADLINE
    while True:
        alive = [p for p in snapshot if _running(p)]
        # Signal the group only while one of its known members lives: once it is empty the
        # kernel may hand the number to an unrelated process group.
        if any(_same_group(p, pgid) for p in alive):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, _signal.SIGKILL)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        cgroup_empty = cg.kill_members() if cg is not None else True
        if not alive and cgroup_empty:
            return
        if time.monotonic() > deadline:
            left = sorted({p.pid for p in alive} | set(cg.procs() if cg else []))
            raise DriverError(f"processes {left} survived SIGKILL for {KILL_DEADLINE:g}s")
        await asyncio.sleep(0.01)


def _cpu_seconds(procs: list[psutil.Process]) -> float:
    """CPU time of the members and of the children they have reaped: a member's child that
    exits moves into its parent's children_* times, so the sum does not fall back."""
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


def _rss(p: psutil.Process) -> int:
    try:
        return int(p.memory_info().rss)
    except psutil.Error:
        return 0


def _environ(p: psutil.Process) -> dict[str, str]:
    # A recovered task's env is read back from /proc rather than kept in the handle,
    # so secrets in it never reach the agent's state file.
    try:
        return dict(p.environ())
    except psutil.Error as e:
        raise DriverError(f"exec: cannot read the task's environment: {e}") from e


async def _read_capped(stream: asyncio.StreamReader, limit: int) -> bytes:
    """Read to EOF, keeping the first `limit` bytes (the rest is drained so the writer ends)."""
    buf = bytearray()
    while chunk := await stream.read(65536):
        if len(buf) < limit:
            buf += chunk[: limit - len(buf)]
    return bytes(buf)


def _start_error(command: str, e: BaseException) -> str:
    if isinstance(e, FileNotFoundError):
        return f"command: {command!r} not found"
    if isinstance(e, PermissionError):
        return f"command: {command!r} is not executable"
    return f"command: {command!r}: {e}"
