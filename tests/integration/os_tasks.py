"""What the OS itself runs for a node's tasks: processes by their alloc env, containers by
their node label. Ground truth for tests that must tell "re-adopted" from "started again"."""

from __future__ import annotations

import subprocess

import psutil

from integration.docker_image import engine_problem


def os_tasks(processes: list[psutil.Process], node_id: str) -> dict[tuple[str, str], list[str]]:
    """(alloc id, task) -> the pids and container ids the OS holds for it right now."""
    found: dict[tuple[str, str], list[str]] = {}
    for p in processes:
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
            env = p.environ()
        except psutil.Error:
            continue
        found.setdefault((env["PODIUM_ALLOC_ID"], env["PODIUM_TASK"]), []).append(str(p.pid))
    if node_id and engine_problem() is None:
        out = subprocess.run(
            ["docker", "ps", "--no-trunc", "--filter", f"label=podium.node_id={node_id}",
             "--format", '{{.ID}} {{.Label "podium.alloc_id"}} {{.Label "podium.task"}}'],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout  # fmt: skip
        for line in out.splitlines():
            cid, alloc, task = line.split()
            found.setdefault((alloc, task), []).append(cid)
    return found
