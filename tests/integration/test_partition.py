"""A real network partition: iptables cuts one agent off from the server, then heals.

    server  127.0.0.1:PORT
    agents  node-1 127.0.0.2, node-2 127.0.0.3, node-3 127.0.0.4

An agent's connections to the server leave from its advertised address (see
podium.agent.source), so two DROP rules on loopback cut exactly one node off, in both
directions, silently (packets vanish, as with a pulled cable): the agent keeps running
and its tasks keep serving; only its control traffic is gone. Needs root and a working
iptables; skips otherwise, and fails instead where the test command found both
(PODIUM_REQUIRE_IPTABLES=1, from scripts/ensure-iptables.sh).
The rules added are deleted one by one in a `finally`; no table is ever flushed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration.cluster import wait_until
from integration.multinode import AgentProc, MultiNodeCluster, healthy_running, web_job

pytestmark = pytest.mark.integration

TTL = 2.0  # heartbeat TTL: heartbeats every TTL/3
STOP_AFTER = 3.0  # the group's disconnect.stop_after_disconnect
# 6 copies (web_job), each stopped by its node STOP_AFTER seconds after it last heard a server
STOPS = f"disconnect: {{stop_after_disconnect: {STOP_AFTER}s}}"
PROBE_ADDR = "127.0.0.5"  # source address of the iptables self-test (no agent uses it)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=20, check=False)


def _rule_takes_effect(iptables: str) -> bool:
    """Insert a REJECT rule for one throwaway connection, see it refused, delete the rule,
    see it accepted: a backend whose rules the kernel does not apply fails this."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        rule = ["-s", PROBE_ADDR, "-d", "127.0.0.1", "-p", "tcp", "--dport", str(port)]
        rule += ["-j", "REJECT", "--reject-with", "tcp-reset"]

        def connects() -> bool:
            with socket.socket() as s:
                s.settimeout(2.0)
                s.bind((PROBE_ADDR, 0))
                try:
                    s.connect(("127.0.0.1", port))
                except OSError:
                    return False
                return True

        if _run(iptables, "-w", "5", "-I", "OUTPUT", *rule).returncode != 0:
            return False
        try:
            refused = not connects()
        finally:
            _run(iptables, "-w", "5", "-D", "OUTPUT", *rule)
        return refused and connects()


def _iptables() -> str:
    """The iptables binary whose rules work here; skip (or fail in CI) when none does."""
    # The test command sets PODIUM_REQUIRE_IPTABLES where it is root and `iptables -L`
    # works (scripts/ensure-iptables.sh): then any reason not to run is a failure.
    required = os.environ.get("PODIUM_REQUIRE_IPTABLES") == "1"
    if os.geteuid() != 0:
        if required:
            pytest.fail("PODIUM_REQUIRE_IPTABLES=1, but not running as root")
        pytest.skip("a real partition needs root (iptables)")
    reasons = []
    for name in ("iptables", "iptables-legacy"):
        path = shutil.which(name)
        if path is None:
            reasons.append(f"{name} not installed")
            continue
        listed = _run(path, "-w", "5", "-L", "OUTPUT", "-n")
        if listed.returncode != 0:
            reasons.append(f"`{name} -L` failed: {listed.stderr.strip()[:200]}")
            continue
        if _rule_takes_effect(path):
            return path
        reasons.append(f"{name}: a REJECT rule on 127.0.0.0/8 had no effect")
    reason = "; ".join(reasons)
    if required:
        pytest.fail(f"iptables is not usable: {reason}")
    pytest.skip(f"iptables is not usable: {reason}")


class Partition:
    """DROP every TCP packet between one agent's address and the server's port."""

    def __init__(self, iptables: str, agent_ip: str, server_ip: str, server_port: int) -> None:
        port = str(server_port)
        self.iptables = iptables
        self.rules = [
            ["-s", agent_ip, "-d", server_ip, "-p", "tcp", "--dport", port, "-j", "DROP"],
            ["-s", server_ip, "-d", agent_ip, "-p", "tcp", "--sport", port, "-j", "DROP"],
        ]
        self.added: list[list[str]] = []

    def cut(self) -> None:
        for rule in self.rules:
            res = _run(self.iptables, "-w", "5", "-I", "OUTPUT", *rule)
            assert res.returncode == 0, f"iptables -I OUTPUT {' '.join(rule)}: {res.stderr}"
            self.added.append(rule)

    def heal(self) -> None:
        """Delete exactly the rules added (each once), whatever happened."""
        errors = []
        while self.added:
            rule = self.added.pop()
            res = _run(self.iptables, "-w", "5", "-D", "OUTPUT", *rule)
            if res.returncode != 0:
                errors.append(f"iptables -D OUTPUT {' '.join(rule)}: {res.stderr.strip()}")
        assert not errors, "; ".join(errors)


@pytest.fixture
def iptables() -> str:
    return _iptables()


@pytest.fixture
def cluster(tmp_path: Path, iptables: str) -> Iterator[MultiNodeCluster]:
    c = MultiNodeCluster(tmp_path / "cluster", heartbeat_ttl=TTL)
    try:
        c.start_server()
        for i in range(3):  # none shares the server's 127.0.0.1
            c.agents.append(
                AgentProc(
                    name=f"node-{i + 1}",
                    address=f"127.0.0.{i + 2}",
                    data_dir=c.base_dir / f"node-{i + 1}",
                    server=c.addr,
                    join_token=c.join_token(),
                ).start()
            )
        c.wait_ready(3, timeout=30)
        yield c
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop()


def _status(c: MultiNodeCluster, node: str) -> str:
    status: str = {n["name"]: n["status"] for n in c.api("GET", "/v1/nodes")}[node]
    return status


def test_a_real_partition_replaces_stops_and_heals_without_running_twice(
    cluster: MultiNodeCluster, iptables: str, tmp_path: Path
) -> None:
    cluster.cli("job", "run", web_job(tmp_path / "web.yaml", extra=STOPS), "--detach", check=True)
    wait_until(lambda: len(healthy_running(cluster.job("web"))) == 6, timeout=30, what="6 healthy")
    running = healthy_running(cluster.job("web"))
    assert Counter(a["node_name"] for a in running) == {"node-1": 2, "node-2": 2, "node-3": 2}
    victim = cluster.agents[1]  # node-2 on 127.0.0.3
    cut_off = {a["id"] for a in running if a["node_name"] == victim.name}
    pids = {p.pid for p in victim.task_processes()}
    assert len(pids) == 2

    partition = Partition(iptables, victim.address, "127.0.0.1", cluster.port)
    t0 = time.monotonic()
    partition.cut()
    try:
        # The server stops hearing the node: down after its TTL (plus the sweep, on a
        # loaded machine), its copies lost and replaced on the other two nodes.
        wait_until(
            lambda: _status(cluster, victim.name) == "down", timeout=TTL + 4, what="node down"
        )
        down_after = time.monotonic() - t0

        def replaced() -> bool:
            job = cluster.job("web")
            rows = {a["id"]: a for a in job["allocations"]}
            elsewhere = [a for a in healthy_running(job) if a["node_name"] != victim.name]
            return len(elsewhere) == 6 and all(rows[i]["client_status"] == "lost" for i in cut_off)

        wait_until(replaced, timeout=10, what="6 healthy copies on the other nodes")
        # Unreachable, the node stops its copies by itself STOP_AFTER seconds after it
        # last heard a server (a heartbeat at most TTL/3 before the cut).
        wait_until(
            lambda: not ({p.pid for p in victim.task_processes()} & pids),
            timeout=STOP_AFTER + 6,
            what="the cut-off node to stop its copies",
        )
        stopped_after = time.monotonic() - t0
        assert victim.alive, "the agent itself keeps running through the partition"
        assert STOP_AFTER - TTL / 3 - 0.2 < stopped_after < STOP_AFTER + 4, (
            f"copies stopped {stopped_after:.2f}s after the cut"
        )
        assert len(cluster.serving("web")) == 6
    finally:
        partition.heal()
    healed = time.monotonic()
    print(f"down after {down_after:.2f}s, own copies stopped after {stopped_after:.2f}s")

    # Back in touch: ready again, the replaced copies are not started there again, and
    # never more than 6 copies serve.
    def check_at_most_six() -> None:
        serving = cluster.serving("web")
        assert len(serving) <= 6, f"{len(serving)} copies serving: {sorted(serving)}"
        assert not victim.task_processes(), "a replaced copy started again on its old node"

    def ready_again() -> bool:
        check_at_most_six()
        return _status(cluster, victim.name) == "ready"

    wait_until(ready_again, timeout=10, interval=0.2, what="the node ready again")
    print(f"ready {time.monotonic() - healed:.2f}s after healing")
    deadline = time.monotonic() + 4.0
    while time.monotonic() < deadline:
        check_at_most_six()
        time.sleep(0.2)
    assert len(cluster.serving("web")) == 6
    rows: dict[str, Any] = {a["id"]: a for a in cluster.job("web")["allocations"]}
    for alloc_id in cut_off:
        assert rows[alloc_id]["desired_status"] == "stop"
        assert rows[alloc_id]["next_alloc"]
    now = healthy_running(cluster.job("web"))
    assert len(now) == 6 and victim.name not in {a["node_name"] for a in now}
