"""Drivers run tasks: `process` (own session, cgroup limits), `mock` (tests).

Each implements `drivers.base.Driver`; `builtin_drivers()` returns the set an agent offers.
"""

from __future__ import annotations

import os

from podium.drivers.base import Driver


def builtin_drivers() -> dict[str, Driver]:
    """`process` always; `mock` only with PODIUM_ENABLE_MOCK_DRIVER=1 (tests, demos)."""
    from podium.drivers.process import ProcessDriver

    drivers: dict[str, Driver] = {"process": ProcessDriver()}
    if os.environ.get("PODIUM_ENABLE_MOCK_DRIVER") == "1":
        from podium.drivers.mock import MockDriver

        drivers["mock"] = MockDriver()
    return drivers
