"""Many async streams read as one, in arrival order, with sources added on the way.

    Merge: TaskGroup of pumps (one per source) --bounded queue--> the reader

Used where lines come from several places at once: an alloc's task logs on the agent,
a job's copies on many agents in the server. A pump waits when the reader is slow (the
queue is bounded), so memory stays bounded too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
_DONE = object()


class Merge(Generic[T]):
    def __init__(self, *, maxsize: int = 1000) -> None:
        self._queue: asyncio.Queue[object] = asyncio.Queue(maxsize=maxsize)
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.running = 0  # sources not yet exhausted

    async def __aenter__(self) -> Merge[T]:
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for t in self._tasks:
            t.cancel()
        assert self._tg is not None
        await self._tg.__aexit__(None, None, None)

    def add(self, source: AsyncIterator[T]) -> None:
        assert self._tg is not None, "use `async with Merge() as m`"
        self.running += 1
        self._tasks.append(self._tg.create_task(self._pump(source)))

    async def _pump(self, source: AsyncIterator[T]) -> None:
        try:
            async for item in source:
                await self._queue.put(item)
        except Exception:  # one broken source ends itself, not the others
            log.exception("a merged stream failed")
        await self._queue.put(_DONE)

    async def get(self, timeout: float | None = None) -> T | None:
        """The next item; None when every source is done, or after `timeout` seconds."""
        while self.running:
            try:
                async with asyncio.timeout(timeout):
                    item = await self._queue.get()
            except TimeoutError:
                return None
            if item is _DONE:
                self.running -= 1
                continue
            return item  # type: ignore[return-value]
        return None
