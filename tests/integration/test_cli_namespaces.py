"""Namespaces from the CLI: `podium namespace create|list|status|delete`, `-n/--namespace`,
PODIUM_NAMESPACE, and `job run` following the namespace a job file names (one podium dev
for the module)."""

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
    for ns in ("team", "blue"):
        code, out = cli(module_cluster, "namespace", "create", ns)
        assert code == 0 or "exists already" in out, out
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
    code, out = cli(cluster, "job", "status", "--json", "-n", "*")
    assert [(j["namespace"], j["name"]) for j in json.loads(out)] == [("team", "nsjob")], out

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


def test_namespaces_are_made_listed_and_deleted_only_when_empty(
    cluster: DevCluster, tmp_path: Path
) -> None:
    path = tmp_path / "ns.yaml"
    path.write_text(JOB.format(secs=600).replace("team", "ghost").replace("nsjob", "haunt"))
    code, out = cli(cluster, "job", "run", "--detach", str(path))
    assert code == 1 and "namespace 'ghost' does not exist" in out, out
    code, out = cli(cluster, "namespace", "create", "ghost", "--description", "boo", "--json")
    assert code == 0 and json.loads(out)["name"] == "ghost", out
    code, out = cli(cluster, "namespace", "create", "ghost")
    assert code == 1 and "exists already" in out, out
    code, out = cli(cluster, "namespace", "create", "Bad_Name")
    assert code == 1 and "name" in out, out
    code, out = cli(cluster, "job", "run", "--detach", str(path))
    assert code == 0, out
    code, out = cli(cluster, "namespace", "list", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert {"default", "team", "blue", "ghost"} <= set(rows), rows
    assert rows["ghost"]["jobs"] == 1 and rows["ghost"]["description"] == "boo"
    code, out = cli(cluster, "namespace", "status", "ghost", "--json")
    assert code == 0 and json.loads(out)["jobs"] == 1, out
    code, out = cli(cluster, "namespace", "delete", "ghost")
    assert code == 1 and "holds 1 job" in out and "haunt" in out, out
    code, out = cli(cluster, "job", "stop", "haunt", "-n", "ghost", "--purge", "--detach")
    assert code == 0, out
    # A config (or secret) left behind would be read by the next namespace of that name.
    code, out = cli(cluster, "config", "put", "-n", "nowhere", "app/x", "k=v")
    assert code == 1 and "namespace 'nowhere' does not exist" in out, out
    code, out = cli(cluster, "config", "put", "-n", "ghost", "app/x", "k=v")
    assert code == 0, out
    code, out = cli(cluster, "namespace", "delete", "ghost")
    assert code == 1 and "holds 1 config(s) (app/x)" in out, out
    code, out = cli(cluster, "config", "delete", "-n", "ghost", "app/x")
    assert code == 0, out
    code, out = cli(cluster, "namespace", "delete", "ghost", "--json")
    assert code == 0 and json.loads(out) == {"deleted": "ghost"}, out
    code, out = cli(cluster, "namespace", "status", "ghost")
    assert code == 1 and "no namespace 'ghost'" in out, out
    code, out = cli(cluster, "namespace", "delete", "default")
    assert code == 1 and "cannot be deleted" in out, out
