"""A real Prometheus (Debian's package) scrapes a real cluster with the docs' scrape config.

One `podium dev` plus one more agent run examples/web.yaml; one copy is killed. Prometheus'
own HTTP API must then return placements, allocs by status, task restarts (>= 1) and
per-alloc memory; `promtool check metrics` must find nothing wrong on either endpoint; and
the metric list in docs/observability.md must match what the endpoints serve.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from integration.cluster import ROOT, DevCluster, free_port, wait_until
from integration.multinode import AgentProc, dev_and_agent

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DOC = ROOT / "docs" / "observability.md"
WEB = str(ROOT / "examples" / "web.yaml")


def tool_or_skip(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    why = f"{name} is not installed (scripts/ensure-prometheus.sh installs the prometheus package)"
    if os.environ.get("PODIUM_REQUIRE_PROMETHEUS") == "1":
        pytest.fail(why)
    pytest.skip(why)


def doc_scrape_config() -> dict[str, Any]:
    """The first ```yaml block of the docs that holds `scrape_configs`."""
    for block in re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S):
        data = yaml.safe_load(block)
        if isinstance(data, dict) and "scrape_configs" in data:
            return data
    raise AssertionError("docs/observability.md has no scrape config")


def config_for(server: str, tls_dir: Path) -> str:
    """The docs' config pointed at this cluster and its credentials, test-sized intervals."""
    cfg = doc_scrape_config()
    cfg["global"]["scrape_interval"] = "1s"
    cfg["global"]["scrape_timeout"] = "1s"
    text = yaml.safe_dump(cfg).replace("127.0.0.1:4646", server)
    text = text.replace("/etc/prometheus/podium", str(tls_dir))
    return text.replace("refresh_interval: 30s", "refresh_interval: 1s")


class Prometheus:
    def __init__(self, base: Path, config: str) -> None:
        self.port = free_port()
        (base / "prometheus.yml").write_text(config)
        self.log = open(base / "prometheus.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                tool_or_skip("prometheus"),
                f"--config.file={base / 'prometheus.yml'}",
                f"--storage.tsdb.path={base / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.base = base

    def query(self, promql: str) -> list[dict[str, Any]]:
        r = httpx.get(
            f"http://127.0.0.1:{self.port}/api/v1/query", params={"query": promql}, timeout=5
        )
        r.raise_for_status()
        result: list[dict[str, Any]] = r.json()["data"]["result"]
        return result

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


@pytest.fixture
def two_nodes(tmp_path: Path) -> Iterator[tuple[DevCluster, AgentProc]]:
    with dev_and_agent(tmp_path) as both:
        yield both


def value(result: list[dict[str, Any]]) -> float:
    return float(result[0]["value"][1]) if result else float("nan")


def test_prometheus_scrapes_server_and_agents(
    two_nodes: tuple[DevCluster, AgentProc], tmp_path: Path
) -> None:
    promtool = tool_or_skip("promtool")
    c, _ = two_nodes
    c.cli("job", "run", WEB, check=True, timeout=60)
    # Prometheus' own operator certificate, the way the docs make it.
    scraper = tmp_path / "scraper"
    token = c.cli("server", "join-token", "--role", "operator", check=True).stdout.strip()
    c.cli("tls", "join", "--server", c.addr, "--token", token, "--dir", str(scraper), check=True)
    prom = Prometheus(tmp_path, config_for(c.addr.removeprefix("https://"), scraper))
    started = time.monotonic()
    try:
        wait_until(
            lambda: (
                len(prom.query('up{job="podium-agents"} == 1')) == 2
                and value(prom.query('up{job="podium-servers"}')) == 1
            ),
            timeout=30,
            interval=0.5,
            what="Prometheus to scrape the server and both agents",
        )
        victim = next(
            a
            for a in c.cli_json("job", "status", "web")["allocations"]
            if a["client_status"] == "running"
        )
        os.kill(victim["pids"]["server"], signal.SIGKILL)
        restarts = f'podium_task_restarts_total{{job_name="web",alloc="{victim["id"]}"}}'
        wait_until(
            lambda: value(prom.query(restarts)) >= 1,
            timeout=30,
            interval=0.5,
            what="Prometheus to see the restart",
        )
        assert value(prom.query("podium_placements_total")) >= 3
        assert value(prom.query('podium_allocs{status="running"}')) == 3
        # The killed copy has no usage while it waits to restart, and a scrape in its first
        # moments may see it small: every copy, once it runs, reports more than 1 MB.
        memory = wait_until(
            lambda: (
                (m := prom.query('podium_alloc_memory_rss_bytes{job_name="web"}'))
                and len(m) == 3
                and all(float(x["value"][1]) > 1_000_000 for x in m)
                and m
            ),
            timeout=15,
            interval=0.5,
            what="memory series above 1 MB for all three copies",
        )
        assert {m["metric"]["node"] for m in memory} == {"dev", "extra"}  # http_sd labels
        limits = prom.query('podium_alloc_memory_limit_bytes{job_name="web"}')
        assert {float(m["value"][1]) for m in limits} == {64 * 1024 * 1024}
        # The suite stops once all of that is seen; PODIUM_PROMETHEUS_SECONDS=30 scrapes for
        # the literal 30 s, and every target must have answered every scrape of it.
        literal = float(os.environ.get("PODIUM_PROMETHEUS_SECONDS", "0"))
        if literal > 0:
            time.sleep(max(0.0, started + literal - time.monotonic()))
            window = f"{int(literal) - 5}s"
            ups = prom.query(f"min_over_time(up[{window}])")
            assert len(ups) == 3 and all(float(u["value"][1]) == 1 for u in ups), ups
    finally:
        prom.stop()
    texts = {}
    nodes = {n["http_addr"]: n for n in c.api("GET", "/v1/nodes")}
    for target in [c.addr, *(t["targets"][0] for t in c.api("GET", "/v1/metrics/targets"))]:
        if target == c.addr:
            text = c.request("GET", "/v1/metrics").text
        else:
            text = c.agent_get(nodes[target], "/v1/metrics", timeout=10).text
        res = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True
        )
        assert res.returncode == 0 and not res.stdout.strip(), f"{target}: {res.stdout}{res.stderr}"
        texts[target] = text
    check_doc_table(list(texts.values()))


# -- the docs' metric list ---------------------------------------------------------------


def metric_table(texts: list[str]) -> str:
    """Markdown rows (name, type, help) of every family the endpoints serve, sorted."""
    rows: dict[str, tuple[str, str]] = {}
    for text in texts:
        for f in text_string_to_metric_families(text):
            name = f.name + ("_total" if f.type == "counter" else "")
            rows[name] = (f.type, f.documentation)
    lines = ["| metric | type | what |", "| --- | --- | --- |"]
    lines += [f"| `{n}` | {t} | {h} |" for n, (t, h) in sorted(rows.items())]
    return "\n".join(lines) + "\n"


def check_doc_table(texts: list[str]) -> None:
    table = metric_table(texts)
    doc = DOC.read_text()
    begin, end = "<!-- metrics:begin -->\n", "<!-- metrics:end -->"
    head, _, rest = doc.partition(begin)
    current, _, tail = rest.partition(end)
    if os.environ.get("PODIUM_UPDATE_DOCS") == "1":
        DOC.write_text(head + begin + table + end + tail)
        return
    assert current == table, (
        "docs/observability.md's metric list differs from the live endpoints; "
        f"regenerate it with PODIUM_UPDATE_DOCS=1. Live:\n{table}"
    )


def test_metric_table_lists_every_family() -> None:
    text = (
        "# HELP podium_x_total Xs.\n# TYPE podium_x_total counter\npodium_x_total 1\n"
        "# HELP podium_y Y.\n# TYPE podium_y gauge\npodium_y 2\n"
    )
    assert metric_table([text]).splitlines()[2:] == [
        "| `podium_x_total` | counter | Xs. |",
        "| `podium_y` | gauge | Y. |",
    ]
