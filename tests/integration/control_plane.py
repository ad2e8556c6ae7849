"""A real highly available control plane for tests: etcd members, podium servers, agents.

    ControlPlane.start(etcd_members=3, servers=3, agents=3)
      etcd       3 members on loopback ports (tests/support/etcd.py)
      server i   127.0.0.1:PORT_i, --store etcd://all members, short lease and heartbeat TTLs;
                 server 0 makes the cluster CA, the others join it with a server token
      agent i    node-i on 127.0.0.(i+1), --servers with every server address, a join token

Every process is real and in its own process group, so `kill9`, `pause` (SIGSTOP)
and `resume` act on it alone. `stop()` ends everything it started, tasks included.
"""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from integration.cluster import ApiAndCli, free_port, wait_until
from integration.multinode import AgentProc, _end, _spawn
from podium.errors import PodiumError
from support.etcd import EtcdCluster, start_etcd_cluster


@dataclass
class ServerProc:
    port: int
    store_url: str
    data_dir: Path
    heartbeat_ttl: float
    leader_ttl: float
    proc: subprocess.Popen[bytes] | None = None
    join: tuple[str, str] | None = None  # (a server's address, a server join token)

    @property
    def addr(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"server-{self.port}.log"

    def start(self) -> ServerProc:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = _spawn(
            [
                "server",
                "--addr",
                f"127.0.0.1:{self.port}",
                "--store",
                self.store_url,
                "--data-dir",
                str(self.data_dir),
                "--heartbeat-ttl",
                str(self.heartbeat_ttl),
                "--leader-ttl",
                str(self.leader_ttl),
                *(["--join", self.join[0], "--join-token", self.join[1]] if self.join else []),
            ],
            self.log_path,
        )
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def status(self, timeout: float = 0.5) -> dict[str, Any] | None:
        """/v1/status, or None when it does not answer."""
        try:
            with httpx.Client(verify=_ssl(self.tls_dir), timeout=timeout) as c:
                r = c.get(self.addr + "/v1/status")
            return r.json() if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError, OSError):
            return None

    def is_leader(self) -> bool:
        st = self.status()
        return bool(st and st["leader"])

    def kill9(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        _end(self.proc)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class ControlPlane(ApiAndCli):
    base_dir: Path
    heartbeat_ttl: float = 2.0
    leader_ttl: float = 2.0
    etcd: EtcdCluster | None = None
    servers: list[ServerProc] = field(default_factory=list)
    agents: list[AgentProc] = field(default_factory=list)

    @property
    def addr(self) -> str:
        """Every server, comma-separated: what the CLI and agents are given."""
        return ",".join(s.addr for s in self.servers)

    @property
    def tls_dir(self) -> Path:
        """Server 0's management credentials (every server's CA is the same)."""
        return self.servers[0].tls_dir

    def api(self, method: str, path: str, **kw: Any) -> Any:
        """Ask the first live server that answers (the test's own failover)."""
        last: Exception | None = None
        for s in self.servers:
            if not s.alive:
                continue
            try:
                with httpx.Client(verify=self.ssl_context(), timeout=3) as c:
                    r = c.request(method, s.addr + path, **kw)
                r.raise_for_status()
                return r.json()
            except httpx.HTTPError as e:
                last = e
        raise AssertionError(f"no server answered {method} {path}: {last}")

    # ------------------------------------------------------------- lifecycle

    def start(self, *, etcd_members: int = 3, servers: int = 3, agents: int = 3) -> ControlPlane:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.etcd = start_etcd_cluster(self.base_dir, members=etcd_members)
        url = self.etcd.url("/podium-cp")
        for i in range(servers):
            # Server 0 makes the CA; the others join it (each with a one-use server token).
            join = (self.servers[0].addr, self.token("server")) if i else None
            self.servers.append(
                ServerProc(
                    free_port(),
                    url,
                    self.base_dir / f"server-{i}",
                    self.heartbeat_ttl,
                    self.leader_ttl,
                    join=join,
                ).start()
            )
            if i == 0:
                wait_until(lambda: self.servers[0].status(), timeout=30, what="server 0")
        wait_until(lambda: self.leader() is not None, timeout=30, what="a leader")
        for i in range(agents):
            self.agents.append(
                AgentProc(
                    name=f"node-{i + 1}",
                    address=f"127.0.0.{i + 1}",
                    data_dir=self.base_dir / f"node-{i + 1}",
                    server=self.addr,
                    join_token=self.token("agent"),
                ).start()
            )
        wait_until(lambda: self.ready_nodes() >= agents, timeout=30, what=f"{agents} nodes")
        return self

    def token(self, role: str) -> str:
        """A one-use join token from server 0."""
        return self.cli("server", "join-token", "--role", role, check=True).stdout.strip()

    def leader(self) -> ServerProc | None:
        leaders = [s for s in self.servers if s.alive and s.is_leader()]
        assert len(leaders) <= 1, f"two servers think they lead: {[s.addr for s in leaders]}"
        return leaders[0] if leaders else None

    def wait_new_leader(self, old: ServerProc, *, timeout: float) -> tuple[ServerProc, float]:
        """The next leader other than `old`, and seconds waited for it."""
        t0 = time.monotonic()
        found: list[ServerProc] = []

        def elected() -> bool:
            for s in self.servers:
                if s is not old and s.alive and s.is_leader():
                    found.append(s)
                    return True
            return False

        wait_until(elected, timeout=timeout, interval=0.05, what="a new leader")
        return found[0], time.monotonic() - t0

    def ready_nodes(self) -> int:
        try:
            nodes = self.api("GET", "/v1/nodes")
        except AssertionError:
            return 0
        return sum(1 for n in nodes if n["status"] == "ready")

    def stop(self) -> None:
        for a in self.agents:
            a.stop()
        for s in self.servers:
            s.stop()
        for a in self.agents:
            for p in a.task_processes():
                with contextlib.suppress(Exception):
                    p.kill()
        if self.etcd is not None:
            self.etcd.stop()

    def logs(self) -> str:
        out = ""
        for s in self.servers:
            out += f"\n----- server {s.port} -----\n" + s.logs()[-5000:]
        for a in self.agents:
            out += f"\n----- {a.name} -----\n" + a.logs()[-3000:]
        return out[-30000:]


def job(name: str, *, count: int, env: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "type": "service",
        "groups": [
            {
                "name": "g",
                "count": count,
                "spread": True,
                "tasks": [
                    {
                        "name": "t",
                        "driver": "process",
                        "config": {"command": "sleep", "args": ["3600"]},
                        "resources": {"cpu": 50, "memory": 16},
                        "env": env or {},
                    }
                ],
            }
        ],
    }


def running(cp: ControlPlane, name: str) -> dict[str, tuple[int, int]]:
    """alloc id -> (pid, restarts) of the job's running allocs."""
    out = {}
    for a in cp.api("GET", f"/v1/job/{name}")["allocations"]:
        if a["desired_status"] == "run" and a["client_status"] == "running":
            out[a["id"]] = (a["pids"].get("t", 0), a["restarts"])
    return out


def _ssl(tls_dir: Path) -> ssl.SSLContext | bool:
    if not (tls_dir / "ca.pem").exists():
        return True
    ctx = ssl.create_default_context(cafile=str(tls_dir / "ca.pem"))
    ctx.load_cert_chain(str(tls_dir / "cli.pem"), str(tls_dir / "cli-key.pem"))
    return ctx


class Writer:
    """Submits and updates jobs at a steady rate through the failing-over client."""

    def __init__(self, cp: ControlPlane, *, jobs: int = 3, interval: float = 0.1) -> None:
        self.client = cp.client(timeout=3.0)
        self.jobs, self.interval = jobs, interval
        self.acked: dict[str, set[str]] = defaultdict(set)  # job -> marks acknowledged
        self.tried: dict[str, int] = defaultdict(int)
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        seq = 0
        while not self._stop.is_set() and seq < 2000:  # bounded however slow the box is
            name, mark = f"load-{seq % self.jobs}", str(seq)
            seq += 1
            self.tried[name] += 1
            try:
                self.client.register_job(job(name, count=0, env={"MARK": mark}))
                self.acked[name].add(mark)
            except PodiumError as e:
                self.failed.append(f"{name}#{mark}: {e}")
            self._stop.wait(self.interval)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        self.client.close()


def stored_marks(cp: ControlPlane, name: str) -> list[str]:
    versions = cp.api("GET", f"/v1/job/{name}/versions")
    return [v["job"]["groups"][0]["tasks"][0]["env"].get("MARK", "") for v in versions]
