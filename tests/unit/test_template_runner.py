"""How an alloc's templates follow the services they read (no processes: a fake watch)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from podium.agent.template_runner import TemplateRunner


async def test_a_service_watch_blocks_after_its_first_look_and_wakes_on_change() -> None:
    calls: list[int] = []
    answers = iter([0, 0, 5, 5])  # an unknown service (index 0), then a change to 5

    async def watch(namespace: str, service: str, index: int) -> int:
        calls.append(index)
        try:
            return next(answers)
        except StopIteration:
            await asyncio.sleep(3600)
            raise

    runner: Any = SimpleNamespace(job=None, alloc=SimpleNamespace(namespace="default"))
    tr = TemplateRunner(runner, hook=SimpleNamespace(), watch=watch)  # type: ignore[arg-type]
    follow = asyncio.create_task(tr._follow("api"))
    await asyncio.sleep(0.05)
    follow.cancel()
    # Only the first look may answer at once (-1); an index of 0 must block, not spin.
    assert calls == [-1, 0, 0, 5, 5]
    assert tr._services_changed and tr._wake.is_set()
