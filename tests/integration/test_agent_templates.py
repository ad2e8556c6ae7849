"""The agent's template hook on real files: where each file goes, its mode, the tmpfs under
secrets/, env from templates and from secrets, what counts as a change, and cleanup."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import msgspec
import pytest

from podium.agent.templates import TemplateHook, parse_env
from podium.model import spec
from podium.model.types import Allocation, Job, Node
from podium.templates import jobs as template_jobs
from podium.templates import sandbox

CANARY = "canary-agent-1b2c"


class FakeData:
    """Data as the server would give it, rendered in this process."""

    def __init__(self) -> None:
        self.configs = {"web/s": {"greeting": "hello"}}
        self.secrets = {"web/pw": {"value": CANARY}}

    async def pinned(self, alloc: Allocation, version: int) -> dict[str, Any]:
        return {"configs": self.configs, "secrets": self.secrets, "versions": {"config:web/s": 1}}

    async def endpoints(self, namespace: str, service: str) -> list[dict[str, Any]]:
        return [{"address": "10.1.1.1", "port": 9000, "node_name": "n1"}]

    async def render(self, name: str, text: str, inputs: sandbox.Inputs) -> str:
        return sandbox.render(name, text, inputs)


def _job() -> Job:
    raw = {
        "name": "web",
        "groups": [
            {
                "name": "g",
                "tasks": [
                    {
                        "name": "t",
                        "config": {"command": "x"},
                        "env": {
                            "PW": {"secret": "web/pw"},
                            "HI": {"config": "web/s", "key": "greeting"},
                        },
                        "templates": [
                            {
                                "destination": "conf/app.conf",
                                "data": 'g={{ config("web/s")["greeting"] }}',
                            },
                            {
                                "destination": "secrets/pw",
                                "data": '{{ secret("web/pw")["value"] }}',
                            },
                            {
                                "destination": "peers",
                                "data": '{% for p in service("api") %}{{ p.address }}{% endfor %}',
                                "perms": "0640",
                            },
                            {
                                "destination": "app.env",
                                "data": "A=1\n# comment\nB={{ env.PODIUM_TASK }}",
                                "env": True,
                            },
                        ],
                    }
                ],
            }
        ],
    }
    job, problems = template_jobs.check(spec.validate(spec.canonicalize(raw)))
    assert not problems
    return msgspec.structs.replace(job, config_versions={"config:web/s": 1, "secret:web/pw": 1})


@pytest.fixture
async def hook(tmp_path: Path) -> Any:
    job = _job()
    alloc = Allocation(
        id="a1", namespace="default", job="web", job_version=0, group="g", index=0, node_id="n1"
    )
    task_dir = tmp_path / "t"
    task_dir.mkdir()
    h = TemplateHook(
        alloc, job.groups[0], Node(id="n1", name="n1"), FakeData(),
        {"t": str(task_dir)}, {"t": {"PODIUM_TASK": "t"}},
    )  # fmt: skip
    yield h, job, task_dir
    await h.cleanup()


async def test_files_modes_tmpfs_and_env(hook: Any) -> None:
    h, job, task_dir = hook
    assert await h.write(await h.render(job)) == {}  # the first render is no change
    assert (task_dir / "conf/app.conf").read_text() == "g=hello"
    assert stat.S_IMODE((task_dir / "conf/app.conf").stat().st_mode) == 0o644
    assert stat.S_IMODE((task_dir / "peers").stat().st_mode) == 0o640
    assert (task_dir / "peers").read_text() == "10.1.1.1"
    secret = task_dir / "secrets/pw"
    assert secret.read_text() == CANARY
    assert stat.S_IMODE(secret.stat().st_mode) == 0o400
    assert stat.S_IMODE((task_dir / "secrets").stat().st_mode) == 0o700
    if os.geteuid() == 0:
        assert (task_dir / "secrets").is_mount(), "root can mount a tmpfs for secrets"
    assert h.env_of("t") == {"A": "1", "B": "t", "PW": CANARY, "HI": "hello"}


async def test_changes_are_what_changed_and_cleanup_removes_the_secrets(hook: Any) -> None:
    h, job, task_dir = hook
    await h.write(await h.render(job))
    assert await h.write(await h.render(job)) == {}  # the same data: nothing to do
    h.source.configs = {"web/s": {"greeting": "bonjour"}}
    changes = await h.write(await h.render(job))
    # The file, and the env HI that reads the same config: a restart.
    assert [c.template.destination for c in changes["t"]] == ["conf/app.conf", "env"]
    h.source.secrets = {"web/pw": {"value": "rotated"}}
    changes = await h.write(await h.render(job))
    # The file and the env both read the secret: the env change means a restart.
    assert {c.template.destination for c in changes["t"]} == {"secrets/pw", "env"}
    assert any(c.env for c in changes["t"])
    await h.cleanup()
    assert not (task_dir / "secrets").exists()
    assert (task_dir / "conf/app.conf").exists()  # only secrets go


def test_env_files_are_key_value_lines_and_a_bad_line_shows_no_value() -> None:
    assert parse_env("e", "A=1\n\n# c\nexport B=two words \n") == {"A": "1", "B": "two words"}
    with pytest.raises(sandbox.TemplateError) as e:
        parse_env("e", f"A=1\n{CANARY}\n")
    assert e.value.line == 2 and CANARY not in str(e.value)
