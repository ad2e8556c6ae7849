"""Resource use gathered from the agents: `podium top`, `podium alloc stats`, job totals."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import textwrap
import time

import pytest

from integration.cluster import PODIUM, ROOT, DevCluster, read_until, wait_until

pytestmark = pytest.mark.integration

# ~30% of a core and 40 MB touched per copy: visible, and light on a shared machine. Its
# cpu (1000 MHz shares) leaves room for that under a CFS quota on a ~2.6 GHz core.
BURNER = textwrap.dedent("""
    name: burner
    groups:
      - name: g
        count: 2
        tasks:
          - name: t
            driver: process
            kill_timeout: 1s
            resources: {cpu: 1000, memory: 128}
            config:
              command: python3
              args:
                - -c
                - |
                  import time
                  ballast = bytearray(40 * 1024 * 1024)
                  for i in range(0, len(ballast), 4096):
                      ballast[i] = 1
                  while True:
                      t = time.monotonic()
                      while time.monotonic() - t < 0.03:
                          pass
                      time.sleep(0.07)
""")


FIGURES = r"figures from (\d\d:\d\d:\d\d)"
FIGURES_NEVER = "\x00"  # read_until's marker: never in the output, it reads for its timeout


@pytest.fixture(scope="module")
def burning(module_cluster: DevCluster, tmp_path_factory: pytest.TempPathFactory) -> DevCluster:
    """The burner's two copies, shared by the tests that only read their usage."""
    spec = tmp_path_factory.mktemp("burner") / "burner.yaml"
    spec.write_text(BURNER)
    module_cluster.cli("job", "run", str(spec), check=True, timeout=60)
    return module_cluster


def test_top_stats_and_job_totals_show_what_the_copies_use(burning: DevCluster) -> None:
    c = burning
    data = wait_until(
        lambda: (
            (d := c.cli_json("top"))
            and len(d["allocations"]) == 2
            and all(a["cpu_percent"] > 10 for a in d["allocations"])
            and all(a["memory_bytes"] > 35 * 1024 * 1024 for a in d["allocations"])
            and d
        ),
        timeout=20,
        what="both copies' usage",
    )
    for a in data["allocations"]:
        assert a["memory_bytes"] > 35 * 1024 * 1024
        assert a["memory_limit_bytes"] == 128 * 1024 * 1024
        assert a["resources"] == {"cpu": 1000, "memory": 128}
        assert abs(a["time"] - time.time()) < 10
    (job,) = [j for j in data["jobs"] if j["job"] == "burner"]
    assert job["allocs"] == 2 and job["cpu_percent"] > 20
    assert job["memory_bytes"] == sum(a["memory_bytes"] for a in data["allocations"])
    (node,) = data["nodes"]
    assert node["name"] == "dev" and node["reserved"] == {"cpu": 2000, "memory": 256}
    assert node["cpu_percent"] > 20 and node["memory_bytes"] >= job["memory_bytes"]

    status = c.cli_json("job", "status", "burner")
    assert status["usage"]["allocs"] == 2 and status["usage"]["memory_bytes"] > 70 * 1024 * 1024
    human = c.cli("job", "status", "burner", check=True).stdout
    assert re.search(r"usage: cpu \d+\.\d% of a core, memory \d+\.\d MiB", human), human

    alloc = data["allocations"][0]["id"]
    first = c.cli_json("alloc", "stats", alloc[:8])
    time.sleep(1.2)
    second = c.cli_json("alloc", "stats", alloc[:8])
    assert second["tasks"]["t"]["cpu_seconds"] > first["tasks"]["t"]["cpu_seconds"]
    assert second["time"] > first["time"]
    assert "t " in c.cli("alloc", "stats", alloc[:8], check=True).stdout

    sorted_mem = c.cli("top", "--once", "--sort", "memory", check=True).stdout
    assert "burner.g[0]" in sorted_mem and "sorted by memory" in sorted_mem


def test_top_refreshes_live_in_a_terminal(burning: DevCluster) -> None:
    if shutil.which("script") is None:
        pytest.skip("util-linux `script` (a terminal for the live view) is not installed")
    env = {
        **os.environ,
        "PODIUM_ADDR": burning.addr,
        **burning.tls_env(),
        "COLUMNS": "160",
        "LINES": "60",
    }
    cmd = " ".join([*PODIUM, "top", "--interval", "0.5"])
    proc = subprocess.Popen(
        ["script", "-qfec", cmd, "/dev/null"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=ROOT,
    )
    # Read the terminal until it has shown figures of two different seconds (or 10 s).
    text, deadline = "", time.monotonic() + 10
    while len(stamps := set(re.findall(FIGURES, text))) < 2 and time.monotonic() < deadline:
        said = read_until(proc, FIGURES_NEVER, timeout=0.3)
        if not said and proc.poll() is not None:
            break
        text += said
    proc.terminate()
    out, _ = proc.communicate(timeout=10)
    text += out.decode(errors="replace")
    stamps = set(re.findall(FIGURES, text))
    assert len(stamps) >= 2, text[-2000:]  # it redrew with newer figures, by itself
    assert "burner.g[" in text


def test_stats_of_an_unknown_alloc_is_a_clear_error(dev_cluster: DevCluster) -> None:
    res = dev_cluster.cli("alloc", "stats", "ffffffff")
    assert res.returncode == 1 and "ffffffff" in res.stderr and "Traceback" not in res.stderr
    assert json.loads(dev_cluster.cli("top", "--json", check=True).stdout)["allocations"] == []
