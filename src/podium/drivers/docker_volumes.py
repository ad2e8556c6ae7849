"""Which host paths a container may mount: its alloc dir and the node's declared host volumes.

A volume is "SOURCE:TARGET" or "SOURCE:TARGET:ro|rw". A relative SOURCE lives in the task's
dir (and may reach the alloc's other dirs, never above); an absolute SOURCE must lie inside
a host volume the node declares. Both are checked after resolving symlinks, so neither
`../` nor a symlink inside the alloc dir can reach the rest of the host.
"""

from __future__ import annotations

import os

from podium.errors import DriverError

MODES = ("ro", "rw")


def parse(volume: str) -> tuple[str, str, str] | str:
    """(source, target, mode), or a message saying what is wrong."""
    parts = volume.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        return f'expected "SOURCE:TARGET" or "SOURCE:TARGET:ro", got {volume!r}'
    source, target = parts[0], parts[1]
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in MODES:
        return f"mode must be ro or rw, got {mode!r}"
    if not target.startswith("/"):
        return f"target {target!r} must be an absolute path inside the container"
    return source, target, mode


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def resolve(
    volumes: list[str], *, task_dir: str, alloc_root: str, host_volumes: dict[str, str]
) -> list[str]:
    """Docker `Binds` for `volumes`; DriverError naming the first volume that escapes."""
    binds = []
    roots = {name: os.path.realpath(p) for name, p in host_volumes.items()}
    alloc_real = os.path.realpath(alloc_root)
    for i, vol in enumerate(volumes):
        where = f"volumes[{i}]"
        parsed = parse(vol)
        if isinstance(parsed, str):
            raise DriverError(f"{where}: {parsed}")
        source, target, mode = parsed
        if os.path.isabs(source):
            real = os.path.realpath(source)
            if not any(_inside(real, r) for r in roots.values()):
                declared = ", ".join(f"{n}={p}" for n, p in sorted(host_volumes.items()))
                raise DriverError(
                    f"{where}: {source!r} is outside the node's host volumes "
                    f"({declared or 'none declared'}); absolute sources must lie inside one"
                )
            if not os.path.exists(real):
                raise DriverError(f"{where}: host path {source!r} does not exist")
        else:
            real = os.path.realpath(os.path.join(task_dir, source))
            if not _inside(real, alloc_real):
                raise DriverError(
                    f"{where}: {source!r} escapes the alloc dir {alloc_root} "
                    "(relative sources must stay inside it, symlinks included)"
                )
            os.makedirs(real, exist_ok=True)
        binds.append(f"{real}:{target}:{mode}")
    return binds
