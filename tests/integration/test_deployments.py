"""Deployments end to end, with real processes behind real health checks: a rolling
update, a canary promoted, a bad version rolled back on its own, blue-green, and a
plan that matches what `job run` then does."""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration.cluster import DevCluster, wait_rounds, wait_until

pytestmark = pytest.mark.integration
SERVER = Path(__file__).with_name("versioned_server.py")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    c = DevCluster(tmp_path_factory.mktemp("deploy") / "dev").start()
    try:
        yield c
    finally:
        c.stop()
        c.kill_leftovers()


def job_file(
    tmp: Path,
    name: str,
    version: str,
    *,
    count: int = 4,
    healthy: bool = True,
    defaults: bool = False,
    **update: Any,
) -> str:
    """With `defaults`, the update policy and the check's timing are podium's defaults."""
    strategy = {"max_parallel": 1, "min_healthy_time": "1s", "healthy_deadline": "6s"} | update
    check: dict[str, Any] = {"type": "http", "path": "/health"}
    if not defaults:
        check |= {"interval": "0.3s", "timeout": "0.3s"}
    spec = {
        "name": name,
        "groups": [
            {
                "name": "app",
                "count": count,
                "network": {"ports": {"http": {}}},
                **({} if defaults else {"update": strategy}),
                "services": [
                    {
                        "name": name,
                        "port": "http",
                        "checks": [check],
                    }
                ],
                "tasks": [
                    {
                        "name": "server",
                        "driver": "process",
                        "config": {"command": sys.executable, "args": [str(SERVER)]},
                        "env": {"VERSION": version, "HEALTHY": "1" if healthy else "0"},
                        # 300 MHz: a hard limit, and python must start in time
                        "resources": {"cpu": 300, "memory": 32},
                    }
                ],
            }
        ],
    }
    path = tmp / f"{name}-{version}.json"
    path.write_text(json.dumps(spec))
    return str(path)


def get(port: int, path: str = "/") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=0.5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""
    except OSError:
        return 0, ""


class Poller:
    """Polls every copy's endpoints about 20 times a second; records the fewest healthy
    copies seen at any moment and which versions answered."""

    def __init__(self, c: DevCluster, job: str) -> None:
        self.c, self.job = c, job
        self.min_healthy = 10**6
        self.rounds = 0
        self.versions_seen: list[set[str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _ports(self) -> list[int]:
        s = self.c.api("GET", f"/v1/job/{self.job}")
        return [a["ports"]["http"] for a in s["allocations"] if a["client_status"] == "running"]

    def _run(self) -> None:
        deadline = time.monotonic() + 120  # bounded: a test never polls longer than this
        ports: list[int] = []
        last_list = 0.0
        while not self._stop.is_set() and time.monotonic() < deadline:
            t0 = time.monotonic()
            if t0 - last_list > 0.1:
                ports, last_list = self._ports(), t0
            healthy, versions = 0, set()
            for p in ports:
                code, _ = get(p, "/health")
                if code == 200:
                    healthy += 1
                    versions.add(get(p)[1])
            self.min_healthy = min(self.min_healthy, healthy)
            self.versions_seen.append(versions)
            self.rounds += 1
            self._stop.wait(max(0.0, 0.05 - (time.monotonic() - t0)))


def serving_versions(c: DevCluster, job: str) -> list[str]:
    s = c.api("GET", f"/v1/job/{job}")
    live = [a for a in s["allocations"] if a["desired_status"] == "run"]
    return sorted(get(a["ports"]["http"])[1] for a in live if a["client_status"] == "running")


def deployment(c: DevCluster, job: str) -> dict[str, Any]:
    return c.cli_json("deployment", "status", job)["deployment"]


def events(c: DevCluster, job: str) -> list[dict[str, Any]]:
    # Every event kept (limit 0), not the last 100: a copy's status and health changes are
    # events too, and a flapping rollout makes many.
    evs = c.api("GET", "/v1/events", params={"job": job, "limit": 0})
    return [e for e in evs if e["job"] == job]


def test_rolling_update_keeps_capacity_and_ends_on_the_new_version(
    cluster: DevCluster, tmp_path: Path
) -> None:
    cluster.cli("job", "run", job_file(tmp_path, "roll", "v1"), check=True, timeout=90)
    wait_until(lambda: deployment(cluster, "roll")["status"] == "successful", timeout=30,
               what="the first version's deployment to succeed")  # fmt: skip
    with Poller(cluster, "roll") as poll:
        res = cluster.cli("job", "run", job_file(tmp_path, "roll", "v2"), timeout=120)
        time.sleep(0.3)
    assert res.returncode == 0, res.stdout + res.stderr
    assert serving_versions(cluster, "roll") == ["v2"] * 4
    assert poll.rounds > 50, f"the poller ran only {poll.rounds} rounds"
    assert poll.min_healthy >= 4 - 1, f"only {poll.min_healthy} healthy copies at one moment"
    d = deployment(cluster, "roll")
    assert d["status"] == "successful" and d["job_version"] == 1
    assert d["groups"]["app"]["healthy"] == 4
    kinds = [e["type"] for e in events(cluster, "roll")]
    assert "deployment.created" in kinds and "deployment.successful" in kinds
    history = cluster.cli_json("job", "history", "roll")
    assert [v["job"]["stable"] for v in history] == [True, True]


def test_a_bad_version_fails_and_is_rolled_back_on_its_own(
    cluster: DevCluster, tmp_path: Path
) -> None:
    cluster.cli("job", "run", job_file(tmp_path, "bad", "v1"), check=True, timeout=90)
    wait_until(lambda: deployment(cluster, "bad")["status"] == "successful", timeout=30,
               what="the first version's deployment to succeed")  # fmt: skip
    with Poller(cluster, "bad") as poll:
        t0 = time.time()
        # Default update policy and check timing: judged by its failing checks, not at
        # healthy_deadline (5 minutes).
        bad = job_file(tmp_path, "bad", "v2", healthy=False, defaults=True)
        res = cluster.cli("job", "run", bad, timeout=60)
        assert res.returncode == 1, res.stdout + res.stderr
        failed = next(e for e in events(cluster, "bad") if e["type"] == "deployment.failed")
        print(f"rolled back {failed['time'] - t0:.1f}s after `job run` started")
        # Back on v1 by itself: a new version with v1's spec, rolled out and healthy.
        wait_until(
            lambda: (
                cluster.api("GET", "/v1/job/bad")["job"]["version"] == 2
                and deployment(cluster, "bad")["status"] == "successful"
            ),
            timeout=40,
            what="the rollback to finish",
        )
        time.sleep(0.3)
    assert failed["time"] - t0 <= 15, f"failed after {failed['time'] - t0:.1f}s"
    assert "rolling back to version 0" in failed["message"], failed["message"]
    assert "HTTP 500" in failed["message"], failed["message"]
    # `job run` says it rolled back, and why: the failing check's output.
    out = res.stdout + res.stderr
    assert "rolled back" in out and "HTTP 500" in out, out
    assert serving_versions(cluster, "bad") == ["v1"] * 4
    assert poll.min_healthy >= 4 - 1, f"only {poll.min_healthy} healthy copies at one moment"
    assert not any("v2" in seen for seen in poll.versions_seen), "a broken copy passed a check"
    job = cluster.api("GET", "/v1/job/bad")["job"]
    assert job["submitted_by"] == "podium (auto-revert)"


def test_a_canary_waits_for_promotion_then_the_rest_rolls(
    cluster: DevCluster, tmp_path: Path
) -> None:
    cluster.cli("job", "run", job_file(tmp_path, "can", "v1", count=3), check=True, timeout=90)
    res = cluster.cli(
        "job", "run", "--detach", job_file(tmp_path, "can", "v2", count=3, canary=1), timeout=30
    )
    assert res.returncode == 0, res.stderr

    def canary_healthy() -> bool:
        g = deployment(cluster, "can")["groups"]["app"]
        return g["desired_canaries"] == 1 and g["healthy"] == 1

    wait_until(canary_healthy, timeout=30, what="the canary to be healthy")
    # Nothing more moves before promotion: two rounds of both controllers change nothing.
    wait_rounds(cluster, "placement", "deployments")
    assert serving_versions(cluster, "can") == ["v1", "v1", "v1", "v2"]
    res = cluster.cli("deployment", "promote", "can", check=True)
    assert "promoted" in res.stdout
    res = cluster.cli("deployment", "status", "can", "--watch", "--timeout", "60", timeout=90)
    assert res.returncode == 0, res.stdout + res.stderr
    assert serving_versions(cluster, "can") == ["v2"] * 3


def test_blue_green_keeps_the_old_set_serving_until_the_new_set_is_promoted(
    cluster: DevCluster, tmp_path: Path
) -> None:
    cluster.cli("job", "run", job_file(tmp_path, "bg", "blue", count=2), check=True, timeout=90)
    blue_ports = [
        a["ports"]["http"]
        for a in cluster.api("GET", "/v1/job/bg")["allocations"]
        if a["desired_status"] == "run"
    ]
    assert len(blue_ports) == 2
    cluster.cli("job", "run", "--detach", job_file(tmp_path, "bg", "green", count=2, canary=2),
                check=True)  # fmt: skip

    def greens_healthy() -> bool:
        return deployment(cluster, "bg")["groups"]["app"]["healthy"] == 2

    while not greens_healthy():  # the old set serves throughout
        assert [get(p)[1] for p in blue_ports] == ["blue", "blue"]
        time.sleep(0.1)
    assert sorted(serving_versions(cluster, "bg")) == ["blue", "blue", "green", "green"]
    cluster.cli("deployment", "promote", "bg", check=True)
    wait_until(lambda: serving_versions(cluster, "bg") == ["green", "green"], timeout=20,
               what="the switch to green")  # fmt: skip
    wait_until(lambda: all(get(p)[0] == 0 for p in blue_ports), timeout=15,
               what="the blue set to stop")  # fmt: skip
    assert deployment(cluster, "bg")["status"] == "successful"


def test_plan_matches_run_and_check_index_refuses_a_changed_job(
    cluster: DevCluster, tmp_path: Path
) -> None:
    cluster.cli("job", "run", job_file(tmp_path, "pl", "v1", count=2), check=True, timeout=90)
    v2 = job_file(tmp_path, "pl", "v2", count=3)
    plan = cluster.cli_json("job", "plan", v2)
    assert plan["changed"] and plan["deployment"]
    assert (plan["create"], plan["replace"], plan["replace_later"]) == (1, 1, 1)
    assert any(d["path"] == "groups.app.count" for d in plan["diff"])
    res = cluster.cli("job", "run", "--check-index", str(plan["index"]), v2, timeout=90)
    assert res.returncode == 0, res.stdout + res.stderr
    assert serving_versions(cluster, "pl") == ["v2"] * 3
    # A change between plan and run: the run is refused with a clear message.
    v3 = job_file(tmp_path, "pl", "v3", count=3)
    plan = cluster.cli_json("job", "plan", v3)
    cluster.cli("job", "scale", "pl", "app", "2", check=True)
    res = cluster.cli("job", "run", "--check-index", str(plan["index"]), v3)
    assert res.returncode != 0
    assert "changed since the plan" in res.stderr
    history = cluster.cli_json("job", "history", "pl")
    assert history[0]["version"] == 2 and history[0]["diff"][0]["path"] == "groups.app.count"
    d = cluster.cli("job", "diff", "pl", "0", "1", check=True)
    assert "groups.app.count: 2 => 3" in d.stdout
