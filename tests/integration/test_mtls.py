"""Mutual TLS and node identity on a real cluster: one `podium server`, two joined agents.

Every way in without the right credential is tried, and each must be refused: at the
handshake, or with 401/403 and a `security.denied` event. Target: 0 accepted.
"""

from __future__ import annotations

import json
import sqlite3
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from integration.multinode import MultiNodeCluster
from podium.tls import pki
from podium.tls.authority import CAState

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MultiNodeCluster]:
    c = MultiNodeCluster(tmp_path_factory.mktemp("trust"), heartbeat_ttl=3.0)
    try:
        c.start(2)
        yield c
    finally:
        c.stop()


def _client(
    ca: Path | str, cert: Path | str | None = None, key: Path | str | None = None
) -> httpx.Client:
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return httpx.Client(verify=ctx, timeout=5)


def _write(tmp: Path, name: str, cert: Any, key: Any) -> tuple[Path, Path]:
    c, k = tmp / f"{name}.pem", tmp / f"{name}-key.pem"
    c.write_text(pki.cert_pem(cert))
    k.write_text(pki.key_pem(key))
    return c, k


def _cluster_ca(c: MultiNodeCluster) -> tuple[Any, Any]:
    """The cluster CA's certificate and key, unsealed as a server does (test-only access)."""
    db = sqlite3.connect(f"file:{c.base_dir / 'server' / 'podium.db'}?mode=ro", uri=True)
    (value,) = db.execute("SELECT value FROM kv WHERE key = '/tls/ca'").fetchone()
    db.close()
    state = msgspec.json.decode(value, type=CAState)
    kek = (c.tls_dir / "kek").read_bytes()
    return pki.load_certs(state.signer_cert)[0], pki.load_key(pki.unseal(kek, state.signer_key))


def _nodes(c: MultiNodeCluster) -> dict[str, Path]:
    """node id -> its agent's tls dir."""
    out = {}
    for a in c.agents:
        tls = a.data_dir / "tls"
        _, name = pki.role_and_name(pki.load_certs((tls / "agent.pem").read_text())[0])
        out[name] = tls
    return out


def _denied_events(c: MultiNodeCluster) -> list[dict[str, Any]]:
    return [
        e
        for e in c.api("GET", "/v1/events", params={"limit": 1000})
        if e["type"] == "security.denied"
    ]


def _refused_at_handshake(client: httpx.Client, url: str) -> bool:
    try:
        r = client.get(url)
    except httpx.TransportError:
        return True
    raise AssertionError(f"accepted: {r.status_code} {r.text[:200]}")


def test_mtls_negatives_are_all_refused(cluster: MultiNodeCluster, tmp_path: Path) -> None:
    c = cluster
    ca = c.tls_dir / "ca.pem"
    url = c.addr
    before = len(_denied_events(c))
    refused_with_event = 0

    # 1. No client certificate: 401 on every route but the public two.
    with _client(ca) as anon:
        r = anon.get(f"{url}/v1/jobs")
        assert r.status_code == 401, r.text
        refused_with_event += 1
        assert anon.get(f"{url}/v1/tls/ca").status_code == 200  # public: the CA bundle

    # 2-4. A certificate from another CA, an expired one of ours, a self-signed one.
    other_ca, other_key = pki.create_ca()
    k = pki.make_key()
    foreign = pki.issue(other_ca, other_key, k.public_key(), role="management", name="admin")
    our_ca, our_key = _cluster_ca(c)
    expired = pki.issue(
        our_ca, our_key, k.public_key(), role="management", name="admin", lifetime=-60
    )
    self_signed, self_key = pki.create_ca(common_name="admin")
    for name, cert, key in (
        ("foreign", foreign, k),
        ("expired", expired, k),
        ("self", self_signed, self_key),
    ):
        cp, kp = _write(tmp_path, name, cert, key)
        with _client(ca, cp, kp) as bad:
            assert _refused_at_handshake(bad, f"{url}/v1/jobs"), name

    # 5. Plaintext HTTP to the TLS port.
    with pytest.raises(httpx.TransportError):
        httpx.get(url.replace("https://", "http://") + "/v1/status", timeout=5)

    nodes = _nodes(c)
    (n1, tls1), (n2, _) = sorted(nodes.items())
    with _client(ca, tls1 / "agent.pem", tls1 / "agent-key.pem") as agent1:
        # 6. An agent certificate on a server-only (operator) route.
        for method, path in (
            ("POST", "/v1/jobs"),
            ("GET", "/v1/allocations"),
            ("PUT", "/v1/operator/snapshot"),
        ):
            r = agent1.request(method, f"{url}{path}", json={})
            assert r.status_code == 403, (method, path, r.status_code, r.text)
            refused_with_event += 1
        # 7. An agent certificate acting for another node: register, heartbeat, report, watch.
        node2 = c.api("GET", f"/v1/node/{n2}")
        body = {k: node2[k] for k in ("id", "name", "address", "http_addr")}
        attempts = [
            ("POST", "/v1/nodes/register", body),
            ("POST", f"/v1/node/{n2}/heartbeat", None),
            ("POST", f"/v1/node/{n2}/allocations/status", []),
            ("GET", f"/v1/node/{n2}/allocations", None),
        ]
        for method, path, payload in attempts:
            r = (
                agent1.request(method, f"{url}{path}", json=payload)
                if payload is not None
                else agent1.request(method, f"{url}{path}")
            )
            assert r.status_code == 403, (path, r.status_code, r.text)
            refused_with_event += 1
        # ...while its own node works.
        assert agent1.post(f"{url}/v1/node/{n1}/heartbeat").status_code == 200
        # An agent sees only the specs of its own allocs.
        assert agent1.get(f"{url}/v1/job/web/version/0").status_code == 403
        refused_with_event += 1
        # Configs and secrets: never to an agent but its own allocs' template data.
        for method, path in (
            ("GET", "/v1/configs"),
            ("PUT", "/v1/config/app/s"),
            ("GET", "/v1/secrets"),
            ("PUT", "/v1/secret/db/pw"),
            ("GET", "/v1/secret-values/db/pw"),
            ("GET", "/v1/operator/keyring"),
            ("GET", f"/v1/node/{n2}/allocation/0123abcd/template-data"),
        ):
            r = agent1.request(method, f"{url}{path}", json={"data": {"k": "v"}})
            assert r.status_code == 403, (method, path, r.status_code, r.text)
            refused_with_event += 1
        r = agent1.get(f"{url}/v1/node/{n1}/allocation/0123abcd/template-data")
        assert r.status_code == 404, r.text  # its own node: only its own allocs exist
    # ...and template data is an agent's alone: not the management certificate's.
    r = c.request("GET", f"/v1/node/{n1}/allocation/0123abcd/template-data")
    assert r.status_code == 403, r.text
    refused_with_event += 1

    # 8. A CLI (management) certificate registering a node.
    r = c.request("POST", "/v1/nodes/register", json=body)
    assert r.status_code == 403, r.text
    refused_with_event += 1

    # 9. A reused join token, an expired one.
    token = c.join_token()
    join = {"token": token, "csr": pki.csr_pem(pki.make_csr(pki.make_key())), "node_id": ""}
    with _client(ca) as anon:
        first = anon.post(f"{url}/v1/tls/join", json=join)
        assert first.status_code == 200, first.text
        assert pki.role_and_name(pki.load_certs(first.json()["cert"])[0])[0] == "agent"
        again = anon.post(f"{url}/v1/tls/join", json=join)
        assert again.status_code == 403 and "used" in again.text, again.text
        refused_with_event += 1
        short = c.cli("server", "join-token", "--ttl", "1s", check=True).stdout.strip()
        time.sleep(1.5)  # the token's own lifetime, not a wait for something else
        late = anon.post(f"{url}/v1/tls/join", json={**join, "token": short})
        assert late.status_code == 403 and "expired" in late.text, late.text
        refused_with_event += 1
        # A token for another node id that is taken: refused before the token is spent.
        taken = anon.post(
            f"{url}/v1/tls/join", json={**join, "token": c.join_token(), "node_id": n1}
        )
        assert taken.status_code == 403, taken.text
        refused_with_event += 1

    events = _denied_events(c)[before:] if before else _denied_events(c)
    assert len(events) >= refused_with_event, [e["message"] for e in events]
    text = json.dumps(events)
    assert token.split("-")[-1] not in text  # a secret never reaches an event
    # The cluster is unharmed: both nodes ready, nothing re-registered under another identity.
    assert sorted(n["status"] for n in c.api("GET", "/v1/nodes")) == ["ready", "ready"]


def test_agent_api_answers_only_servers(cluster: MultiNodeCluster) -> None:
    node = cluster.api("GET", "/v1/nodes")[0]
    # The management certificate may read health and metrics, never logs or exec.
    assert cluster.agent_get(node, "/v1/agent/health").status_code == 200
    r = cluster.agent_get(node, "/v1/agent/alloc/abc/logs")
    assert r.status_code == 403, r.text
    # Without a certificate the agent does not even finish the handshake.
    ctx = ssl.create_default_context(cafile=str(cluster.tls_dir / "ca.pem"))
    with httpx.Client(verify=ctx, timeout=5) as anon, pytest.raises(httpx.TransportError):
        anon.get(
            f"https://{node['http_addr']}/v1/agent/health",
            extensions={"sni_hostname": f"{node['id']}.node.podium"},
        )


def test_readme_multinode_steps_with_a_join_token(tmp_path: Path) -> None:
    """The README's multi-node section as a person follows it: a server, a join token per
    node, agents on 127.0.0.2-4; then the example, its status, logs and an interactive
    exec, all through the server."""
    import os
    import pty
    import select
    import subprocess

    from integration.cluster import PODIUM, ROOT
    from integration.multinode import AgentProc

    c = MultiNodeCluster(tmp_path, heartbeat_ttl=3.0)
    try:
        c.start_server()
        for i in range(3):
            token = c.cli("server", "join-token", check=True).stdout.strip()
            assert token.startswith("podium1-a-"), token
            c.agents.append(
                AgentProc(
                    name=f"n{i + 1}",
                    address=f"127.0.0.{i + 2}",
                    data_dir=tmp_path / f"n{i + 1}",
                    server=c.addr,
                    join_token=token,
                ).start()
            )
        c.wait_ready(3, timeout=30)
        c.cli("job", "run", str(ROOT / "examples" / "web.yaml"), check=True, timeout=120)
        status = c.cli_json("job", "status", "web")
        running = [a for a in status["allocations"] if a["client_status"] == "running"]
        assert len(running) == 3, status
        nodes = {n["id"]: n["address"] for n in c.api("GET", "/v1/nodes")}
        assert {nodes[a["node_id"]] for a in running} <= {"127.0.0.2", "127.0.0.3", "127.0.0.4"}
        far = running[-1]["id"]
        env = {**os.environ, "PODIUM_ADDR": c.addr, **c.tls_env()}
        logs = subprocess.Popen(
            [*PODIUM, "alloc", "logs", "-f", "--stderr", far],
            stdout=subprocess.PIPE,
            env=env,
            cwd=ROOT,
        )
        try:
            assert logs.stdout is not None
            assert b"GET / HTTP" in logs.stdout.readline()  # the health checks' requests
        finally:
            logs.terminate()
            logs.wait(10)
        pid, fd = pty.fork()
        if pid == 0:
            os.execvpe(PODIUM[0], [*PODIUM, "alloc", "exec", "-t", far, "--", "sh"], env)
        os.write(fd, b"echo node=$PODIUM_IP; exit 5\n")
        out = b""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
        _, st = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(st) == 5, out
        assert (
            f"node={nodes[next(a['node_id'] for a in running if a['id'] == far)]}".encode() in out
        )
    finally:
        c.stop()


def test_mesh_gateway_takes_only_agents_and_only_alloc_ports(cluster: MultiNodeCluster) -> None:
    """The proxy-to-proxy gateway is no open relay: a CLI certificate, or an agent asking
    for a port no running alloc of that node holds, is cut off before a byte passes."""
    import socket

    nodes = {n["id"]: n for n in cluster.api("GET", "/v1/nodes")}
    tls = _nodes(cluster)
    (_, tls1), (n2, _) = sorted(tls.items())
    target = nodes[n2]
    host, port = target["mesh_addr"].rsplit(":", 1)
    server_port = cluster.port  # something that listens on the machine, held by no alloc
    before = cluster.agent_get(target, "/v1/agent/health").json()["mesh"]["refused"]

    def attempt(cert: Path, key: Path) -> bytes:
        ctx = ssl.create_default_context(cafile=str(cluster.tls_dir / "ca.pem"))
        ctx.load_cert_chain(str(cert), str(key))
        with (
            socket.create_connection((host, int(port)), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname=f"{n2}.node.podium") as s,
        ):
            s.sendall(b"PODIUM-MESH/1 %d\nGET /v1/status HTTP/1.0\r\n\r\n" % server_port)
            try:
                return s.recv(100)
            except (ssl.SSLError, OSError):
                return b""

    assert attempt(cluster.tls_dir / "cli.pem", cluster.tls_dir / "cli-key.pem") == b""
    assert attempt(tls1 / "agent.pem", tls1 / "agent-key.pem") == b""
    after = cluster.agent_get(target, "/v1/agent/health").json()["mesh"]["refused"]
    assert after - before == 2, (before, after)
