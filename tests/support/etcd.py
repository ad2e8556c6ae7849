"""Start a real etcd (one member or a cluster) on 127.0.0.1 for tests and benchmarks.

    cluster = start_etcd_cluster(tmp_path, members=3)
    cluster.endpoints      ["127.0.0.1:port", ...] (client ports)
    cluster.url("/p")      "etcd://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3/p"
    cluster.kill(i)        SIGKILL member i;  cluster.restart(i): start it again, same data
    cluster.stop()         kill every member and remove the data

Members run with the parent-death signal set to SIGKILL (through util-linux `setpriv`, as
a preexec_fn is unsafe in a process with gRPC's threads), so they die with the thread that
started them even if the test process is killed: no orphans. Start them from the main
thread (not from a worker thread that ends). Data lives on /dev/shm when it
exists (fsync is free there; tests need speed, not durability) unless `data_dir` says.
`etcd_or_skip()` finds the binary; where scripts/test.sh set PODIUM_REQUIRE_ETCD=1 a
missing etcd fails the test instead of skipping it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HEALTHY_WITHIN = 30.0  # seconds; a loaded 2-core CI box can be slow to elect a leader


def etcd_or_skip() -> str:
    found = shutil.which("etcd")
    if found:
        return found
    why = "etcd is not installed (scripts/ensure-etcd.sh installs the etcd-server package)"
    if os.environ.get("PODIUM_REQUIRE_ETCD") == "1":
        pytest.fail(why)
    pytest.skip(why)


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class EtcdCluster:
    binary: str
    root: Path
    names: list[str]
    client_ports: list[int]
    peer_ports: list[int]
    token: str
    procs: list[subprocess.Popen[bytes] | None] = field(default_factory=list)
    owns_root: bool = False
    tls: tuple[Path, Path, Path] | None = None  # (CA, server cert, key): https + client certs

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def endpoints(self) -> list[str]:
        return [f"127.0.0.1:{p}" for p in self.client_ports]

    def url(self, prefix: str = "") -> str:
        return f"etcd://{','.join(self.endpoints)}{prefix}"

    def _args(self, i: int) -> list[str]:
        peers = ",".join(
            f"{n}=http://127.0.0.1:{p}" for n, p in zip(self.names, self.peer_ports, strict=True)
        )
        client = f"{self.scheme}://127.0.0.1:{self.client_ports[i]}"
        tls = (
            [
                f"--trusted-ca-file={self.tls[0]}",
                f"--cert-file={self.tls[1]}",
                f"--key-file={self.tls[2]}",
                "--client-cert-auth",
            ]
            if self.tls
            else []
        )
        peer = f"http://127.0.0.1:{self.peer_ports[i]}"
        setpriv = shutil.which("setpriv")
        return [
            *([setpriv, "--pdeathsig=KILL", "--"] if setpriv else []),
            self.binary,
            f"--name={self.names[i]}",
            f"--data-dir={self.root / self.names[i]}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster={peers}",
            "--initial-cluster-state=new",
            f"--initial-cluster-token={self.token}",
            "--max-txn-ops=100000",
            "--max-request-bytes=33554432",
            "--logger=zap",
            "--log-level=warn",
            *tls,
        ]

    def _spawn(self, i: int) -> None:
        log = open(self.root / f"{self.names[i]}.log", "ab")  # noqa: SIM115  # owned by the child
        try:
            self.procs[i] = subprocess.Popen(
                self._args(i),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()

    def healthy(self, i: int) -> bool:
        url = f"{self.scheme}://127.0.0.1:{self.client_ports[i]}/health"
        ctx = None
        if self.tls:
            import ssl

            ctx = ssl.create_default_context(cafile=str(self.tls[0]))
            ctx.load_cert_chain(str(self.tls[1]), str(self.tls[2]))
        try:
            with urllib.request.urlopen(url, timeout=1, context=ctx) as resp:
                return b'"health":"true"' in resp.read()
        except OSError:
            return False

    def wait_healthy(self, members: list[int] | None = None) -> None:
        todo = list(range(len(self.names))) if members is None else members
        deadline = time.monotonic() + HEALTHY_WITHIN
        while todo:
            for i in list(todo):
                proc = self.procs[i]
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(
                        f"etcd member {self.names[i]} exited with {proc.returncode}:\n"
                        + self.log_tail(i)
                    )
                if self.healthy(i):
                    todo.remove(i)
            if not todo:
                return
            if time.monotonic() > deadline:
                tails = "\n".join(self.log_tail(i) for i in todo)
                raise RuntimeError(f"etcd not healthy within {HEALTHY_WITHIN:g}s:\n{tails}")
            time.sleep(0.1)

    def log_tail(self, i: int, lines: int = 20) -> str:
        try:
            text = (self.root / f"{self.names[i]}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        if proc is not None:
            proc.kill()
            proc.wait(timeout=10)
            self.procs[i] = None

    def restart(self, i: int, *, wait: bool = True) -> None:
        self.kill(i)
        self._spawn(i)
        if wait:
            self.wait_healthy([i])

    def stop(self) -> None:
        for i in range(len(self.procs)):
            with contextlib.suppress(Exception):
                self.kill(i)
        if self.owns_root:
            shutil.rmtree(self.root, ignore_errors=True)


def start_etcd_cluster(
    tmp_path: Path | None = None,
    members: int = 1,
    *,
    data_dir: Path | None = None,
    tls: tuple[Path, Path, Path] | None = None,
) -> EtcdCluster:
    """Start `members` etcd members on free loopback ports and wait until all are healthy.
    Data goes to `data_dir`, else a fresh folder on /dev/shm (removed by stop()), else
    under tmp_path."""
    binary = etcd_or_skip()
    owns = data_dir is None
    if data_dir is not None:
        root = data_dir
        root.mkdir(parents=True, exist_ok=True)
    elif Path("/dev/shm").is_dir():
        root = Path(tempfile.mkdtemp(prefix="podium-etcd-", dir="/dev/shm"))
    else:
        root = Path(tempfile.mkdtemp(prefix="podium-etcd-", dir=tmp_path))
    ports = _free_ports(2 * members)
    cluster = EtcdCluster(
        binary=binary,
        root=root,
        names=[f"m{i}" for i in range(members)],
        client_ports=ports[:members],
        peer_ports=ports[members:],
        token=f"podium-test-{os.getpid()}-{ports[0]}",
        procs=[None] * members,
        owns_root=owns,
        tls=tls,
    )
    try:
        for i in range(members):
            cluster._spawn(i)
        cluster.wait_healthy()
    except BaseException:
        cluster.stop()
        raise
    return cluster


@contextlib.contextmanager
def etcd_cluster(tmp_path: Path | None = None, members: int = 1) -> Iterator[EtcdCluster]:
    cluster = start_etcd_cluster(tmp_path, members)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdCluster]:
    """One single-member etcd for the whole test session; tests use their own key prefix."""
    with etcd_cluster() as cluster:
        yield cluster
