"""`podium logs JOB` against a real `podium dev`: every copy's lines merged, following a
rolling update without a restart, and --since/--grep reading only what is asked."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from integration.cluster import PODIUM, ROOT, DevCluster, wait_until

pytestmark = pytest.mark.integration

TICKER = """
name: ticker
groups:
  - name: g
    count: 3
    update: {{max_parallel: 1, min_healthy_time: 0.5s, health_check: task_states}}
    tasks:
      - name: t
        driver: process
        kill_timeout: 1s
        env: {{VERSION: "{version}"}}
        config:
          command: sh
          args: ["-c", "while :; do echo \\"tick $VERSION $PODIUM_ALLOC_ID $(date +%s%N)\\"; echo other; sleep 0.2; done"]
"""


def run_ticker(c: DevCluster, tmp: Path, version: str) -> None:
    spec = tmp / f"ticker-{version}.yaml"
    spec.write_text(textwrap.dedent(TICKER.format(version=version)))
    res = c.cli("job", "run", str(spec), timeout=90)
    assert res.returncode == 0, res.stdout + res.stderr


class LogFollower:
    def __init__(self, c: DevCluster, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*PODIUM, "logs", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PODIUM_ADDR": c.addr, **c.tls_env()},
            cwd=ROOT,
            text=True,
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def collect_until(self, done: Any, *, timeout: float) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                got.append(self.lines.get(timeout=0.2))
            except queue.Empty:
                pass
            if done(got):
                return got
        raise AssertionError(f"timed out; last lines: {got[-5:]}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def test_follow_merges_all_copies_through_a_rolling_update(
    dev_cluster: DevCluster, tmp_path: Path
) -> None:
    c = dev_cluster
    run_ticker(c, tmp_path, "v1")
    v1 = {a["id"] for a in c.cli_json("job", "status", "ticker")["allocations"]}
    f = LogFollower(c, "ticker", "-f", "--grep", "^tick", "--json")
    try:
        got = f.collect_until(
            lambda ls: {ln["alloc"] for ln in ls if "v1" in ln["line"]} == v1, timeout=20
        )
        assert all(ln["line"].startswith("tick") and ln["node"] == "dev" for ln in got)
        run_ticker(c, tmp_path, "v2")  # a rolling update: three new copies, one at a time
        status = c.cli_json("job", "status", "ticker")
        v2 = {a["id"] for a in status["allocations"] if a["desired_status"] == "run"} - v1
        assert len(v2) == 3
        got = f.collect_until(
            lambda ls: {ln["alloc"] for ln in ls if "tick v2" in ln["line"]} == v2, timeout=30
        )
        assert f.proc.poll() is None, "the same command followed the rollout"
        for ln in got:  # each line is its own copy's
            assert ln["alloc"] in ln["line"]
        texts = [ln["line"] for ln in got]
        assert len(texts) == len(set(texts)), "a line came twice"
    finally:
        f.stop()


def test_since_and_grep_return_only_matching_recent_lines_of_every_copy(
    dev_cluster: DevCluster, tmp_path: Path
) -> None:
    c = dev_cluster
    run_ticker(c, tmp_path, "v1")
    ids = {a["id"] for a in c.cli_json("job", "status", "ticker")["allocations"]}
    wait_until(
        lambda: len(c.cli("logs", "ticker", "--since", "1m", "--json").stdout.splitlines()) > 60,
        timeout=20,
        what="some lines",
    )
    t0 = time.time()
    out = c.cli("logs", "ticker", "--since", "1m", "--grep", "^tick", "--json", check=True).stdout
    lines = [json.loads(x) for x in out.splitlines()]
    assert {ln["alloc"] for ln in lines} == ids
    assert all(ln["line"].startswith("tick v1 ") for ln in lines)
    assert all(t0 - 62 <= ln["time"] <= t0 + 1 for ln in lines)
    assert [ln["time"] for ln in lines] == sorted(ln["time"] for ln in lines)
    # A short window reads only the recent end: fewer lines, all recent.
    time.sleep(2.5)
    t1 = time.time()
    out = c.cli("logs", "ticker", "--since", "1s", "--grep", "^tick", "--json", check=True).stdout
    recent = [json.loads(x) for x in out.splitlines()]
    assert recent and len(recent) < len(lines)
    assert all(ln["time"] >= t1 - 2.1 for ln in recent), [ln["time"] - t1 for ln in recent]
    bad = c.cli("logs", "ticker", "--grep", "(")
    assert bad.returncode == 1 and "grep" in bad.stderr and "Traceback" not in bad.stderr
    missing = c.cli("logs", "nope")
    assert missing.returncode == 1 and "nope" in missing.stderr


def test_both_streams_by_default_stderr_marked(dev_cluster: DevCluster, tmp_path: Path) -> None:
    """The example logs its requests to stderr (Python's http.server): `podium logs web`,
    as `make dev` suggests, showed nothing of them. Both streams come by default, a stderr
    line marked; --stdout or --stderr picks one, unmarked."""
    c = dev_cluster
    spec = tmp_path / "talker.yaml"
    spec.write_text(
        textwrap.dedent(
            """\
            name: talker
            groups:
              - name: g
                update: {max_parallel: 1, min_healthy_time: 0.5s, health_check: task_states}
                tasks:
                  - name: t
                    kill_timeout: 1s
                    config:
                      command: sh
                      args: ["-c", "while :; do echo said; echo complained >&2; sleep 0.2; done"]
            """
        )
    )
    c.cli("job", "run", str(spec), check=True, timeout=60)

    def lines(*args: str) -> list[str]:
        return c.cli("logs", "talker", "--since", "1m", *args, check=True).stdout.splitlines()

    wait_until(lambda: len(lines()) > 4, timeout=20, what="some lines")
    both = lines()
    assert {ln.split(" ", 1)[1] for ln in both} == {"dev | said", "dev stderr | complained"}
    assert {ln.split(" ", 1)[1] for ln in lines("--stdout")} == {"dev | said"}
    assert {ln.split(" ", 1)[1] for ln in lines("--stderr")} == {"dev | complained"}
    streams = {json.loads(x)["stream"] for x in lines("--json")}
    assert streams == {"stdout", "stderr"}
    c.cli("job", "stop", "talker", "--purge", check=True)
