"""Command-line tools a benchmark needs, installed with apt-get when missing (as root).

    ensure({"nginx": "nginx", "etcdctl": "etcd-client"})   # binary -> Debian package
    which("etcdctl")                                         # its path, sbin dirs included

Benchmarks are run on demand, not by the test command, so they install what they use
themselves; without root they stop and say what to install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys


def which(tool: str) -> str | None:
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin")


def ensure(tools: dict[str, str]) -> None:
    """Install the packages of the tools that are missing (one apt-get update first)."""
    missing = sorted({pkg for tool, pkg in tools.items() if not which(tool)})
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(
            f"missing {', '.join(missing)}: install them (apt-get install {' '.join(missing)})"
        )
    print(f"installing {', '.join(missing)} (apt-get)", file=sys.stderr, flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    still = [tool for tool in tools if not which(tool)]
    if still:
        sys.exit(f"installed {', '.join(missing)}, but {', '.join(still)} still not found")
