"""--insecure, and refusing to run without credentials.

Without TLS nobody can be told apart, so a node proves itself with the secret the server
issued it at its first registration (kept 0600 by the agent): another caller cannot
re-register, heartbeat or report for that node. `podium server members` says TLS is off.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from integration.cluster import PODIUM, ROOT, free_port, wait_until

pytestmark = pytest.mark.integration


def _server(tmp_path: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*PODIUM, "server", "--insecure", "--addr", f"127.0.0.1:{port}",
         "--data-dir", str(tmp_path / "server"), "--dns-addr", "off"],
        cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def test_insecure_server_binds_nodes_to_their_secret(tmp_path: Path) -> None:
    port = free_port()
    addr = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    server = _server(tmp_path, port, log)
    try:
        wait_until(lambda: httpx.get(f"{addr}/v1/status").status_code == 200, timeout=20)
        node = {"id": "n-1", "name": "n1", "address": "127.0.0.1"}
        first = httpx.post(f"{addr}/v1/nodes/register", json=node)
        assert first.status_code == 200, first.text
        secret = first.json()["node_secret"]
        # Another caller, without the secret or with a wrong one: refused, with an event.
        again = httpx.post(f"{addr}/v1/nodes/register", json=node)
        assert again.status_code == 403, again.text
        wrong = {"x-podium-node": "n-1", "x-podium-node-secret": "guess"}
        assert httpx.post(f"{addr}/v1/node/n-1/heartbeat", headers=wrong).status_code == 403
        assert httpx.post(f"{addr}/v1/node/n-1/heartbeat").status_code == 403
        right = {"x-podium-node": "n-1", "x-podium-node-secret": secret}
        assert httpx.post(f"{addr}/v1/node/n-1/heartbeat", headers=right).status_code == 200
        assert httpx.post(f"{addr}/v1/nodes/register", json=node, headers=right).status_code == 200
        # The secret of n-1 does not act for n-2.
        assert httpx.post(f"{addr}/v1/node/n-2/heartbeat", headers=right).status_code == 403
        events = httpx.get(f"{addr}/v1/events", params={"limit": 1000}).json()
        denied = [e for e in events if e["type"] == "security.denied"]
        assert len(denied) >= 4, denied
        assert secret not in log.read_text() and all(secret not in e["message"] for e in events)
        members = subprocess.run(
            [*PODIUM, "server", "members", "--addr", addr], capture_output=True, text=True,
            cwd=ROOT, timeout=30,
        )  # fmt: skip
        assert "OFF (--insecure)" in members.stdout and "WARNING" in members.stderr
        assert "INSECURE" in log.read_text() or "insecure" in log.read_text()
        # The secret outlives a server restart (its hash is in the store).
        server.terminate()
        server.wait(10)
        server = _server(tmp_path, port, log)
        wait_until(lambda: httpx.get(f"{addr}/v1/status").status_code == 200, timeout=20)
        assert httpx.post(f"{addr}/v1/node/n-1/heartbeat", headers=right).status_code == 200
        assert httpx.post(f"{addr}/v1/node/n-1/heartbeat", headers=wrong).status_code == 403
    finally:
        server.terminate()
        server.wait(10)


def test_an_agent_without_credentials_refuses_to_start(tmp_path: Path) -> None:
    res = subprocess.run(
        [*PODIUM, "agent", "--server", "https://127.0.0.1:1", "--data-dir", str(tmp_path / "a"),
         "--address", "127.0.0.2"],
        capture_output=True, text=True, cwd=ROOT, timeout=30,
    )  # fmt: skip
    assert res.returncode != 0 and "--join-token" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
