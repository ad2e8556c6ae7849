"""The CLI a newcomer uses in the first hour, against one real `podium dev` for the module:
job list/inspect, alloc list, node purge, --json on mutating commands, readable plans, logs
counted in lines with both streams shown."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest
import yaml

from integration.cluster import ROOT, DevCluster, wait_until
from support.cli import cli_at

pytestmark = pytest.mark.integration
WEB = str(ROOT / "examples" / "web.yaml")

CHATTY = """\
name: chatty
groups:
  - name: g
    update: {min_healthy_time: 0s}
    tasks:
      - name: t
        config:
          command: sh
          args: ["-c", "for i in $(seq 1 50); do echo out $i; done; echo oops >&2; exec sleep 600"]
        resources: {cpu: 10, memory: 16}
"""


@pytest.fixture(scope="module")
def cluster(module_cluster: DevCluster) -> DevCluster:
    return module_cluster


def cli(c: DevCluster, *args: str, input: str | None = None) -> tuple[int, str, str]:
    result = cli_at(c.addr, *args, input=input, **c.tls_env())
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def chatty(cluster: DevCluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("chatty") / "chatty.yaml"
    path.write_text(CHATTY)
    code, out, err = cli(cluster, "job", "run", str(path), "--timeout", "30")
    assert code == 0, out + err
    return str(path)


def test_plan_of_a_new_job_shows_the_group_as_yaml(cluster: DevCluster, tmp_path: Path) -> None:
    path = tmp_path / "fresh.yaml"
    path.write_text(CHATTY.replace("chatty", "fresh"))
    code, out, _ = cli(cluster, "job", "plan", str(path))
    assert code == 0, out
    assert "new job 'fresh'" in out
    assert "{'name':" not in out and "'count':" not in out  # no Python dict
    assert re.search(r"^\+ groups\[0\]:$", out, re.M) or re.search(r"^\+ groups:$", out, re.M), out
    assert re.search(r"^\s+count: 1$", out, re.M), out
    assert "scheduler: 1 to create" in out


def test_job_list_and_inspect_give_back_a_runnable_spec(cluster: DevCluster, chatty: str) -> None:
    code, out, _ = cli(cluster, "job", "list")
    assert code == 0 and re.search(r"^chatty\s+default\s+service\s+0\s+running", out, re.M), out
    code, listed, _ = cli(cluster, "job", "list", "--json")
    assert [j["name"] for j in json.loads(listed)] == ["chatty"]

    code, spec, _ = cli(cluster, "job", "inspect", "chatty")
    assert code == 0, spec
    doc = yaml.safe_load(spec)
    assert doc["name"] == "chatty" and doc["groups"][0]["update"]["min_healthy_time"] == 0
    assert "version" not in doc and "submit_time" not in doc
    # Ready to run again: the same spec is no change at all.
    code, out, err = cli(cluster, "job", "run", "-", "--detach", input=spec)
    assert code == 0 and "unchanged" in out, out + err
    code, out, _ = cli(cluster, "job", "inspect", "chatty", "--version", "0", "--json")
    assert json.loads(out)["groups"][0]["name"] == "g"


def test_alloc_list_and_mutating_commands_print_json(cluster: DevCluster, chatty: str) -> None:
    code, out, _ = cli(cluster, "alloc", "list", "--job", "chatty", "--json")
    (alloc,) = [a for a in json.loads(out) if a["desired_status"] == "run"]
    code, out, _ = cli(cluster, "alloc", "list")
    assert code == 0 and "chatty.g[0]" in out
    code, out, _ = cli(cluster, "alloc", "list", "-n", "nowhere")
    assert code == 0 and "no allocations" in out

    code, out, _ = cli(cluster, "alloc", "restart", alloc["id"], "--json")
    assert code == 0 and json.loads(out)["id"] == alloc["id"]
    code, out, _ = cli(cluster, "job", "scale", "chatty", "g", "1", "--json")
    assert code == 0 and json.loads(out)["job"]["groups"][0]["count"] == 1
    code, out, _ = cli(cluster, "node", "eligibility", "dev", "--enable", "--json")
    assert code == 0 and json.loads(out)["eligible"] is True


def test_logs_count_lines_and_show_both_streams(cluster: DevCluster, chatty: str) -> None:
    _, out, _ = cli(cluster, "alloc", "list", "--job", "chatty", "--json")
    alloc = next(a for a in json.loads(out) if a["client_status"] == "running")

    def both() -> str:
        _, out, _ = cli(cluster, "alloc", "logs", alloc["id"], "--tail", "1")
        return out if "oops" in out else ""

    # (The task may have run more than once: a restart appends to the same files.)
    out = wait_until(both, timeout=10, what="both streams logged")
    assert out == "==> stdout <==\nout 50\n==> stderr <==\noops\n", out
    _, out, _ = cli(cluster, "alloc", "logs", alloc["id"], "--stdout", "--tail", "3")
    assert out == "out 48\nout 49\nout 50\n"
    _, out, _ = cli(cluster, "alloc", "logs", alloc["id"], "--stderr")
    assert out and set(out.splitlines()) == {"oops"}


def test_the_examples_logs_show_its_requests(cluster: DevCluster) -> None:
    code, out, err = cli(cluster, "job", "run", WEB, "--timeout", "60")
    assert code == 0, out + err
    code, out, _ = cli(cluster, "alloc", "list", "--job", "web", "--json")
    alloc = next(a for a in json.loads(out) if a["client_status"] == "running")
    assert httpx.get(f"http://127.0.0.1:{alloc['ports']['http']}/first-hour").status_code == 404

    def logged() -> str:
        _, out, _ = cli(cluster, "alloc", "logs", alloc["id"])
        return out if "GET /first-hour" in out else ""

    wait_until(logged, timeout=10, what="the request in `alloc logs`")
    code, _, _ = cli(cluster, "job", "stop", "web", "--purge", "--detach")
    assert code == 0


def test_node_purge_forgets_a_down_node_and_refuses_a_ready_one(
    cluster: DevCluster, tmp_path: Path
) -> None:
    node = {"id": "ghost-node-1", "name": "ghost", "address": "127.0.0.1"}
    token = cluster.cli("server", "join-token", check=True).stdout.strip()
    ghost = cluster.node_identity(node["id"], token, tmp_path)  # the node's own certificate
    with httpx.Client(verify=ghost, timeout=10) as as_ghost:
        assert as_ghost.post(f"{cluster.addr}/v1/nodes/register", json=node).status_code == 200
    code, out, err = cli(cluster, "node", "purge", "ghost")
    assert code == 1 and "is ready" in err, out + err

    def down() -> bool:
        return bool(cluster.api("GET", "/v1/node/ghost-node-1")["status"] == "down")

    wait_until(down, timeout=15, what="the silent node to be down")
    code, out, err = cli(cluster, "node", "purge", "ghost", "--json")
    assert code == 0, out + err
    assert json.loads(out)["name"] == "ghost" and json.loads(out)["purged"] is True
    code, out, _ = cli(cluster, "node", "status", "--json")
    assert [n["name"] for n in json.loads(out)] == ["dev"]
    events = cluster.api("GET", "/v1/events", params={"node": "ghost-node-1"})
    assert any(e["type"] == "node.purged" for e in events)
    # Its certificate is revoked at once: it can neither come back nor renew.
    with httpx.Client(verify=ghost, timeout=10) as as_ghost:
        back = as_ghost.post(f"{cluster.addr}/v1/nodes/register", json=node)
        assert back.status_code in (401, 403) and "revoked" in back.text, back.text
        beat = as_ghost.post(f"{cluster.addr}/v1/node/ghost-node-1/heartbeat")
        assert beat.status_code in (401, 403), beat.text
        renew = as_ghost.post(f"{cluster.addr}/v1/tls/renew", json={"csr": "x"})
        assert renew.status_code in (401, 403), renew.text


def test_job_stop_json_prints_the_stopped_job(cluster: DevCluster, chatty: str) -> None:
    t0 = time.monotonic()
    code, out, err = cli(cluster, "job", "stop", "chatty", "--json", "--timeout", "30")
    assert code == 0, out + err
    stopped = json.loads(out)  # stdout is one JSON document; progress went to stderr
    assert stopped["job"]["stop"] is True and stopped["status"] == "dead"
    assert "stopped" in err
    assert time.monotonic() - t0 < 30


def test_a_short_prefix_of_a_shown_alloc_id_is_enough(cluster: DevCluster, tmp_path: Path) -> None:
    path = tmp_path / "many.yaml"
    path.write_text(
        CHATTY.replace("chatty", "many").replace("  - name: g\n", "  - name: g\n    count: 6\n")
    )
    code, out, err = cli(cluster, "job", "run", str(path), "--timeout", "60")
    assert code == 0, out + err
    code, out, _ = cli(cluster, "job", "status", "many")
    shown = re.findall(r"^(\S+)\s+many\.g\[\d\]", out, re.M)
    assert len(shown) == 6, out
    assert len({s[:4] for s in shown}) == 6, shown  # copies differ within 4 characters
    named = set()
    for s in shown:
        code, out, err = cli(cluster, "alloc", "status", s[:4], "--json")
        assert code == 0, out + err
        named.add(json.loads(out)["id"])
    assert named == set(_ids(cluster, "many"))  # each prefix named its own copy
    cli(cluster, "job", "stop", "many", "--purge", "--detach")


def _ids(c: DevCluster, job: str) -> list[str]:
    return [a["id"] for a in c.api("GET", "/v1/allocations", params={"job": job})]


def test_job_run_of_a_batch_job_counts_runs_not_health(cluster: DevCluster) -> None:
    """`job run examples/batch.yaml` said "2 healthy (0 for min_healthy_time)": health and
    min_healthy_time are for services; a batch job's progress is its copies completing."""
    code, out, err = cli(cluster, "job", "run", str(ROOT / "examples" / "batch.yaml"))
    assert code == 0, out + err
    assert "healthy" not in out + err, out + err
    assert "job 'hello' complete: 2/2 placed, 0 running, 2 complete" in out, out
    cli(cluster, "job", "stop", "hello", "--purge")
