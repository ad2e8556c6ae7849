"""The spec fuzz, through the CLI: random bytes and mutated job files given to `job validate`,
`job plan` and `job run` against one real `podium dev`. Each ends with a message and an exit
code, never a traceback, and the server never answers 5xx.

The CLI runs in this process (click's runner) so 1,800 commands take seconds; every HTTP
answer it gets passes through `_check`, which the test wraps to count the 5xx ones.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from integration.cluster import DevCluster
from podium.api import client as api_client
from support.cli import no_traceback, run_cli
from support.mutate import mutate, valid_job

pytestmark = pytest.mark.integration

COMMANDS = (("validate",), ("plan",), ("run", "--detach"))


@pytest.fixture(scope="module")
def cluster(module_cluster: DevCluster) -> DevCluster:
    return module_cluster


@pytest.fixture
def five_hundreds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real = api_client._check

    def counting(resp: httpx.Response, **kw: Any) -> Any:
        if resp.status_code >= 500:
            seen.append(f"{resp.request.method} {resp.request.url}: {resp.status_code} {resp.text}")
        return real(resp, **kw)

    monkeypatch.setattr(api_client, "_check", counting)
    return seen


def cli_base_job() -> dict[str, Any]:
    """The fuzz's valid job, made harmless to run: nothing fits the job-level constraint
    unless a mutation removes it, and then its tasks only sleep a while."""
    doc = valid_job()
    doc["constraints"] = [{"attribute": "${node.datacenter}", "value": "nowhere"}]
    for group in doc["groups"]:
        for task in group["tasks"]:
            task["config"] = {"command": "sleep", "args": ["30"]}
    return doc


def random_bytes(seed: int) -> bytes:
    """Pure noise, or noise spliced into a valid job file (which gets further in)."""
    rng = random.Random(seed)
    noise = rng.randbytes(rng.choice((0, 1, 7, 64, 300)))
    if seed % 2 == 0:
        return noise
    text = yaml.safe_dump(cli_base_job()).encode()
    at = rng.randrange(len(text))
    return text[:at] + noise + text[at + rng.choice((0, 1, 5)) :]


def write_doc(path: Path, doc: dict[str, Any], seed: int) -> Path:
    if seed % 3 == 0:
        path = path.with_suffix(".json")
        path.write_text(json.dumps(doc))  # NaN and Infinity as JSON extensions, on purpose
        return path
    try:
        text = yaml.safe_dump(doc, allow_unicode=seed % 2 == 0)
    except (yaml.YAMLError, UnicodeError):
        text = json.dumps(doc)  # lone surrogates: JSON escapes them, a YAML file could not
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    return path


def run_all(c: DevCluster, path: Path, what: str) -> list[int]:
    codes = []
    for args in COMMANDS:
        result = run_cli("job", *args, str(path), env={"PODIUM_ADDR": c.addr, **c.tls_env()})
        no_traceback(result, f"{what}: job {' '.join(args)}")
        assert "server error 5" not in result.output, f"{what}: {result.output}"
        codes.append(result.exit_code)
    return codes


def test_300_random_byte_strings(
    cluster: DevCluster, tmp_path: Path, five_hundreds: list[str]
) -> None:
    refused = 0
    for seed in range(300):
        path = tmp_path / f"bytes-{seed}.yaml"
        path.write_bytes(random_bytes(seed))
        codes = run_all(cluster, path, f"bytes seed {seed}")
        refused += codes[0] != 0
        assert len(set(codes)) == 1 or codes[0] == 0, f"seed {seed}: {codes}"
    assert not five_hundreds, five_hundreds[:5]
    assert refused > 250  # the noise really breaks files
    assert cluster.api("GET", "/v1/status")["leader"]


def test_300_mutated_job_files(
    cluster: DevCluster, tmp_path: Path, five_hundreds: list[str]
) -> None:
    outcomes = {"valid": 0, "invalid": 0}
    for seed in range(300):
        doc = mutate(cli_base_job(), random.Random(seed))
        path = write_doc(tmp_path / f"job-{seed}", doc, seed)
        validate, plan, run = run_all(cluster, path, f"mutation seed {seed}")
        outcomes["valid" if validate == 0 else "invalid"] += 1
        if validate != 0:
            # What validate refuses, plan and run refuse before sending anything.
            assert plan == run == 1, f"seed {seed}: validate {validate}, plan {plan}, run {run}"
    assert not five_hundreds, five_hundreds[:5]
    assert outcomes["valid"] > 20 and outcomes["invalid"] > 100, outcomes
    assert cluster.api("GET", "/v1/status")["leader"]
    for job in cluster.api("GET", "/v1/jobs"):
        cluster.api(
            "DELETE",
            f"/v1/job/{job['name']}",
            params={"purge": "true", "namespace": job["namespace"]},
        )
    assert "Traceback" not in cluster.logs()
