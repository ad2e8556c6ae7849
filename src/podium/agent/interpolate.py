"""`${NAME}` interpolation in task config and env: task env vars and node fields.

Unknown names are left as they are (so a shell's own `${VAR}` survives), which is
what an operator reading the rendered command expects.
"""

from __future__ import annotations

import re
from typing import Any

_VAR = re.compile(r"\$\{([A-Za-z0-9_.\-]+)\}")


def render(value: Any, variables: dict[str, str]) -> Any:
    if isinstance(value, str):
        return _VAR.sub(lambda m: variables.get(m.group(1), m.group(0)), value)
    if isinstance(value, list):
        return [render(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: render(v, variables) for k, v in value.items()}
    return value
