"""Templates in containers: a docker task sees its rendered files under /local (secrets/ on
the tmpfs, read-only to others), its secret env, and a signal when its config changes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from integration.cluster import DevCluster, wait_until
from integration.docker_image import IMAGE, ensure_image, remove_containers, require_docker

pytestmark = pytest.mark.integration

SCRIPT = 'trap "cat /local/app.conf > /local/reloaded" HUP; while true; do sleep 0.2; done'


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[DevCluster]:
    require_docker()
    ensure_image()
    c = DevCluster(tmp_path / "dev").start()
    try:
        yield c
    finally:
        node = (c.data_dir / "agent" / "node-id").read_text().strip()
        c.stop()
        c.kill_leftovers()
        with contextlib.suppress(OSError):
            remove_containers(f"podium.node_id={node}")


def test_a_container_gets_its_files_env_and_signal(dev: DevCluster, tmp_path: Path) -> None:
    c = dev
    c.cli("config", "put", "d/settings", "greeting=hi", check=True)
    c.cli("secret", "put", "d/pw", "-", input="container-secret-1\n", check=True)
    job = {
        "name": "dtpl",
        "groups": [
            {
                "name": "g",
                "update": {"health_check": "task_states", "min_healthy_time": "1s"},
                "tasks": [
                    {
                        "name": "t",
                        "driver": "docker",
                        "resources": {"cpu": 100, "memory": 32},
                        "config": {"image": IMAGE, "command": "sh", "args": ["-c", SCRIPT]},
                        "env": {"PW": {"secret": "d/pw"}},
                        "templates": [
                            {
                                "destination": "app.conf",
                                "data": 'greeting={{ config("d/settings")["greeting"] }}',
                                "change_mode": "signal",
                            },
                            {"destination": "secrets/pw", "data": '{{ secret("d/pw")["value"] }}'},
                        ],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "dtpl.yaml"
    path.write_text(yaml.safe_dump(job))
    res = c.cli("job", "run", str(path), "--timeout", "60", timeout=90)
    assert res.returncode == 0, res.stdout + res.stderr + c.logs()
    alloc = next(a["id"] for a in c.api("GET", "/v1/allocations", params={"job": "dtpl"}))

    def exec_(script: str) -> str:
        out = c.cli("alloc", "exec", alloc, "--", "sh", "-c", script)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout.strip()

    assert exec_("cat /local/app.conf") == "greeting=hi"
    assert exec_('[ "$(cat /local/secrets/pw)" = "$PW" ] && echo same') == "same"
    assert exec_("ls -l /local/secrets/pw").startswith("-r--------")
    c.cli("config", "put", "d/settings", "greeting=ho", "--detach", check=True)
    reloaded = c.data_dir / "agent" / "allocs" / alloc / "t" / "reloaded"
    wait_until(
        lambda: reloaded.exists() and reloaded.read_text().strip() == "greeting=ho",
        timeout=15,
        what="the container to reload its file on SIGHUP",
    )
    state = c.api("GET", f"/v1/allocation/{alloc}")["task_states"]["t"]
    assert state["restarts"] == 0 and state["state"] == "running"
