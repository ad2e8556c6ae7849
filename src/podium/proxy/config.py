"""What the proxy is told: endpoints of a service, how to balance to them, ingress routes."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from typing import Any, Literal

from podium.errors import Problem

Mode = Literal["tcp", "http"]
Policy = Literal["round_robin", "weighted", "least_conn"]

MODES: tuple[str, ...] = ("tcp", "http")
POLICIES: tuple[str, ...] = ("round_robin", "weighted", "least_conn")


MESH_PREAMBLE = b"PODIUM-MESH/1 %d\n"  # then the bytes, spliced to the endpoint's port


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One healthy copy of a service.

    On another node of a TLS cluster it is reached through that node's mesh gateway
    (`via`, mutual TLS, the node checked by `tls_name`), which splices the connection to
    the endpoint's port on its own node; inside a node, plain TCP.
    """

    id: str  # alloc id: stable identity across updates
    host: str
    port: int
    weight: int = 1
    via: tuple[str, int] | None = None  # the remote node's mesh gateway
    tls_name: str = ""
    ssl: ssl.SSLContext | None = field(default=None, compare=False)


async def open_endpoint(
    loop: asyncio.AbstractEventLoop, factory: Any, ep: Endpoint
) -> tuple[asyncio.BaseTransport, Any]:
    """Connect to an endpoint: straight, or through its node's mesh gateway."""
    if ep.via is None:
        return await loop.create_connection(factory, ep.host, ep.port)
    transport, proto = await loop.create_connection(
        factory, ep.via[0], ep.via[1], ssl=ep.ssl, server_hostname=ep.tls_name
    )
    transport.write(MESH_PREAMBLE % ep.port)
    return transport, proto


@dataclass(frozen=True)
class UpstreamConfig:
    mode: Mode = "tcp"
    policy: Policy = "round_robin"
    connect_timeout: float = 1.0
    request_timeout: float = 30.0  # http: the whole response; tcp: idle time
    retries: int = 2  # connect failures always; http idempotent requests on 502/503/504
    retry_budget: float = 0.2  # retries at most this share of requests (plus a small floor)
    breaker_failures: int = 5  # consecutive transport failures open an endpoint's breaker
    breaker_open_for: float = 5.0  # then one half-open probe
    outlier_max_ejected: float = 0.5  # never eject more than this share (never all)
    outlier_failures: int = 5  # consecutive 5xx responses eject an endpoint (http)
    outlier_eject_for: float = 10.0  # first ejection; doubles on each repeat, up to 10x
    idle_timeout: float = 60.0  # http: a kept-alive client connection idle this long is closed

    def problems(self) -> list[Problem]:
        """Every problem with this config, each naming its field."""
        out: list[Problem] = []
        if self.mode not in MODES:
            out.append(Problem("mode", f"expected one of {', '.join(MODES)}, got {self.mode!r}"))
        if self.policy not in POLICIES:
            out.append(
                Problem("policy", f"expected one of {', '.join(POLICIES)}, got {self.policy!r}")
            )
        for name in (
            "connect_timeout",
            "request_timeout",
            "breaker_open_for",
            "outlier_eject_for",
            "idle_timeout",
        ):
            if not getattr(self, name) > 0:
                out.append(Problem(name, "expected a positive number of seconds"))
        for name in ("retries", "breaker_failures", "outlier_failures"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name == "retries" else 1):
                out.append(Problem(name, f"expected an integer >= {0 if name == 'retries' else 1}"))
        if not 0 <= self.retry_budget <= 1:
            out.append(Problem("retry_budget", "expected a share between 0 and 1"))
        if not 0 <= self.outlier_max_ejected < 1:
            out.append(Problem("outlier_max_ejected", "expected a share in [0, 1)"))
        return out


@dataclass(frozen=True)
class WakeConfig:
    """A service that may have no copies because it sleeps (autoscaled to 0): a request
    that finds none waits for one (the agent asks the server to wake the group)."""

    timeout: float = 30.0  # a held request waits this long, then 503 with Retry-After
    max_held: int = 1000  # held requests at most; more are answered 503 at once
    retry_after: int = 5  # seconds, in the 503's Retry-After


def service_key(namespace: str, name: str) -> str:
    """The proxy's name for a service: the name alone in the default namespace."""
    return name if namespace == "default" else f"{name}.{namespace}"


@dataclass(frozen=True)
class Route:
    """Ingress: the longest matching path prefix wins; a named host beats any host."""

    service: str
    host: str = ""  # "" = any host (compared without port, case-insensitive)
    path_prefix: str = "/"
