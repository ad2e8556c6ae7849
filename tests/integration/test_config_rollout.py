"""Config and secret changes on a real `podium dev`: rolled out like a deploy, rolled back by
themselves, signalled, restarted with splay; template failures where users see them.

The web app is examples/config_app.py (examples/config.yaml): it answers its greeting, its
worker count, an HMAC proving it read the secret, and its pid; /health fails on workers=0.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from integration.cluster import ROOT, Background, DevCluster, wait_until

EXAMPLE = ROOT / "examples" / "config.yaml"
APP = ROOT / "examples" / "config_app.py"


@pytest.fixture(scope="module")
def cluster(module_cluster: DevCluster) -> DevCluster:
    return module_cluster


def endpoints(c: DevCluster, service: str) -> list[str]:
    return [
        f"http://{e['address']}:{e['port']}/"
        for e in c.api("GET", f"/v1/service/{service}")["endpoints"]
    ]


def answers(c: DevCluster, service: str) -> list[dict[str, str]]:
    out = []
    for url in endpoints(c, service):
        text = httpx.get(url, timeout=2).text
        out.append(dict(part.split("=", 1) for part in text.split()))
    return out


def events(c: DevCluster, job: str, kind: str) -> list[dict[str, Any]]:
    return [
        e for e in c.api("GET", "/v1/events", params={"job": job, "limit": 0}) if e["type"] == kind
    ]


def variant(tmp: Path, name: str, count: int, template: dict[str, Any]) -> Path:
    """examples/config.yaml as job NAME with COUNT copies and app.conf's template changed."""
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["name"] = name
    group = doc["groups"][0]
    group["count"] = count
    group["services"][0]["name"] = name
    group["tasks"][0]["templates"][1].update(template)
    shutil.copy(APP, tmp / "config_app.py")
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@dataclass
class Poller(Background):
    """20 requests a second to the healthy copies in turn, and the catalog's view of them."""

    cluster: DevCluster
    service: str
    want: int
    errors: list[str] = field(default_factory=list)
    fewest_healthy: int = 1_000
    greetings: list[str] = field(default_factory=list)
    sent: int = 0

    def loop(self) -> None:
        i = 0
        with httpx.Client(timeout=2) as http:
            while not self._stop.is_set():
                t0 = time.monotonic()
                try:
                    urls = endpoints(self.cluster, self.service)
                    self.fewest_healthy = min(self.fewest_healthy, len(urls))
                    if urls:
                        resp = http.get(urls[i % len(urls)])
                        self.sent += 1
                        if resp.status_code != 200 or "greeting=" not in resp.text:
                            self.errors.append(f"{resp.status_code} {resp.text[:80]}")
                        else:
                            self.greetings.append(resp.text.split()[0])
                except httpx.HTTPError as e:
                    self.errors.append(repr(e))
                i += 1
                self._stop.wait(max(0.0, 0.05 - (time.monotonic() - t0)))


def _setup_data(c: DevCluster) -> None:
    c.cli("config", "put", "web/settings", "greeting=hello", "workers=4", check=True)
    res = c.cli("secret", "put", "web/hmac", "-", input="0123456789abcdef-test-key\n")
    assert res.returncode == 0, res.stderr


def _deployment(c: DevCluster, job: str, version: int) -> dict[str, Any]:
    found = [
        d
        for d in c.api("GET", "/v1/deployments", params={"job": job})
        if d["job_version"] == version
    ]
    assert found, f"no deployment of {job} version {version}"
    return found[0]


@pytest.mark.slow
def test_a_config_change_rolls_out_one_copy_at_a_time_and_a_bad_one_rolls_back(
    cluster: DevCluster,
) -> None:
    c = cluster
    _setup_data(c)
    c.cli("job", "run", str(EXAMPLE), "--timeout", "60", check=True, timeout=90)
    first = answers(c, "config-demo")
    assert len(first) == 3 and {a["greeting"] for a in first} == {"hello"}
    assert len({a["hmac"] for a in first}) == 1  # each read the secret (its HMAC, not it)

    with Poller(c, "config-demo", want=3) as poller:
        put = c.cli("config", "put", "web/settings", "greeting=bonjour", "workers=4", timeout=120)
        assert put.returncode == 0, put.stdout + put.stderr
        assert "deployment" in put.stdout and "successful" in put.stdout, put.stdout
    assert poller.errors == [], poller.errors
    assert poller.sent > 20
    # max_parallel 1: never more than one of the three copies out of service.
    assert poller.fewest_healthy >= 2, poller.fewest_healthy
    assert "greeting=hello" in poller.greetings and poller.greetings[-1] == "greeting=bonjour"
    assert {a["greeting"] for a in answers(c, "config-demo")} == {"bonjour"}
    job = c.api("GET", "/v1/job/config-demo")["job"]
    assert job["config_versions"] == {"config:web/settings": 2, "secret:web/hmac": 1}
    dep = _deployment(c, "config-demo", job["version"])
    assert dep["config_versions"]["config:web/settings"] == 2 and dep["status"] == "successful"

    # A config that makes /health fail rolls back to the previous version by itself.
    with Poller(c, "config-demo", want=3) as poller:
        bad = c.cli("config", "put", "web/settings", "greeting=broken", "workers=0", timeout=120)
        assert bad.returncode != 0  # the deployment it followed failed
        wait_until(
            lambda: (
                c.api("GET", "/v1/job/config-demo")["job"]["config_versions"]["config:web/settings"]
                == 2
            ),
            timeout=60,
            what="the job back on config version 2",
        )
        failed = events(c, "config-demo", "deployment.failed")[-1]["message"]
        assert "unhealthy" in failed and "rolling back to version 1" in failed, failed
        assert "config:web/settings 3 -> 2" in failed, failed
        wait_until(
            lambda: (
                {a["greeting"] for a in answers(c, "config-demo")} == {"bonjour"}
                and len(answers(c, "config-demo")) == 3
            ),
            timeout=60,
            what="three copies serving the previous config",
        )
    assert poller.errors == [], poller.errors
    assert "greeting=broken" not in poller.greetings
    history = c.cli("job", "history", "config-demo", check=True).stdout
    assert "podium (config web/settings)" in history and "auto-revert" in history
    # The job is held back on version 2: a plan says what running the file again would do.
    plan = c.cli("job", "plan", str(EXAMPLE), check=True).stdout
    assert "config:web/settings version 2 -> 3: config-demo.web[0] replace" in plan, plan
    c.cli("job", "stop", "config-demo", check=True)


@pytest.mark.slow
def test_signal_mode_serves_the_new_value_from_the_same_process(
    cluster: DevCluster, tmp_path: Path
) -> None:
    c = cluster
    if not c.api("GET", "/v1/configs"):
        _setup_data(c)
    c.cli("config", "put", "web/settings", "greeting=hello", "workers=4", check=True)
    job = variant(tmp_path, "sig", 2, {"change_mode": "signal", "change_signal": "SIGHUP"})
    c.cli("job", "run", str(job), "--timeout", "60", check=True, timeout=90)
    before = {a["pid"]: a for a in answers(c, "sig")}
    assert len(before) == 2
    put_at = time.monotonic()
    c.cli("config", "put", "web/settings", "greeting=salut", "workers=4", "--detach", check=True)

    def all_new() -> bool:
        now = answers(c, "sig")
        return len(now) == 2 and all(a["greeting"] == "salut" for a in now)

    wait_until(all_new, timeout=5, interval=0.05, what="both copies serving the new greeting")
    took = time.monotonic() - put_at
    assert took < 2.0, f"the new value took {took:.2f}s to be served"
    assert set(before) == {a["pid"] for a in answers(c, "sig")}  # the same processes
    sent = [e["message"] for e in events(c, "sig", "template.changed")]
    assert len(sent) == 2 and all("sent SIGHUP" in m for m in sent), sent
    assert not _deployment_exists(c, "sig", 1)


def _deployment_exists(c: DevCluster, job: str, version: int) -> bool:
    return any(
        d["job_version"] == version for d in c.api("GET", "/v1/deployments", params={"job": job})
    )


@pytest.mark.slow
def test_restart_mode_restarts_each_copy_after_its_own_splay(
    cluster: DevCluster, tmp_path: Path
) -> None:
    c = cluster
    if not c.api("GET", "/v1/configs"):
        _setup_data(c)
    c.cli("config", "put", "web/settings", "greeting=hello", "workers=4", check=True)
    job = variant(tmp_path, "rst", 3, {"change_mode": "restart", "splay": "6s"})
    c.cli("job", "run", str(job), "--timeout", "60", check=True, timeout=90)
    before = {a["pid"] for a in answers(c, "rst")}
    put_at = time.time()
    c.cli("config", "put", "web/settings", "greeting=hallo", "workers=4", "--detach", check=True)
    wait_until(
        lambda: len(a := answers(c, "rst")) == 3 and {x["greeting"] for x in a} == {"hallo"},
        timeout=30,
        what="three restarted copies serving the new greeting",
    )
    assert not before & {a["pid"] for a in answers(c, "rst")}  # every copy restarted
    announced = [
        float(re.search(r"restarting in ([0-9.]+)s", e["message"])[1])  # type: ignore[index]
        for e in events(c, "rst", "template.changed")
    ]
    assert len(announced) == 3 and all(0 <= d <= 6.0 for d in announced), announced
    assert len(set(announced)) > 1, f"every copy waited the same time: {announced}"
    # Each copy started again when its own wait was over, not at once.
    allocs = [
        a
        for a in c.api("GET", "/v1/allocations", params={"job": "rst"})
        if a["desired_status"] == "run"
    ]
    started = sorted(
        c.api("GET", f"/v1/allocation/{a['id']}")["task_states"]["app"]["started_at"] - put_at
        for a in allocs
    )
    for delay, at in zip(sorted(announced), started, strict=True):
        assert delay - 0.5 <= at <= delay + 5.0, (announced, started)


@pytest.mark.slow
def test_a_template_that_fails_fails_the_alloc_with_its_line_and_plan_catches_it(
    cluster: DevCluster, tmp_path: Path
) -> None:
    c = cluster
    c.cli("config", "put", "t/settings", "a=1", check=True)
    job = {
        "name": "tfail",
        "groups": [
            {
                "name": "g",
                "reschedule": {"attempts": 0, "unlimited": False},
                "tasks": [
                    {
                        "name": "t",
                        "config": {"command": "sleep", "args": ["60"]},
                        "templates": [
                            {
                                "destination": "app.conf",
                                "data": 'ok\n{{ config("t/settings")["nope"] }}',
                            }
                        ],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "tfail.yaml"
    path.write_text(yaml.safe_dump(job))
    why = "config 't/settings' version 1 has no key 'nope' (it has: a)"
    plan = c.cli("job", "plan", str(path))
    assert (
        plan.returncode == 1 and why in plan.stderr and "templates[0].data: line 2" in plan.stderr
    )
    c.cli("job", "run", str(path), "--detach", check=True)
    alloc_id = c.wait_alloc("tfail", "failed", timeout=20)
    status = c.cli("alloc", "status", alloc_id, check=True).stdout
    assert f"template app.conf line 2: {why}" in status, status
    failed = events(c, "tfail", "template.failed")
    assert failed and f"template app.conf line 2: {why}" in failed[0]["message"]
    # Syntax is caught without a server.
    path.write_text(
        yaml.safe_dump(
            {
                **job,
                "groups": [
                    {
                        **job["groups"][0],
                        "tasks": [
                            {
                                **job["groups"][0]["tasks"][0],
                                "templates": [{"destination": "x", "data": "a\n{% if %}"}],
                            }
                        ],
                    }
                ],
            }
        )
    )
    validate = c.cli("job", "validate", str(path))
    assert validate.returncode == 1 and "templates[0].data: line 2:" in validate.stderr


def test_plan_prints_values_as_written(cluster: DevCluster, tmp_path: Path) -> None:
    """A value such as `conf[key]` is not taken for Rich markup (it was printed `conf`)."""
    job = {
        "name": "verbatim",
        "groups": [
            {
                "name": "g",
                "tasks": [
                    {
                        "name": "t",
                        "config": {"command": "sleep", "args": ["60"]},
                        "env": {"A": "conf[key.strip()] [bold]x[/bold]"},
                    }
                ],
            }
        ],
    }
    path = tmp_path / "verbatim.yaml"
    path.write_text(yaml.safe_dump(job))
    out = cluster.cli("job", "plan", str(path), check=True).stdout
    assert "conf[key.strip()] [bold]x[/bold]" in out, out


@pytest.mark.slow
def test_a_template_over_a_service_follows_its_healthy_endpoints(
    cluster: DevCluster, tmp_path: Path
) -> None:
    c = cluster
    backend = {
        "name": "backend",
        "groups": [
            {
                "name": "g",
                "count": 1,
                "network": {"ports": {"http": {}}},
                "services": [
                    {
                        "name": "backend",
                        "port": "http",
                        "checks": [{"type": "tcp", "interval": "500ms", "timeout": "400ms"}],
                    }
                ],
                "tasks": [
                    {
                        "name": "t",
                        "config": {
                            "command": "python3",
                            "args": [
                                "-m",
                                "http.server",
                                "--bind",
                                "${PODIUM_IP}",
                                "${PODIUM_PORT_HTTP}",
                            ],
                        },
                    }
                ],
            }
        ],
    }
    front = {
        "name": "front",
        "groups": [
            {
                "name": "g",
                "tasks": [
                    {
                        "name": "t",
                        "config": {"command": "sleep", "args": ["600"]},
                        "templates": [
                            {
                                "destination": "peers",
                                "change_mode": "noop",
                                "data": '{% for e in service("backend") %}{{ e.address }}:{{ e.port }}\n{% endfor %}',
                            }
                        ],
                    }
                ],
            }
        ],
    }
    for doc in (backend, front):
        path = tmp_path / f"{doc['name']}.yaml"
        path.write_text(yaml.safe_dump(doc))
        c.cli("job", "run", str(path), "--timeout", "60", check=True, timeout=90)
    alloc = next(a["id"] for a in c.api("GET", "/v1/allocations", params={"job": "front"}))
    peers = c.data_dir / "agent" / "allocs" / alloc / "t" / "peers"

    def listed() -> set[str]:
        return set(peers.read_text().split()) if peers.exists() else set()

    def healthy() -> set[str]:
        return {
            f"{e['address']}:{e['port']}" for e in c.api("GET", "/v1/service/backend")["endpoints"]
        }

    assert len(listed()) == 1 and listed() == healthy()
    c.cli("job", "scale", "backend", "g", "3", check=True)
    wait_until(
        lambda: len(healthy()) == 3 and listed() == healthy(), timeout=30, what="three peers listed"
    )
    pid = c.api("GET", f"/v1/allocation/{alloc}")["task_states"]["t"]["pid"]
    c.cli("job", "scale", "backend", "g", "1", check=True)
    wait_until(
        lambda: len(healthy()) == 1 and listed() == healthy(), timeout=30, what="one peer listed"
    )
    assert c.api("GET", f"/v1/allocation/{alloc}")["task_states"]["t"]["pid"] == pid  # noop
    for name in ("front", "backend"):
        c.cli("job", "stop", name, check=True)


def test_a_node_gets_only_the_secrets_its_own_copy_reads(
    cluster: DevCluster, tmp_path: Path
) -> None:
    c = cluster
    for name in ("sa", "sb"):
        c.cli("secret", "put", f"two/{name}", "-", input=f"value-of-{name}\n", check=True)
    group = {"count": 1, "tasks": [{"name": "t", "config": {"command": "sleep", "args": ["600"]}}]}
    job = {
        "name": "two",
        "type": "batch",
        "groups": [
            {
                **group,
                "name": f"g{n}",
                "tasks": [{**group["tasks"][0], "env": {"S": {"secret": f"two/s{n}"}}}],
            }  # type: ignore[index]
            for n in ("a", "b")
        ],
    }
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(job))
    c.cli("job", "run", str(path), "--detach", check=True)
    allocs = wait_until(
        lambda: (
            (found := c.api("GET", "/v1/allocations", params={"job": "two"}))
            and len(found) == 2
            and found
        ),
        timeout=20,
        what="two copies",
    )
    for a in allocs:
        path = f"/v1/node/{a['node_id']}/allocation/{a['id']}/template-data"
        data = c.request("GET", path, agent=True).json()  # as the node
        mine = "sa" if a["group"] == "ga" else "sb"
        assert data["secrets"] == {f"two/{mine}": {"value": f"value-of-{mine}"}}
        assert list(data["versions"]) == [f"secret:two/{mine}"]
        # Not for another node's id.
        other = f"/v1/node/other-node/allocation/{a['id']}/template-data"
        assert c.request("GET", other, agent=True).status_code in (403, 404)
    c.cli("job", "stop", "two", check=True)
