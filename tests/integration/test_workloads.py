"""Workloads on a real `podium dev` cluster: batch with parallelism, dispatch with a
payload, preemption on a full node, and cron runs across a server restart.

The literal acceptance run (`* * * * *` for 3 minutes, a restart in the middle) is
`PODIUM_CRON_MINUTES=3 pytest tests/integration/test_workloads.py -k literal`; the suite
runs the same shape on a seconds schedule."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from integration.cluster import DevCluster, wait_until

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
    wait_until(lambda: Path(f"{out}-acme").exists(), timeout=30, what="the payload file")
    assert Path(f"{out}-acme").read_bytes() == payload.read_bytes()
    wait_until(
        lambda: dev_cluster.api("GET", f"/v1/job/{resp['name']}")["status"] == "complete",
        timeout=30,
        what="the dispatched run to complete",
    )
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
    assert "would preempt 1 allocation(s)" in shown and f"{newest_low['id'][:8]}" in shown
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


def cron_job(name: str, schedule: str, out: Path, **periodic: Any) -> dict[str, Any]:
    job = script_job(name, f'echo "$PODIUM_JOB" >> {out}', type="cron")
    job["periodic"] = {"schedule": schedule, **periodic}
    return job


def launched(dev: DevCluster, name: str) -> list[int]:
    kids = dev.api("GET", f"/v1/job/{name}")["children"]
    return sorted(int(k["name"].rpartition("-")[2]) for k in kids)


def check_every_run_once(times: list[int], step: int, out: Path, name: str) -> None:
    assert times == list(range(times[0], times[-1] + 1, step)), f"gaps or repeats: {times}"
    ran = out.read_text().split()
    assert sorted(ran) == sorted(set(ran)), "a run's task ran twice"
    assert len(ran) >= len(times) - 1  # the newest may still be starting
    assert all(r.startswith(f"{name}/periodic-") for r in ran)


def test_cron_runs_each_time_once_across_a_server_kill(
    dev_cluster: DevCluster, tmp_path: Path
) -> None:
    out = tmp_path / "ran"
    job = cron_job("tick", "*/2 * * * * *", out, successful_history=100)
    dev_cluster.api("POST", "/v1/jobs", json={"job": job})
    wait_until(lambda: len(launched(dev_cluster, "tick")) >= 3, timeout=20, what="3 runs")
    dev_cluster.kill9()
    time.sleep(1.0)  # at least one run falls due while no server runs
    dev_cluster.start()
    before = launched(dev_cluster, "tick")
    wait_until(
        lambda: len(launched(dev_cluster, "tick")) >= len(before) + 3, timeout=20, what="3 more"
    )
    dev_cluster.api("DELETE", "/v1/job/tick")
    check_every_run_once(launched(dev_cluster, "tick"), 2, out, "tick")
    status = dev_cluster.cli("job", "status", "tick", check=True).stdout
    assert "tick/periodic-" in status


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
    forced = dev_cluster.cli_json("job", "periodic", "force", "slow")
    assert forced["name"].startswith("slow/periodic-")
    dev_cluster.api("DELETE", "/v1/job/slow")
    kids = dev_cluster.api("GET", "/v1/job/slow")["children"]
    assert forced["name"] in [k["name"] for k in kids]


@pytest.mark.skipif(
    not os.environ.get("PODIUM_CRON_MINUTES"), reason="the literal minutes-long run: on demand"
)
def test_cron_literal_every_minute_with_a_restart(tmp_path: Path) -> None:
    """`* * * * *` for PODIUM_CRON_MINUTES minutes; the server is killed 3 s before a
    minute and started 8 s after it, so that minute's run falls due while none runs."""
    minutes = int(os.environ["PODIUM_CRON_MINUTES"])
    dev = DevCluster(tmp_path / "dev").start()
    try:
        out = tmp_path / "ran"
        dev.api("POST", "/v1/jobs", json={"job": cron_job("minutely", "* * * * *", out)})
        started = time.time()
        wait_until(lambda: launched(dev, "minutely"), timeout=70, what="the first run")
        time.sleep(57 - time.time() % 60 if time.time() % 60 < 57 else 117 - time.time() % 60)
        dev.kill9()
        missed = int(time.time() // 60 * 60 + 60)  # the minute due while it is down
        time.sleep(11)
        dev.start()
        time.sleep(max(0.0, started + minutes * 60 + 5 - time.time()))
        times = launched(dev, "minutely")
        print(f"runs launched for {[time.strftime('%H:%M:%S', time.gmtime(t)) for t in times]}")
        assert missed in times, f"the run due at {missed} while the server was down is lost"
        assert len(times) >= minutes
        check_every_run_once(times, 60, out, "minutely")
    finally:
        dev.stop()
        dev.kill_leftovers()
