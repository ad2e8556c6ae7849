"""What this node offers: cpu, memory (less what is kept for the system and the agent),
ports already taken on the host, attributes, and the drivers that answer."""

from __future__ import annotations

import ipaddress
import os
import platform
import socket

import psutil

from podium.drivers.base import Driver
from podium.model.types import DriverInfo, NodeResources


def machine_cpu() -> int:
    """cpu in MHz-equivalent shares: cores x MHz (1000 per core when the clock is unknown)."""
    cores = os.cpu_count() or 1
    freq = psutil.cpu_freq()
    mhz = int(freq.max or freq.current) if freq and (freq.max or freq.current) else 1000
    return cores * max(mhz, 1000)


def default_reserve(total_cpu: int, total_memory: int) -> tuple[int, int]:
    """What a node keeps back when not told: 5% of cpu (at least 100 MHz) and 5% of memory
    (at least 256 MB, at most 2 GB) for the system, the agent and its proxy."""
    return max(100, total_cpu // 20), min(2048, max(256, total_memory // 20))


def resources(
    *,
    cpu: int = 0,
    memory: int = 0,
    reserve_cpu: int | None = None,
    reserve_memory: int | None = None,
) -> NodeResources:
    """What tasks may be given: the machine's cpu and memory (or `cpu`, `memory` when set)
    less the reservations (defaults from default_reserve)."""
    total_cpu = cpu or machine_cpu()
    total_mem = memory or int(psutil.virtual_memory().total / (1024 * 1024))
    dcpu, dmem = default_reserve(total_cpu, total_mem)
    rcpu = dcpu if reserve_cpu is None else reserve_cpu
    rmem = dmem if reserve_memory is None else reserve_memory
    if not (0 <= rcpu < total_cpu and 0 <= rmem < total_mem):
        raise ValueError(
            f"reservations ({rcpu} MHz, {rmem} MB) must be below the node's "
            f"{total_cpu} MHz and {total_mem} MB"
        )
    return NodeResources(
        cpu=total_cpu - rcpu,
        memory=total_mem - rmem,
        reserved_cpu=rcpu,
        reserved_memory=rmem,
    )


def cpu_attributes(total_cpu: int) -> dict[str, str]:
    """`cpu.frequency`: what one core counts (the base of a task's CPU quota)."""
    cores = os.cpu_count() or 1
    return {"cpu.frequency": str(max(1, total_cpu // cores)), "cpu.totalcompute": str(total_cpu)}


# /proc/net/{tcp,tcp6,udp,udp6}: the state column is hex; a listening TCP socket is 0A,
# a bound but unconnected UDP socket 07.
_BOUND = {"tcp": "0A", "tcp6": "0A", "udp": "07", "udp6": "07"}


def bound_ports(address: str, *, proc_net: str = "/proc/net") -> set[int]:
    """Ports on which something on this host already listens at `address` or at a wildcard
    address (so that a task asking for them could not bind): placement leaves them alone."""
    try:
        want = ipaddress.ip_address(address)
    except ValueError:
        want = None
    ports: set[int] = set()
    for name, state in _BOUND.items():
        try:
            with open(os.path.join(proc_net, name), encoding="ascii") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or fields[3] != state:
                continue
            host_hex, _, port_hex = fields[1].partition(":")
            try:
                ip = _proc_ip(host_hex)
                port = int(port_hex, 16)
            except ValueError:
                continue
            if port and (ip.is_unspecified or ip == want or _mapped(ip) == want):
                ports.add(port)
    return ports


def _proc_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address as /proc/net prints it: 32-bit words in host (little-endian) order."""
    raw = bytes.fromhex(text)
    if len(raw) not in (4, 16):
        raise ValueError(text)
    swapped = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(swapped)


def _mapped(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    return ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None


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
