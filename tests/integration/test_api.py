"""The HTTP API's edges: OpenAPI document, error shapes, revision guards, the event stream."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
import yaml

from integration.cluster import ROOT, DevCluster

pytestmark = pytest.mark.integration


def _web() -> dict:
    return yaml.safe_load((ROOT / "examples" / "web.yaml").read_text())


def test_openapi_document_lists_every_route(dev_cluster: DevCluster) -> None:
    doc = dev_cluster.api("GET", "/v1/openapi.json")
    assert doc["openapi"].startswith("3.")
    for path in ("/v1/jobs", "/v1/job/{name}", "/v1/allocation/{id}", "/v1/nodes", "/v1/events"):
        assert path in doc["paths"], path
    assert {"Job", "Node", "Allocation"} <= set(doc["components"]["schemas"])


def test_errors_are_json_with_the_right_status(dev_cluster: DevCluster) -> None:
    r = httpx.get(f"{dev_cluster.addr}/v1/job/nope")
    assert r.status_code == 404 and "nope" in r.json()["error"]
    r = httpx.get(f"{dev_cluster.addr}/v1/allocation/zzzz")
    assert r.status_code == 404
    r = httpx.get(f"{dev_cluster.addr}/v1/node/x/allocations", params={"index": "abc"})
    assert r.status_code == 400 and r.json()["problems"][0]["path"] == "index"
    r = httpx.post(f"{dev_cluster.addr}/v1/nodes/register", json={"id": 5})
    assert r.status_code == 400


def test_check_index_guards_against_a_change_in_between(dev_cluster: DevCluster) -> None:
    job = _web()
    plan = dev_cluster.api("POST", "/v1/jobs/plan", json={"job": job})
    assert plan["index"] == 0 and plan["create"] == 3
    ok = httpx.post(f"{dev_cluster.addr}/v1/jobs", json={"job": job, "check_index": plan["index"]})
    assert ok.status_code == 200, ok.text
    plan2 = dev_cluster.api("POST", "/v1/jobs/plan", json={"job": {**job, "meta": {"v": "2"}}})
    assert plan2["changed"] and plan2["index"] == ok.json()["index"]
    # Someone else changes the job between plan and run:
    job["groups"][0]["count"] = 2
    dev_cluster.api("POST", "/v1/jobs", json={"job": job})
    late = httpx.post(
        f"{dev_cluster.addr}/v1/jobs",
        json={"job": {**job, "meta": {"v": "2"}}, "check_index": plan2["index"]},
    )
    assert late.status_code == 409
    assert "changed since the plan" in late.json()["error"]


def test_event_stream_follows_new_events(dev_cluster: DevCluster) -> None:
    seen: list[dict] = []

    def follow() -> None:
        with httpx.stream(
            "GET",
            f"{dev_cluster.addr}/v1/events",
            params={"follow": "true", "limit": 0},
            timeout=15,
        ) as r:
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
