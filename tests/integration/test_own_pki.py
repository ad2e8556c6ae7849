"""Bringing your own PKI: `podium tls ca create` / `tls cert create`, then a server, an
agent and the CLI given those files (--tls-ca/--tls-cert/--tls-key, --ca-cert/...)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from integration.cluster import PODIUM, ROOT, free_port, wait_until
from integration.multinode import AgentProc, _end, _spawn
from podium.tls import pki

pytestmark = pytest.mark.integration


def _podium(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([*PODIUM, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def test_server_agent_and_cli_on_certificates_made_by_hand(tmp_path: Path) -> None:
    pk = tmp_path / "pki"
    pk.mkdir()
    _podium(pk, "tls", "ca", "create")
    assert (pk / "ca-key.pem").stat().st_mode & 0o777 == 0o600
    _podium(pk, "tls", "cert", "create", "--server", "--host", "127.0.0.1")
    out = _podium(pk, "tls", "cert", "create", "--agent").stdout
    _podium(pk, "tls", "cert", "create", "--cli")
    node_id = pki.role_and_name(pki.load_certs((pk / "agent.pem").read_text())[0])[1]
    assert node_id in out
    port = free_port()
    tls = ["--tls-ca", str(pk / "ca.pem")]
    server = _spawn(
        ["server", "--addr", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "server"),
         "--dns-addr", "off", *tls, "--tls-cert", str(pk / "server.pem"),
         "--tls-key", str(pk / "server-key.pem")],
        tmp_path / "server.log",
    )  # fmt: skip
    agent = AgentProc("own", "127.0.0.2", tmp_path / "agent", f"https://127.0.0.1:{port}")
    try:
        agent.data_dir.mkdir()
        agent.proc = _spawn(
            ["agent", "--server", agent.server, "--data-dir", str(agent.data_dir), "--name",
             "own", "--address", agent.address, *tls, "--tls-cert", str(pk / "agent.pem"),
             "--tls-key", str(pk / "agent-key.pem")],
            agent.log_path,
        )  # fmt: skip
        cli = [*PODIUM, "--ca-cert", str(pk / "ca.pem"), "--client-cert", str(pk / "cli.pem"),
               "--client-key", str(pk / "cli-key.pem")]  # fmt: skip

        def ready() -> bool:
            res = subprocess.run(
                [*cli, "node", "status", "--json", "--addr", f"https://127.0.0.1:{port}"],
                cwd=ROOT, capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            return res.returncode == 0 and any(
                n["id"] == node_id and n["status"] == "ready" for n in json.loads(res.stdout)
            )

        wait_until(ready, timeout=30, what="the agent, as the node its certificate names")
        # A CLI (operator) certificate may not make join tokens; the management one may ask,
        # and this server says it issues nothing.
        token = [*cli, "server", "join-token", "--addr", f"https://127.0.0.1:{port}"]
        res = subprocess.run(token, cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert res.returncode != 0 and "needs management" in res.stderr, res.stderr
        _podium(pk, "tls", "cert", "create", "--management", "--out", "admin")
        admin = [x if x != str(pk / "cli-key.pem") else str(pk / "admin-key.pem") for x in token]
        admin = [x if x != str(pk / "cli.pem") else str(pk / "admin.pem") for x in admin]
        res = subprocess.run(admin, cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert res.returncode != 0 and "own PKI" in res.stderr, res.stderr
    finally:
        agent.stop()
        _end(server)
