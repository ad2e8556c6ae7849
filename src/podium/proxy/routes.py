"""Ingress route matching: host (without port, any case) and path prefix, by whole segments."""

from __future__ import annotations

from collections.abc import Sequence

from podium.errors import Problem
from podium.proxy.config import Route


def route_problems(routes: Sequence[Route]) -> list[Problem]:
    out: list[Problem] = []
    for i, r in enumerate(routes):
        if not r.service:
            out.append(Problem(f"routes[{i}].service", "expected a service name"))
        if not r.path_prefix.startswith("/"):
            out.append(Problem(f"routes[{i}].path_prefix", "expected a path starting with '/'"))
        if r.host != r.host.strip() or "/" in r.host:
            out.append(Problem(f"routes[{i}].host", f"expected a host name, got {r.host!r}"))
    return out


class Router:
    """First match wins over routes ordered longest prefix first, named host before any host."""

    def __init__(self, routes: Sequence[Route]) -> None:
        ordered = sorted(routes, key=lambda r: (-len(r.path_prefix), r.host == ""))
        self.routes = ordered
        self._table: list[tuple[bytes, bytes, str]] = [
            (r.host.lower().encode(), r.path_prefix.encode(), r.service) for r in ordered
        ]

    def match(self, host: bytes, target: bytes) -> str | None:
        """The service for a request's Host header value and request target, or None."""
        colon = host.rfind(b":")
        if colon >= 0 and b"]" not in host[colon:]:
            host = host[:colon]
        host = host.strip().lower()
        if target[:1] != b"/":
            # absolute form (http://host/path): take host and path from it
            scheme = target.find(b"://")
            if scheme >= 0:
                rest = target[scheme + 3 :]
                slash = rest.find(b"/")
                authority, target = (rest, b"/") if slash < 0 else (rest[:slash], rest[slash:])
                return self.match(authority, target)
        q = target.find(b"?")
        path = target if q < 0 else target[:q]
        for rhost, prefix, service in self._table:
            if rhost and rhost != host:
                continue
            if path.startswith(prefix) and (
                len(path) == len(prefix) or prefix.endswith(b"/") or path[len(prefix)] == 47
            ):
                return service
        return None
