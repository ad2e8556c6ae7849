"""The README's commands against `podium dev`, as a newcomer types them: no flags and no
PODIUM_* variables. The CLI finds the cluster and its credentials in
`.podium/dev/cli.json` (mutual TLS on by default); elsewhere `. .podium/dev/env` gives
curl and scripts the same, and `podium dev env` prints it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.cluster import PODIUM, ROOT, DevCluster, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, DevCluster]]:
    """A directory standing in for the checkout: examples/ and a .podium/dev of its own."""
    here = tmp_path_factory.mktemp("checkout")
    shutil.copytree(ROOT / "examples", here / "examples")
    c = DevCluster(here / ".podium" / "dev").start()
    try:
        yield here, c
    finally:
        c.stop()
        c.kill_leftovers()


def _bare_env() -> dict[str, str]:
    """The user's environment: nothing of podium's."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PODIUM_")}


def _podium(here: Path, *args: str, timeout: float = 120.0) -> str:
    res = subprocess.run(
        [*PODIUM, *args],
        capture_output=True,
        text=True,
        env={**_bare_env(), "COLUMNS": "200"},
        cwd=here,
        timeout=timeout,
    )
    assert res.returncode == 0, (args, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    return res.stdout


def test_readme_commands_work_without_flags(checkout: tuple[Path, DevCluster]) -> None:
    here, c = checkout
    assert c.addr.startswith("https://")
    _podium(here, "job", "run", "examples/web.yaml")
    status = _podium(here, "job", "status", "web")
    assert "web" in status
    alloc = wait_until(
        lambda: next(
            (a["id"] for a in c.api("GET", "/v1/job/web")["allocations"]
             if a["client_status"] == "running"),
            "",
        ),
        timeout=30,
        what="a running copy of web",
    )  # fmt: skip
    short = alloc[:8]
    assert short in _podium(here, "alloc", "status", short)
    _podium(here, "alloc", "logs", short)
    listing = _podium(here, "alloc", "exec", short, "--", "ls")
    assert listing.strip(), "exec printed nothing"
    _podium(here, "job", "plan", "examples/web.yaml")
    assert "ready" in _podium(here, "node", "status")
    _podium(here, "events", "--topic", "alloc")
    _podium(here, "top", "--once")
    _podium(here, "logs", "web", "--since", "10m")


def test_dev_env_gives_curl_the_same_credentials(checkout: tuple[Path, DevCluster]) -> None:
    here, c = checkout
    printed = _podium(here, "dev", "env")
    written = (c.data_dir / "env").read_text()
    assert printed.strip() == written.strip()
    names = dict(re.findall(r"export (PODIUM_[A-Z_]+)=(\S+)", written))
    assert set(names) >= {"PODIUM_ADDR", "PODIUM_CACERT", "PODIUM_CLIENT_CERT"}, written
    assert names["PODIUM_ADDR"].strip("'\"") == c.addr
    curl = shutil.which("curl")
    assert curl is not None, "curl is not installed"
    script = (
        ". .podium/dev/env && "
        f'{curl} -sS --fail --cacert "$PODIUM_CACERT" --cert "$PODIUM_CLIENT_CERT" '
        '--key "$PODIUM_CLIENT_KEY" "$PODIUM_ADDR/v1/nodes"'
    )
    res = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env=_bare_env(), cwd=here,
        timeout=30,
    )  # fmt: skip
    assert res.returncode == 0 and '"ready"' in res.stdout, (res.stdout, res.stderr)
    # The variables alone (another directory, no cli.json there) take the CLI there too.
    elsewhere = here / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    res = subprocess.run(
        ["bash", "-c", f". {here}/.podium/dev/env && {' '.join(PODIUM)} node status"],
        capture_output=True, text=True, env=_bare_env(), cwd=elsewhere, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0 and "ready" in res.stdout, (res.stdout, res.stderr)
