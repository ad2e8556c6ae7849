"""The shape of the `podium` command itself: every option explained, every mutating command
with --json, one table style, shell completion; checked over the whole command tree."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from podium.cli.main import build
from support.cli import no_traceback, run_cli

CLI_DIR = Path(__file__).resolve().parents[2] / "src" / "podium" / "cli"

# Commands that change something: each takes --json and prints the object it changed.
MUTATING = (
    "job run",
    "job stop",
    "job revert",
    "job scale",
    "job dispatch",
    "job periodic force",
    "deployment promote",
    "deployment fail",
    "deployment pause",
    "deployment resume",
    "alloc stop",
    "alloc restart",
    "node eligibility",
    "node drain",
    "node purge",
    "operator snapshot save",
    "operator snapshot restore",
    "acl bootstrap",
    "acl token create",
    "acl token delete",
    "acl policy apply",
    "acl policy delete",
    "namespace create",
    "namespace delete",
    "namespace quota set",
)
# Commands that read a namespaced kind: each takes -n/--namespace (and PODIUM_NAMESPACE).
NAMESPACED = ("job", "deployment", "alloc", "service")


def commands(group: click.Group, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    for name, cmd in sorted(group.commands.items()):
        path = f"{prefix} {name}".strip()
        yield path, cmd
        if isinstance(cmd, click.Group):
            yield from commands(cmd, path)


ALL = dict(commands(build()))


def test_every_json_and_timeout_option_is_explained() -> None:
    missing = [
        f"{path} {opt}"
        for path, cmd in ALL.items()
        for p in cmd.params
        if isinstance(p, click.Option)
        for opt in p.opts
        if opt in ("--json", "--timeout") and not p.help
    ]
    assert not missing, missing


def test_every_option_is_explained() -> None:
    missing = [
        f"{path} {p.opts[0]}"
        for path, cmd in ALL.items()
        for p in cmd.params
        if isinstance(p, click.Option) and not p.help and p.opts[0] != "--version"
    ]
    assert not missing, missing


@pytest.mark.parametrize("path", MUTATING)
def test_every_mutating_command_takes_json(path: str) -> None:
    cmd = ALL[path]
    assert any("--json" in p.opts for p in cmd.params if isinstance(p, click.Option)), path


def test_every_namespaced_command_takes_namespace() -> None:
    missing = []
    for path, cmd in ALL.items():
        if path.split()[0] in NAMESPACED and not isinstance(cmd, click.Group):
            opts = {o for p in cmd.params for o in p.opts}
            env = {p.envvar for p in cmd.params if isinstance(p, click.Option)}
            if not {"-n", "--namespace"} <= opts or "PODIUM_NAMESPACE" not in env:
                missing.append(path)
    assert not missing, missing


def test_the_commands_a_newcomer_looks_for_exist() -> None:
    for path in ("job list", "job inspect", "alloc list", "node purge", "completion"):
        assert path in ALL, path


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_prints_a_script_for_the_shell(shell: str) -> None:
    result = run_cli("completion", shell)
    no_traceback(result)
    assert result.exit_code == 0, result.output
    assert "_PODIUM_COMPLETE" in result.stdout
    assert {"bash": "complete", "zsh": "compdef", "fish": "--command podium"}[shell] in (
        result.stdout
    )


def test_completion_completes() -> None:
    """What the script asks podium for: the words that fit what was typed."""
    env = {"_PODIUM_COMPLETE": "bash_complete", "COMP_WORDS": "podium job ins", "COMP_CWORD": "2"}
    result = CliRunner().invoke(build(), [], env=env, prog_name="podium")
    assert result.exit_code == 0, result.output
    assert result.output.split() == ["plain,inspect"]


def test_completion_refuses_other_shells() -> None:
    result = run_cli("completion", "tcsh")
    no_traceback(result)
    assert result.exit_code == 2 and "bash" in result.output


def test_tables_are_built_in_one_place() -> None:
    """One table style: only cli/output.py builds a Rich table."""
    builders = []
    for path in sorted(CLI_DIR.glob("*.py")):
        if path.name == "output.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Table":
                builders.append(f"{path.name}:{node.lineno}")
            if isinstance(node, ast.ImportFrom) and node.module == "rich.table":
                builders.append(f"{path.name}:{node.lineno} imports rich.table")
    assert not builders, builders
