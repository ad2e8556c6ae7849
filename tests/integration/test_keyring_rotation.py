"""`podium operator keyring rotate --full` over 1,000 secrets on a real `podium dev`: progress
is shown, every secret reads back, and the store holds only ciphertext under the new key."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec
import pytest

from integration.cluster import DevCluster
from podium.model.types import Secret

N = 1000


def _records(db: Path) -> list[tuple[str, bytes]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [(k, bytes(v)) for k, v in con.execute("select key, value from kv")]
    finally:
        con.close()


@pytest.mark.slow
def test_a_full_rotation_of_a_thousand_secrets(dev_cluster: DevCluster) -> None:
    cluster = dev_cluster
    values = {f"app/s{i}": f"plain-value-{i:04d}-zq" for i in range(N)}
    with cluster.http(base_url=cluster.addr, timeout=30) as http:
        for path, value in values.items():
            r = http.put(f"/v1/secret/{path}", json={"data": {"value": value}})
            assert r.status_code == 200, r.text
        old_key = http.get("/v1/operator/keyring").json()["active"]

        res = cluster.cli("operator", "keyring", "rotate", "--full", timeout=300)
        assert res.returncode == 0, res.stdout + res.stderr
        progress = [ln for ln in res.stderr.splitlines() if ln.startswith("re-encrypting secrets:")]
        assert progress and progress[-1] == f"re-encrypting secrets: {2 * N}/{2 * N}", res.stderr
        status = http.get("/v1/operator/keyring").json()
        new_key = status["active"]
        assert new_key != old_key and status["rotation"]["status"] == "done"
        assert {k["id"]: k["secrets"] for k in status["keys"]} == {old_key: 0, new_key: N}

        for path, value in values.items():
            got = http.get(f"/v1/secret-values/{path}").json()
            assert got["data"] == {"value": value} and got["key_id"] == new_key

    db = cluster.data_dir / "podium.db"
    sealed = 0
    for key, raw in _records(db):
        if key.startswith(("/secrets/", "/secretversions/")):
            secret = msgspec.json.decode(raw, type=Secret)
            assert secret.sealed is not None and secret.sealed.key_id == new_key, key
            sealed += 1
    assert sealed == 2 * N  # every head and every version
    # Every byte of the store (the watch history, old pages in the WAL): ciphertext only.
    for f in db.parent.glob("podium.db*"):
        assert b"plain-value-" not in f.read_bytes(), f
