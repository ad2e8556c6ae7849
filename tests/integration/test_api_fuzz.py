"""200 broken job specs against the real API: each a 4xx naming the field, never a 5xx."""

from __future__ import annotations

import copy
import json
import random

import httpx
import pytest
import yaml

from integration.cluster import ROOT, DevCluster
from podium.errors import ValidationError
from podium.model import spec as jobspec
from support.mutate import mutate

pytestmark = pytest.mark.integration


def _invalid_mutations(n: int, seed: int = 1234) -> list[object]:
    base = yaml.safe_load((ROOT / "examples" / "web.yaml").read_text())
    rng = random.Random(seed)
    out: list[object] = []
    while len(out) < n:
        doc = mutate(copy.deepcopy(base), rng)
        try:
            jobspec.validate(jobspec.canonicalize(doc))  # type: ignore[arg-type]
        except ValidationError:
            out.append(doc)
        except Exception:  # the unit fuzz test owns this case; here we need invalid docs
            out.append(doc)
    return out


def test_mutated_specs_get_4xx_naming_the_field(dev_cluster: DevCluster) -> None:
    docs = _invalid_mutations(200)
    statuses: dict[int, int] = {}
    with httpx.Client(base_url=dev_cluster.addr, timeout=10) as http:
        for i, doc in enumerate(docs):
            endpoint = ("/v1/jobs", "/v1/jobs/plan", "/v1/jobs/validate")[i % 3]
            # json.dumps writes NaN/Infinity tokens as they are: the server must refuse those too.
            body = json.dumps({"job": doc}).encode()
            r = http.post(endpoint, content=body, headers={"content-type": "application/json"})
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            assert 400 <= r.status_code < 500, (r.status_code, r.text, doc)
            body = r.json()
            assert body["error"]
            problems = body.get("problems", [])
            assert problems, body
            assert all(p["path"] or p["message"] for p in problems), body
        # Raw garbage bodies, too.
        for raw in (b"", b"{", b"[1,2]", b"null", b'"x"', b"\xff\xfe", b"{" * 10000):
            r = http.post("/v1/jobs", content=raw, headers={"content-type": "application/json"})
            assert 400 <= r.status_code < 500, (raw[:20], r.status_code, r.text)
    assert set(statuses) <= set(range(400, 500))
    # Server and agent still up: status answers and the node is still ready.
    assert dev_cluster.api("GET", "/v1/status")["jobs"] == 0
    assert [n["status"] for n in dev_cluster.api("GET", "/v1/nodes")] == ["ready"]
    assert dev_cluster.proc is not None and dev_cluster.proc.poll() is None
