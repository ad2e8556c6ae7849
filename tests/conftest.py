"""Shared by every test tier: puts tests/ on sys.path so `support` (test helpers) imports."""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)


def pytest_sessionfinish(session: object, exitstatus: int) -> None:
    """No token secret a test made may be in any file the run left (support/canary.py)."""
    from support import canary

    factory = getattr(getattr(session, "config", None), "_tmp_path_factory", None)
    if factory is None or not canary.SECRETS:
        return
    found = canary.leaks(factory.getbasetemp())
    if found:
        print("\nCANARY: token secrets found in files:", *found, sep="\n  ")
        session.exitstatus = 1  # type: ignore[attr-defined]
    else:
        print(f"\ncanary: {len(canary.SECRETS)} token secret(s) in no file of the run")
