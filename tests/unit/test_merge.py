"""runtime.merge: several async streams read as one, sources added on the way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from podium.runtime.merge import Merge


async def numbers(start: int, n: int, delay: float = 0.0) -> AsyncIterator[int]:
    for i in range(start, start + n):
        await asyncio.sleep(delay)
        yield i


async def broken() -> AsyncIterator[int]:
    yield 100
    raise OSError("the node went away")


async def test_every_item_of_every_source_once_then_none() -> None:
    async with Merge[int]() as m:
        m.add(numbers(0, 3))
        m.add(broken())  # one failing source ends itself only
        got = []
        while (x := await m.get()) is not None:
            got.append(x)
            if x == 1:
                m.add(numbers(10, 2))  # a source added while reading
    assert sorted(got) == [0, 1, 2, 10, 11, 100]


async def test_get_with_a_timeout_returns_none_while_sources_are_quiet() -> None:
    async with Merge[int]() as m:
        m.add(numbers(0, 1, delay=10))
        assert await m.get(timeout=0.05) is None
        assert m.running == 1  # still there: leaving the block cancels it
