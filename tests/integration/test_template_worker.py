"""The template worker: a real child process that renders by a deadline and is killed past it."""

from __future__ import annotations

import time

import pytest

from podium.templates.sandbox import Inputs, TemplateError
from podium.templates.worker import TemplateWorker

INPUTS = Inputs(configs={"db/settings": {"host": "db1"}})


async def test_the_worker_renders_and_kills_a_template_past_its_deadline() -> None:
    worker = TemplateWorker(timeout=1.0)
    try:
        assert await worker.render("a", '{{ config("db/settings")["host"] }}', INPUTS) == "db1"
        t0 = time.monotonic()
        with pytest.raises(TemplateError) as e:
            await worker.render(
                "loop",
                "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                Inputs(),
            )
        assert "did not finish within 1s" in e.value.reason
        assert time.monotonic() - t0 < 5
        # A fresh child answers the next one.
        assert await worker.render("b", "{{ 1 + 1 }}", Inputs()) == "2"
        parsed = await worker.parse("c", '{{ secret("x/y") }}')
        assert parsed.reads == ["secret:x/y"]
    finally:
        await worker.close()
