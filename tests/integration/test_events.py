"""`podium events` against a real `podium dev`: live topics, filters, replay, heartbeats,
and events that outlive a server restart."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
from typing import Any

import psutil
import pytest

from integration.cluster import PODIUM, ROOT, DevCluster, wait_until

pytestmark = pytest.mark.integration
WEB = str(ROOT / "examples" / "web.yaml")


class Follower:
    """`podium events -f … --json` as a subprocess; each line is stamped when it arrives."""

    def __init__(self, c: DevCluster, *args: str) -> None:
        env = {**os.environ, "PODIUM_ADDR": c.addr, **c.tls_env()}
        self.proc = subprocess.Popen(
            [*PODIUM, "events", "-f", "--json", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=ROOT,
            text=True,
        )
        self.lines: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put((time.time(), json.loads(line)))

    def next(self, pred: Any, *, timeout: float, what: str) -> tuple[float, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            try:
                at, ev = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            seen.append(ev["type"])
            if pred(ev):
                return at, ev
        raise AssertionError(f"no {what} within {timeout}s; saw {seen}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def test_follow_alloc_topic_shows_kill_restart_and_health_within_a_second(
    dev_cluster: DevCluster,
) -> None:
    c = dev_cluster
    c.cli("job", "run", WEB, check=True, timeout=60)
    f = Follower(c, "--topic", "alloc", "--limit", "0")
    try:
        time.sleep(0.5)  # the follower connects (its first line is the next event)
        victim = next(a for a in c.cli_json("job", "status", "web")["allocations"] if a["healthy"])
        alloc, pid = victim["id"], victim["pids"]["server"]
        os.kill(pid, signal.SIGKILL)
        killed = time.time()

        def mine(type_: str) -> Any:
            return lambda ev: ev["alloc"] == alloc and ev["type"] == type_

        at, ev = f.next(mine("task.exited"), timeout=5, what="the kill")
        assert "signal 9" in ev["message"] and at - killed < 1.0, (at - killed, ev)
        at, ev = f.next(mine("task.started"), timeout=10, what="the restart")
        new_pid = c.cli_json("alloc", "status", alloc)["task_states"]["server"]["pid"]
        started = psutil.Process(new_pid).create_time()
        assert at - started < 1.0, (at - started, ev)
        # The check saw the copy down before the restart or healthy after it: either flip
        # is a health change, each shown within a second of the server recording it.
        at, ev = f.next(
            lambda e: e["alloc"] == alloc and e["type"] in ("alloc.unhealthy", "alloc.healthy"),
            timeout=10,
            what="a health change",
        )
        assert at - ev["time"] < 1.0, (at - ev["time"], ev)
    finally:
        f.stop()


def test_filters_replay_and_heartbeats(dev_cluster: DevCluster) -> None:
    c = dev_cluster
    c.cli("job", "run", WEB, check=True, timeout=60)
    jobs = c.cli_json("events", "--topic", "job", "--key", "web", "--limit", "0")
    assert jobs and all(e["type"].startswith("job.") and e["job"] == "web" for e in jobs)
    assert {"job.registered", "job.plan_applied"} <= {e["type"] for e in jobs}
    svc = c.cli_json("events", "--topic", "service", "--key", "web", "--limit", "0")
    assert len(svc) >= 3 and all(e["service"] == "web" for e in svc)  # each copy's endpoint
    assert {e["type"] for e in svc} <= {"service.endpoint_healthy", "service.endpoint_unhealthy"}
    assert len({e["alloc"] for e in svc if e["type"] == "service.endpoint_healthy"}) == 3
    nodes = c.cli_json("events", "--topic", "node", "--key", "dev", "--limit", "0")
    assert nodes and all(e["type"].startswith("node.") for e in nodes)
    everything = c.cli_json("events", "--limit", "0")
    middle = everything[len(everything) // 2]["seq"]
    after = c.cli_json("events", "--index", str(middle), "--limit", "0")
    assert after and all(e["seq"] > middle for e in after)
    # Events keep coming (a copy's health, a deployment): the replay may hold newer ones.
    last = everything[-1]["seq"]
    replayed = [e["seq"] for e in after if e["seq"] <= last]
    assert replayed == [e["seq"] for e in everything if e["seq"] > middle]
    recent = c.cli_json("events", "--since", "1m", "--limit", "0")
    assert recent[: len(everything)] == everything  # (a deployment may have moved on since)
    since = c.cli_json("events", "--topic", "node", "--since", "10m", "--limit", "0")
    assert since[: len(nodes)] == nodes  # (the node may have said more since, under load)
    time.sleep(1.1)
    assert c.cli_json("events", "--topic", "node", "--since", "1s", "--limit", "0") == []
    bad = c.cli("events", "--topic", "bogus")
    assert bad.returncode != 0 and "bogus" in bad.stderr and "Traceback" not in bad.stderr
    r = c.request("GET", "/v1/events", params={"topic": "bogus"})
    assert r.status_code == 400 and "topic" in r.text
    # An idle stream gets heartbeats (comments, so EventSource ignores them).
    with (
        c.http() as http,
        http.stream(
            "GET",
            f"{c.addr}/v1/events",
            params={"follow": "true", "heartbeat": "0.2s", "topic": "store"},  # none here
            timeout=5,
        ) as resp,
    ):
        lines = resp.iter_lines()
        t0 = time.monotonic()
        got = [next(lines) for _ in range(6)]  # ": following", then heartbeats
        assert got.count(": heartbeat") == 2 and time.monotonic() - t0 < 2, got


def test_events_survive_a_server_restart(dev_cluster: DevCluster) -> None:
    c = dev_cluster
    c.cli("job", "run", WEB, check=True, timeout=60)
    before = c.api("GET", "/v1/events", params={"limit": 0})
    assert len(before) > 5
    c.stop()
    c.start()
    after = c.api("GET", "/v1/events", params={"limit": 0})
    assert [e["seq"] for e in after[: len(before)]] == [e["seq"] for e in before]
    assert after[: len(before)] == before
    wait_until(
        lambda: len(c.api("GET", "/v1/events", params={"limit": 0})) > len(before),
        timeout=20,
        what="new events after the restart",
    )
