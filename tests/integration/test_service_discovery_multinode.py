"""Service discovery across nodes: `podium server` + 2 `podium agent` processes (no ingress).

DNS answers with each node's own address; a task on one node reaches the copies on
both nodes through its agent's proxy.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from integration.cluster import free_port, wait_until
from integration.multinode import MultiNodeCluster
from integration.test_service_discovery import client_job, service_job


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[MultiNodeCluster]:
    c = MultiNodeCluster(tmp_path / "cluster")
    try:
        c.start(2)
        yield c
    finally:
        c.stop()


def dns_port(c: MultiNodeCluster) -> int:
    """The server's DNS port, from its log (the default port falls back when taken)."""
    found = re.search(r"dns listening on 127\.0\.0\.1:(\d+)", c.server_log.read_text())
    assert found, "the server did not start its DNS"
    return int(found[1])


def test_dns_and_upstreams_across_nodes(cluster: MultiNodeCluster) -> None:
    job = service_job("api", 2)
    job["groups"][0]["constraints"] = [{"operator": "distinct_hosts"}]
    cluster.api("POST", "/v1/jobs", json={"job": job})
    port = dns_port(cluster)

    def addresses() -> list[str]:
        query = dns.message.make_query("api.service.podium", "A")
        reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=2)
        if reply.rcode() != dns.rcode.NOERROR:
            return []  # NXDOMAIN until a copy is placed
        return sorted(r.address for rrset in reply.answer for r in rrset)

    wait_until(
        lambda: addresses() == ["127.0.0.1", "127.0.0.2"],
        timeout=30,
        what="one healthy copy on each node",
    )
    local_port = free_port()
    script = (
        "import time, urllib.request\n"
        "seen = set()\n"
        "deadline = time.time() + 15\n"
        "while len(seen) < 2 and time.time() < deadline:\n"
        "    try:\n"
        f"        body = urllib.request.urlopen('http://127.0.0.1:{local_port}/', timeout=2).read()\n"
        "        seen.add(body.split()[1].decode())\n"
        "    except OSError:\n"
        "        time.sleep(0.1)\n"
        "print('copies', len(seen))\n"
        "raise SystemExit(0 if len(seen) == 2 else 1)\n"
    )
    cluster.api(
        "POST",
        "/v1/jobs",
        json={
            "job": client_job(
                "caller",
                [{"service": "api", "local_port": local_port}],  # tcp mode
                [sys.executable, "-c", script],
            )
        },
    )
    alloc = wait_until(
        lambda: (
            (a := cluster.job("caller")["allocations"])
            and a[0]["client_status"] in ("complete", "failed")
            and a[0]
        ),
        timeout=30,
        what="the caller to finish",
    )
    assert alloc["client_status"] == "complete", (alloc, cluster.logs()[-3000:])
    # The copy on the other node was reached through that node's mesh gateway (mutual
    # TLS between the proxies), not straight at its port.
    caller_node = alloc["node_id"]
    other = next(n for n in cluster.api("GET", "/v1/nodes") if n["id"] != caller_node)
    assert other["mesh_addr"], other
    mesh = cluster.agent_get(other, "/v1/agent/health").json()["mesh"]
    assert mesh["connections"] >= 1, mesh
