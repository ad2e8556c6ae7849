"""Which source address the agent's connections to the servers leave from.

An agent advertises the address its tasks are reached at. When that address is one of
this host's own and every server can be reached from it, the agent's requests to the
servers leave from it too, so a firewall rule about that address (one node cut off from
the servers, as the partition test does with iptables on 127.0.0.x) holds for the agent's
control traffic as well as its tasks. Otherwise the kernel picks, as before.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit


def source_address(address: str, servers: list[str]) -> str | None:
    """`address` when this host can send to every server from it, else None.

    Checked with an unsent UDP `connect`, which runs the kernel's route lookup: binding
    fails for an address this host does not have, and connecting fails for a loopback
    source with a server elsewhere."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None  # a host name: leave the source to the kernel
    if ip.is_unspecified:
        return None
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    for url in servers:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.bind((address, 0))
                s.connect((parts.hostname or "", port))
        except (OSError, ValueError):
            return None
    return address
