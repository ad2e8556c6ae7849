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
import itertools
import re
import subprocess
import textwrap
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from integration.cluster import Background, unmount_under, wait_until
from integration.multinode import MultiNodeCluster
from podium.server.app import ROUTES
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


class ProcessWatch(Background):
    """Every command line on the machine while the run goes on (the template worker's and
    restarted tasks' included, however short they live), sampled every 100 ms."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.samples = 0

    def loop(self) -> None:
        while not self._stop.is_set():
            for p in psutil.process_iter(["cmdline"]):
                cmdline = p.info.get("cmdline")
                if cmdline:
                    self.seen.add(" ".join(cmdline))
            self.samples += 1
            self._stop.wait(0.1)


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

    def api(self, method: str, path: str, *, ok: bool = True, **kw: Any) -> Any:
        with self.cluster.http(timeout=30) as http:
            r = http.request(method, self.cluster.addr + path, **kw)
        self.seen.append(f"{method} {path} {r.status_code}\n{r.text}")
        if ok:
            r.raise_for_status()
        is_json = r.headers.get("content-type", "").startswith("application/json")
        return r.json() if is_json and r.content else r.text

    def agent(self, node: dict[str, Any], path: str) -> None:
        """GET from the node's agent API (mutual TLS, as the server and the CLI reach it)."""
        r = self.cluster.agent_get(node, path, timeout=30)
        self.seen.append(f"agent GET {path} {r.status_code}\n{r.text}")

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


# The two server routes whose answers hold secrets, kept out of what is searched: the
# explicit read of a secret's values, and what the agent of a task's node renders from.
REVEALING = ("/v1/secret-values/{path:path}", "/v1/node/{id}/allocation/{alloc}/template-data")


def every_get_route(run: Run) -> list[str]:
    """Every GET route of the server's routes table, filled with every object the run made
    (jobs and their versions, allocs, deployments, nodes, services, the config and the
    secret with each of their versions). A route added later is asked too, or names the
    parameter this test does not know how to fill."""
    jobs = [j["name"] for j in run.api("GET", "/v1/jobs")]
    allocs = [a["id"] for a in run.api("GET", "/v1/allocations")]
    fills: dict[str, dict[str, list[str]]] = {
        "/v1/job/": {"name:job": jobs, "version:int": ["0", "1", "2", "3"]},
        "/v1/deployment/": {"id": [d["id"] for d in run.api("GET", "/v1/deployments")]},
        "/v1/allocation/": {"id": allocs},
        "/v1/node/": {"id": [n["id"] for n in run.api("GET", "/v1/nodes")]},
        "/v1/service/": {"name": [s["name"] for s in run.api("GET", "/v1/services")["services"]]},
        "/v1/config": {"path:path": ["app/s", "app/s?version=1", "app/s?version=2"]},
        "/v1/secret": {"path:path": ["db/pw", "db/pw?version=1", "db/pw?version=2"]},
        "/v1/namespace/": {"name": ["default"]},
        # ACL is off here (they answer 409): asked all the same, for what an error says.
        "/v1/acl/token/": {"id": ["none"]},
        "/v1/acl/policy/": {"name": ["anonymous"]},
    }
    paths = []
    for method, route, *_ in ROUTES:
        if method != "GET" or not route.startswith("/v1/") or route in REVEALING:
            continue
        params = re.findall(r"{([^}]+)}", route)
        fill = next((f for prefix, f in fills.items() if route.startswith(prefix)), {})
        missing = [p for p in params if p not in fill]
        assert not missing, f"the leak test cannot fill {missing} in {route}: teach it"
        choices = [[(p, v) for v in fill[p]] for p in params]
        for combo in itertools.product(*choices):
            path = route
            for p, v in combo:
                path = path.replace("{" + p + "}", v)
            paths.append(path)
    assert any("?version=2" in p and p.startswith("/v1/secret/") for p in paths)
    return paths


def _job(tmp: Path) -> Path:
    job = {
        "name": "leaky",
        "groups": [
            {
                "name": "g",
                "count": 2,
                "network": {"ports": {"http": {}}},
                "services": [{"name": "leaky", "port": "http"}],
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


def bad_puts(run: Run, canary: str) -> None:
    """Puts that fail while carrying the canary: no error may quote it."""
    for body, why in (
        ({"data": {"value": canary}, "cas": 99}, "a stale --cas"),
        ({"data": {"value": canary + "x" * (1 << 20)}}, "over 1 MiB"),
        ({"data": {"value": [canary]}}, "not text"),
        ({"data": {"value": canary}, "extra": canary}, "an unknown field"),
    ):
        r = run.api("PUT", "/v1/secret/db/pw", ok=False, json=body)
        assert isinstance(r, dict) and r.get("error"), (why, r)
    run.api("PUT", "/v1/secret/db/pw", ok=False, content=f'{{"data": {{"value": "{canary}')
    run.cli("secret", "put", "db/pw", "value=-", "--cas", "99", input=canary, ok=False)
    # Refused: not from argv (with another value: the test's own command line would show it).
    run.cli("secret", "put", "db/pw", "value=typed-on-the-command-line", ok=False)
    assert "--allow-argv" in run.seen[-1]


def scenario(root: Path, store_args: tuple[str, ...], store_bytes: Any) -> None:
    canaries = [f"LEAKCANARY{uuid.uuid4().hex}", f"LEAKCANARY{uuid.uuid4().hex}"]
    run = Run(root, store_args)
    try:
        with ProcessWatch() as processes:
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
            bad_puts(run, canaries[0])

            run.cli(
                "secret", "put", "db/pw", "value=-", input=canaries[1] + "\n"
            )  # follows the rollout
            wait_until(
                lambda: proof_of(canaries[1]) in run.proofs(),
                timeout=60,
                what="a proof of the second canary",
            )
            run.cli("job", "plan", str(job))  # a diff between the pinned versions
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
            # Positive controls: the task's own secrets/ holds the canary, and so does the
            # explicit read (kept out of what is searched), so the search can find it.
            live = [p for p in run.agent_dir.glob("allocs/*/app/secrets/pw")]
            assert any(p.read_text() == canaries[1] for p in live), "the canary reached no task"
            with run.cluster.http() as http:
                reveal = http.get(run.cluster.addr + "/v1/secret-values/db/pw").text
            assert canaries[1] in reveal

            # Everything a user or an operator can look at: every CLI view, every GET route
            # of the server (Prometheus metrics included), and the agent's own API.
            for cmd in (
                ["job", "status", "leaky"], ["job", "history", "leaky"], ["secret", "list"],
                ["secret", "get", "db/pw"], ["secret", "history", "db/pw"], ["operator", "keyring", "status"],
                ["alloc", "status", next(a["id"] for a in run.api("GET", "/v1/allocations", params={"job": "broken"}))],
                ["job", "status", "broken"], ["config", "get", "app/s"], ["job", "inspect", "leaky"],
                ["secret", "list", "--json"], ["job", "status", "leaky", "--json"],
            ):  # fmt: skip
                run.cli(*cmd, ok=False)
            routes = every_get_route(run)
            for path in routes:
                run.api("GET", path, ok=False)
            run.api("GET", "/v1/events", params={"limit": 0})
            node = run.api("GET", f"/v1/node/{run.api('GET', '/v1/nodes')[0]['id']}")
            for path in ("/v1/metrics", "/v1/agent/health", "/v1/agent/usage"):
                run.agent(node, path)
            for a in run.api("GET", "/v1/allocations"):
                for tail in ("logs?task=app", "logs?task=app&type=stderr", "lines?task=app"):
                    run.agent(node, f"/v1/agent/alloc/{a['id']}/{tail}")
            ps = subprocess.run(
                ["ps", "-eo", "args"], capture_output=True, text=True, check=True
            ).stdout
            run.cli("job", "stop", "leaky")
            wait_until(lambda: not list(run.agent_dir.glob("allocs/*/app/secrets")), timeout=30,
                       what="every secrets/ removed on stop")  # fmt: skip
        assert processes.samples > 10 and any("podium" in c for c in processes.seen)
        places: dict[str, bytes] = {
            **run.logs(),
            "API answers and CLI output": "\n".join(run.seen).encode(),
            "ps -eo args": ps.encode(),
            "process command lines": "\n".join(sorted(processes.seen)).encode(),
            "agent state file": (run.agent_dir / "agent-state.json").read_bytes(),
            "store": store_bytes(),
        }
        assert b"keyring key" in places["server log"] and b"registered" in places["agent log"]
        assert b"keyring" in places["store"] and len(places["API answers and CLI output"]) > 10_000
        seen = places["API answers and CLI output"]
        assert b"# TYPE" in seen and b"podium_" in seen  # Prometheus text, server and agent
        assert len(routes) > 40 and b"GET /v1/secret-versions/db/pw 200" in seen
        for canary in canaries:
            for needle in (canary.encode(), base64.b64encode(canary.encode())[:24]):
                hits = {
                    where: data[max(0, i - 200) : i + 100]
                    for where, data in places.items()
                    if (i := data.find(needle)) >= 0
                }
                assert hits == {}, f"{needle!r} found in {hits}"
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
