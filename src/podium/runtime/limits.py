"""Process limits a long-running podium process raises for itself at start."""

from __future__ import annotations

import contextlib
import resource


def raise_open_files_limit() -> None:
    """Soft NOFILE up to the hard limit: a server holds a connection or two per agent (a
    blocking query and a heartbeat), an agent two log pipes per task and the proxy a
    connection or two per client (tasks still start with the limit we had)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
