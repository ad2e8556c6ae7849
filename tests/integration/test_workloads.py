"""Workloads on a real `podium dev` cluster: batch with parallelism, dispatch with a
payload, preemption on a full node, cron concurrency and `periodic force`.

Cron runs across a server kill and a leader kill are in test_cron_failover.py."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from integration.cluster import DevCluster, wait_until
from podium.runtime.ids import short_alloc

pytestmark = pytest.mark.integration


def script_job(name: str, script: str, **job: Any) -> dict[str, Any]:
    group = job.pop("group", {})
    return {
        "name": name,
        "type": "batch",
        **job,
        "groups": [
            {
                "name": "g",
                **group,
                "restart": {"attempts": 0},
                "tasks": [
                    {
                        "name": "t",
                        "config": {"command": "/bin/sh", "args": ["-c", script]},
                        "resources": {"cpu": group.pop("cpu", 20), "memory": 16},
                    }
                ],
            }
        ],
    }


def test_batch_runs_completions_at_most_parallelism_at_once(
    dev_cluster: DevCluster, tmp_path: Path
) -> None:
    out = tmp_path / "runs"
    out.mkdir()
    # Each copy records when it ran, by index: start, a short pause, end.
    script = (
        f'echo "$(date +%s.%N) start" >> {out}/$PODIUM_ALLOC_INDEX; sleep 0.4; '
        f'echo "$(date +%s.%N) end" >> {out}/$PODIUM_ALLOC_INDEX'
    )
    job = script_job("crunch", script, group={"completions": 10, "parallelism": 3})
    dev_cluster.api("POST", "/v1/jobs", json={"job": job})
    s = wait_until(
        lambda: (s := dev_cluster.api("GET", "/v1/job/crunch"))["status"] == "complete" and s,
        timeout=60,
        what="the batch job to complete",
    )
    assert s["groups"]["g"]["progress"] == "10/10 complete, 0 running, 0 failed"
    assert sorted(int(p.name) for p in out.iterdir()) == list(range(10))
    spans = []
    for p in out.iterdir():
        lines = [ln.split() for ln in p.read_text().splitlines()]
        assert [w for _, w in lines] == ["start", "end"], f"index {p.name} ran once: {lines}"
        spans.append((float(lines[0][0]), float(lines[1][0])))
    most = max(sum(1 for a, b in spans if a <= t < b) for t, _ in spans)
    assert most <= 3, f"{most} copies ran at once"
    assert most >= 2, "copies ran one at a time: parallelism had no effect"
    status = dev_cluster.cli("job", "status", "crunch", check=True).stdout
    assert "progress g: 10/10 complete, 0 running, 0 failed, at most 3 at once" in status


def test_dispatch_delivers_meta_and_payload_to_the_task(
    dev_cluster: DevCluster, tmp_path: Path
) -> None:
    out = tmp_path / "got"
    script = f'cp "$PODIUM_PAYLOAD_FILE" {out}-$PODIUM_META_CUSTOMER'
    job = script_job(
        "render", script, parameterized={"payload": "required", "meta_required": ["customer"]}
    )
    job_file = tmp_path / "render.json"
    job_file.write_text(json.dumps(job))
    ran = dev_cluster.cli("job", "run", str(job_file), check=True, timeout=20)
    assert "runs start with `podium job dispatch render`" in ran.stdout
    payload = tmp_path / "input.bin"
    payload.write_bytes(bytes(range(256)) * 8)
    refused = dev_cluster.cli("job", "dispatch", "render", str(payload))
    assert refused.returncode == 1 and "meta.customer" in refused.stderr
    too_big = tmp_path / "big.bin"
    too_big.write_bytes(b"x" * (16 * 1024 + 1))
    refused = dev_cluster.cli("job", "dispatch", "render", "--meta", "customer=a", str(too_big))
    assert refused.returncode == 1 and "at most 16384 bytes" in refused.stderr
    resp = dev_cluster.cli_json(
        "job", "dispatch", "render", "--meta", "customer=acme", str(payload)
    )
    assert resp["name"].startswith("render/dispatch-") and resp["parent"] == "render"
    wait_until(
        lambda: dev_cluster.api("GET", f"/v1/job/{resp['name']}")["status"] == "complete",
        timeout=30,
        what="the dispatched run to complete",
    )
    assert Path(f"{out}-acme").read_bytes() == payload.read_bytes()  # copied by the task
    parent = dev_cluster.api("GET", "/v1/job/render")
    assert [k["name"] for k in parent["children"]] == [resp["name"]]
    assert not parent["allocations"], "a parameterized job runs only through dispatch"


def test_a_priority_90_job_preempts_what_it_needs_and_the_copies_come_back(
    dev_cluster: DevCluster, tmp_path: Path
) -> None:
    [node] = dev_cluster.api("GET", "/v1/nodes")
    quarter = node["resources"]["cpu"] // 4
    sleeper = "exec sleep 600"
    for name, prio in (("low", 20), ("mid", 50)):
        job = script_job(name, sleeper, type="service", priority=prio)
        job["groups"][0] |= {"count": 2}
        job["groups"][0]["tasks"][0]["resources"]["cpu"] = quarter
        dev_cluster.api("POST", "/v1/jobs", json={"job": job})

    def live() -> list[dict[str, Any]]:
        allocs = dev_cluster.api("GET", "/v1/allocations")
        return [a for a in allocs if a["client_status"] == "running"]

    running = wait_until(lambda: len(x := live()) == 4 and x, timeout=30, what="a full node")
    newest_low = max(
        (a for a in running if a["name"].startswith("low.")), key=lambda a: a["create_time"]
    )
    big = script_job("big", sleeper, type="service", priority=90)
    big["groups"][0]["tasks"][0]["resources"]["cpu"] = quarter
    plan = dev_cluster.api("POST", "/v1/jobs/plan", json={"job": big})
    assert [(p["alloc_id"], p["priority"]) for p in plan["preemptions"]] == [(newest_low["id"], 20)]
    big_file = tmp_path / "big.json"
    big_file.write_text(json.dumps(big))
    shown = dev_cluster.cli("job", "plan", str(big_file), check=True).stdout
    assert "would preempt 1 allocation(s)" in shown and short_alloc(newest_low["id"]) in shown
    dev_cluster.api("POST", "/v1/jobs", json={"job": big})
    wait_until(
        lambda: dev_cluster.api("GET", "/v1/job/big")["groups"]["g"]["running"] == 1,
        timeout=30,
        what="the big job to run",
    )
    allocs = {a["id"]: a for a in dev_cluster.api("GET", "/v1/allocations")}
    stopped = [a for a in allocs.values() if a["desired_status"] == "stop"]
    assert [a["id"] for a in stopped] == [newest_low["id"]], "exactly one copy, the newest low"
    assert stopped[0]["desired_reason"].startswith("preempted by default/big (priority 90)")
    events = dev_cluster.api("GET", "/v1/events", params={"limit": 500})
    kinds = {e["type"]: e["message"] for e in events}
    assert "priority 20" in kinds["alloc.preempted"] and "default/big" in kinds["alloc.preempted"]
    assert "low.g[" in kinds["job.preempted"]
    assert dev_cluster.api("GET", "/v1/job/low")["placement_failures"], "it waits for room"
    dev_cluster.api("DELETE", "/v1/job/big")
    wait_until(
        lambda: dev_cluster.api("GET", "/v1/job/low")["groups"]["g"]["running"] == 2,
        timeout=30,
        what="the preempted copy to be placed again",
    )


def test_cron_forbid_skips_a_start_while_the_last_run_runs(
    dev_cluster: DevCluster, tmp_path: Path
) -> None:
    job = script_job("slow", "sleep 5", type="cron")
    job["periodic"] = {"schedule": "*/2 * * * * *", "concurrency": "forbid"}
    job_file = tmp_path / "slow.json"
    job_file.write_text(json.dumps(job))
    ran = dev_cluster.cli("job", "run", str(job_file), check=True, timeout=20)
    assert "next run due" in ran.stdout

    def skipped() -> list[dict[str, Any]]:
        evs = dev_cluster.api("GET", "/v1/events", params={"job": "slow", "limit": 500})
        return [e for e in evs if e["type"] == "periodic.skipped"]

    found = wait_until(lambda: skipped(), timeout=20, what="a skipped start")
    assert "still running (concurrency forbid)" in found[0]["message"]

    def scheduled() -> list[int]:
        kids = dev_cluster.api("GET", "/v1/job/slow")["children"]
        return sorted(int(k["name"].rpartition("-")[2]) for k in kids)

    wait_until(lambda: len(scheduled()) >= 2, timeout=20, what="a second run")
    forced = dev_cluster.cli_json("job", "periodic", "force", "slow")
    assert forced["name"].startswith("slow/periodic-")
    dev_cluster.api("DELETE", "/v1/job/slow")
    kids = [k["name"] for k in dev_cluster.api("GET", "/v1/job/slow")["children"]]
    assert forced["name"] in kids
    # Each scheduled run lasts 5 s: with forbid, the next starts only after it ended.
    due = sorted(int(k.rpartition("-")[2]) for k in kids if k != forced["name"])
    assert len(due) >= 2 and all(b - a >= 6 for a, b in itertools.pairwise(due)), due
