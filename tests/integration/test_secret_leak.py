"""The leak test: a canary secret is put, read by tasks (env and a file), changed, rotated,
planned, diffed and broken in a template; then nothing but the task's own secrets/ holds it.

Searched for the canaries (as text and as base64): the server's and the agent's logs (debug
level), every API answer and CLI output of the run, the events, `ps -eo args`, the agent's
state file, and the store itself (the SQLite files; or every key and value in etcd). The
task proves it read each canary by writing its HMAC, so the search cannot pass by the
secret never getting anywhere.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import subprocess
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from integration.cluster import unmount_under, wait_until
from integration.multinode import MultiNodeCluster
from podium.store.etcd import EtcdStore
from support.etcd import EtcdCluster, etcd_server

__all__ = ["etcd_server"]

APP = textwrap.dedent(
    """\
    import hashlib, hmac, os, time
    with open(os.path.join("secrets", "pw"), "rb") as f:
        from_file = f.read()
    from_env = os.environ["PW"].encode()
    proof = hmac.new(from_env, b"podium", hashlib.sha256).hexdigest()
    same = "same" if from_file == from_env else "different"
    with open("proof.tmp", "w") as f:
        f.write(proof + " " + same)
    os.replace("proof.tmp", "proof")
    time.sleep(3600)
    """
)


def proof_of(secret: str) -> str:
    return hmac.new(secret.encode(), b"podium", hashlib.sha256).hexdigest() + " same"


class Run:
    """A server and an agent at debug level, and everything the test saw of them."""

    def __init__(self, root: Path, store_args: tuple[str, ...]) -> None:
        self.cluster = MultiNodeCluster(
            root,
            heartbeat_ttl=5.0,
            server_args=(*store_args, "--dns-addr", "off", "--log-level", "debug"),
            agent_args=("--log-level", "debug"),
        ).start(1)
        self.agent_dir = self.cluster.agents[0].data_dir
        self.seen: list[str] = []  # every API answer and CLI output

    def api(self, method: str, path: str, **kw: Any) -> Any:
        with self.cluster.http(timeout=30) as http:
            r = http.request(method, self.cluster.addr + path, **kw)
        self.seen.append(r.text)
        r.raise_for_status()
        is_json = r.headers.get("content-type", "").startswith("application/json")
        return r.json() if is_json else r.text

    def cli(self, *args: str, input: str | None = None, ok: bool = True) -> str:
        res = self.cluster.cli(*args, input=input, timeout=180)
        self.seen.append(res.stdout + res.stderr)
        if ok:
            assert res.returncode == 0, f"podium {' '.join(args)}: {res.stdout}{res.stderr}"
        return res.stdout

    def proofs(self) -> set[str]:
        return {p.read_text() for p in self.agent_dir.glob("allocs/*/app/proof")}

    def logs(self) -> dict[str, bytes]:
        return {
            "server log": self.cluster.server_log.read_bytes(),
            "agent log": self.cluster.agents[0].log_path.read_bytes(),
        }

    def stop(self) -> None:
        self.cluster.stop()
        unmount_under(self.cluster.base_dir)


def _job(tmp: Path) -> Path:
    job = {
        "name": "leaky",
        "groups": [
            {
                "name": "g",
                "count": 2,
                "update": {
                    "max_parallel": 1,
                    "min_healthy_time": "1s",
                    "health_check": "task_states",
                },
                "tasks": [
                    {
                        "name": "app",
                        "config": {"command": "python3", "args": ["app.py"]},
                        "env": {
                            "PW": {"secret": "db/pw"},
                            "GREETING": {"config": "app/s", "key": "greeting"},
                        },
                        "templates": [
                            {"destination": "app.py", "data": "{% raw %}" + APP + "{% endraw %}"},
                            {"destination": "secrets/pw", "data": '{{ secret("db/pw")["value"] }}'},
                            {
                                "destination": "app.conf",
                                "data": 'g={{ config("app/s")["greeting"] }}',
                            },
                        ],
                    }
                ],
            }
        ],
    }
    path = tmp / "leaky.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def _broken_job(tmp: Path) -> Path:
    job = {
        "name": "broken",
        "groups": [
            {
                "name": "g",
                "reschedule": {"attempts": 0, "unlimited": False},
                "tasks": [
                    {
                        "name": "t",
                        "config": {"command": "sleep", "args": ["60"]},
                        # The lookup fails naming the missing key: the secret's value.
                        "templates": [
                            {"destination": "x", "data": '{{ {}[secret("db/pw")["value"]] }}'}
                        ],
                    }
                ],
            }
        ],
    }
    path = tmp / "broken.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def scenario(root: Path, store_args: tuple[str, ...], store_bytes: Any) -> None:
    canaries = [f"LEAKCANARY{uuid.uuid4().hex}", f"LEAKCANARY{uuid.uuid4().hex}"]
    run = Run(root, store_args)
    try:
        run.cli("secret", "put", "db/pw", "-", input=canaries[0] + "\n")
        run.cli("config", "put", "app/s", "greeting=hi")
        job = _job(root)
        run.cli("job", "plan", str(job))  # renders every template, secrets included
        run.cli("job", "run", str(job), "--timeout", "60")
        wait_until(
            lambda: run.proofs() == {proof_of(canaries[0])},
            timeout=30,
            what="proofs of the first canary",
        )

        run.cli(
            "secret", "put", "db/pw", "value=-", input=canaries[1] + "\n"
        )  # follows the rollout
        wait_until(
            lambda: proof_of(canaries[1]) in run.proofs(),
            timeout=60,
            what="a proof of the second canary",
        )
        run.cli("operator", "keyring", "rotate", "--full")
        run.cli("operator", "keyring", "rotate")
        run.cli("job", "run", str(_broken_job(root)), "--detach")
        wait_until(
            lambda: any(
                e["type"] == "template.failed"
                for e in run.api("GET", "/v1/events", params={"limit": 0})
            ),
            timeout=30,
            what="the broken template's failure",
        )
        # Positive control: the task's own secrets/ holds the canary, on a tmpfs.
        live = [p for p in run.agent_dir.glob("allocs/*/app/secrets/pw")]
        assert any(p.read_text() == canaries[1] for p in live), "the canary reached no task"

        # Everything a user or an operator can look at.
        for cmd in (
            ["job", "status", "leaky"], ["job", "history", "leaky"], ["secret", "list"],
            ["secret", "get", "db/pw"], ["secret", "history", "db/pw"], ["operator", "keyring", "status"],
            ["alloc", "status", next(a["id"] for a in run.api("GET", "/v1/allocations", params={"job": "broken"}))],
            ["job", "status", "broken"], ["config", "get", "app/s"],
        ):  # fmt: skip
            run.cli(*cmd, ok=False)
        for path in ("/v1/jobs", "/v1/job/leaky", "/v1/job/leaky/versions", "/v1/allocations",
                     "/v1/deployments", "/v1/secrets", "/v1/secret/db/pw", "/v1/secret-versions/db/pw",
                     "/v1/configs", "/v1/operator/keyring", "/v1/operator/snapshot", "/v1/nodes",
                     "/v1/openapi.json", "/v1/metrics"):  # fmt: skip
            run.api("GET", path)
        run.api("GET", "/v1/events", params={"limit": 0})
        for a in run.api("GET", "/v1/allocations"):
            run.api("GET", f"/v1/allocation/{a['id']}")
        ps = subprocess.run(
            ["ps", "-eo", "args"], capture_output=True, text=True, check=True
        ).stdout
        run.cli("job", "stop", "leaky")
        wait_until(lambda: not list(run.agent_dir.glob("allocs/*/app/secrets")), timeout=30,
                   what="every secrets/ removed on stop")  # fmt: skip
        places: dict[str, bytes] = {
            **run.logs(),
            "API answers and CLI output": "\n".join(run.seen).encode(),
            "ps -eo args": ps.encode(),
            "agent state file": (run.agent_dir / "agent-state.json").read_bytes(),
            "store": store_bytes(),
        }
        assert b"keyring key" in places["server log"] and b"registered" in places["agent log"]
        assert b"keyring" in places["store"] and len(places["API answers and CLI output"]) > 10_000
        for canary in canaries:
            for needle in (canary.encode(), base64.b64encode(canary.encode())[:24]):
                hits = [where for where, data in places.items() if needle in data]
                assert hits == [], f"{needle!r} found in {hits}"
    finally:
        run.stop()


def _sqlite_bytes(server_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(server_dir.glob("podium.db*")) if p.is_file())


@pytest.mark.slow
def test_no_secret_leaks_with_sqlite(tmp_path: Path) -> None:
    scenario(tmp_path, (), lambda: _sqlite_bytes(tmp_path / "server"))


@pytest.mark.slow
def test_no_secret_leaks_with_etcd(tmp_path: Path, etcd_server: EtcdCluster) -> None:
    prefix = f"/leak{uuid.uuid4().hex[:8]}"

    def etcd_bytes() -> bytes:
        import asyncio

        async def dump() -> bytes:
            store = EtcdStore(etcd_server.endpoints, prefix=prefix)
            try:
                kvs, _ = await store.list("")
                assert any(kv.key.startswith("/secrets/") for kv in kvs)
                return b"\n".join(kv.key.encode() + b"=" + kv.value for kv in kvs)
            finally:
                await store.close()

        return asyncio.run(dump())

    scenario(tmp_path, ("--store", etcd_server.url(prefix)), etcd_bytes)
