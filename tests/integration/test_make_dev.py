"""`make dev` as a newcomer runs it: the example goes in once, a second run leaves what the
user changed alone and says so, and Ctrl-C is a clean exit (the tasks keep running)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import psutil
import pytest

from integration.cluster import ROOT, free_port, read_until
from support.cli import no_traceback, run_cli

pytestmark = pytest.mark.integration
READY = "podium is running at"


def start(tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PODIUM_DEV_ADDR": f"127.0.0.1:{port}",
        "PODIUM_DEV_DATA_DIR": str(tmp_path / "dev"),
    }
    env.pop("PODIUM_ADDR", None)
    # Its own session: Ctrl-C in a terminal signals the whole foreground group, as here.
    return subprocess.Popen(
        ["make", "-s", "dev"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def ctrl_c(proc: subprocess.Popen[bytes]) -> str:
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    return out.decode(errors="replace")


def kill_tasks(tmp_path: Path) -> None:
    """The tasks outlive podium dev by design; the test's own are ended here."""
    for p in psutil.process_iter(["pid"]):
        try:
            if p.environ().get("PODIUM_ALLOC_DIR", "").startswith(str(tmp_path)):
                p.kill()
        except (psutil.Error, OSError):
            pass


def cli(tmp_path: Path, *args: str) -> str:
    """The CLI as `make dev` told the user to use it: the credentials the cluster wrote
    (cli.json, with the address; PODIUM_CONFIG names it for a data dir of one's own)."""
    result = run_cli(*args, env={"PODIUM_CONFIG": str(tmp_path / "dev" / "cli.json")})
    no_traceback(result)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_make_dev_twice_keeps_a_scale_down_and_ctrl_c_is_clean(tmp_path: Path) -> None:
    port = free_port()
    first = start(tmp_path, port)
    try:
        said = read_until(first, READY, timeout=90)
        assert READY in said, said
        assert "submitting examples/web.yaml" in said, said
        cli(tmp_path, "job", "scale", "web", "frontend", "1")
        out = ctrl_c(first)
        said += out
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert "Error" not in said and "Traceback" not in said, said
    assert "podium dev stopped; the tasks keep running" in said, said
    # make dies of the SIGINT it got itself (GNU make re-raises it); the script under it
    # exited 0, which is why make prints no "*** Error".
    assert first.returncode in (0, -signal.SIGINT), (first.returncode, said)

    second = start(tmp_path, port)
    try:
        said = read_until(second, READY, timeout=90)
        assert "job 'web' exists already: not submitting examples/web.yaml again" in said, said
        status = cli(tmp_path, "job", "status", "web", "--json")
        assert '"count": 1' in status
        cli(tmp_path, "job", "stop", "web", "--purge", "--detach")
        ctrl_c(second)
    finally:
        if second.poll() is None:
            os.killpg(second.pid, signal.SIGKILL)
        kill_tasks(tmp_path)


def test_the_dev_script_itself_exits_0_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "PODIUM_DEV_ADDR": f"127.0.0.1:{port}",
        "PODIUM_DEV_DATA_DIR": str(tmp_path / "dev"),
    }
    proc = subprocess.Popen(
        ["bash", "scripts/dev.sh"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        said = read_until(proc, READY, timeout=90)
        assert READY in said, said
        cli(tmp_path, "job", "stop", "web", "--purge", "--detach")
        ctrl_c(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        kill_tasks(tmp_path)
    assert proc.returncode == 0
