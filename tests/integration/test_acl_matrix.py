"""The ACL matrix: every route of the routes table, called by every kind of caller, on a
real `podium dev --acl` (server and agent, mutual TLS), gets exactly the expected allow
or deny. Expectations come from this file's own reading of each route's declared word
(EXPECT below), not from the server's code; a route this file has no request for fails.

Callers: no token, read on namespace a, write on a, write on b, a management token, a
node identity (the agent's certificate) and an expired token, each over an operator's
(non-management) certificate except the node. Every object the requests name lives in
namespace a. Then: the object-namespace case (an alloc of b fetched by id with an a
token), wildcard lists, the event stream, a token creating a policy it does not hold.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from integration.cluster import PODIUM, ROOT, DevCluster, free_port, wait_until
from podium.server.app import ROUTES
from support import canary

pytestmark = pytest.mark.integration

CALLERS = ("none", "read_a", "write_a", "write_b", "expired", "node", "management")
READ = {"list-jobs", "read-job", "read-config"}  # the read shorthand


def _job(name: str, ns: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": ns,
        "groups": [
            {
                "name": "g",
                "update": {"min_healthy_time": "0s"},
                "tasks": [
                    {
                        "name": "t",
                        "config": {"command": "sleep", "args": ["600"]},
                        "resources": {"cpu": 10, "memory": 16},
                    }
                ],
            }
        ],
    }


def expect(requires: str, caller: str) -> bool:
    """Whether `caller` may call a route declaring `requires`, every object in namespace a."""
    if requires.startswith("cert|"):  # no caller here is a web UI session
        return expect(requires[len("cert|") :], caller)
    if requires.startswith("agent|"):
        return caller == "node" or expect(requires[len("agent|") :], caller)
    if requires == "public":
        return True
    if requires == "any":
        return caller != "expired"
    if requires in ("agent", "node-register"):
        return caller == "node"
    if caller == "management":
        return True
    if requires == "management":
        return False
    if requires == "node:read":
        return caller == "read_a"  # its policy grants node read
    if requires in ("operator:read", "agent:read"):
        return caller == "write_b"  # its policy grants operator and agent read
    if requires in ("node:write", "operator:write"):
        return False
    assert requires.startswith("ns:"), requires
    cap, _, scope = requires[3:].partition("@")
    in_a = {"read_a": cap in READ, "write_a": True}.get(caller, False)
    if scope == "each":  # a list: allowed where some namespace grants it (then filtered)
        return in_a or caller == "write_b"
    return in_a


class Matrix:
    """The cluster, the objects and the callers' credentials."""

    def __init__(self, c: DevCluster, tmp: Path) -> None:
        self.c = c
        token = c.cli("server", "join-token", "--role", "operator", check=True).stdout.strip()
        self.op_dir = tmp / "operator"
        c.cli("tls", "join", "--server", c.addr, "--token", token, "--dir", str(self.op_dir),
              "--name", "matrix", check=True)  # fmt: skip
        self.management = canary.register(
            json.loads((c.data_dir / "cli.json").read_text())["token"]
        )
        for ns in ("a", "b"):
            c.api("POST", "/v1/namespaces", json={"name": ns})
        policies = {
            "read-a": 'namespace "a" { policy = "read" }\nnode { policy = "read" }',
            "write-a": 'namespace "a" { policy = "write" }',
            "write-b": 'namespace "b" { policy = "write" }\noperator { policy = "read" }\n'
            'agent { policy = "read" }',
        }
        for name, rules in policies.items():
            c.api("PUT", f"/v1/acl/policy/{name}", json={"rules": rules})
        self.tokens = {"management": self.management}
        for caller, pol in (("read_a", "read-a"), ("write_a", "write-a"), ("write_b", "write-b")):
            self.tokens[caller] = self.new_token(caller, [pol])
        self.tokens["expired"] = self.new_token("expired", ["write-a"], ttl="1s")
        self.throwaway = c.api("POST", "/v1/acl/tokens",
                               json={"name": "gone", "policies": ["read-a"]})["accessor"]  # fmt: skip
        for name, ns in (("ja", "a"), ("jstop", "a"), ("jb", "b")):
            c.api("POST", "/v1/jobs", json={"job": _job(name, ns)})
        self.alloc = {n: self.running_alloc(n, ns) for n, ns in
                      (("ja", "a"), ("jstop", "a"), ("jb", "b"))}  # fmt: skip
        self.deployment = {
            n: wait_until(lambda n=n, ns=ns: self.deployment_of(n, ns), timeout=20, what=n)
            for n, ns in (("ja", "a"), ("jstop", "a"))
        }
        self.node = c.api("GET", "/v1/nodes")[0]["id"]
        for kind in ("config", "secret"):
            for ns in ("a", "b"):
                c.api("PUT", f"/v1/{kind}/app/x", params={"namespace": ns},
                      json={"data": {"k": "v"}})  # fmt: skip
        time.sleep(max(0.0, self.expired_at - time.time()) + 0.2)

    def new_token(self, name: str, policies: list[str], *, ttl: str = "") -> str:
        body: dict[str, Any] = {"name": name, "policies": policies}
        if ttl:
            body["ttl"] = ttl
            self.expired_at = time.time() + 1.0
        return canary.register(str(self.c.api("POST", "/v1/acl/tokens", json=body)["secret"]))

    def running_alloc(self, job: str, ns: str) -> str:
        def running() -> str:
            allocs = self.c.api("GET", f"/v1/job/{job}", params={"namespace": ns})["allocations"]
            return next((a["id"] for a in allocs if a["client_status"] == "running"), "")

        return str(wait_until(running, timeout=30, what=f"{job} running"))

    def deployment_of(self, job: str, ns: str) -> str:
        deps = self.c.api("GET", "/v1/deployments", params={"job": job, "namespace": ns})
        return str(deps[0]["id"]) if deps else ""

    # ---------------------------------------------------------------- callers

    def ssl_for(self, caller: str) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.c.tls_dir / "ca.pem"))
        if caller == "node":
            a = self.c.agent_tls_dir
            ctx.load_cert_chain(str(a / "agent.pem"), str(a / "agent-key.pem"))
        else:
            ctx.load_cert_chain(str(self.op_dir / "cli.pem"), str(self.op_dir / "cli-key.pem"))
        return ctx

    def headers_for(self, caller: str) -> dict[str, str]:
        secret = self.tokens.get(caller)
        if not secret:
            return {}
        # Both ways of sending a token are used across callers.
        if caller in ("read_a", "write_b"):
            return {"authorization": f"Bearer {secret}"}
        return {"x-podium-token": secret}

    # ---------------------------------------------------------------- requests

    def recipe(self, name: str) -> tuple[dict[str, str], dict[str, Any]]:
        """Path values and request options (params, json, content) for one route, every
        object named in namespace a; writes chosen to be harmless to the rest."""
        ja = {"name": "ja"}
        q = {"params": {"namespace": "a"}}
        alloc = {"id": self.alloc["ja"]}
        spare = {"id": self.alloc["jstop"]}
        dep = {"id": self.deployment["jstop"]}
        node = {"id": self.node}
        job_body = {"json": {"job": _job("ja", "a")}}
        recipes: dict[str, tuple[dict[str, str], dict[str, Any]]] = {
            "ui_page": ({}, {}),
            "ui_asset": ({"file": "app.js"}, {}),
            "status": ({}, {}),
            "members": ({}, {}),
            "openapi": ({}, {}),
            "metrics": ({}, {}),
            "metrics_targets": ({}, {}),
            "list_jobs": ({}, {}),
            "register_job": ({}, job_body),
            "validate_job": ({}, job_body),
            "plan_job": ({}, job_body),
            "get_job": (ja, q),
            "stop_job": ({"name": "jstop"}, q),
            "job_versions": (ja, q),
            "job_logs": (ja, q),
            "job_version": (ja | {"version": "0"}, q),
            "revert_job": (ja, q | {"json": {"version": 0}}),
            "scale_job": (ja, q | {"json": {"group": "g", "count": 1}}),
            "job_scaling": (ja, q),
            "wake_service": ({"name": "nothing"}, q),
            "dispatch_job": (ja, q | {"json": {}}),
            "force_periodic": (ja, q),
            "list_deployments": ({}, {}),
            "get_deployment": (dep, {}),
            "promote_deployment": (dep, {"json": {}}),
            "fail_deployment": (dep, {}),
            "pause_deployment": (dep, {}),
            "resume_deployment": (dep, {}),
            "list_allocs": ({}, {}),
            "get_alloc": (alloc, {}),
            "alloc_stats": (alloc, {}),
            "cluster_usage": ({}, {}),
            "stop_alloc": (spare, {}),
            "restart_alloc": (spare, {}),
            "alloc_logs": (alloc, {"params": {"task": "t"}}),
            "alloc_exec": (alloc, {}),
            "list_nodes": ({}, {}),
            "register_node": ({}, {"json": {}}),
            "get_node": (node, {}),
            "purge_node": ({"id": "gone-node"}, {}),  # no such node: nothing is purged
            "heartbeat": (node, {}),
            "node_eligibility": (node, {"json": {"eligible": "not a bool"}}),
            "node_drain": (node, {"json": {"enable": "not a bool"}}),
            "node_allocs": (node, {}),
            "node_alloc_updates": (node, {"json": []}),
            "events": ({}, {}),
            "snapshot_save": ({}, {}),
            "snapshot_restore": ({}, {"content": b""}),
            "list_services": ({}, {}),
            "get_service": ({"name": "nothing"}, q),
            "tls_ca": ({}, {}),
            "tls_join": ({}, {"json": {}}),
            "tls_renew": ({}, {"json": {}}),
            "tls_join_token": ({}, {"json": {"role": "nobody"}}),
            "tls_status": ({}, {}),
            "tls_rotate": ({}, {}),
            "acl_bootstrap": ({}, {}),
            "acl_token_list": ({}, {}),
            "acl_token_create": ({}, {"json": {"name": "m", "policies": ["read-a"]}}),
            "acl_token_self": ({}, {}),
            "acl_token_info": ({"id": self.throwaway}, {}),
            "acl_token_delete": ({"id": self.throwaway}, {}),
            "acl_policy_list": ({}, {}),
            "acl_policy_info": ({"name": "read-a"}, {}),
            "acl_policy_apply": (
                {"name": "matrix-x"},
                {"json": {"rules": 'node { policy = "read" }'}},
            ),
            "acl_policy_delete": ({"name": "matrix-x"}, {}),
            "list_namespaces": ({}, {}),
            "create_namespace": ({}, {"json": {"name": "matrix-new"}}),
            "get_namespace": ({"name": "a"}, {}),
            "delete_namespace": ({"name": "matrix-gone"}, {}),
            "set_namespace_quota": ({"name": "a"}, {"json": {"cpu": -1}}),
            "ui_login": ({}, {}),
            "ui_session_open": ({}, {"json": {}}),
            "ui_session_close": ({}, {}),
            "list_configs": ({}, {}),
            "get_config": ({"path": "app/x"}, q),
            "put_config": ({"path": "app/x"}, q | {"json": {"data": {"k": "v"}}}),
            "delete_config": ({"path": "app/none"}, q),  # none there: 404 when allowed
            "config_history": ({"path": "app/x"}, q),
            "list_secrets": ({}, {}),
            "get_secret": ({"path": "app/x"}, q),
            "secret_values": ({"path": "app/x"}, q),
            "put_secret": ({"path": "app/x"}, q | {"json": {"data": {"k": "v"}}}),
            "delete_secret": ({"path": "app/none"}, q),
            "secret_history": ({"path": "app/x"}, q),
            "keyring_status": ({}, {}),
            "keyring_rotate": ({}, {"params": {"full": "false"}}),
            "alloc_template_data": ({"id": self.node, "alloc": self.alloc["ja"]}, {}),
        }
        if name not in recipes:
            raise AssertionError(f"route {name} has no request in the ACL matrix: add one")
        return recipes[name]

    def call(self, caller: str, method: str, path: str, name: str) -> int:
        values, opts = self.recipe(name)
        for k, v in values.items():
            path = path.replace(f"{{{k}}}", v).replace(f"{{{k}:job}}", v)
            path = path.replace(f"{{{k}:int}}", v).replace(f"{{{k}:path}}", v)
        assert "{" not in path, path
        headers = self.headers_for(caller)
        if method == "WS":
            url = self.c.addr.replace("https://", "wss://") + path + "?cmd=true"
            try:
                with connect(url, ssl=self.ssl_for(caller), server_hostname="server.podium",
                             additional_headers=headers, open_timeout=10):  # fmt: skip
                    return 101
            except InvalidStatus as e:
                return int(e.response.status_code)
        # Streams (logs) are read only up to their status: what they hold is not asked.
        with (
            httpx.Client(verify=self.ssl_for(caller), timeout=30) as http,
            http.stream(method, self.c.addr + path, headers=headers, **opts) as resp,
        ):
            return resp.status_code


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    tmp = tmp_path_factory.mktemp("acl")
    c = DevCluster(tmp / "dev", extra_args=["--acl"]).start()
    try:
        yield Matrix(c, tmp)
    finally:
        c.stop()
        c.kill_leftovers()


def _get(m: Matrix, caller: str, path: str, **params: str) -> httpx.Response:
    with httpx.Client(verify=m.ssl_for(caller), timeout=10) as http:
        return http.get(m.c.addr + path, headers=m.headers_for(caller), params=params)


def test_the_objects_namespace_decides_not_the_requests(matrix: Matrix) -> None:
    """CVE-2019-16742's shape: an alloc of b, by id, with a token of a, naming a or not."""
    b_alloc = matrix.alloc["jb"]
    for params in ({}, {"namespace": "a"}):
        for suffix in ("", "/stats", "/logs"):
            r = _get(matrix, "write_a", f"/v1/allocation/{b_alloc}{suffix}", **params)
            assert r.status_code == 403, (suffix, params, r.status_code, r.text)
        r = _get(matrix, "write_a", f"/v1/allocation/{b_alloc[:8]}", **params)
        assert r.status_code == 403, r.text
    assert _get(matrix, "write_b", f"/v1/allocation/{b_alloc}").status_code == 200
    # A job body in b, sent by a token of a with ?namespace=a: the body's namespace counts.
    with httpx.Client(verify=matrix.ssl_for("write_a"), timeout=10) as http:
        r = http.post(matrix.c.addr + "/v1/jobs", params={"namespace": "a"},
                      headers=matrix.headers_for("write_a"),
                      json={"job": _job("sneaky", "b")})  # fmt: skip
    assert r.status_code == 403 and "'b'" in r.json()["error"], r.text
    # Exec into b's alloc with a's token: refused at the handshake.
    url = matrix.c.addr.replace("https://", "wss://") + f"/v1/allocation/{b_alloc}/exec?cmd=true"
    with (
        pytest.raises(InvalidStatus) as e,
        connect(url, ssl=matrix.ssl_for("write_a"), server_hostname="server.podium",
                additional_headers=matrix.headers_for("write_a")),
    ):  # fmt: skip
        pass
    assert e.value.response.status_code == 403


def test_wildcard_lists_hold_only_what_the_caller_may_read(matrix: Matrix) -> None:
    for caller, ns in (("read_a", "a"), ("write_b", "b")):
        for params in ({}, {"namespace": "*"}):
            jobs = _get(matrix, caller, "/v1/jobs", **params).json()
            assert jobs and {j["namespace"] for j in jobs} == {ns}, (caller, jobs)
            allocs = _get(matrix, caller, "/v1/allocations", **params).json()
            assert allocs and {a["namespace"] for a in allocs} == {ns}, (caller, allocs)
            deps = _get(matrix, caller, "/v1/deployments", **params).json()
            assert deps and {d["namespace"] for d in deps} == {ns}, (caller, deps)
            configs = _get(matrix, caller, "/v1/configs", **params).json()
            assert configs and {x["namespace"] for x in configs} == {ns}, (caller, configs)
            secrets = _get(matrix, caller, "/v1/secrets", **params)
            if caller == "read_a":  # read-secret nowhere (not in the read shorthand)
                assert secrets.status_code == 403, secrets.text
            else:
                assert {x["namespace"] for x in secrets.json()} == {ns}, secrets.text
            events = _get(matrix, caller, "/v1/events", limit="0", **params).json()
            assert events and {e["namespace"] for e in events} <= {ns, ""}, caller
        names = {n["name"] for n in _get(matrix, caller, "/v1/namespaces").json()}
        assert names == {ns}, (caller, names)
    # Management sees both.
    jobs = _get(matrix, "management", "/v1/jobs", namespace="*").json()
    assert {j["namespace"] for j in jobs} == {"a", "b"}
    secrets = _get(matrix, "management", "/v1/secrets", namespace="*").json()
    assert {x["namespace"] for x in secrets} == {"a", "b"}


def test_event_stream_across_namespaces_sends_only_readable_events(matrix: Matrix) -> None:
    got: list[dict[str, Any]] = []
    ready = threading.Event()
    seen_a = threading.Event()

    def follow() -> None:
        with httpx.Client(verify=matrix.ssl_for("read_a"), timeout=30) as http:
            params = {"follow": "true", "namespace": "*", "heartbeat": "0.2"}
            with http.stream("GET", matrix.c.addr + "/v1/events", params=params,
                             headers=matrix.headers_for("read_a")) as resp:  # fmt: skip
                assert resp.status_code == 200
                start = time.monotonic()
                for line in resp.iter_lines():
                    ready.set()
                    if line.startswith("data: "):
                        ev = json.loads(line[6:])
                        got.append(ev)
                        if ev["namespace"] == "a" and ev["type"] == "alloc.restart_requested":
                            seen_a.set()
                            return
                    if time.monotonic() - start > 30:
                        return

    t = threading.Thread(target=follow, daemon=True)
    t.start()
    assert ready.wait(10)
    # b first, then a: when a's arrives, b's would have come before it.
    matrix.c.api("POST", f"/v1/allocation/{matrix.alloc['jb']}/restart")
    matrix.c.api("POST", f"/v1/allocation/{matrix.alloc['ja']}/restart")
    assert seen_a.wait(30), got[-5:]
    t.join(5)
    leaked = [e for e in got if e["namespace"] not in ("a", "")]
    assert not leaked, leaked
    # Events with no namespace (nodes, security) need operator read: read_a has none.
    assert all(e["namespace"] == "a" for e in got), [e for e in got if not e["namespace"]]


def test_acl_answers_match_the_documented_schemas(matrix: Matrix) -> None:
    """What test_api.py does for the other routes, for ACL's (which answer only with ACL)."""
    from integration.test_api import ACL_ROUTES, _check

    c = matrix.c
    doc = c.api("GET", "/v1/openapi.json")
    checked = set()

    def call(caller: str, method: str, route: str, url: str, **kw: Any) -> None:
        with httpx.Client(verify=matrix.ssl_for(caller), timeout=10) as http:
            r = http.request(method, c.addr + url, headers=matrix.headers_for(caller), **kw)
        assert r.status_code == 200, (method, url, r.status_code, r.text)
        _check(doc, method.lower(), route, r.json())
        checked.add((method, route))

    made = c.api("POST", "/v1/acl/tokens", json={"name": "s", "policies": ["read-a"]})
    canary.register(made["secret"])
    m = "management"
    call(m, "POST", "/v1/acl/tokens", "/v1/acl/tokens", json={"name": "t", "ttl": "1h",
                                                             "policies": ["read-a"]})  # fmt: skip
    call(m, "GET", "/v1/acl/tokens", "/v1/acl/tokens")
    call("read_a", "GET", "/v1/acl/token/self", "/v1/acl/token/self")
    call(m, "GET", "/v1/acl/token/{id}", f"/v1/acl/token/{made['accessor']}")
    call(m, "DELETE", "/v1/acl/token/{id}", f"/v1/acl/token/{made['accessor']}")
    call(m, "PUT", "/v1/acl/policy/{name}", "/v1/acl/policy/schema",
         json={"rules": 'node { policy = "read" }', "description": "d"})  # fmt: skip
    call(m, "GET", "/v1/acl/policies", "/v1/acl/policies")
    call(m, "GET", "/v1/acl/policy/{name}", "/v1/acl/policy/schema")
    call(m, "DELETE", "/v1/acl/policy/{name}", "/v1/acl/policy/schema")
    # The bootstrap's answer is checked on a cluster of its own: it was done here already.
    assert ACL_ROUTES - checked == {("POST", "/v1/acl/bootstrap")}


def test_bootstrap_without_acl_says_why_not(tmp_path: Path) -> None:
    c = DevCluster(tmp_path / "dev").start()  # ACL off: bootstrap is refused, said why
    try:
        r = c.request("POST", "/v1/acl/bootstrap")
        assert r.status_code == 409 and "ACL is off" in r.json()["error"], r.text
    finally:
        c.stop()


def test_the_anonymous_policy_is_what_no_token_gets(matrix: Matrix) -> None:
    c = matrix.c
    assert _get(matrix, "none", "/v1/jobs").status_code == 401
    c.api("PUT", "/v1/acl/policy/anonymous", json={"rules": 'namespace "a" { policy = "read" }'})
    try:
        jobs = wait_until(
            lambda: (r := _get(matrix, "none", "/v1/jobs")).status_code == 200 and r.json(),
            timeout=10,
            what="the anonymous policy in force",
        )
        assert {j["namespace"] for j in jobs} == {"a"}
        assert _get(matrix, "none", f"/v1/allocation/{matrix.alloc['jb']}").status_code == 401
        with httpx.Client(verify=matrix.ssl_for("none"), timeout=10) as http:
            r = http.post(f"{c.addr}/v1/allocation/{matrix.alloc['ja']}/restart")
        assert r.status_code == 401, r.text  # read only
    finally:
        c.api("DELETE", "/v1/acl/policy/anonymous")
    wait_until(lambda: _get(matrix, "none", "/v1/jobs").status_code == 401, timeout=10)


def test_a_token_cannot_grant_itself_a_policy(matrix: Matrix) -> None:
    rules = 'namespace "*" { policy = "write" }\noperator { policy = "write" }'
    with httpx.Client(verify=matrix.ssl_for("write_a"), timeout=10) as http:
        h = matrix.headers_for("write_a")
        r = http.put(matrix.c.addr + "/v1/acl/policy/all", headers=h, json={"rules": rules})
        assert r.status_code == 403, r.text
        r = http.post(matrix.c.addr + "/v1/acl/tokens", headers=h,
                      json={"name": "x", "type": "management"})  # fmt: skip
        assert r.status_code == 403, r.text
    assert matrix.c.request("GET", "/v1/acl/policy/all").status_code == 404


def test_secrets_are_never_listed_nor_stored(matrix: Matrix) -> None:
    listing = matrix.c.request("GET", "/v1/acl/tokens").text
    db = (matrix.c.data_dir / "podium.db").read_bytes()
    wal = matrix.c.data_dir / "podium.db-wal"
    stored = db + (wal.read_bytes() if wal.exists() else b"")
    for caller, secret in matrix.tokens.items():
        assert secret not in listing, caller
        assert secret.encode() not in stored, caller
    self_view = _get(matrix, "write_a", "/v1/acl/token/self").json()
    assert "secret" not in self_view and "secret_hash" not in self_view
    # podium dev --acl says where the management token went (its value: to a terminal only).
    said = matrix.c.logs()
    assert "ACL on: management token (in the CLI config)" in said, said[-2000:]
    assert f"the CLI config {matrix.c.data_dir / 'cli.json'} holds it (0600)" in said
    logs = matrix.c.logs() + (matrix.c.data_dir / "audit.log").read_text()
    events = json.dumps(_get(matrix, "management", "/v1/events", limit="0").json())
    for caller, secret in matrix.tokens.items():
        assert secret not in logs and secret not in events, caller


def test_the_audit_trail_names_the_credential_not_the_header(matrix: Matrix) -> None:
    """Writes, refusals, logs and exec are lines of <data-dir>/audit.log (0600) and events
    of topic audit that only management reads; the identity is the token's accessor or the
    certificate's, whatever x-podium-user says."""
    c = matrix.c
    alloc = matrix.alloc["ja"]
    with httpx.Client(verify=matrix.ssl_for("write_a"), timeout=10) as http:
        h = matrix.headers_for("write_a") | {"x-podium-user": "somebody-else"}
        assert http.post(f"{c.addr}/v1/allocation/{alloc}/restart", headers=h).status_code == 200
        r = http.post(f"{c.addr}/v1/allocation/{matrix.alloc['jb']}/restart", headers=h)
        assert r.status_code == 403
    path = c.data_dir / "audit.log"
    assert path.stat().st_mode & 0o777 == 0o600
    accessor = _get(matrix, "write_a", "/v1/acl/token/self").json()["accessor"]

    def lines() -> list[dict[str, Any]]:
        return [json.loads(x) for x in path.read_text().splitlines()]

    mine = [e for e in lines() if e["identity"] == f"token {accessor}"]
    restarts = [e for e in mine if e["route"] == "restart_alloc"]
    assert {(e["namespace"], e["outcome"], e["status"]) for e in restarts} >= {
        ("a", "allowed", 200),
        ("b", "refused", 403),
    }, restarts
    assert all(e["object"]["id"] in (alloc, matrix.alloc["jb"]) for e in restarts), restarts
    assert not any("somebody-else" in json.dumps(e) for e in lines())
    # Logs, exec and snapshots are on the trail too.
    assert _get(matrix, "write_a", "/v1/job/ja/logs", namespace="a").status_code == 200
    assert _get(matrix, "management", "/v1/operator/snapshot").status_code == 200
    routes = {e["route"] for e in lines()}
    assert {"alloc_logs", "alloc_exec", "job_logs", "snapshot_save", "register_job"} <= routes
    # topic=audit: management only.
    events = _get(matrix, "management", "/v1/events", topic="audit", limit="0").json()
    assert any(e["type"] == "audit.refused" and accessor in e["message"] for e in events)
    for caller in ("read_a", "write_a", "write_b"):
        got = _get(matrix, caller, "/v1/events", topic="audit", limit="0", namespace="*")
        assert got.status_code == 200 and got.json() == [], caller


def test_every_route_times_every_caller_last(matrix: Matrix) -> None:
    """Last in the module: its calls change things (a CA rotation, stopped allocs)."""
    rows = sorted(ROUTES, key=lambda r: r[2] == "tls_rotate")  # the CA rotation last
    mismatches, cells = [], 0
    for method, path, name, requires, _ in rows:
        for caller in CALLERS:
            code = matrix.call(caller, method, path, name)
            allowed = code not in (401, 403)
            cells += 1
            if allowed != expect(requires, caller):
                mismatches.append(f"{method} {path} ({requires}) as {caller}: {code}")
    print(f"ACL matrix: {cells} cells, {len(mismatches)} mismatches")
    assert not mismatches, "\n".join(mismatches)
    assert cells == len(ROUTES) * len(CALLERS)


def test_acl_without_tls_still_needs_a_token(tmp_path: Path) -> None:
    """No mutual TLS (--insecure) tells no caller apart: with ACL on, a request without a
    token is refused all the same (Nomad 1.5.0-1.5.2's bypass), and the node, proven by its
    node secret, keeps working."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    ddir = tmp_path / "dev"
    with (tmp_path / "dev.log").open("wb") as log:
        proc = subprocess.Popen(
            [*PODIUM, "dev", "--acl", "--insecure", "--addr", f"127.0.0.1:{port}",
             "--data-dir", str(ddir), "--dns-addr", "off", "--ingress-addr", "off"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        cfg = ddir / "cli.json"
        wait_until(lambda: cfg.exists() and "token" in cfg.read_text(), timeout=30, what="cli")
        token = canary.register(json.loads(cfg.read_text())["token"])
        auth = {"authorization": f"Bearer {token}"}

        def ready() -> bool:
            nodes = httpx.get(base + "/v1/nodes", headers=auth, timeout=5).json()
            return bool(nodes) and nodes[0]["status"] == "ready"

        wait_until(ready, timeout=30, what="the node ready (its secret, no token)")
        with httpx.Client(timeout=10) as http:
            for path in ("/v1/jobs", "/v1/nodes", "/v1/events", "/v1/acl/tokens"):
                r = http.get(base + path)
                assert r.status_code == 401, (path, r.status_code, r.text)
                r = http.get(base + path, headers={"x-podium-token": "pdm_bogus"})
                assert r.status_code == 403, (path, r.status_code)
                r = http.get(base + path, headers=auth)
                assert r.status_code == 200, (path, r.status_code)
    finally:
        proc.terminate()
        proc.wait(10)
