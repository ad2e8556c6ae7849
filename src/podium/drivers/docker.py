"""The `docker` driver: one container per task, through the Docker Engine API.

    start ─ create (named, labelled); only if the engine lacks the image: `docker load` of
            image_archive │ pull, then create again
          ─ start       (a container of that name already running: adopted, never a 2nd copy)
    wait  ─ follow the container's logs into the task's log files until the stream ends,
            then read the exit code (logs resume after an agent restart, or a broken
            stream, from a cursor file, so no line is written twice)
    stop  ─ kill with the task's signal ─ grace ─ SIGKILL
    destroy ─ remove the container (force)
    recover ─ by container id: a container that still exists is re-adopted, running or not
            (an exited one reports its real exit code to the restart policy)

Every container is named `podium-<task>-<alloc id>` and labelled with the alloc id, job,
group, task and node id, so an agent that lost its state file finds its containers again.
Ports: each label in `ports` is published on the node address as the alloc's port, with the
same number inside the container (tasks read it from PODIUM_PORT_<LABEL>, as processes do).
`network_mode: host` puts the container on the node's network instead (no NAT, no proxy; the
task binds PODIUM_ADDR_<LABEL> itself, as a process does, and starts faster); `none` has none.
Mounts: the alloc's shared dir at /alloc, the task dir at /local, plus `volumes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import re
import time
from collections.abc import Coroutine
from typing import Any

from podium.drivers import docker_volumes, schemas
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
from podium.drivers.docker_engine import DEFAULT_SOCKET, Demux, Engine, EngineError, hijack
from podium.errors import DriverError, TaskNotFound
from podium.runtime.backoff import Backoff
from podium.runtime.logfiles import LogLimits, RotatingFile

log = logging.getLogger(__name__)

MIB = 1024 * 1024
KILL_DEADLINE = 10.0
CURSOR_EVERY = 0.5  # seconds between saves of the log cursor
EXEC_OUTPUT_LIMIT = 4 * MIB


def container_name(alloc_id: str, task: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_.-]", "_", f"podium-{task}-{alloc_id}")


def _since(ts: bytes) -> str:
    """Docker's `since` (unix seconds.nanos) for an RFC3339Nano log timestamp."""
    text = ts.decode()
    secs = dt.datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.UTC)
    frac = text[20:].rstrip("Z").split("+")[0] if len(text) > 20 and text[19] == "." else "0"
    return f"{int(secs.timestamp())}.{frac}"


class DockerDriver:
    name = "docker"

    def __init__(
        self,
        *,
        socket_path: str = DEFAULT_SOCKET,
        host_volumes: dict[str, str] | None = None,
        pids_limit: int = DEFAULT_PIDS,
    ) -> None:
        self.engine = Engine(socket_path)
        self.host_volumes = dict(host_volumes or {})
        self.pids_limit = pids_limit  # per container, unless the task sets resources.pids

    # ── fingerprint and config ─────────────────────────────────────────────────────────

    async def fingerprint(self) -> Fingerprint:
        if not _exists(self.engine.socket_path):
            return Fingerprint(
                detected=False,
                healthy=False,
                description=f"no docker engine: {self.engine.socket_path} does not exist",
            )
        try:
            async with asyncio.timeout(3):
                version = await self.engine.request("GET", "/version", timeout=3)
        except (DriverError, TimeoutError) as e:
            return Fingerprint(
                detected=True, healthy=False, description=f"docker engine unhealthy: {e}"
            )
        v = str(version.get("Version", "?"))
        return Fingerprint(
            detected=True,
            healthy=True,
            description=f"docker engine {v} (API {version.get('ApiVersion', '?')})",
            attributes={
                "driver.docker.version": v,
                "driver.docker.host_volumes": ",".join(sorted(self.host_volumes)),
            },
        )

    def validate_config(self, config: dict[str, Any]) -> list[str]:
        return schemas.DOCKER.messages(config)

    # ── start ──────────────────────────────────────────────────────────────────────────

    async def start(self, cfg: TaskConfig) -> TaskHandle:
        c = cfg.driver_config
        refuse_invalid(self, c)
        name = container_name(cfg.alloc_id, cfg.task)
        body = self._create_body(cfg)
        for _ in range(3):
            try:
                cid = await self._create(name, body, c.get("image_archive"))
                break
            except EngineError as e:
                if e.status != 409:
                    raise DriverError(f"image {c['image']!r}: could not create: {e}") from e
            adopted = await self._adopt(name, cfg)
            if adopted is not None:
                return adopted
        else:
            raise DriverError(f"container {name} exists and could not be replaced")
        try:
            await self.engine.request("POST", f"/containers/{cid}/start")
        except EngineError as e:
            with contextlib.suppress(EngineError):
                await self.engine.request(
                    "DELETE", f"/containers/{cid}", params={"force": "1", "v": "1"}
                )
            raise DriverError(f"image {c['image']!r}: could not start: {e}") from e
        return await self._handle(cid, cfg, name)

    async def _create(self, name: str, body: dict[str, Any], archive: str | None) -> str:
        """The new container's id. The image is looked for (loaded, pulled) only when the
        engine says it lacks it: a start of a present image costs no extra round trip."""
        params = {"name": name}
        try:
            created = await self.engine.request(
                "POST", "/containers/create", params=params, body=body
            )
        except EngineError as e:
            if e.status != 404:  # 404: no such image
                raise
            await self._ensure_image(body["Image"], archive)
            created = await self.engine.request(
                "POST", "/containers/create", params=params, body=body
            )
        return str(created["Id"])

    async def _adopt(self, name: str, cfg: TaskConfig) -> TaskHandle | None:
        """A container of this task already exists (the agent lost its state): adopt it if
        it runs; otherwise remove it so a fresh one can be made. Never two copies."""
        try:
            info = await self.engine.request("GET", f"/containers/{name}/json")
        except EngineError as e:
            if e.status == 404:
                return None
            raise
        labels = info.get("Config", {}).get("Labels") or {}
        if info.get("State", {}).get("Running") and labels.get("podium.alloc_id") == cfg.alloc_id:
            log.warning("task %s: adopting its running container %s", cfg.task, info["Id"][:12])
            return await self._handle(str(info["Id"]), cfg, name)
        await self.engine.request(
            "DELETE", f"/containers/{info['Id']}", params={"force": "1", "v": "1"}
        )
        return None

    async def _handle(self, cid: str, cfg: TaskConfig, name: str) -> TaskHandle:
        pid = 0
        with contextlib.suppress(EngineError):
            info = await self.engine.request("GET", f"/containers/{cid}/json")
            pid = int(info.get("State", {}).get("Pid") or 0)
        return TaskHandle(
            driver=self.name,
            alloc_id=cfg.alloc_id,
            task=cfg.task,
            state={
                "id": cid,
                "name": name,
                "pid": pid,
                "stdout": cfg.stdout_path,
                "stderr": cfg.stderr_path,
            },
            started_at=time.time(),
        )

    async def _ensure_image(self, image: str, archive: str | None) -> None:
        try:
            await self.engine.request("GET", f"/images/{image}/json")
            return
        except EngineError as e:
            if e.status != 404:
                raise
        if archive:
            try:
                data = await asyncio.to_thread(_read_bytes, archive)
            except OSError as e:
                raise DriverError(f"image_archive: cannot read {archive}: {e}") from e
            await self.engine.request(
                "POST", "/images/load", params={"quiet": "1"}, content=data, timeout=300
            )
            try:
                await self.engine.request("GET", f"/images/{image}/json")
                return
            except EngineError as e:
                raise DriverError(
                    f"image_archive: {archive} was loaded but holds no image {image!r}"
                ) from e
        repo, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
        try:
            # A pull reports failure in its body stream, so check for the image afterwards.
            await self.engine.request(
                "POST",
                "/images/create",
                params={"fromImage": repo, "tag": tag or "latest"},
                timeout=300,
            )
            await self.engine.request("GET", f"/images/{image}/json")
        except EngineError as e:
            raise DriverError(
                f"image: {image!r} is not present locally and could not be pulled ({e}); "
                "load it first or set image_archive"
            ) from e

    def _create_body(self, cfg: TaskConfig) -> dict[str, Any]:
        c = cfg.driver_config
        env = dict(cfg.env)
        if env.get("PATH") == os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"):
            del env["PATH"]  # the agent's own PATH, not the user's: let the image's win
        env["PODIUM_ALLOC_DIR"], env["PODIUM_TASK_DIR"] = "/alloc", "/local"
        alloc_root = os.path.dirname(cfg.alloc_dir.rstrip("/"))
        os.makedirs(cfg.alloc_dir, exist_ok=True)
        os.makedirs(cfg.task_dir, exist_ok=True)
        binds = [f"{cfg.alloc_dir}:/alloc:rw", f"{cfg.task_dir}:/local:rw"]
        binds += docker_volumes.resolve(
            list(c.get("volumes", [])),
            task_dir=cfg.task_dir,
            alloc_root=alloc_root,
            host_volumes=self.host_volumes,
        )
        mode = c.get("network_mode", "bridge")
        address = cfg.env.get("PODIUM_IP", "127.0.0.1")
        exposed: dict[str, Any] = {}
        bindings: dict[str, Any] = {}
        for label in c.get("ports", []):
            key = f"PODIUM_PORT_{label.upper().replace('-', '_')}"
            if key not in cfg.env:
                raise DriverError(f"ports: the group's network declares no port {label!r}")
            port = cfg.env[key]
            if mode == "bridge":  # on the host's network the task binds the node port itself
                exposed[f"{port}/tcp"] = {}
                bindings[f"{port}/tcp"] = [{"HostIp": address, "HostPort": port}]
        labels = {
            **c.get("labels", {}),
            **cfg.labels,
            "podium.node_id": cfg.env.get("PODIUM_NODE_ID", ""),
            "podium.stdout": cfg.stdout_path,
            "podium.stderr": cfg.stderr_path,
        }
        body: dict[str, Any] = {
            "Image": c["image"],
            "Env": [f"{k}={v}" for k, v in env.items()],
            "Labels": labels,
            "ExposedPorts": exposed,
            "HostConfig": {
                "NetworkMode": mode,
                "Binds": binds,
                "PortBindings": bindings,
                "Memory": cfg.memory_mb * MIB,
                "MemorySwap": cfg.memory_mb * MIB,  # no swap beyond the limit
                "CpuShares": max(2, cfg.cpu),
                # A hard limit as well (a CFS quota): cpu over one core's worth, in cpus.
                "NanoCpus": max(10_000_000, cfg.cpu * 1_000_000_000 // max(1, cfg.cpu_per_core)),
                "PidsLimit": cfg.pids or self.pids_limit,
                "Init": bool(c.get("init", True)),  # signals forwarded, zombies reaped
                "LogConfig": {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "2"}},
            },
        }
        if "command" in c:
            body["Cmd"] = [c["command"], *c.get("args", [])]
        elif "args" in c:
            body["Cmd"] = list(c["args"])
        if "entrypoint" in c:
            body["Entrypoint"] = list(c["entrypoint"])
        if "user" in c:
            body["User"] = c["user"]
        if "work_dir" in c:
            body["WorkingDir"] = c["work_dir"]
        return body

    # ── wait, logs ─────────────────────────────────────────────────────────────────────

    async def wait(self, handle: TaskHandle) -> ExitResult:
        # The log stream ends when the container stops, so following it is the wait: one
        # connection per running container. A stream that broke off while the container
        # runs (engine restarting, unreachable) is resumed from the cursor; the engine
        # being away never fails the task, which keeps running without us.
        backoff = Backoff(base=0.2, cap=5.0)
        while True:
            await self._pump_logs(handle)
            try:
                st = await self._state(handle)
            except EngineError as e:
                delay = backoff.next()
                log.warning("task %s: %s; retrying in %.1fs", handle.task, e, delay)
                await asyncio.sleep(delay)
                continue
            if st is None:
                return ExitResult(error="container is gone")
            if not (st.get("Running") or st.get("Restarting")):
                break
            backoff.reset()
            await asyncio.sleep(0.05)
        code = int(st.get("ExitCode", -1))
        sig = code - 128 if 128 < code <= 128 + 64 else None
        return ExitResult(exit_code=code, signal=sig, oom_killed=bool(st.get("OOMKilled")))

    async def _pump_logs(self, handle: TaskHandle) -> None:
        """Copy the container's stdout/stderr into the task's files, from the saved cursor on."""
        st = handle.state
        out_path, err_path = str(st.get("stdout", "")), str(st.get("stderr", ""))
        if not out_path or not err_path:
            return
        cursor_path = out_path + ".cursor"
        last = _read_cursor(cursor_path)
        params = {"follow": "1", "stdout": "1", "stderr": "1", "timestamps": "1"}
        if last:
            with contextlib.suppress(ValueError):
                params["since"] = _since(last)
        # The same files, bounds and rotation as the process driver's (the relay's).
        limits = LogLimits()
        files = {1: RotatingFile(out_path, limits), 2: RotatingFile(err_path, limits)}
        saved, saved_at = last, time.monotonic()
        try:
            async with self.engine.stream(
                "GET", f"/containers/{_cid(handle)}/logs", params=params
            ) as r:
                demux = Demux()
                async for chunk in r.aiter_raw():
                    for kind, payload in demux.feed(chunk):
                        ts, _, line = payload.partition(b" ")
                        if last and ts <= last:
                            continue  # written before the agent restarted
                        files.get(kind, files[1]).write(line)
                        last = ts
                    if last != saved and time.monotonic() - saved_at > CURSOR_EVERY:
                        _save_cursor(cursor_path, last)
                        saved, saved_at = last, time.monotonic()
        except EngineError as e:
            if e.status != 404:
                log.warning("task %s: log stream ended: %s", handle.task, e)
        finally:
            for f in files.values():
                f.close()
            if last != saved:
                _save_cursor(cursor_path, last)

    # ── stop, destroy, inspect, recover ────────────────────────────────────────────────

    async def stop(
        self, handle: TaskHandle, *, signal: str = "SIGTERM", timeout: float = 5.0
    ) -> None:
        sig = parse_signal(signal)
        cid = _cid(handle)
        if not await self._kill(cid, str(sig)):
            return
        try:
            async with asyncio.timeout(timeout):
                await self._wait_stopped(cid, timeout)
            return
        except TimeoutError:
            pass
        await self._kill(cid, "SIGKILL")
        try:
            async with asyncio.timeout(KILL_DEADLINE):
                await self._wait_stopped(cid, KILL_DEADLINE)
        except TimeoutError:
            raise DriverError(
                f"container {cid[:12]} survived SIGKILL for {KILL_DEADLINE:g}s"
            ) from None

    async def signal(self, handle: TaskHandle, signal: str) -> None:
        """`signal` to the container's main process; TaskNotFound when it is not running."""
        if not await self._kill(_cid(handle), str(parse_signal(signal))):
            raise TaskNotFound(f"container {_cid(handle)[:12]} is not running")

    async def _kill(self, cid: str, sig: str) -> bool:
        """False when there is nothing left to signal."""
        try:
            await self.engine.request("POST", f"/containers/{cid}/kill", params={"signal": sig})
            return True
        except EngineError as e:
            if e.status in (404, 409):  # gone, or not running
                return False
            raise

    async def _wait_stopped(self, cid: str, timeout: float) -> None:
        with contextlib.suppress(EngineError):
            await self.engine.request(
                "POST",
                f"/containers/{cid}/wait",
                params={"condition": "not-running"},
                timeout=timeout + 1,
            )

    async def destroy(self, handle: TaskHandle) -> None:
        try:
            await self.engine.request(
                "DELETE", f"/containers/{_cid(handle)}", params={"force": "1", "v": "1"}
            )
        except EngineError as e:
            if e.status not in (404, 409):  # 409: removal already in progress
                raise

    async def _state(self, handle: TaskHandle) -> dict[str, Any] | None:
        try:
            info = await self.engine.request("GET", f"/containers/{_cid(handle)}/json")
        except EngineError as e:
            if e.status == 404:
                return None
            raise
        return dict(info.get("State") or {})

    async def inspect(self, handle: TaskHandle) -> bool:
        st = await self._state(handle)
        return bool(st and st.get("Running"))

    async def recover(self, handle: TaskHandle) -> bool:
        # An exited container is still re-adopted: wait() then reports how it ended.
        return await self._state(handle) is not None

    async def list_handles(self, node_id: str) -> list[TaskHandle]:
        """Every podium container of this node, as handles (for the agent's orphan sweep)."""
        filters = json.dumps({"label": [f"podium.node_id={node_id}"]})
        found = await self.engine.request(
            "GET", "/containers/json", params={"all": "1", "filters": filters}
        )
        out = []
        for c in found or []:
            lb = c.get("Labels") or {}
            out.append(
                TaskHandle(
                    driver=self.name,
                    alloc_id=lb.get("podium.alloc_id", ""),
                    task=lb.get("podium.task", ""),
                    state={
                        "id": c["Id"],
                        "name": (c.get("Names") or [""])[0].lstrip("/"),
                        "stdout": lb.get("podium.stdout", ""),
                        "stderr": lb.get("podium.stderr", ""),
                    },
                )
            )
        return out

    # ── stats, exec ────────────────────────────────────────────────────────────────────

    async def stats(self, handle: TaskHandle) -> TaskStats:
        try:
            s = await self.engine.request(
                "GET",
                f"/containers/{_cid(handle)}/stats",
                # one-shot: at once, without the engine's second sample (cpu_percent is
                # then 0 here; the agent's sampler rates cpu_seconds itself)
                params={"stream": "false", "one-shot": "true"},
            )
        except EngineError as e:
            if e.status == 404:
                raise TaskNotFound(f"task {handle.task}: container is gone") from e
            raise
        cpu, pre = s.get("cpu_stats") or {}, s.get("precpu_stats") or {}
        cpu_delta = (cpu.get("cpu_usage", {}).get("total_usage", 0) or 0) - (
            pre.get("cpu_usage", {}).get("total_usage", 0) or 0
        )
        sys_delta = (cpu.get("system_cpu_usage") or 0) - (pre.get("system_cpu_usage") or 0)
        cpus = cpu.get("online_cpus") or len(cpu.get("cpu_usage", {}).get("percpu_usage") or [1])
        percent = cpu_delta / sys_delta * cpus * 100 if sys_delta > 0 and cpu_delta > 0 else 0.0
        mem = s.get("memory_stats") or {}
        stat = mem.get("stats") or {}
        cache = stat.get("total_inactive_file", stat.get("inactive_file", 0)) or 0
        used = max(0, int(mem.get("usage", 0) or 0) - int(cache))
        pids = int((s.get("pids_stats") or {}).get("current", 0) or 0)
        total_ns = cpu.get("cpu_usage", {}).get("total_usage", 0) or 0
        limit = int(mem.get("limit", 0) or 0)
        return TaskStats(
            cpu_percent=round(percent, 2),
            memory_bytes=used,
            pids=pids,
            cpu_seconds=total_ns / 1e9,
            memory_limit_bytes=limit if limit < 2**62 else 0,
        )

    async def exec_session(
        self, handle: TaskHandle, command: list[str], *, tty: bool = False
    ) -> DockerSession:
        """An interactive exec in the container: stdin, output streams, a TTY on request."""
        if not command or not all(isinstance(c, str) and c for c in command):
            raise DriverError("command: expected a non-empty list of strings")
        cid = _cid(handle)
        spec = {"Cmd": command, "AttachStdin": True, "AttachStdout": True,
                "AttachStderr": True, "Tty": tty}  # fmt: skip
        try:
            created = await self.engine.request("POST", f"/containers/{cid}/exec", body=spec)
        except EngineError as e:
            if e.status in (404, 409):
                raise TaskNotFound(f"task {handle.task} is not running") from e
            raise
        eid = created["Id"]
        body = json.dumps({"Detach": False, "Tty": tty}).encode()
        try:
            reader, writer = await hijack(self.engine.socket_path, f"/exec/{eid}/start", body)
        except OSError as e:
            raise EngineError(f"docker engine: exec start: {e}") from e
        return DockerSession(self.engine, eid, reader, writer, tty=tty)

    async def exec(
        self, handle: TaskHandle, command: list[str], *, timeout: float = 30.0
    ) -> tuple[int, bytes]:
        if not command:
            raise DriverError("command: expected a non-empty list of strings")
        cid = _cid(handle)
        try:
            created = await self.engine.request(
                "POST",
                f"/containers/{cid}/exec",
                body={"Cmd": command, "AttachStdout": True, "AttachStderr": True},
            )
        except EngineError as e:
            if e.status in (404, 409):
                raise TaskNotFound(f"task {handle.task} is not running") from e
            raise
        eid = created["Id"]
        buf = bytearray()
        try:
            async with asyncio.timeout(timeout):
                async with self.engine.stream(
                    "POST", f"/exec/{eid}/start", body={"Detach": False, "Tty": False}
                ) as r:
                    demux = Demux()
                    async for chunk in r.aiter_raw():
                        for _, payload in demux.feed(chunk):
                            if len(buf) < EXEC_OUTPUT_LIMIT:
                                buf += payload[: EXEC_OUTPUT_LIMIT - len(buf)]
        except TimeoutError:
            raise DriverError(f"exec: {command[0]} timed out after {timeout:g}s") from None
        info = await self.engine.request("GET", f"/exec/{eid}/json")
        code = info.get("ExitCode")
        return (int(code) if code is not None else -1), bytes(buf)


def _cid(handle: TaskHandle) -> str:
    cid = handle.state.get("id")
    if not isinstance(cid, str) or not cid:
        raise DriverError(f"docker handle: bad state {handle.state!r}")
    return cid


def _save_cursor(path: str, ts: bytes) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(ts)
    os.replace(tmp, path)


def _exists(path: str) -> bool:
    return os.path.exists(path)


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _read_cursor(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read().strip()
    except OSError:
        return b""


class DockerSession:
    """An exec in a container over a hijacked Engine connection (podium.drivers.exec_session)."""

    def __init__(
        self,
        engine: Engine,
        exec_id: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        tty: bool,
    ) -> None:
        self.engine, self.exec_id, self.tty = engine, exec_id, tty
        self._raw, self._writer = reader, writer
        if tty:  # one raw stream
            self.streams = [(1, reader)]
        else:  # frames of stdout and stderr, split by `background`
            self._out, self._err = asyncio.StreamReader(), asyncio.StreamReader()
            self.streams = [(1, self._out), (2, self._err)]

    def background(self) -> list[Coroutine[Any, Any, None]]:
        return [] if self.tty else [self._split()]

    async def _split(self) -> None:
        demux = Demux()
        try:
            while chunk := await self._raw.read(65536):
                for kind, payload in demux.feed(chunk):
                    (self._err if kind == 2 else self._out).feed_data(payload)
        except OSError:
            pass
        finally:
            self._out.feed_eof()
            self._err.feed_eof()

    async def write(self, data: bytes) -> None:
        if self._writer.is_closing():
            return
        self._writer.write(data)
        with contextlib.suppress(ConnectionError):
            await self._writer.drain()

    async def close_stdin(self) -> None:
        if self.tty:
            await self.write(b"\x04")
        elif self._writer.can_write_eof():
            self._writer.write_eof()  # the Engine closes the command's stdin

    async def resize(self, rows: int, cols: int) -> None:
        if not self.tty:
            return
        h, w = max(1, min(rows, 1000)), max(1, min(cols, 1000))
        with contextlib.suppress(EngineError):
            await self.engine.request(
                "POST", f"/exec/{self.exec_id}/resize", params={"h": h, "w": w}
            )

    async def wait(self) -> int:
        for _ in range(50):  # the Engine may note the exit a moment after the stream ends
            info = await self.engine.request("GET", f"/exec/{self.exec_id}/json")
            if not info.get("Running") and info.get("ExitCode") is not None:
                return int(info["ExitCode"])
            await asyncio.sleep(0.05)
        return -1

    async def kill(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await self._writer.wait_closed()
