"""The web UI in a real browser: Debian's chromium driven through chromium-driver (Selenium),
against one real `podium dev` (plus one more agent) shared by the module's tests.

Each test saves a screenshot under its tmp dir; PODIUM_UPDATE_DOCS=1 copies them into
docs/ui/ for docs/observability.md.
"""

from __future__ import annotations

import os
import re
import shutil
import ssl
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from integration.cluster import ROOT, DevCluster, wait_until
from integration.multinode import AgentProc, dev_and_agent

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM, DRIVER, CERTUTIL = "/usr/bin/chromium", "/usr/bin/chromedriver", "/usr/bin/certutil"
DOCS_UI = ROOT / "docs" / "ui"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
]


def browser_or_skip() -> None:
    missing = [p for p in (CHROMIUM, DRIVER, CERTUTIL) if not os.path.exists(p)]
    if not missing:
        return
    why = (
        f"{missing} not installed (scripts/ensure-chromium.sh installs chromium, "
        "chromium-driver, libnss3-tools)"
    )
    if os.environ.get("PODIUM_REQUIRE_CHROMIUM") == "1":
        pytest.fail(why)
    pytest.skip(why)


def job_file(tmp: Path, name: str, body: str) -> str:
    path = tmp / f"{name}.yaml"
    path.write_text(textwrap.dedent(body))
    return str(path)


def sleeper(tmp: Path, name: str, *, count: int = 1, update: str = "{}") -> str:
    """A job of `count` copies of `sleep 3600` (quick to stop)."""
    return job_file(tmp, name, f"""
        name: {name}
        groups:
          - name: g
            count: {count}
            update: {update}
            tasks:
              - name: t
                driver: process
                kill_timeout: 1s
                config: {{command: sleep, args: ["3600"]}}
        """)  # fmt: skip


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DevCluster, AgentProc]]:
    browser_or_skip()
    with dev_and_agent(tmp_path_factory.mktemp("ui")) as (c, extra):
        c.cli("job", "run", str(ROOT / "examples" / "web.yaml"), check=True, timeout=90)
        yield c, extra


def trusting_home(home: Path, ca: Path) -> None:
    """An NSS database in `home` that trusts the cluster's CA, as an operator's browser
    would after importing it (Chromium on Linux reads $HOME/.pki/nssdb)."""
    db = home / ".pki" / "nssdb"
    db.mkdir(parents=True)
    subprocess.run([CERTUTIL, "-N", "-d", f"sql:{db}", "--empty-password"], check=True)
    subprocess.run(
        [CERTUTIL, "-A", "-d", f"sql:{db}", "-n", "podium cluster CA", "-t", "C,,", "-i", ca],
        check=True,
    )


def log_in(driver: Any, c: DevCluster) -> None:
    """Open a one-use link from `podium ui` and wait for the page to use its session."""
    url = c.cli_json("ui", "--json")["url"]
    assert url.startswith(f"{c.addr}/ui/#login=")
    driver.get(url)
    wait_until(
        lambda: (
            "nodes ready"
            in driver.execute_script(
                "const e = document.querySelector('#health'); return e ? e.innerText : ''"
            )
        ),
        timeout=10,
        interval=0.05,
        what="the overview after logging in",
    )


@pytest.fixture(scope="module")
def browser(cluster: Any) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = Path(tempfile.mkdtemp(prefix="podium-chromium-"))
    trusting_home(profile / "home", cluster[0].tls_dir / "ca.pem")
    for flag in [*FLAGS, f"--user-data-dir={profile / 'data'}"]:
        opts.add_argument(flag)
    env = {**os.environ, "HOME": str(profile / "home")}
    driver = webdriver.Chrome(service=Service(DRIVER, env=env), options=opts)
    driver.set_page_load_timeout(20)
    try:
        log_in(driver, cluster[0])
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


class Page:
    def __init__(self, driver: Any, c: DevCluster, tmp: Path) -> None:
        self.d, self.c, self.tmp = driver, c, tmp
        driver.set_window_size(1280, 900)

    def open(self, fragment: str) -> None:
        self.d.get(f"{self.c.addr}/ui/{fragment}")

    def js(self, script: str, *args: Any) -> Any:
        return self.d.execute_script(script, *args)

    def text(self, css: str) -> str:
        return str(
            self.js(
                "const e = document.querySelector(arguments[0]); return e ? e.innerText : ''", css
            )
        )

    def wait(self, pred: Any, *, timeout: float = 10, what: str) -> Any:
        return wait_until(pred, timeout=timeout, interval=0.05, what=what)

    def click(self, css: str) -> None:
        self.d.find_element("css selector", css).click()

    def shot(self, name: str) -> Path:
        self.js("document.getElementById('toast').hidden = true")  # a note from an action
        path = self.tmp / f"{name}.png"
        self.d.save_screenshot(str(path))
        if os.environ.get("PODIUM_UPDATE_DOCS") == "1":
            DOCS_UI.mkdir(exist_ok=True)
            shutil.copy(path, DOCS_UI / path.name)
        return path


@pytest.fixture
def page(browser: Any, cluster: Any, tmp_path: Path) -> Page:
    return Page(browser, cluster[0], tmp_path)


def test_a_browser_logs_in_with_a_one_use_link_over_tls(page: Page) -> None:
    """The page is served over TLS with the cluster's CA (the browser trusts it, no
    warning); without a session it says how to log in; a link from `podium ui` logs it in,
    once; logging out ends the session for the server too."""
    d, c = page.d, page.c
    assert d.execute_script("return location.protocol") == "https:"
    d.delete_all_cookies()
    page.open("#/jobs")
    login = page.wait(lambda: page.text("#login"), what="the login page")
    assert "podium ui" in login
    url = c.cli_json("ui", "--json")["url"]
    d.get(url)
    page.wait(lambda: "web" in page.text("#jobs") or "nodes ready" in page.text("#health"),
              what="the UI after logging in")  # fmt: skip
    assert "#login=" not in d.current_url, "the token stayed in the address bar"
    cookie = d.get_cookie("podium_ui")
    assert cookie and cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    assert page.js("return document.cookie") == "", "the session cookie is readable by scripts"
    # The same link again: refused (one use), and the page says so.
    d.delete_all_cookies()
    d.get(url)
    again = page.wait(lambda: page.text("#login"), what="the login page for a used link")
    assert "used already" in again
    # A fresh login, then log out: the old cookie no longer works anywhere.
    log_in(d, c)
    secret = d.get_cookie("podium_ui")["value"]
    page.click("#logout")
    page.wait(lambda: "logged out" in page.text("#login"), what="the page after logging out")
    ca_only = ssl.create_default_context(cafile=str(c.tls_dir / "ca.pem"))  # no client cert
    r = httpx.get(f"{c.addr}/v1/jobs", cookies={"podium_ui": secret}, verify=ca_only)
    assert r.status_code == 401, r.text
    log_in(d, c)  # the other tests use the session


def test_overview_shows_nodes_and_jobs(page: Page) -> None:
    page.open("#/")
    page.wait(lambda: "nodes ready of 2" in page.text("#health"), what="the health cards")
    topo = page.wait(lambda: page.text(".topo"), what="the topology")
    assert "dev" in topo and "extra" in topo and "web.frontend[" in topo
    assert "web" in page.text("#jobs") and "running" in page.text("#jobs")
    assert page.shot("overview").stat().st_size > 10_000
    page.d.find_element("css selector", "body").send_keys("n")  # one keystroke: nodes
    page.wait(lambda: "extra" in page.text("#nodes"), what="the nodes list by keyboard")
    page.d.find_element("css selector", "body").send_keys("/")  # search the jobs
    page.wait(lambda: page.js("return document.activeElement.id") == "job-search", what="focus")


def test_a_job_run_from_the_cli_appears_within_two_seconds_without_reload(
    page: Page, tmp_path: Path
) -> None:
    page.open("#/jobs")
    page.wait(lambda: page.text("#jobs").count("\n") >= 1, what="the jobs list")
    page.js("window.__sameDocument = 'yes'")
    spec = sleeper(tmp_path, "sleeper")
    page.c.cli("job", "run", "--detach", spec, check=True)
    submitted = time.monotonic()
    page.wait(lambda: "sleeper" in page.text("#jobs"), timeout=5, what="the new job in the page")
    assert time.monotonic() - submitted < 2.0
    assert page.js("return window.__sameDocument") == "yes", "the page was reloaded"
    page.shot("jobs")


def test_job_page_shows_allocs_and_a_running_deployments_progress(
    page: Page, tmp_path: Path
) -> None:
    update = "{min_healthy_time: 120s, health_check: task_states}"
    spec = sleeper(tmp_path, "slowroll", count=2, update=update)
    page.c.cli("job", "run", "--detach", spec, check=True)
    page.open("#/job/slowroll")
    page.wait(lambda: page.text("#allocs").count("slowroll.g[") == 2, what="two alloc rows")
    dep = page.wait(lambda: page.text("#deployment"), what="the deployment box")
    assert "running" in dep and "0/2 healthy" in dep and "2 placed" in dep
    assert page.js("return document.querySelectorAll('#deployment [role=progressbar]').length") == 1
    assert "Promote" in dep and "Fail" in dep
    page.shot("job")


def test_stopping_a_job_from_the_ui_asks_first_then_stops_it(page: Page, tmp_path: Path) -> None:
    spec = sleeper(tmp_path, "doomed")
    page.c.cli("job", "run", spec, check=True, timeout=60)
    page.open("#/job/doomed")
    page.wait(lambda: "running" in page.text("#allocs"), what="the running copy")
    page.click("#stop-job")
    assert page.js("return document.getElementById('confirm').open") is True
    assert "Stop job doomed?" in page.text("#confirm-text")
    page.shot("confirm-stop")
    page.click("#confirm-cancel")
    time.sleep(0.3)
    assert page.c.api("GET", "/v1/job/doomed")["job"]["stop"] is False  # cancel did nothing
    page.click("#stop-job")
    page.click("#confirm-ok")
    page.wait(lambda: page.c.api("GET", "/v1/job/doomed")["job"]["stop"], what="the job stopped")
    page.wait(
        lambda: "complete" in page.text("#allocs"),
        timeout=15,
        what="the page to show the stopped copy (live, no reload)",
    )


def test_alloc_page_tails_a_log_line_printed_after_it_opened(page: Page, tmp_path: Path) -> None:
    spec = job_file(tmp_path, "ticker", """
        name: ticker
        groups:
          - name: g
            tasks:
              - name: t
                driver: process
                kill_timeout: 1s
                config:
                  command: sh
                  args: ["-c", "while :; do echo tick $(date +%s%N); sleep 0.3; done"]
        """)  # fmt: skip
    page.c.cli("job", "run", spec, check=True, timeout=60)
    alloc = page.c.cli_json("job", "status", "ticker")["allocations"][0]["id"]
    page.open(f"#/alloc/{alloc}")
    opened_ns = time.time_ns()

    def fresh_line() -> bool:
        stamps = [int(s) for s in re.findall(r"tick (\d+)", page.text("#log"))]
        return any(s > opened_ns for s in stamps)

    page.wait(fresh_line, timeout=10, what="a line printed after the page opened")
    stamps = re.findall(r"tick (\d+)", page.text("#log"))
    assert len(stamps) == len(set(stamps)), "a line was shown twice"
    assert "running" in page.text("main")
    page.wait(lambda: "MiB" in page.text("#alloc-usage"), what="the alloc's memory use")
    assert "ticker.g[0]" in page.text("main")
    page.js("document.getElementById('log').scrollIntoView()")
    page.shot("alloc")


def test_node_eligibility_asks_first_and_the_page_fits_a_phone(page: Page) -> None:
    node = next(n for n in page.c.api("GET", "/v1/nodes") if n["name"] == "extra")
    page.open(f"#/node/{node['id']}")
    page.wait(lambda: "Make ineligible" in page.text("#eligibility"), what="the node page")
    page.click("#eligibility")
    assert page.js("return document.getElementById('confirm').open") is True
    page.click("#confirm-ok")
    page.wait(
        lambda: page.c.api("GET", f"/v1/node/{node['id']}")["eligible"] is False,
        what="the node ineligible",
    )
    page.wait(lambda: "Make eligible" in page.text("#eligibility"), what="the page updated")
    page.click("#eligibility")
    page.click("#confirm-ok")
    page.wait(lambda: page.c.api("GET", f"/v1/node/{node['id']}")["eligible"], what="eligible")
    page.d.set_window_size(390, 844)  # a phone
    for fragment in ("#/", "#/jobs", f"#/node/{node['id']}"):
        page.open(fragment)
        time.sleep(0.8)
        width = page.js("return [document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1] + 1, (fragment, width)  # wide tables scroll inside
    page.open("#/")
    page.wait(lambda: "nodes ready" in page.text("#health"), what="the overview")
    page.shot("phone")


def test_agent_memory_stays_flat_with_live_views_open(page: Page, cluster: Any) -> None:
    c, extra = cluster
    agent = psutil.Process(extra.proc.pid)
    on_extra = [a for a in c.api("GET", "/v1/allocations") if a["node_name"] == "extra"]
    assert on_extra, "a copy runs on the extra agent"

    def rss_over(seconds: float) -> float:
        samples = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            samples.append(agent.memory_info().rss)
            time.sleep(0.5)
        return sorted(samples)[len(samples) // 2]

    page.open("#/services")  # a view that reads nothing from the agents
    idle = rss_over(8)
    page.open(f"#/alloc/{on_extra[0]['id']}")  # usage every 2 s and a live log tail
    page.wait(lambda: "MiB" in page.text("#alloc-usage"), what="usage from the agent")
    busy = rss_over(12)
    assert busy <= idle * 1.05, f"agent RSS {busy / 2**20:.1f} MiB vs idle {idle / 2**20:.1f}"
