"""The Proxy: listeners in the running event loop, sharing services, endpoints and metrics."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from time import monotonic
from typing import Any

from podium.errors import Problem, ValidationError
from podium.proxy.balancer import Service
from podium.proxy.config import Endpoint, Route, UpstreamConfig, WakeConfig
from podium.proxy.http import HTTPDownstream
from podium.proxy.listener import Listener
from podium.proxy.metrics import ServiceMetrics, render
from podium.proxy.routes import Router, route_problems
from podium.proxy.tcp import TCPDownstream


class Proxy:
    """Listeners for upstreams and ingress in the current event loop, sharing endpoints and metrics.

    Timeouts are enforced by one sweep every `sweep_interval` seconds rather than a timer
    per request, so a timeout fires up to that much late.
    """

    def __init__(
        self,
        *,
        sweep_interval: float = 0.2,
        metrics: bool = True,
        on_wake: Callable[[str], None] | None = None,
    ) -> None:
        self.sweep_interval = sweep_interval
        self.metrics = metrics  # False: nothing is counted (the overhead benchmark's baseline)
        # Called (with the service's name, at most once a second while requests wait) when
        # a request is held for a sleeping service; it must not block.
        self.on_wake = on_wake
        self._services: dict[str, Service] = {}
        self._listeners: dict[tuple[str, int], Listener] = {}
        self._sweeper: asyncio.Task[None] | None = None

    def _service(self, name: str) -> Service:
        svc = self._services.get(name)
        if svc is None:
            svc = self._services[name] = Service(name, metrics=self.metrics, on_wake=self.on_wake)
        return svc

    def set_wake(self, service: str, config: WakeConfig | None) -> None:
        """Whether a request to `service` that finds no endpoint waits for one (the service
        sleeps: autoscaled to 0) or is answered 503 at once (None)."""
        if config is not None and not (config.timeout > 0 and config.max_held >= 1):
            raise ValidationError([Problem("wake", "expected a positive timeout and max_held")])
        svc = self._service(service)
        svc.wake = config
        if config is None and svc.held:
            svc.release(monotonic())  # nothing to wait for any more: answered now

    def traffic(self) -> dict[str, dict[str, Any]]:
        """Each service's counters since this proxy started (what an autoscaler reads)."""
        return {
            name: {
                "requests": svc.metrics.requests,
                "errors": svc.metrics.errors,
                "latency_sum": svc.metrics.latency_sum,
                "buckets": list(svc.metrics.buckets),
                "held": len(svc.held),
            }
            for name, svc in self._services.items()
        }

    async def listen_upstream(
        self, service: str, host: str, port: int, config: UpstreamConfig
    ) -> None:
        """Serve `service` on host:port (port 0 picks one; see `addresses`)."""
        problems = config.problems()
        if not service:
            problems.append(Problem("service", "expected a service name"))
        if problems:
            raise ValidationError(problems)
        loop = asyncio.get_running_loop()
        listener = Listener(loop=loop, config=config, service_for=self._service, service=service)
        factory: Any = (
            (lambda: HTTPDownstream(listener))
            if config.mode == "http"
            else (lambda: TCPDownstream(listener))
        )
        await self._serve(listener, factory, host, port)

    async def listen_ingress(
        self, host: str, port: int, routes: list[Route], config: UpstreamConfig
    ) -> None:
        """Route HTTP on host:port by Host header and path prefix (mode is always http)."""
        problems = [p for p in config.problems() if p.path != "mode"]
        problems += route_problems(routes)
        if problems:
            raise ValidationError(problems)
        loop = asyncio.get_running_loop()
        listener = Listener(
            loop=loop, config=config, service_for=self._service, router=Router(routes)
        )
        await self._serve(listener, lambda: HTTPDownstream(listener), host, port)

    async def _serve(self, listener: Listener, factory: Any, host: str, port: int) -> None:
        if (host, port) in self._listeners:
            raise ValidationError([Problem("listen", f"{host}:{port} is already served here")])
        server = await listener.loop.create_server(
            factory, host, port, reuse_address=True, backlog=1024
        )
        listener.server = server
        bound = server.sockets[0].getsockname()[1] if port == 0 else port
        self._listeners[(host, bound)] = listener
        if self._sweeper is None:
            self._sweeper = listener.loop.create_task(self._sweep())

    def addresses(self) -> list[tuple[str, int]]:
        """Where this proxy listens (a port asked as 0 appears as the one bound)."""
        return list(self._listeners)

    def set_routes(self, host: str, port: int, routes: list[Route]) -> None:
        listener = self._listeners.get((host, port))
        if listener is None or listener.router is None:
            raise ValidationError([Problem("listen", f"no ingress listens on {host}:{port}")])
        problems = route_problems(routes)
        if problems:
            raise ValidationError(problems)
        listener.router = Router(routes)

    def set_endpoints(self, service: str, endpoints: list[Endpoint]) -> None:
        """Replace a service's endpoints; connections already established are left alone."""
        problems = [
            Problem(f"endpoints[{i}].{field}", why)
            for i, e in enumerate(endpoints)
            for field, why in (
                ("port", "expected 1-65535"),
                ("weight", "expected an integer >= 1"),
                ("host", "expected a host"),
            )
            if (field == "port" and not 0 < e.port < 65536)
            or (field == "weight" and e.weight < 1)
            or (field == "host" and not e.host)
        ]
        if problems:
            raise ValidationError(problems)
        svc = self._service(service)
        for state in svc.set_endpoints(endpoints):
            idle, state.idle = state.idle, []
            for conn in idle:
                conn.abort()  # idle pooled connections only; busy ones finish their exchange
        if svc.states and svc.held:
            svc.release(monotonic())  # a sleeping service woke: its held requests go on

    def metrics_text(self) -> str:
        return render(*self.metrics_source())

    def metrics_source(self) -> tuple[list[ServiceMetrics], dict[str, int]]:
        """Every service's counters and how many endpoints it knows (for ProxyCollector)."""
        services = [self._services[name] for name in sorted(self._services)]
        return [s.metrics for s in services], {s.name: len(s.states) for s in services}

    def snapshot(self) -> dict[str, Any]:
        now = monotonic()
        return {
            "services": {
                name: {
                    **svc.metrics.snapshot(),
                    "endpoints": [s.snapshot(now) for s in svc.states],
                }
                for name, svc in sorted(self._services.items())
            },
            "listeners": [
                {
                    "address": f"{host}:{port}",
                    "kind": "ingress" if lst.router is not None else "upstream",
                    "service": lst.service_name,
                    "mode": "http" if lst.router is not None else lst.config.mode,
                    "policy": lst.config.policy,
                    "connections": len(lst.conns),
                    "routes": [
                        {"service": r.service, "host": r.host, "path_prefix": r.path_prefix}
                        for r in (lst.router.routes if lst.router is not None else [])
                    ],
                }
                for (host, port), lst in self._listeners.items()
            ],
        }

    async def close(self, service: str | None = None) -> None:
        """Stop listening (and drop the connections) for one service's upstreams, or everything."""
        keys = [
            key
            for key, lst in self._listeners.items()
            if service is None or lst.service_name == service
        ]
        for key in keys:
            await self._listeners.pop(key).close()
        if service is None:
            for svc in self._services.values():
                for state in svc.states:
                    idle, state.idle = state.idle, []
                    for conn in idle:
                        conn.abort()
        if not self._listeners and self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            now = monotonic()
            for listener in list(self._listeners.values()):
                listener.sweep(now)
            for svc in self._services.values():
                if svc.held:
                    svc.sweep_held(now)
