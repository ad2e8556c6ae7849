"""A real `podium dev` cluster as a subprocess, and the CLI run against it, for tests."""

from __future__ import annotations

import json
import os
import random
import select
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx
import psutil

from podium.api.client import Client
from podium.tls import pki
from podium.tls.client import CliConfig

ROOT = Path(__file__).resolve().parents[2]
PODIUM = [sys.executable, "-m", "podium.cli.main"]


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now, below the kernel's ephemeral range.

    A client that connects to a closed port inside that range may be given that very port as
    its own and connect to itself (TCP self-connect), holding it: a server restarted on the
    port then fails with "Address already in use" (seen in test_reconnect_spread, where 200
    agents retry against a stopped server). Ports below the range are never handed out so.
    """
    low = _ephemeral_low()
    for _ in range(500):
        port = random.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port below {low} on {host}")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def wait_until(
    pred: Any, *, timeout: float, interval: float = 0.05, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = pred()
        except (httpx.HTTPError, OSError, KeyError, ValueError):
            last = None
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Background:
    """`loop()` in a daemon thread while a `with` block runs; it returns once `_stop` is
    set, which the block's end does (and waits up to 10 s for it)."""

    _stop: threading.Event
    _thread: threading.Thread

    def loop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def read_until(proc: subprocess.Popen[bytes], marker: str, *, timeout: float) -> str:
    """What `proc` wrote to its stdout (a pipe) until `marker` appeared, it ended, or the
    timeout; read unbuffered, so nothing waits in a buffer while select() says "nothing"."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    said = b""
    deadline = time.monotonic() + timeout
    while marker.encode() not in said and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.2)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            said += chunk
        elif proc.poll() is not None:
            break
    return said.decode(errors="replace")


class ApiAndCli:
    """Calls to a running cluster's API and CLI, with the management credentials the
    cluster wrote (mutual TLS); the cluster class provides `addr` and `tls_dir`."""

    @property
    def addr(self) -> str:
        raise NotImplementedError

    @property
    def tls_dir(self) -> Path | None:
        """Where the server keeps ca.pem, cli.pem, cli-key.pem (None: --insecure)."""
        return None

    def tls_env(self) -> dict[str, str]:
        d = self.tls_dir
        if d is None:
            return {}
        return {
            "PODIUM_CACERT": str(d / "ca.pem"),
            "PODIUM_CLIENT_CERT": str(d / "cli.pem"),
            "PODIUM_CLIENT_KEY": str(d / "cli-key.pem"),
        }

    @property
    def agent_tls_dir(self) -> Path | None:
        """An agent's credentials (ca.pem, agent.pem, agent-key.pem), where the cluster has one."""
        return None

    def ssl_context(self, *, agent: bool = False) -> ssl.SSLContext | bool:
        """What `verify=` takes for this cluster: its CA, and our management certificate (or,
        with `agent`, an agent's: to call agents' routes as that node)."""
        d = self.tls_dir
        if d is None:
            return True
        ctx = ssl.create_default_context(cafile=str(d / "ca.pem"))
        if agent:
            a = self.agent_tls_dir
            assert a is not None, "this cluster has no agent credentials at hand"
            ctx.load_cert_chain(str(a / "agent.pem"), str(a / "agent-key.pem"))
        else:
            ctx.load_cert_chain(str(d / "cli.pem"), str(d / "cli-key.pem"))
        return ctx

    def node_identity(self, node_id: str, token: str, where: Path) -> ssl.SSLContext:
        """An agent certificate for `node_id` (joined with an agent `token`, as an agent
        does: a CSR, the key kept here), for a test that plays a node over the API."""
        d = self.tls_dir
        assert d is not None, "a cluster without TLS: nodes prove themselves by secret"
        key = pki.make_key()
        join = {"token": token, "csr": pki.csr_pem(pki.make_csr(key)), "node_id": node_id}
        anon = ssl.create_default_context(cafile=str(d / "ca.pem"))
        with httpx.Client(verify=anon, timeout=10) as c:
            r = c.post(f"{self.addr.split(',')[0]}/v1/tls/join", json=join)
        r.raise_for_status()
        assert pki.role_and_name(pki.load_certs(r.json()["cert"])[0]) == ("agent", node_id)
        where.mkdir(parents=True, exist_ok=True)
        (where / f"{node_id}.pem").write_text(r.json()["cert"])
        (where / f"{node_id}-key.pem").write_text(pki.key_pem(key))
        ctx = ssl.create_default_context(cafile=str(d / "ca.pem"))
        ctx.load_cert_chain(str(where / f"{node_id}.pem"), str(where / f"{node_id}-key.pem"))
        return ctx

    def client(self, *, timeout: float = 10.0) -> Client:
        """podium's own API client with the cluster's credentials (as a program would)."""
        env = self.tls_env()
        config = CliConfig(
            self.addr,
            env.get("PODIUM_CACERT", ""),
            env.get("PODIUM_CLIENT_CERT", ""),
            env.get("PODIUM_CLIENT_KEY", ""),
        )
        return Client(self.addr, timeout=timeout, config=config)

    def http(self, **kw: Any) -> httpx.Client:
        """An httpx client for the API: `with cluster.http() as c: c.get(cluster.addr + ...)`."""
        return httpx.Client(verify=self.ssl_context(), timeout=kw.pop("timeout", 10), **kw)

    def request(self, method: str, path: str, *, agent: bool = False, **kw: Any) -> httpx.Response:
        """One request to the API with the cluster's credentials; the response as it is."""
        kw.setdefault("timeout", 10)
        with httpx.Client(verify=self.ssl_context(agent=agent)) as c:
            return c.request(method, self.addr + path, **kw)

    def agent_get(self, node: dict[str, Any], path: str, **kw: Any) -> httpx.Response:
        """GET from a node's agent API (mutual TLS, the agent checked by its node name)."""
        scheme = "https" if self.tls_dir is not None else "http"
        ext = {"sni_hostname": f"{node['id']}.node.podium"} if self.tls_dir else {}
        with httpx.Client(verify=self.ssl_context(), timeout=kw.pop("timeout", 5)) as c:
            return c.get(f"{scheme}://{node['http_addr']}{path}", extensions=ext, **kw)

    def api(self, method: str, path: str, **kw: Any) -> Any:
        r = self.request(method, path, **kw)
        r.raise_for_status()
        return r.json()

    def cli(
        self, *args: str, timeout: float = 60.0, check: bool = False, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PODIUM_ADDR": self.addr, "COLUMNS": "200", **self.tls_env()}
        res = subprocess.run(
            [*PODIUM, *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=timeout,
            input=input,
        )
        if check and res.returncode != 0:
            raise AssertionError(
                f"podium {' '.join(args)} exited {res.returncode}:\n{res.stdout}\n{res.stderr}"
            )
        return res

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json", check=True).stdout)

    def wait_alloc(self, job: str, status: str, *, timeout: float) -> str:
        """The id of an alloc of `job` whose client status is `status`, once there is one."""

        def found() -> str | None:
            allocs = self.api("GET", "/v1/allocations", params={"job": job})
            return next((a["id"] for a in allocs if a["client_status"] == status), None)

        return str(wait_until(found, timeout=timeout, what=f"an alloc of {job} {status}"))


@dataclass
class DevCluster(ApiAndCli):
    data_dir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    extra_args: list[str] = field(default_factory=list)  # more `podium dev` options

    @property
    def addr(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    @property
    def agent_tls_dir(self) -> Path:
        return self.data_dir / "agent" / "tls"

    def start(self, *, timeout: float = 20.0) -> DevCluster:
        self.log_path = self.data_dir / f"dev-{int(time.time() * 1000)}.log"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")  # noqa: SIM115 - owned by the subprocess
        self.proc = subprocess.Popen(
            [
                *PODIUM,
                "dev",
                "--data-dir",
                str(self.data_dir),
                "--addr",
                f"127.0.0.1:{self.port}",
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        wait_until(self._ready, timeout=timeout, what="podium dev to serve with a ready node")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"podium dev exited with {self.proc.returncode}:\n{self.logs()}")
        nodes = self.api("GET", "/v1/nodes")
        return any(n["status"] == "ready" for n in nodes)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def task_processes(self) -> list[psutil.Process]:
        """Every live process started for a task of this cluster (found by its alloc dir env)."""
        out = []
        marker = str(self.data_dir)
        for p in psutil.process_iter(["pid"]):
            try:
                env = p.environ()
            except (psutil.Error, OSError):
                continue
            if env.get("PODIUM_ALLOC_DIR", "").startswith(marker):
                out.append(p)
        return out

    def kill_leftovers(self) -> None:
        for p in self.task_processes():
            try:
                p.kill()
            except psutil.Error:
                pass
        unmount_under(self.data_dir)


def unmount_under(path: Path) -> None:
    """Unmount what a test's agent mounted under `path` (the tmpfs of each task's secrets/)
    and left there when the cluster stopped before its allocs did."""
    prefix = str(path.resolve()) + "/"
    for part in reversed(psutil.disk_partitions(all=True)):
        if part.mountpoint.startswith(prefix):
            subprocess.run(["umount", "-l", part.mountpoint], check=False, capture_output=True)


def wait_rounds(
    cluster: ApiAndCli,
    *controllers: str,
    addr: str | None = None,
    n: int = 2,
    timeout: float = 30.0,
) -> None:
    """Wait until the leader (at `addr`, default the cluster's) has completed `n` more
    rounds of each controller named: whatever it would do about what the caller has seen,
    it has done by then. The proof of a negative ("nothing was placed") without sleeping
    and hoping."""
    addr = addr or cluster.addr

    def rounds() -> dict[str, int]:
        with httpx.Client(verify=cluster.ssl_context(), timeout=5) as c:
            status = c.get(addr + "/v1/status").json()
        return {c: int(status["controller_rounds"].get(c, 0)) for c in controllers}

    start = rounds()
    wait_until(
        lambda: all(r >= start[c] + n for c, r in rounds().items()),
        timeout=timeout,
        interval=0.05,
        what=f"{n} more rounds of {', '.join(controllers)} at {addr}",
    )


def agent_syncs(cluster: ApiAndCli, node: dict[str, Any]) -> int:
    """How often the node's agent has matched its runners to the server's allocs."""
    r = cluster.agent_get(node, "/v1/agent/health", timeout=2)
    return int(r.json()["syncs"])


def http_get(port: int, path: str = "/", timeout: float = 2.0) -> int:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=timeout).status_code
