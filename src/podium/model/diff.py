"""Field diffs between two job specs (plain data), for `job plan` and job history."""

from __future__ import annotations

from typing import Any

import msgspec


class FieldChange(msgspec.Struct, kw_only=True):
    path: str
    kind: str  # "added" | "removed" | "changed"
    old: Any = None
    new: Any = None


def diff(old: Any, new: Any, path: str = "") -> list[FieldChange]:
    """Every leaf that differs, with its path; lists of named items are matched by name.
    An env value read from a secret or config is one leaf, shown as `<secret:PATH>`."""
    old, new = _env_ref(old), _env_ref(new)
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[FieldChange] = []
        for k in sorted(set(old) | set(new), key=str):
            p = f"{path}.{k}" if path else str(k)
            if k not in old:
                out.append(FieldChange(path=p, kind="added", new=new[k]))
            elif k not in new:
                out.append(FieldChange(path=p, kind="removed", old=old[k]))
            else:
                out.extend(diff(old[k], new[k], p))
        return out
    if isinstance(old, list) and isinstance(new, list):
        if _named(old) and _named(new):
            return diff({i["name"]: i for i in old}, {i["name"]: i for i in new}, path)
        if len(old) == len(new):
            out = []
            for i, (o, n) in enumerate(zip(old, new, strict=True)):
                out.extend(diff(o, n, f"{path}[{i}]"))
            return out
    if old != new:
        return [FieldChange(path=path, kind="changed", old=old, new=new)]
    return []


def _named(items: list[Any]) -> bool:
    names = [i.get("name") for i in items if isinstance(i, dict)]
    return len(names) == len(items) and len(set(names)) == len(names) and all(names)


def _env_ref(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"secret", "config", "key"}:
        if value["secret"]:
            return f"<secret:{value['secret']}>" + (
                f"[{value['key']}]" if value["key"] != "value" else ""
            )
        return f"<config:{value['config']}>[{value['key']}]"
    return value
