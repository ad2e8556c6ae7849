"""Blocking queries' waits: park a future in a list until a feed wakes it or time runs out."""

from __future__ import annotations

import asyncio


async def park(waiters: list[asyncio.Future[None]], timeout: float) -> None:
    """Wait until a future added to `waiters` is resolved (by whoever owns the list) or
    `timeout` passes; the future is always taken off the list again."""
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    waiters.append(fut)
    try:
        async with asyncio.timeout(timeout):
            await fut
    except TimeoutError:
        pass
    finally:
        if fut in waiters:
            waiters.remove(fut)
