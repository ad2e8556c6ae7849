"""Namespaces from the CLI: `-n/--namespace`, PODIUM_NAMESPACE, and `job run` following the
namespace a job file names (one podium dev for the module)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from integration.cluster import DevCluster
from support.cli import cli_at

pytestmark = pytest.mark.integration

JOB = """\
name: nsjob
namespace: team
groups:
  - name: g
    update: {{min_healthy_time: 0s}}
    tasks:
      - name: t
        config: {{command: sleep, args: ["{secs}"]}}
        resources: {{cpu: 10, memory: 16}}
"""


@pytest.fixture(scope="module")
def cluster(module_cluster: DevCluster) -> DevCluster:
    return module_cluster


def cli(c: DevCluster, *args: str, **env: str) -> tuple[int, str]:
    result = cli_at(c.addr, *args, **{**c.tls_env(), **env})
    return result.exit_code, result.output


def test_job_run_follows_the_files_namespace_and_n_reaches_it(
    cluster: DevCluster, tmp_path: Path
) -> None:
    path = tmp_path / "ns.yaml"
    path.write_text(JOB.format(secs=600))
    code, out = cli(cluster, "job", "run", str(path), "--timeout", "30")
    assert code == 0, out
    assert "healthy" in out and "namespace 'default'" not in out

    code, out = cli(cluster, "job", "status", "nsjob")
    assert code == 1 and "no job 'nsjob' in namespace 'default'" in out
    code, out = cli(cluster, "job", "status", "nsjob", "-n", "team")
    assert code == 0 and "namespace=team" in out, out
    code, out = cli(cluster, "job", "status", "nsjob", PODIUM_NAMESPACE="team")
    assert code == 0 and "namespace=team" in out, out

    # Listings: one namespace with -n, every namespace without.
    code, out = cli(cluster, "job", "status", "--json", "-n", "default")
    assert code == 0 and json.loads(out) == []
    code, out = cli(cluster, "job", "status", "--json")
    assert [(j["namespace"], j["name"]) for j in json.loads(out)] == [("team", "nsjob")]

    code, out = cli(cluster, "job", "history", "nsjob", "--namespace", "team")
    assert code == 0 and "version 0" in out
    code, out = cli(cluster, "deployment", "list", "-n", "team")
    assert code == 0

    # A file's namespace and a different -n contradict each other: said, not guessed.
    code, out = cli(cluster, "job", "plan", str(path), "-n", "other")
    assert code != 0 and "team" in out and "other" in out

    code, out = cli(cluster, "job", "stop", "nsjob", "-n", "team", "--timeout", "30")
    assert code == 0, out
    code, out = cli(cluster, "job", "status", "nsjob", "-n", "team", "--json")
    assert json.loads(out)["status"] == "dead"


def test_a_file_without_namespace_runs_where_n_says(cluster: DevCluster, tmp_path: Path) -> None:
    path = tmp_path / "plain.yaml"
    path.write_text(JOB.format(secs=600).replace("namespace: team\n", "").replace("nsjob", "plain"))
    code, out = cli(cluster, "job", "run", "--detach", str(path), PODIUM_NAMESPACE="blue")
    assert code == 0, out
    code, out = cli(cluster, "job", "status", "plain", "-n", "blue", "--json")
    assert code == 0 and json.loads(out)["job"]["namespace"] == "blue"
    code, out = cli(cluster, "job", "stop", "plain", "-n", "blue", "--purge", "--detach")
    assert code == 0, out
