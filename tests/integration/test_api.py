"""The HTTP API's edges: OpenAPI document, error shapes, revision guards, the event stream."""

from __future__ import annotations

import base64
import inspect
import json
import re
import threading
import time
from typing import Any

import jsonschema
import openapi_spec_validator
import pytest
import yaml

from integration.cluster import ROOT, DevCluster, wait_until
from podium.server import app as app_module
from podium.server import data_api
from podium.server.app import ROUTES
from podium.server.openapi import DOCS

pytestmark = pytest.mark.integration


def _web() -> dict:
    return yaml.safe_load((ROOT / "examples" / "web.yaml").read_text())


def _params_read_by(handler: Any) -> set[str]:
    """The query parameters a handler reads, from its source and the helpers it calls."""
    names: set[str] = set()
    seen: set[str] = set()
    todo = [handler]
    while todo:
        fn = todo.pop()
        src = inspect.getsource(fn)
        names |= set(re.findall(r'(?:query_params|\bq)\.get\("(\w+)"', src))
        names |= set(re.findall(r'_(?:int|float)_param\(req, "(\w+)"', src))
        for listed in re.findall(r"query_params\.get\(\w+\) for \w+ in \(([^)]*)\)", src):
            names |= set(re.findall(r'"(\w+)"', listed))
        if "_namespace(req)" in src or "_ns(req)" in src:
            names.add("namespace")
        for called in re.findall(r"(?:self\.)?(_\w+)\(req", src):
            helper = (
                getattr(app_module.Api, called, None)
                or getattr(app_module, called, None)
                or getattr(data_api, called, None)
            )
            if helper is not None and called not in seen:
                seen.add(called)
                todo.append(helper)
    return names


def test_openapi_document_lists_every_route(dev_cluster: DevCluster) -> None:
    doc = dev_cluster.api("GET", "/v1/openapi.json")
    openapi_spec_validator.validate(doc)  # a valid OpenAPI 3.1 document
    assert {name for _, _, name, _, _ in ROUTES} == set(DOCS), "every route is described in DOCS"
    for method, path, name, requires, _ in ROUTES:
        clean = re.sub(r"\{(\w+):\w+\}", r"{\1}", path)
        op = doc["paths"][clean]["get" if method == "WS" else method.lower()]
        assert op["operationId"].startswith(name)
        assert op["x-podium-requires"] == requires, name
        in_path = {p["name"] for p in op["parameters"] if p["in"] == "path"}
        assert in_path == set(re.findall(r"\{(\w+)", path)), (name, in_path)
        in_query = {p["name"] for p in op["parameters"] if p["in"] == "query"}
        if method != "WS":  # a WebSocket's query goes to the agent as it is
            reads = _params_read_by(getattr(app_module.Api, name))
            assert in_query == reads, f"{name}: documents {sorted(in_query)}, reads {sorted(reads)}"
        ok = op["responses"]["200"]
        assert ok.get("content"), f"{name}: no answer schema"
        assert all(c["schema"] for c in ok["content"].values()), name
        assert op["responses"]["400"]["content"]["application/json"]["schema"]
        if method in ("POST", "PUT") and DOCS[name].body is not None:
            assert op["requestBody"]["content"]["application/json"]["schema"], name
    for kind in ("Job", "Node", "Allocation", "Deployment", "Event", "Status", "JobSummary"):
        assert kind in doc["components"]["schemas"], kind


ACL_ROUTES = {(m, p) for m, p, name, _, _ in ROUTES if name.startswith("acl_")}


def _check(doc: dict[str, Any], method: str, path: str, answer: Any) -> None:
    """`answer` fits the schema the document gives for `method path`'s 200."""
    schema = doc["paths"][path][method]["responses"]["200"]["content"]["application/json"]
    root = {**schema["schema"], "components": doc["components"]}
    errors = sorted(jsonschema.Draft202012Validator(root).iter_errors(answer), key=str)
    assert not errors, f"{method} {path}: {errors[0].message} at {list(errors[0].absolute_path)}"


def test_real_answers_match_the_documented_schemas(dev_cluster: DevCluster) -> None:
    """Each route's answer, as the server gives it, against its schema: a field added to an
    answer without a schema, or a schema that lies, fails here."""
    c = dev_cluster
    doc = c.api("GET", "/v1/openapi.json")
    job = _web()
    checked: set[tuple[str, str]] = set()

    agent_routes = {(m, re.sub(r"\{(\w+):\w+\}", r"{\1}", p)) for m, p, _, r, _ in ROUTES
                    if r == "agent"}  # fmt: skip

    def call(method: str, route: str, url: str, **kw: Any) -> Any:
        # A node's own routes take its agent certificate (the management one is refused).
        r = c.request(method, url, agent=(method, route) in agent_routes, timeout=30, **kw)
        assert r.status_code == 200, (method, url, r.status_code, r.text)
        answer = r.json()
        _check(doc, method.lower(), route, answer)
        checked.add((method, route))
        return answer

    call("POST", "/v1/jobs/validate", "/v1/jobs/validate", json={"job": job})
    call("POST", "/v1/jobs/plan", "/v1/jobs/plan", json={"job": job})
    call("POST", "/v1/jobs", "/v1/jobs", json={"job": job})
    wait_until(
        lambda: sum(a["client_status"] == "running" for a in c.api("GET", "/v1/allocations")) == 3,
        timeout=30,
        what="3 running copies",
    )
    (node,) = c.api("GET", "/v1/nodes")
    alloc = c.api("GET", "/v1/allocations")[0]["id"]
    dep = c.api("GET", "/v1/deployments")[0]["id"]
    for route, url in (
        ("/v1/status", "/v1/status"),
        ("/v1/status/members", "/v1/status/members"),
        ("/v1/openapi.json", "/v1/openapi.json"),
        ("/v1/metrics/targets", "/v1/metrics/targets"),
        ("/v1/jobs", "/v1/jobs"),
        ("/v1/job/{name}", "/v1/job/web"),
        ("/v1/job/{name}/versions", "/v1/job/web/versions"),
        ("/v1/job/{name}/version/{version}", "/v1/job/web/version/0"),
        ("/v1/deployments", "/v1/deployments"),
        ("/v1/deployment/{id}", f"/v1/deployment/{dep}"),
        ("/v1/allocations", "/v1/allocations"),
        ("/v1/allocation/{id}", f"/v1/allocation/{alloc}"),
        ("/v1/nodes", "/v1/nodes"),
        ("/v1/node/{id}", f"/v1/node/{node['id']}"),
        ("/v1/node/{id}/allocations", f"/v1/node/{node['id']}/allocations"),
        ("/v1/events", "/v1/events"),
        ("/v1/services", "/v1/services"),
        ("/v1/service/{name}", "/v1/service/web"),
        ("/v1/usage", "/v1/usage"),
        ("/v1/allocation/{id}/stats", f"/v1/allocation/{alloc}/stats"),
        ("/v1/tls/status", "/v1/tls/status"),
    ):
        call("GET", route, url)
    call(
        "POST", "/v1/job/{name}/scale", "/v1/job/web/scale", json={"group": "frontend", "count": 3}
    )
    call("POST", "/v1/job/{name}/revert", "/v1/job/web/revert", json={"version": 0})
    call("POST", "/v1/node/{id}/heartbeat", f"/v1/node/{node['id']}/heartbeat")
    call("POST", "/v1/node/{id}/eligibility", f"/v1/node/{node['id']}/eligibility",
         json={"eligible": True})  # fmt: skip
    call("POST", "/v1/node/{id}/drain", f"/v1/node/{node['id']}/drain", json={"enable": False})
    call("POST", "/v1/node/{id}/allocations/status", f"/v1/node/{node['id']}/allocations/status",
         json=[])  # fmt: skip
    call("POST", "/v1/allocation/{id}/restart", f"/v1/allocation/{alloc}/restart")
    call("POST", "/v1/deployment/{id}/pause", f"/v1/deployment/{dep}/pause")
    call("POST", "/v1/deployment/{id}/resume", f"/v1/deployment/{dep}/resume")
    # Configs, secrets and the keyring.
    for kind in ("config", "secret"):
        put = call("PUT", f"/v1/{kind}/{{path}}", f"/v1/{kind}/app/s", json={"data": {"k": "v"}})
        assert put[kind]["version"] == 1
        call("PUT", f"/v1/{kind}/{{path}}", f"/v1/{kind}/app/s",
             json={"data": {"k2": "v2"}, "cas": 1, "merge": True})  # fmt: skip
        call("GET", f"/v1/{kind}s", f"/v1/{kind}s")
        call("GET", f"/v1/{kind}/{{path}}", f"/v1/{kind}/app/s?version=1")
        call("GET", f"/v1/{kind}-versions/{{path}}", f"/v1/{kind}-versions/app/s")
    assert call("GET", "/v1/secret-values/{path}", "/v1/secret-values/app/s")["data"] == {
        "k": "v",
        "k2": "v2",
    }
    call("GET", "/v1/operator/keyring", "/v1/operator/keyring")
    call("POST", "/v1/operator/keyring/rotate", "/v1/operator/keyring/rotate", json={"full": True})
    call("GET", "/v1/node/{id}/allocation/{alloc}/template-data",
         f"/v1/node/{node['id']}/allocation/{alloc}/template-data")  # fmt: skip
    for kind in ("config", "secret"):
        call("DELETE", f"/v1/{kind}/{{path}}", f"/v1/{kind}/app/s")
    call("DELETE", "/v1/job/{name}", "/v1/job/web")
    for example in ("dispatch", "cron"):
        spec = yaml.safe_load((ROOT / "examples" / f"{example}.yaml").read_text())
        c.api("POST", "/v1/jobs", json={"job": spec})
    payload = base64.b64encode(b"{}").decode()
    call("POST", "/v1/job/{name}/dispatch", "/v1/job/render/dispatch",
         json={"meta": {"customer": "a"}, "payload": payload})  # fmt: skip
    call("POST", "/v1/job/{name}/periodic/force", "/v1/job/report/periodic/force")
    sleepy = _web()
    sleepy["name"] = "sleepy"
    group = sleepy["groups"][0]
    group["services"][0]["name"] = "sleepy"
    group["count"] = 1
    group["scaling"] = {"min": 0, "max": 2, "policies": [{"metric": "rps", "target": 5}]}
    c.api("POST", "/v1/jobs", json={"job": sleepy})
    call("GET", "/v1/job/{name}/scaling", "/v1/job/sleepy/scaling")
    call("GET", "/v1/service/{name}", "/v1/service/sleepy")  # with its `wake`
    call("GET", "/v1/services", "/v1/services")
    c.api("POST", "/v1/job/sleepy/scale", json={"group": "frontend", "count": 0})
    woken = call("POST", "/v1/service/{name}/wake", "/v1/service/sleepy/wake")
    assert woken["groups"] == [{"job": "sleepy", "group": "frontend", "count": 1, "woken": True}]
    call("POST", "/v1/tls/join-token", "/v1/tls/join-token", json={"role": "agent", "ttl": "1m"})
    call("POST", "/v1/namespaces", "/v1/namespaces", json={"name": "schema", "description": "x"})
    call("GET", "/v1/namespaces", "/v1/namespaces")
    call("PUT", "/v1/namespace/{name}/quota", "/v1/namespace/schema/quota", json={"allocs": 5})
    call("GET", "/v1/namespace/{name}", "/v1/namespace/schema")
    call("DELETE", "/v1/namespace/{name}", "/v1/namespace/schema")
    # An error answer, too.
    r = c.request("POST", "/v1/jobs", json={"job": {"name": 5}})
    assert r.status_code == 400
    error = {**doc["components"]["schemas"]["Error"], "components": doc["components"]}
    jsonschema.Draft202012Validator(error).validate(r.json())
    json_routes = {
        (m, re.sub(r"\{(\w+):\w+\}", r"{\1}", p))
        for m, p, name, _, _ in ROUTES
        if DOCS[name].response is not None
    }
    unchecked = json_routes - checked
    # Left out on purpose: they change the cluster's state in ways the checks above
    # cannot undo (promotion, failing a rollout, stopping an alloc, restoring a snapshot,
    # purging the only node).
    assert unchecked <= {
        ("DELETE", "/v1/node/{id}"),
        ("POST", "/v1/deployment/{id}/promote"),
        ("POST", "/v1/deployment/{id}/fail"),
        ("POST", "/v1/allocation/{id}/stop"),
        ("POST", "/v1/nodes/register"),
        ("PUT", "/v1/operator/snapshot"),
        # They issue certificates for the key of a CSR, or rotate the cluster's CA (the
        # trust tests call them: test_mtls.py, test_cert_rotation.py).
        ("POST", "/v1/tls/join"),
        ("POST", "/v1/tls/renew"),
        ("POST", "/v1/tls/rotate"),
        # ACL's routes answer only with ACL on: test_acl_matrix.py checks their answers.
        *ACL_ROUTES,
        # A browser's session (test_web_ui.py logs in and out with a real browser).
        ("POST", "/v1/ui/login"),
        ("POST", "/v1/ui/session"),
        ("DELETE", "/v1/ui/session"),
    }, unchecked


def test_errors_are_json_with_the_right_status(dev_cluster: DevCluster) -> None:
    r = dev_cluster.request("GET", "/v1/job/nope")
    assert r.status_code == 404 and "nope" in r.json()["error"]
    r = dev_cluster.request("GET", "/v1/allocation/zzzz")
    assert r.status_code == 404
    r = dev_cluster.request("GET", "/v1/jobs", params={"namespace": "default"})
    assert r.status_code == 200
    r = dev_cluster.request("GET", "/v1/allocation/Bad_Id")  # ids in paths are [a-z0-9-]
    assert r.status_code == 400 and r.json()["problems"][0]["path"] == "id"
    # A CLI certificate may not register a node, whatever the body (an agent's route).
    r = dev_cluster.request("POST", "/v1/nodes/register", json={"id": 5})
    assert r.status_code == 403


def test_check_index_guards_against_a_change_in_between(dev_cluster: DevCluster) -> None:
    job = _web()
    plan = dev_cluster.api("POST", "/v1/jobs/plan", json={"job": job})
    assert plan["index"] == 0 and plan["create"] == 3
    ok = dev_cluster.request("POST", "/v1/jobs", json={"job": job, "check_index": plan["index"]})
    assert ok.status_code == 200, ok.text
    plan2 = dev_cluster.api("POST", "/v1/jobs/plan", json={"job": {**job, "meta": {"v": "2"}}})
    assert plan2["changed"] and plan2["index"] == ok.json()["index"]
    # Someone else changes the job between plan and run:
    job["groups"][0]["count"] = 2
    dev_cluster.api("POST", "/v1/jobs", json={"job": job})
    late = dev_cluster.request(
        "POST", "/v1/jobs", json={"job": {**job, "meta": {"v": "2"}}, "check_index": plan2["index"]}
    )
    assert late.status_code == 409
    assert "changed since the plan" in late.json()["error"]


def test_event_stream_follows_new_events(dev_cluster: DevCluster) -> None:
    seen: list[dict] = []

    def follow() -> None:
        with (
            dev_cluster.http(timeout=15) as c,
            c.stream(
                "GET", f"{dev_cluster.addr}/v1/events", params={"follow": "true", "limit": 0}
            ) as r,
        ):
            for line in r.iter_lines():
                if line.startswith("data: "):
                    seen.append(json.loads(line[6:]))
                    if any(e["type"] == "job.registered" for e in seen):
                        return

    t = threading.Thread(target=follow, daemon=True)
    t.start()
    time.sleep(0.5)  # let the stream connect: only live events can satisfy it (limit 0)
    dev_cluster.api("POST", "/v1/jobs", json={"job": _web()})
    t.join(10)
    assert any(e["type"] == "job.registered" and e["job"] == "web" for e in seen), seen
