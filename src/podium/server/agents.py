"""How the server reaches the agents' own HTTP API (node.http_addr): log lines and usage.

    API route (job logs, usage) --agent_client()--> GET http://NODE/v1/agent/...

One place builds the address and the client, so the transport (TLS, when nodes have
identities) is set here for every caller.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec

from podium.model.types import Node
from podium.runtime.ids import short_alloc

log = logging.getLogger(__name__)

TIMEOUT = httpx.Timeout(5.0, read=None)  # streams stay open while they follow


def agent_url(node: Node, path: str) -> str:
    return f"http://{node.http_addr}{path}"


def agent_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=TIMEOUT)


async def alloc_lines(
    client: httpx.AsyncClient, node: Node, alloc_id: str, params: dict[str, str]
) -> AsyncIterator[dict[str, Any]]:
    """The agent's NDJSON log lines of one alloc, as dicts; nothing when it cannot answer
    (the node is down, or forgot the alloc): a job's other copies go on."""
    if not node.http_addr:
        return
    url = agent_url(node, f"/v1/agent/alloc/{alloc_id}/lines")
    try:
        async with client.stream("GET", url, params=params) as resp:
            if resp.status_code != 200:
                await resp.aread()
                log.info(
                    "logs of %s from %s: %s", short_alloc(alloc_id), node.name, resp.text[:200]
                )
                return
            async for line in resp.aiter_lines():
                if line:
                    yield msgspec.json.decode(line)
    except httpx.HTTPError as e:
        log.info("logs of %s from %s: %s", alloc_id[:8], node.name, e)
