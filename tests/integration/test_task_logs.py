"""Task logs under pressure: a task writing 1 GB/s stays within the bound on disk (the agent
owns the stream: backpressure, rotation by rename) and `alloc logs --tail` finds its last
line across rotated files; a task keeps writing through an agent restart."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import pytest

from integration.cluster import DevCluster, wait_until

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
MAX_FILE_SIZE = 10 * MIB  # the agent's defaults
MAX_FILES = 4
WRITE_BUFFER = 1 * MIB  # the pipe between task and agent

# Writes 1 MiB blocks of numbered lines, paced to at most 1 GB/s, for SECONDS; then its
# last line, then sleeps (so the test reads a running task's logs).
FLOOD = """
import os, sys, time
seconds = float(sys.argv[1])
t0 = time.monotonic()
n = 0
while time.monotonic() - t0 < seconds:
    os.write(1, b"".join(b"%09d %s\\n" % (n * 1024 + i, b"x" * 1013) for i in range(1024)))
    n += 1
    ahead = n / 1000 - (time.monotonic() - t0)
    if ahead > 0:
        time.sleep(ahead)
os.write(1, b"LAST %d blocks\\n" % n)
time.sleep(1000)
"""


def _flood_job(tmp: Path, seconds: float) -> Path:
    (tmp / "flood.py").write_text(FLOOD)
    spec = tmp / "flood.yaml"
    spec.write_text(
        textwrap.dedent(f"""
        name: flood
        type: service
        groups:
          - name: g
            tasks:
              - name: t
                config: {{command: python3, args: ["{tmp / "flood.py"}", "{seconds}"]}}
                resources: {{cpu: 2000, memory: 128}}
        """)
    )
    return spec


def _log_bytes(logs_dir: Path) -> int:
    total = 0
    for p in logs_dir.glob("t.stdout*"):
        try:
            if p.is_file():
                total += p.stat().st_size
        except FileNotFoundError:
            pass
    return total


def _alloc(c: DevCluster) -> dict:
    def running() -> dict | None:
        s = c.cli_json("job", "status", "flood")
        live = [a for a in s["allocations"] if a["client_status"] == "running"]
        return live[0] if live else None

    return wait_until(running, timeout=30, what="the flood task to run")  # type: ignore[no-any-return]


def test_a_task_writing_1gb_per_s_stays_within_the_bound_and_tail_finds_its_last_line(
    dev_cluster: DevCluster, tmp_path: Path
) -> None:
    seconds = float(os.environ.get("PODIUM_LOG_FLOOD_SECONDS", "10"))
    dev_cluster.cli("job", "run", str(_flood_job(tmp_path, seconds)), check=True, timeout=60)
    alloc = _alloc(dev_cluster)
    logs_dir = dev_cluster.data_dir / "agent" / "allocs" / alloc["id"] / "t" / "logs"
    bound = MAX_FILES * MAX_FILE_SIZE + WRITE_BUFFER
    peak, t0 = 0, time.monotonic()
    try:
        while time.monotonic() - t0 < seconds + 30:
            peak = max(peak, _log_bytes(logs_dir))
            assert peak <= bound, f"{peak / MIB:.1f} MiB on disk; the bound is {bound / MIB:.0f}"
            tail = dev_cluster.cli("alloc", "logs", "--tail", "4096", alloc["id"], check=True)
            if "LAST" in tail.stdout:
                break
            time.sleep(0.2)
    finally:
        if peak > bound:
            dev_cluster.cli("job", "stop", "flood", timeout=30)
    last = [line for line in tail.stdout.splitlines() if line.startswith("LAST")]
    assert last, f"no LAST line in the tail: {tail.stdout[-300:]!r}"
    blocks = int(last[0].split()[1])
    # Backpressure slows the task; it is never stopped (it wrote for all its seconds).
    assert blocks > 0
    print(f"wrote {blocks} MiB in {seconds:g}s; peak on disk {peak / MIB:.1f} MiB")
    # The tail is the very end of the stream: the line before LAST is the last numbered one.
    numbered = [line for line in tail.stdout.splitlines() if line[:9].isdigit()]
    assert numbered and int(numbered[-1][:9]) == blocks * 1024 - 1, numbered[-1:]


TICKER = """
import os, sys, time
i = 0
while True:
    os.write(1, b"tick %d\\n" % i)
    i += 1
    time.sleep(0.005)
"""


def test_a_task_writes_on_through_an_agent_restart_and_no_line_is_lost(tmp_path: Path) -> None:
    """The pipe from task to agent outlives the agent: while it is down the task's output
    waits in the pipe (the task is a reader of its own pipe, so it never gets SIGPIPE) and
    the agent that comes back reads on from there."""
    (tmp_path / "ticker.py").write_text(TICKER)
    spec = tmp_path / "ticker.yaml"
    spec.write_text(
        textwrap.dedent(f"""
        name: ticker
        groups:
          - name: g
            tasks:
              - name: t
                config: {{command: python3, args: ["{tmp_path / "ticker.py"}"]}}
                resources: {{cpu: 500, memory: 64}}
        """)
    )
    c = DevCluster(tmp_path / "dev").start()
    try:
        c.cli("job", "run", str(spec), check=True, timeout=60)
        (a,) = [x for x in c.cli_json("job", "status", "ticker")["allocations"]]
        pid = a["pids"]["t"]
        c.kill9()
        time.sleep(1.5)  # the task writes ~300 lines meanwhile
        c.start()

        def ticks() -> list[int]:
            out = c.cli("alloc", "logs", "--tail", "10000000", a["id"], check=True).stdout
            return [int(line.split()[1]) for line in out.splitlines() if line.startswith("tick")]

        seen = wait_until(lambda: (t := ticks()) and t[-1] > 500 and t, timeout=30, what="ticks")
        assert seen == list(range(seen[0], seen[-1] + 1)), "a line was lost or repeated"
        assert seen[0] == 0
        again = c.cli_json("job", "status", "ticker")["allocations"][0]
        assert again["pids"]["t"] == pid  # re-adopted, never restarted
    finally:
        c.stop()
        c.kill_leftovers()
