"""Certificates renew themselves and the CA rotates, under load, with nothing restarted.

The acceptance's literal form (60 s certificates, 5 minutes, then `operator ca rotate`)
runs with PODIUM_ROTATION_LITERAL=1; the suite runs the same shape faster: 6 s
certificates (renewed every 4 s) until each has been renewed 3 times, then a rotation.

A client polls the API every 100 ms throughout, with the credentials on disk as any
long-running program would (podium.api.Client picks up renewed files): 0 may fail.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from integration.cluster import DevCluster, wait_until
from integration.test_exec_logs import SLEEPER
from podium.errors import PodiumError
from podium.tls import pki

pytestmark = pytest.mark.integration

LITERAL = os.environ.get("PODIUM_ROTATION_LITERAL") == "1"
LIFETIME = "60s" if LITERAL else "6s"
SOAK = 300.0 if LITERAL else 0.0  # seconds of renewals before the rotation (0: until 3 each)


class Poller:
    def __init__(self, c: DevCluster) -> None:
        self.client = c.client(timeout=5.0)
        self.ok = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + 900  # bounded whatever happens
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                self.client.request("GET", "/v1/status")
                self.ok += 1
            except PodiumError as e:
                self.failed.append(str(e))
            self._stop.wait(0.1)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.client.close()


def _serial(path: Path) -> str:
    try:
        return str(pki.load_certs(path.read_text())[0].serial_number)
    except (OSError, ValueError):
        return ""


def _tasks(c: DevCluster) -> dict[str, tuple[int, int]]:
    out = {}
    for row in c.api("GET", "/v1/job/sleeper")["allocations"]:
        a = c.api("GET", f"/v1/allocation/{row['id']}")
        st = a["task_states"]["t"]
        out[a["id"]] = (st["pid"], st["restarts"])
    return out


def test_certificates_renew_and_the_ca_rotates_with_nothing_restarted(tmp_path: Path) -> None:
    c = DevCluster(tmp_path / "dev", extra_args=["--cert-lifetime", LIFETIME]).start()
    try:
        c.api("POST", "/v1/jobs", json={"job": SLEEPER})
        wait_until(lambda: any(p for p, _ in _tasks(c).values()), timeout=20, what="task runs")
        before = _tasks(c)
        files = {
            "server": c.tls_dir / "server.pem",
            "cli": c.tls_dir / "cli.pem",
            "agent": c.data_dir / "agent" / "tls" / "agent.pem",
        }
        seen: dict[str, set[str]] = {k: set() for k in files}
        with Poller(c) as poller:
            t0 = time.monotonic()

            def renewed_enough() -> bool:
                for k, p in files.items():
                    if s := _serial(p):
                        seen[k].add(s)
                done = all(len(v) >= 4 for v in seen.values())  # the first + 3 renewals
                return done and time.monotonic() - t0 >= SOAK

            wait_until(renewed_enough, timeout=SOAK + 60, interval=0.2, what="3 renewals each")
            old_root = pki.digest(pki.load_certs((c.tls_dir / "ca.pem").read_text())[0])
            res = c.cli("operator", "ca", "rotate", "--timeout", "60", timeout=90)
            assert res.returncode == 0, res.stdout + res.stderr
            roots = pki.load_certs((c.tls_dir / "ca.pem").read_text())
            assert [pki.digest(r) for r in roots] != [old_root] and len(roots) == 1
            agent_roots = pki.load_certs((c.data_dir / "agent" / "tls" / "ca.pem").read_text())
            wait_until(
                lambda: [pki.digest(r) for r in pki.load_certs(
                    (c.data_dir / "agent" / "tls" / "ca.pem").read_text())] == [pki.digest(roots[0])],
                timeout=10, what="the agent to trust only the new root",
            )  # fmt: skip
            del agent_roots
            agent_leaf = pki.load_certs(files["agent"].read_text())[0]
            assert agent_leaf.issuer == roots[0].subject
            time.sleep(2.0)  # keep polling across the end of the rotation
        assert poller.failed == [], poller.failed[:5]
        assert poller.ok > 50
        after = _tasks(c)
        assert after == before, (before, after)  # same pids, no restarts
        assert all(restarts == 0 for _, restarts in after.values())
        # The API still answers a fresh client (the CLI) with the new credentials.
        assert c.cli("node", "status", check=True).returncode == 0
    finally:
        c.stop()
        c.kill_leftovers()
