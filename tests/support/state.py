"""A ClusterState fed by an in-memory store, for unit tests of server code."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from podium.server.state import ClusterState
from podium.store.memory import MemoryStore


@contextlib.asynccontextmanager
async def memory_state() -> AsyncIterator[ClusterState]:
    """A ready ClusterState on a fresh MemoryStore; its feed stops on exit."""
    store = MemoryStore()
    st = ClusterState(store)
    feed = asyncio.create_task(st.run())
    await st.ready.wait()
    try:
        yield st
    finally:
        feed.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feed
        await store.close()
