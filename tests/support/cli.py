"""The `podium` command run in this process (click's runner), for tests that call it often.

    result = run_cli("job", "validate", path, env={"PODIUM_ADDR": addr})

A traceback is a failure of the test that caused it: `no_traceback(result)` says so with
the command's output and the exception's own traceback.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping

from click.testing import CliRunner, Result

from podium.cli.main import build


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, input: bytes | str | None = None
) -> Result:
    # Unset (None) PODIUM_* by default: the caller's shell must not steer a test, nor a
    # .podium/dev/cli.json of a `make dev` in the checkout (pass the cluster's tls_env()).
    base = {
        "PODIUM_ADDR": None,
        "PODIUM_NAMESPACE": None,
        "PODIUM_CACERT": None,
        "PODIUM_CLIENT_CERT": None,
        "PODIUM_CLIENT_KEY": None,
        "PODIUM_CONFIG": "/nonexistent/podium-cli.json",
        "COLUMNS": "200",
    }
    return CliRunner().invoke(build(), list(args), env={**base, **(env or {})}, input=input)


def cli_at(addr: str, *args: str, input: str | None = None, **env: str) -> Result:
    """`podium ARGS` against the server at `addr`; a traceback fails the test."""
    result = run_cli(*args, env={"PODIUM_ADDR": addr, **env}, input=input)
    no_traceback(result, " ".join(args))
    return result


def no_traceback(result: Result, what: str = "") -> None:
    """The command ended by exit (any code), never by an exception it did not handle."""
    if result.exception is None or isinstance(result.exception, SystemExit):
        assert "Traceback" not in result.output, result.output
        return
    tb = "".join(traceback.format_exception(result.exception))
    raise AssertionError(f"{what}: the CLI raised\n{tb}\noutput:\n{result.output}")
