"""A real multi-node cluster for tests: one `podium server` and N `podium agent` subprocesses.

    MultiNodeCluster.start(n)
      server   127.0.0.1:PORT, SQLite in BASE/server, heartbeat TTL as given, mutual TLS
               (its CA and management credentials in BASE/server/tls)
      agent i  node-i, data dir BASE/node-i, advertised (and task) address 127.0.0.(i+1),
               joined with a one-use token from `podium server join-token`

Each agent runs in its own process group; its tasks run in their own sessions (the
process driver's setsid), so "the machine died" means killing the agent and every
process whose PODIUM_ALLOC_DIR lies under that agent's data dir. `stop()` ends
every process the cluster started, tasks included.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from integration.cluster import PODIUM, ROOT, ApiAndCli, DevCluster, free_port, wait_until


def _spawn(args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the subprocess
    return subprocess.Popen(
        [*PODIUM, *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        start_new_session=True,  # its own process group: kill it as a machine would die
    )


def _end(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGCONT)  # a stopped process cannot handle SIGTERM
        proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@dataclass
class AgentProc:
    name: str
    address: str
    data_dir: Path
    server: str
    proc: subprocess.Popen[bytes] | None = None
    extra: tuple[str, ...] = ()  # more `podium agent` arguments (later ones win)
    join_token: str = ""  # needed on the first start only

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.name}.log"

    def start(self) -> AgentProc:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        extra = ["--join-token", self.join_token] if self.join_token else []
        self.proc = _spawn(
            [
                "agent",
                "--server",
                self.server,
                "--data-dir",
                str(self.data_dir),
                "--name",
                self.name,
                "--address",
                self.address,
                "--log-level",
                "info",
                *extra,
                *self.extra,
            ],
            self.log_path,
        )
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def task_processes(self) -> list[psutil.Process]:
        """Every live process started for a task on this node (found by its alloc dir)."""
        marker = str(self.data_dir) + os.sep
        out = []
        for p in psutil.process_iter(["pid"]):
            try:
                env = p.environ()
            except (psutil.Error, OSError):
                continue
            if env.get("PODIUM_ALLOC_DIR", "").startswith(marker):
                out.append(p)
        return out

    def kill9(self) -> None:
        """The machine dies: the agent and its tasks, all at once."""
        assert self.proc is not None
        tasks = self.task_processes()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for p in tasks:
            with contextlib.suppress(psutil.Error):
                p.kill()
        self.proc.wait(10)

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        _end(self.proc)
        for p in self.task_processes():
            with contextlib.suppress(psutil.Error):
                p.kill()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class MultiNodeCluster(ApiAndCli):
    base_dir: Path
    heartbeat_ttl: float = 2.0
    port: int = field(default_factory=free_port)
    server_proc: subprocess.Popen[bytes] | None = None
    agents: list[AgentProc] = field(default_factory=list)
    server_args: tuple[str, ...] = ()  # more `podium server` arguments (e.g. --store)
    agent_args: tuple[str, ...] = ()  # more `podium agent` arguments

    @property
    def addr(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def tls_dir(self) -> Path:
        return self.base_dir / "server" / "tls"

    def join_token(self) -> str:
        """A one-use agent join token, as an operator prints it on the server."""
        return self.cli("server", "join-token", check=True).stdout.strip()

    @property
    def server_log(self) -> Path:
        return self.base_dir / "server.log"

    # ------------------------------------------------------------- lifecycle

    def start(self, n_agents: int, *, timeout: float = 30.0) -> MultiNodeCluster:
        self.start_server(timeout=timeout)
        for _ in range(n_agents):
            self.add_agent(wait=False)
        self.wait_ready(n_agents, timeout=timeout)
        return self

    def start_server(self, *, timeout: float = 20.0) -> None:
        data = self.base_dir / "server"
        data.mkdir(parents=True, exist_ok=True)
        self.server_proc = _spawn(
            [
                "server",
                "--data-dir",
                str(data),
                "--addr",
                f"127.0.0.1:{self.port}",
                "--heartbeat-ttl",
                str(self.heartbeat_ttl),
                *self.server_args,
            ],
            self.server_log,
        )

        def up() -> bool:
            assert self.server_proc is not None
            if self.server_proc.poll() is not None:
                raise AssertionError(f"podium server exited:\n{self.logs()}")
            return bool(self.api("GET", "/v1/status"))

        wait_until(up, timeout=timeout, what="podium server to answer")

    def stop_server(self, *, kill: bool = False) -> None:
        assert self.server_proc is not None
        if kill:
            self.server_proc.kill()
            self.server_proc.wait(10)
        else:
            _end(self.server_proc)

    def add_agent(self, *, wait: bool = True, timeout: float = 20.0) -> AgentProc:
        i = len(self.agents)
        a = AgentProc(
            name=f"node-{i + 1}",
            address=f"127.0.0.{i + 1}",
            data_dir=self.base_dir / f"node-{i + 1}",
            server=self.addr,
            extra=self.agent_args,
            join_token=self.join_token(),
        ).start()
        self.agents.append(a)
        if wait:
            self.wait_ready(len(self.agents), timeout=timeout)
        return a

    def wait_ready(self, n: int, *, timeout: float) -> None:
        def ready() -> bool:
            for a in self.agents:
                if a.proc is not None and a.proc.poll() is not None:
                    raise AssertionError(f"agent {a.name} exited:\n{a.logs()}")
            nodes = self.api("GET", "/v1/nodes")
            return sum(1 for x in nodes if x["status"] == "ready") >= n

        wait_until(ready, timeout=timeout, what=f"{n} ready nodes")

    def stop(self) -> None:
        """End everything this cluster started: agents, their tasks, the server."""
        for a in self.agents:
            a.stop()
        if self.server_proc is not None:
            _end(self.server_proc)
        for a in self.agents:  # tasks an agent could not stop itself
            for p in a.task_processes():
                with contextlib.suppress(psutil.Error):
                    p.kill()

    # --------------------------------------------------------------- access

    def logs(self) -> str:
        out = self.server_log.read_text(errors="replace") if self.server_log.exists() else ""
        for a in self.agents:
            out += f"\n----- {a.name} -----\n" + a.logs()[-4000:]
        return out[-20000:]

    def node_addresses(self) -> dict[str, str]:
        return {n["id"]: n["address"] for n in self.api("GET", "/v1/nodes")}

    def job(self, name: str) -> Any:
        return self.api("GET", f"/v1/job/{name}")

    def serving(self, job: str, *, timeout: float = 0.3) -> set[tuple[str, int]]:
        """Endpoints of any alloc of `job` ever placed that answer HTTP 200 now."""
        addrs = self.node_addresses()
        out = set()
        for a in self.job(job)["allocations"]:
            port = a["ports"].get("http")
            host = addrs.get(a["node_id"])
            if not port or not host:
                continue
            try:
                if httpx.get(f"http://{host}:{port}/", timeout=timeout).status_code == 200:
                    out.add((host, port))
            except httpx.HTTPError:
                pass
        return out


def healthy_running(job: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        a
        for a in job["allocations"]
        if a["desired_status"] == "run" and a["client_status"] == "running" and a["healthy"]
    ]


def poll(pred: Any, *, timeout: float, interval: float = 0.05) -> float:
    """Seconds until pred() is true (AssertionError after `timeout`)."""
    t0 = time.monotonic()
    wait_until(pred, timeout=timeout, interval=interval)
    return time.monotonic() - t0


def web_job(path: Path, *, count: int = 6, extra: str = "") -> str:
    """`count` copies of Python's HTTP server, bound to their node's address, checked fast."""
    path.write_text(
        textwrap.dedent(f"""
        name: web
        type: service
        groups:
          - name: frontend
            count: {count}
            spread: true
            network:
              ports:
                http: {{}}
            services:
              - name: web
                port: http
                checks:
                  - {{type: http, path: /, interval: 0.25s, timeout: 0.25s}}
            tasks:
              - name: server
                driver: process
                kill_timeout: 2s
                config:
                  command: python3
                  args: ["-m", "http.server", "${{PODIUM_PORT_HTTP}}", "--bind", "${{PODIUM_IP}}"]
                resources: {{cpu: 500, memory: 32}}  # MHz: a hard limit, python starts in time
        """)
        + textwrap.indent(textwrap.dedent(extra).strip("\n") + "\n", "    ")
    )
    return str(path)


@contextlib.contextmanager
def dev_and_agent(base: Path) -> Iterator[tuple[DevCluster, AgentProc]]:
    """A `podium dev` and one more agent ("extra", on 127.0.0.2) that has joined it."""
    c = DevCluster(base / "dev").start()
    token = c.cli("server", "join-token", check=True).stdout.strip()
    extra = AgentProc("extra", "127.0.0.2", base / "extra", c.addr, join_token=token).start()
    try:
        wait_until(
            lambda: sum(n["status"] == "ready" for n in c.api("GET", "/v1/nodes")) == 2,
            timeout=20,
            what="the second agent to join",
        )
        yield c, extra
    finally:
        extra.stop()
        c.stop()
        c.kill_leftovers()
