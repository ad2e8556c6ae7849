"""A user's (operator's) certificate from the cluster's own CA: a one-use token, `podium
tls join`, then the CLI with that config; renewal in place; what an operator may not do."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from integration.cluster import PODIUM, ROOT, DevCluster
from podium.tls import pki

pytestmark = pytest.mark.integration


def test_operator_joins_renews_and_is_not_management(
    dev_cluster: DevCluster, tmp_path: Path
) -> None:
    token = dev_cluster.cli("server", "join-token", "--role", "operator", check=True).stdout.strip()
    assert token.startswith("podium1-o-")
    d = tmp_path / "me"
    dev_cluster.cli("tls", "join", "--server", dev_cluster.addr, "--token", token, "--dir",
                    str(d), "--name", "alice", check=True)  # fmt: skip
    assert (d / "cli-key.pem").stat().st_mode & 0o777 == 0o600
    leaf = pki.load_certs((d / "cli.pem").read_text())[0]
    assert pki.role_and_name(leaf) == ("operator", "alice")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PODIUM_")}
    env["PODIUM_CONFIG"] = str(d / "cli.json")

    def podium(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*PODIUM, *args], env=env, cwd=ROOT, capture_output=True,
                              text=True, timeout=60)  # fmt: skip

    res = podium("node", "status")
    assert res.returncode == 0 and "dev" in res.stdout, res.stderr
    res = podium("operator", "snapshot", "save", str(tmp_path / "s.jsonl"))
    assert res.returncode != 0 and "needs management" in res.stderr, res.stderr
    res = podium("server", "join-token")
    assert res.returncode != 0 and "needs management" in res.stderr, res.stderr
    res = podium("tls", "renew")
    assert res.returncode == 0, res.stderr
    renewed = pki.load_certs((d / "cli.pem").read_text())[0]
    assert renewed.serial_number != leaf.serial_number
    assert pki.role_and_name(renewed) == ("operator", "alice")
    assert podium("node", "status").returncode == 0
    # The token was good once.
    again = dev_cluster.cli("tls", "join", "--server", dev_cluster.addr, "--token", token,
                            "--dir", str(tmp_path / "again"))  # fmt: skip
    assert again.returncode != 0 and "used" in again.stderr, again.stderr
