"""How the server reaches the agents' own HTTP API (node.http_addr): logs, exec and usage.

    API route (job logs, alloc logs/exec, usage)
        --AgentLink: the server's certificate, the agent checked as <node-id>.node.podium-->
        GET https://NODE/v1/agent/...   (http:// on --insecure clusters)

One place builds the address and the client, so every caller uses the server's own
credentials and checks the agent's role and node id, not only its chain. A renewal or a
CA rotation reloads the link in place (`reload`), with no restart.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec

from podium.model.types import Node
from podium.runtime.ids import short_alloc
from podium.tls import pki
from podium.tls.context import client_context
from podium.tls.files import Credentials

log = logging.getLogger(__name__)

TIMEOUT = httpx.Timeout(5.0, read=None)  # streams stay open while they follow


class AgentLink:
    """The server's client for agents' APIs: its own certificate, each agent checked by name."""

    def __init__(self, creds: Credentials | None) -> None:
        self.creds = creds
        self._ssl: ssl.SSLContext | None = None
        self._http: httpx.AsyncClient | None = None
        self._retired: list[httpx.AsyncClient] = []  # closed at shutdown (streams may use them)
        self._roots: set[str] = set()
        self.reload()

    @property
    def scheme(self) -> str:
        return "https" if self.creds else "http"

    def reload(self) -> None:
        """New credentials: new connections use them. A renewal loads them into the context
        in use; a trust bundle that lost a root (a rotation ended) needs a fresh one."""
        roots = _roots(self.creds.ca) if self.creds else set()
        if self._ssl is not None and self.creds is not None and roots >= self._roots:
            self._ssl.load_verify_locations(self.creds.ca)
            self._ssl.load_cert_chain(self.creds.cert, self.creds.key)
            self._roots = roots
            return
        old = self._http
        self._ssl = client_context(self.creds) if self.creds else None
        self._roots = roots
        self._http = httpx.AsyncClient(
            verify=self._ssl if self._ssl is not None else True, timeout=TIMEOUT
        )
        if old is not None:
            self._retired.append(old)

    @property
    def ssl(self) -> ssl.SSLContext | None:
        return self._ssl

    def url(self, node: Node, path: str, *, ws: bool = False) -> str:
        scheme = self.scheme.replace("http", "ws") if ws else self.scheme
        return f"{scheme}://{node.http_addr}{path}"

    def extensions(self, node: Node) -> dict[str, Any]:
        """Per request: the name the agent's certificate must carry (its node id)."""
        return {"sni_hostname": pki.node_name(node.id)} if self.creds else {}

    @property
    def http(self) -> httpx.AsyncClient:
        assert self._http is not None
        return self._http

    async def get(self, node: Node, path: str, **kw: Any) -> httpx.Response:
        return await self.http.get(self.url(node, path), extensions=self.extensions(node), **kw)

    async def close(self) -> None:
        for c in [*self._retired, self._http]:
            if c is not None:
                await c.aclose()


def _roots(path: str) -> set[str]:
    with open(path, encoding="utf-8") as f:
        return {pki.digest(c) for c in pki.load_certs(f.read())}


async def alloc_lines(
    link: AgentLink, node: Node, alloc_id: str, params: dict[str, str]
) -> AsyncIterator[dict[str, Any]]:
    """The agent's NDJSON log lines of one alloc, as dicts; nothing when it cannot answer
    (the node is down, or forgot the alloc): a job's other copies go on."""
    if not node.http_addr:
        return
    url = link.url(node, f"/v1/agent/alloc/{alloc_id}/lines")
    try:
        async with link.http.stream(
            "GET", url, params=params, extensions=link.extensions(node)
        ) as resp:
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
