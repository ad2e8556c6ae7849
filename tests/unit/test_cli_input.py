"""Careless input to `podium job validate|plan|run`: a clear error naming the file and where,
never a traceback; the CLI validates before it sends anything (no server needed here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.cli import no_traceback, run_cli

# Nothing listens here: a command that tried to send would fail with "no podium server".
NOWHERE = {"PODIUM_ADDR": "http://127.0.0.1:9"}

GOOD = """\
name: tiny
groups:
  - name: g
    tasks:
      - name: t
        config: {command: sleep, args: ["60"]}
"""


@pytest.mark.parametrize("command", ["validate", "plan", "run"])
def test_bytes_that_are_not_utf8_name_the_file_and_the_offset(tmp_path: Path, command: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"name: x\ngroups: \xff\xfe []\n")
    result = run_cli("job", command, str(path), env=NOWHERE)
    no_traceback(result, command)
    assert result.exit_code == 1
    assert str(path) in result.output
    assert "UTF-8" in result.output and "offset 16" in result.output
    assert "line 2" in result.output


@pytest.mark.parametrize("command", ["plan", "run"])
def test_a_nan_is_reported_as_validate_reports_it_before_anything_is_sent(
    tmp_path: Path, command: str
) -> None:
    path = tmp_path / "nan.yaml"
    path.write_text(
        GOOD.replace("    tasks:", "    services:\n      - name: s\n        checks: "
                     "[{type: command, command: [true], interval: .nan}]\n    tasks:")
    )  # fmt: skip
    validated = run_cli("job", "validate", str(path))
    no_traceback(validated)
    assert validated.exit_code == 1
    assert "groups[0].services[0].checks[0].interval" in validated.output
    result = run_cli("job", command, str(path), env=NOWHERE)
    no_traceback(result, command)
    assert result.exit_code == 1
    assert "groups[0].services[0].checks[0].interval" in result.output
    assert "no podium server" not in result.output  # refused here, not sent


def test_file_dash_reads_stdin() -> None:
    result = run_cli("job", "validate", "-", input=GOOD)
    no_traceback(result)
    assert result.exit_code == 0, result.output
    assert "ok" in result.output and "'tiny'" in result.output
    bad = run_cli("job", "validate", "-", input=b"name: \xc3\x28\n")
    no_traceback(bad)
    assert bad.exit_code == 1
    assert "stdin" in bad.output and "offset 6" in bad.output


def test_json_from_stdin_is_read_as_json() -> None:
    result = run_cli("job", "validate", "-", input='{"name": "j", "groups": [}')
    no_traceback(result)
    assert result.exit_code == 1
    assert "line 1" in result.output


def test_missing_file_and_directory_are_clear_errors(tmp_path: Path) -> None:
    for target in (tmp_path / "nope.yaml", tmp_path):
        result = run_cli("job", "validate", str(target))
        no_traceback(result)
        assert result.exit_code != 0
        assert str(target) in result.output
