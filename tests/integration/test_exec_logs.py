"""`alloc exec` and `alloc logs` through the server, on `podium dev` (mutual TLS on).

stdin is forwarded, a missing command is a 4xx naming it, -t gives the command a real
terminal (driven here through a pty, as a person's terminal would), exit codes come back.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
from pathlib import Path

import pytest

from integration.cluster import PODIUM, ROOT, DevCluster, wait_until

pytestmark = pytest.mark.integration

SLEEPER = {
    "name": "sleeper",
    "type": "service",
    "groups": [
        {
            "name": "g",
            "count": 1,
            "tasks": [
                {
                    "name": "t",
                    "driver": "process",
                    "config": {
                        "command": "sh",
                        "args": ["-c", "while true; do echo tick; sleep 0.2; done"],
                    },
                    "resources": {"cpu": 50, "memory": 32},
                }
            ],
        }
    ],
}


def _alloc(c: DevCluster) -> str:
    c.api("POST", "/v1/jobs", json={"job": SLEEPER})

    def running() -> str:
        for a in c.api("GET", "/v1/job/sleeper")["allocations"]:
            if a["client_status"] == "running":
                return str(a["id"])
        return ""

    return str(wait_until(running, timeout=20, what="sleeper running"))


def test_exec_forwards_stdin_and_exit_code_and_names_a_missing_command(
    dev_cluster: DevCluster,
) -> None:
    alloc = _alloc(dev_cluster)
    env = {**os.environ, "PODIUM_ADDR": dev_cluster.addr, **dev_cluster.tls_env()}
    res = subprocess.run(
        [*PODIUM, "alloc", "exec", alloc, "--", "cat"],
        input="hi\n", capture_output=True, text=True, env=env, cwd=ROOT, timeout=30,
    )  # fmt: skip
    assert res.returncode == 0 and res.stdout == "hi\n", (res.stdout, res.stderr)
    res = dev_cluster.cli(
        "alloc", "exec", alloc, "--", "sh", "-c", "echo out; echo err >&2; exit 7"
    )
    assert res.returncode == 7 and res.stdout == "out\n" and "err" in res.stderr, res
    res = dev_cluster.cli("alloc", "exec", alloc, "--", "no-such-command-xyz")
    assert res.returncode != 0 and "no-such-command-xyz" in res.stderr, res
    assert "Traceback" not in res.stderr and "500" not in res.stderr, res.stderr
    # The API answers it as a 4xx (before any upgrade), naming the command.
    import websockets.sync.client as wsc
    from websockets.exceptions import InvalidStatus

    url = (
        dev_cluster.addr.replace("https", "wss")
        + f"/v1/allocation/{alloc}/exec?cmd=no-such-command-xyz"
    )
    with pytest.raises(InvalidStatus) as e:
        wsc.connect(url, ssl=dev_cluster.ssl_context())
    assert 400 <= e.value.response.status_code < 500
    assert b"no-such-command-xyz" in (e.value.response.body or b"")


def test_interactive_exec_with_a_tty_through_a_pty(dev_cluster: DevCluster) -> None:
    alloc = _alloc(dev_cluster)
    env = {
        **os.environ,
        "PODIUM_ADDR": dev_cluster.addr,
        **dev_cluster.tls_env(),
        "COLUMNS": "80",
        "LINES": "24",
    }
    pid, fd = pty.fork()
    if pid == 0:  # the child: the CLI on our pseudo-terminal
        os.chdir(ROOT)
        os.execvpe(PODIUM[0], [*PODIUM, "alloc", "exec", "-t", alloc, "--", "sh"], env)
    out = b""

    def read_until(marker: bytes, timeout: float = 20.0) -> None:
        nonlocal out
        deadline = time.monotonic() + timeout
        while marker not in out:
            left = deadline - time.monotonic()
            assert left > 0, f"no {marker!r} in {out[-500:]!r}"
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                try:
                    out += os.read(fd, 4096)
                except OSError:
                    break

    os.write(fd, b"tty; echo $((6*7))\n")
    read_until(b"42")
    assert b"/dev/pts/" in out  # the command has a terminal of its own
    os.write(fd, b"stty size\n")
    read_until(b"24 80")
    os.write(fd, b"exit 3\n")
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 3, out[-300:]


def test_logs_follow_through_the_server(dev_cluster: DevCluster) -> None:
    alloc = _alloc(dev_cluster)
    env = {**os.environ, "PODIUM_ADDR": dev_cluster.addr, **dev_cluster.tls_env()}
    proc = subprocess.Popen(
        [*PODIUM, "alloc", "logs", "-f", "--stdout", "--tail", "0", alloc],
        stdout=subprocess.PIPE, env=env, cwd=ROOT,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        assert lines == [b"tick\n"] * 3, lines
    finally:
        proc.terminate()
        proc.wait(10)


def test_snapshot_restore_refuses_a_corrupt_value_and_an_escaping_id(
    dev_cluster: DevCluster, tmp_path: Path
) -> None:
    saved = tmp_path / "s.jsonl"
    dev_cluster.cli("operator", "snapshot", "save", str(saved), check=True)
    lines = saved.read_text().splitlines()
    import base64
    import json

    header = json.loads(lines[0])
    corrupt = {"key": "/jobs/default/broken", "value": base64.b64encode(b'{"name": 5}').decode()}
    escape = {"key": "/allocs/../../x", "value": base64.b64encode(b"{}").decode()}
    header["keys"] += 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        "\n".join([json.dumps(header), *lines[1:], json.dumps(corrupt), json.dumps(escape)]) + "\n"
    )
    # Through the API (the CLI checks the file first; the server checks it again).
    r = dev_cluster.request(
        "PUT", "/v1/operator/snapshot", params={"force": "true"}, content=bad.read_bytes(),
        headers={"content-type": "application/x-ndjson"},
    )  # fmt: skip
    assert r.status_code == 400, r.text
    assert "/jobs/default/broken" in r.text and "/allocs/../../x" in r.text, r.text
    res = dev_cluster.cli("operator", "snapshot", "restore", "--force", str(bad))
    assert res.returncode != 0 and "/allocs/../../x" in res.stderr and "broken" in res.stderr
    # Nothing was written: the node and the store are as they were.
    assert [n["status"] for n in dev_cluster.api("GET", "/v1/nodes")] == ["ready"]
