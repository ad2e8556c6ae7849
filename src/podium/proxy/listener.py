"""One listening socket: its config, its balancers, its open downstream connections."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from podium.proxy.balancer import Balancer, Service
from podium.proxy.config import UpstreamConfig
from podium.proxy.routes import Router


class Downstream(Protocol):
    def sweep(self, now: float) -> None: ...

    def shut(self) -> None: ...


class Listener:
    """An upstream listener serves one service; an ingress listener routes to many."""

    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop,
        config: UpstreamConfig,
        service_for: Callable[[str], Service],
        service: str | None = None,
        router: Router | None = None,
    ) -> None:
        self.loop = loop
        self.config = config
        self.service_name = service
        self.router = router
        self._service_for = service_for
        self.balancers: dict[str, Balancer] = {}
        # the upstream listener's one balancer, looked up once instead of per request
        self.balancer: Balancer | None = self.balancer_for(service) if service else None
        self.conns: set[Downstream] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.base_events.Server | None = None

    def balancer_for(self, service: str) -> Balancer:
        b = self.balancers.get(service)
        if b is None:
            b = self.balancers[service] = Balancer(self._service_for(service), self.config)
        return b

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a connect attempt; kept here so `close` can cancel what is still pending."""
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def sweep(self, now: float) -> None:
        for conn in list(self.conns):
            conn.sweep(now)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for conn in list(self.conns):
            conn.shut()
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()
