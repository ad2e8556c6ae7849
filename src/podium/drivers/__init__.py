"""Drivers run tasks: `process` (own session, cgroup limits), `docker` (Docker Engine API),
`mock` (tests).

Each implements `drivers.base.Driver`; `builtin_drivers()` returns the set an agent offers.
"""

from __future__ import annotations

import os

from podium.drivers.base import DEFAULT_PIDS, Driver


def host_volumes_from(text: str) -> dict[str, str]:
    """`NAME=PATH,NAME=PATH` (PODIUM_HOST_VOLUMES): the host dirs containers may mount."""
    out = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        name, sep, path = item.partition("=")
        if not sep or not name or not os.path.isabs(path):
            raise ValueError(f"PODIUM_HOST_VOLUMES: expected NAME=/ABSOLUTE/PATH, got {item!r}")
        out[name] = path
    return out


def builtin_drivers(*, pids_limit: int = DEFAULT_PIDS) -> dict[str, Driver]:
    """`process` and `docker` always (docker fingerprints unhealthy where no engine answers,
    so nothing is placed there); `mock` only with PODIUM_ENABLE_MOCK_DRIVER=1 (tests, demos).
    `pids_limit`: the most processes a task may have unless it sets `resources.pids`."""
    from podium.drivers.docker import DockerDriver
    from podium.drivers.process import ProcessDriver

    drivers: dict[str, Driver] = {
        "process": ProcessDriver(pids_limit=pids_limit),
        "docker": DockerDriver(
            socket_path=os.environ.get("PODIUM_DOCKER_SOCKET", "/var/run/docker.sock"),
            host_volumes=host_volumes_from(os.environ.get("PODIUM_HOST_VOLUMES", "")),
            pids_limit=pids_limit,
        ),
    }
    if os.environ.get("PODIUM_ENABLE_MOCK_DRIVER") == "1":
        from podium.drivers.mock import MockDriver

        drivers["mock"] = MockDriver()
    return drivers
