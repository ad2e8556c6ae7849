"""`podium config …` and `podium secret …` as a user types them, on a real `podium dev`:
put (KEY=VALUE, --from-file, stdin, --cas, --merge), get (--version, --reveal), history, list
(with the jobs that read each), delete (refused while a running job reads it, unless
--force), --json on each, and the errors a user meets: clear, non-zero, no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from integration.cluster import DevCluster, wait_until
from support.cli import cli_at


# The CLI runs in this process (click's runner, as in test_cli_commands): 37 commands
# without 37 interpreter starts; a traceback still fails the test (cli_at).
def _ok(c: DevCluster, *args: str, input: str | None = None) -> str:
    res = cli_at(c.addr, *args, input=input, **c.tls_env())
    assert res.exit_code == 0, f"podium {' '.join(args)}: {res.output}"
    return res.stdout


def _refused(c: DevCluster, *args: str, says: str, input: str | None = None) -> None:
    res = cli_at(c.addr, *args, input=input, **c.tls_env())
    out = res.output
    assert res.exit_code != 0 and says in out, f"podium {' '.join(args)}: {out}"
    assert "Traceback" not in out, out


@pytest.mark.slow
def test_the_verbs_of_configs_and_secrets(dev_cluster: DevCluster, tmp_path: Path) -> None:
    c = dev_cluster
    # put: typed values, a file, --json; a new version per change, none for the same data.
    (tmp_path / "motd").write_text("line one\nline two\n")
    first = json.loads(
        _ok(c, "config", "put", "db/settings", "host=db1", "--from-file", f"motd={tmp_path}/motd",
            "--json")
    )  # fmt: skip
    assert first["config"]["version"] == 1 and first["changed"] is True
    assert first["config"]["keys"] == ["host", "motd"]
    assert "version 2" in _ok(c, "config", "put", "db/settings", "host=db2", "--merge")
    assert "unchanged, still version 2" in _ok(c, "config", "put", "db/settings", "host=db2",
                                                "--merge")  # fmt: skip
    # --cas: refused unless the current version is N; 0 means "must not exist yet".
    _refused(c, "config", "put", "db/settings", "host=db3", "--cas", "1", says="version 2")
    assert "version 3" in _ok(c, "config", "put", "db/settings", "host=db3", "--cas", "2")
    _refused(c, "config", "put", "db/settings", "host=x", "--cas", "0", says="db/settings")

    # get: the newest, or --version N; --merge kept motd from version 1.
    got = json.loads(_ok(c, "config", "get", "db/settings", "--version", "2", "--json"))
    assert got["version"] == 2 and got["data"] == {"host": "db2", "motd": "line one\nline two\n"}
    assert "host=db3" in _ok(c, "config", "get", "db/settings")
    _refused(c, "config", "get", "db/settings", "--version", "9", says="version 9")
    _refused(c, "config", "get", "no/such", says="no/such")
    _refused(c, "config", "get", "Bad Path", says="Bad Path")
    history = json.loads(_ok(c, "config", "history", "db/settings", "--json"))
    assert [h["version"] for h in history] == [3, 2, 1]
    assert "VERSION" in _ok(c, "config", "history", "db/settings")

    # A secret's value: from stdin or a file, never argv unless asked; shown only on --reveal.
    _refused(c, "secret", "put", "db/pw", "value=hunter2", says="--allow-argv")
    assert "version 1" in _ok(c, "secret", "put", "db/pw", "-", input="s3cret-one\n")
    (tmp_path / "pw").write_text("s3cret-two")
    assert "version 2" in _ok(c, "secret", "put", "db/pw", f"value=@{tmp_path}/pw")
    plain = _ok(c, "secret", "get", "db/pw")
    assert "s3cret" not in plain and "keys: value" in plain
    assert "value=s3cret-two" in _ok(c, "secret", "get", "db/pw", "--reveal")
    old = json.loads(_ok(c, "secret", "get", "db/pw", "--version", "1", "--reveal", "--json"))
    assert old["data"] == {"value": "s3cret-one"}
    assert "s3cret" not in _ok(c, "secret", "history", "db/pw")
    # Over 1 MiB: refused before it is sent, naming the key.
    (tmp_path / "big").write_bytes(b"x" * (1024 * 1024 + 1))
    _refused(c, "secret", "put", "db/big", "--from-file", f"blob={tmp_path}/big",
             says="larger than 1 MiB")  # fmt: skip

    # list: version, keys and the jobs that read each.
    job = {
        "name": "reader",
        "groups": [
            {
                "name": "g",
                "tasks": [
                    {
                        "name": "t",
                        "config": {"command": "sleep", "args": ["300"]},
                        "env": {"PW": {"secret": "db/pw"}},
                        "templates": [
                            {"destination": "c", "data": '{{ config("db/settings")["host"] }}'}
                        ],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "reader.yaml"
    path.write_text(yaml.safe_dump(job))
    _ok(c, "job", "run", str(path), "--timeout", "60")
    listed = {r["path"]: r for r in json.loads(_ok(c, "secret", "list", "--json"))}
    assert listed["db/pw"]["used_by"] == ["reader"] and "data" not in listed["db/pw"]
    assert "reader" in _ok(c, "config", "list")

    # delete: refused while a running job reads it, unless --force.
    _refused(c, "secret", "delete", "db/pw", says="reader")
    _refused(c, "config", "delete", "db/settings", says="reader")
    _ok(c, "job", "stop", "reader")
    wait_until(
        lambda: all(
            a["client_status"] != "running"
            for a in c.api("GET", "/v1/allocations", params={"job": "reader"})
        ),
        timeout=30,
        what="the reader stopped",
    )
    assert "deleted" in _ok(c, "config", "delete", "db/settings")
    _refused(c, "config", "get", "db/settings", says="db/settings")
    _refused(c, "job", "run", str(path), "--detach", says="db/settings")  # reads what is gone
    _ok(c, "config", "put", "db/settings", "host=db9")
    _ok(c, "job", "run", str(path), "--timeout", "60")
    _refused(c, "secret", "delete", "db/pw", says="reader")
    assert json.loads(_ok(c, "secret", "delete", "db/pw", "--force", "--json"))["index"] > 0
    assert json.loads(_ok(c, "secret", "list", "--json")) == []
