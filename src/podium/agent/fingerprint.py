"""What this node offers: cpu, memory, attributes, and the drivers that answer."""

from __future__ import annotations

import os
import platform
import socket

import psutil

from podium.drivers.base import Driver
from podium.model.types import DriverInfo, NodeResources


def resources(*, cpu: int = 0, memory: int = 0) -> NodeResources:
    """cpu in MHz-equivalent shares (cores x MHz, 1000 per core when the clock is unknown)."""
    cores = os.cpu_count() or 1
    freq = psutil.cpu_freq()
    mhz = int(freq.max or freq.current) if freq and (freq.max or freq.current) else 1000
    total_cpu = cpu or cores * max(mhz, 1000)
    total_mem = memory or int(psutil.virtual_memory().total / (1024 * 1024))
    return NodeResources(cpu=total_cpu, memory=total_mem)


def attributes() -> dict[str, str]:
    return {
        "os.name": platform.system().lower(),
        "kernel.version": platform.release(),
        "arch": platform.machine(),
        "cpu.cores": str(os.cpu_count() or 1),
        "hostname": socket.gethostname(),
        "python.version": platform.python_version(),
    }


async def drivers(available: dict[str, Driver]) -> tuple[dict[str, DriverInfo], dict[str, str]]:
    infos: dict[str, DriverInfo] = {}
    attrs: dict[str, str] = {}
    for name, d in available.items():
        try:
            fp = await d.fingerprint()
        except Exception as e:  # a broken driver is reported, never fatal to the agent
            infos[name] = DriverInfo(detected=False, healthy=False, description=str(e))
            continue
        infos[name] = DriverInfo(
            detected=fp.detected, healthy=fp.healthy, description=fp.description
        )
        attrs.update(fp.attributes)
    return infos, attrs
