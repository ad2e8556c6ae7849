"""User regular expressions (constraint `regexp` values): RE2, never Python's `re`.

RE2 matches in time linear in the input, so a pattern from a job file cannot stall the
scheduler on the leader's event loop (Python's backtracking `re` takes exponential time
on patterns such as `^(a+)+$`). What RE2 cannot compile (backreferences, lookaround,
repetition over 1000) is rejected at validation with RE2's own reason.

    job file ── validate: compile_pattern (error -> Problem) ── scheduler: compile_pattern
"""

from __future__ import annotations

import functools

import re2

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a bad pattern is the user's error, reported once, not logged


class PatternError(ValueError):
    """A pattern RE2 cannot compile; the message is RE2's reason."""


@functools.lru_cache(maxsize=1024)
def compile_pattern(text: str) -> re2._Regexp:
    """The compiled pattern, or PatternError saying why RE2 refuses it."""
    try:
        return re2.compile(text, _OPTIONS)
    except re2.error as e:
        reason = e.args[0] if e.args else "invalid pattern"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise PatternError(str(reason)) from None
    except (TypeError, ValueError) as e:  # e.g. a string RE2 cannot take as UTF-8
        raise PatternError(str(e)) from None
