"""`podium operator snapshot save|restore`: a running cluster's store to a file, and the
file into fresh SQLite and etcd stores, through the real CLI."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest

from integration.cluster import PODIUM, ROOT, DevCluster, free_port, wait_until
from support.etcd import EtcdCluster, etcd_server

pytestmark = pytest.mark.integration
__all__ = ["etcd_server"]  # the session's etcd, a fixture
BATCH = str(ROOT / "examples" / "batch.yaml")


def podium(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        [*PODIUM, *args], capture_output=True, text=True, cwd=ROOT, timeout=60, env=os.environ
    )
    if check and res.returncode != 0:
        raise AssertionError(f"podium {' '.join(args)} exited {res.returncode}:\n{res.stderr}")
    return res


def entries(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    return {e["key"]: e["value"] for e in map(json.loads, lines[1:])}


def test_save_from_a_cluster_restore_into_sqlite_and_etcd(
    dev_cluster: DevCluster, tmp_path: Path, etcd_server: EtcdCluster
) -> None:
    dev_cluster.cli("job", "run", BATCH, "--detach", check=True)
    saved = tmp_path / "snap.jsonl"
    out = dev_cluster.cli("operator", "snapshot", "save", str(saved), check=True).stdout
    assert "saved" in out
    header = json.loads(saved.read_text().splitlines()[0])
    assert header["format"] == "podium-snapshot" and header["revision"] > 0
    original = entries(saved)
    assert "/jobs/default/hello" in original and len(original) == header["keys"]

    # Not through the API into the live store, which holds data, unless told to wipe it.
    res = dev_cluster.cli("operator", "snapshot", "restore", str(saved))
    assert res.returncode != 0 and "not empty" in res.stderr

    # Into a fresh SQLite file and a fresh etcd prefix, then read back out of each.
    db = tmp_path / "restored" / "podium.db"
    for url in (f"sqlite:///{db}", etcd_server.url("/snapshot-test")):
        out = podium("operator", "snapshot", "restore", str(saved), "--store", url).stdout
        assert f"restored {len(original)} keys" in out
        again = tmp_path / "again.jsonl"
        podium("operator", "snapshot", "save", str(again), "--store", url)
        assert entries(again) == original

        # Not into a store that holds data, unless told to wipe it.
        res = podium("operator", "snapshot", "restore", str(saved), "--store", url, check=False)
        assert res.returncode != 0 and "not empty" in res.stderr and "--force" in res.stderr
        out = podium(
            "operator", "snapshot", "restore", str(saved), "--store", url, "--force"
        ).stdout
        assert f"deleted {len(original)} first" in out

    # A server on the restored file has the job.
    port = free_port()
    server = subprocess.Popen(
        [*PODIUM, "server", "--store", f"sqlite:///{db}", "--addr", f"127.0.0.1:{port}",
         "--data-dir", str(tmp_path / "server")],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:

        def job_there() -> bool:
            tls = tmp_path / "server" / "tls"
            ctx = ssl.create_default_context(cafile=str(tls / "ca.pem"))
            ctx.load_cert_chain(str(tls / "cli.pem"), str(tls / "cli-key.pem"))
            r = httpx.get(f"https://127.0.0.1:{port}/v1/job/hello", timeout=5, verify=ctx)
            return r.status_code == 200 and "hello" in r.text

        wait_until(job_there, timeout=30, what="the restored job through a new server")
    finally:
        server.terminate()
        server.wait(10)


def test_a_bad_snapshot_file_is_refused_naming_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"format": "podium-snapshot", "version": 1, "revision": 3, "keys": 2}\n'
        '{"key": "/a", "value": "eA=="}\n'
        '{"key": "/b", "value": 7}\n'
    )
    res = podium("operator", "snapshot", "restore", str(bad), "--store", "memory://", check=False)
    assert res.returncode != 0 and "line 3" in res.stderr
    res = podium(
        "operator",
        "snapshot",
        "save",
        str(tmp_path / "x"),
        "--store",
        "sqlite:///nope.db",
        check=False,
    )
    assert res.returncode != 0 and "no store file" in res.stderr
