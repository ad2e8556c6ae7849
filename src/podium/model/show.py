"""Words for error messages: a value a user wrote (short, safe for any input), and the
near name for a misspelt one ("did you mean ...?")."""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence


def show(value: object) -> str:
    """A value as it appears in a message: short, and safe for any input."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if value.bit_length() <= 64 else "an integer too large to use"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        short = value if len(value) <= 60 else value[:57] + "..."
        try:
            short.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: escape so the message stays printable
            return json.dumps(short)
        return json.dumps(short, ensure_ascii=False)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def near(word: object, names: Sequence[str]) -> str:
    """' (did you mean "x"?)' when `word` is close to one of `names`, else ""."""
    if not isinstance(word, str) or len(word) > 64:
        return ""
    close = difflib.get_close_matches(word, names, n=1, cutoff=0.7)
    return f' (did you mean "{close[0]}"?)' if close else ""


def unknown_field(key: object, valid: Sequence[str]) -> str:
    return f"unknown field{near(key, valid)}; valid fields are: {', '.join(valid)}"
