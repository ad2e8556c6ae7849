"""Logs and exec through the server: it checks the caller, then asks the alloc's agent.

    CLI ──(mTLS, operator)──► server ──(mTLS: server cert; agent named <node>.node.podium)──► agent
        GET  /v1/allocation/ID/logs   ──► GET /v1/agent/alloc/ID/logs   (streamed back as it comes)
        WS   /v1/allocation/ID/exec   ──► WS  /v1/agent/alloc/ID/exec   (frames relayed both ways)

So users need to reach only the servers, and agents answer only servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import websockets
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from podium.errors import PodiumError, Unavailable
from podium.model.types import Allocation, Node
from podium.server import allocs as alloc_ops
from podium.server.runtime import ServerContext
from podium.server.state import ClusterState
from podium.tls import pki

log = logging.getLogger(__name__)

EXEC_MAX_FRAME = 1024 * 1024


class ForwardRoutes:
    ctx: ServerContext
    state: ClusterState

    def _alloc_node(self, alloc_id: str) -> tuple[Allocation, Node]:
        a = alloc_ops.resolve(self.state, alloc_id)
        node = self.state.nodes.get(a.node_id)
        if node is None or not node.http_addr:
            raise Unavailable(f"the node of allocation {a.id[:8]} is gone or has no agent API")
        return a, node

    async def alloc_logs(self, req: Request) -> Response:
        a, node = self._alloc_node(req.path_params["id"])
        link = self.ctx.agent_link
        asked = {k: req.query_params.get(k) for k in ("task", "type", "tail", "lines", "follow")}
        params = {k: v for k, v in asked.items() if v is not None}
        upstream = link.http.build_request(
            "GET",
            link.url(node, f"/v1/agent/alloc/{a.id}/logs"),
            params=params,
            extensions=link.extensions(node),
            timeout=httpx.Timeout(10.0, read=None),
        )
        try:
            resp = await link.http.send(upstream, stream=True)
        except httpx.HTTPError as e:
            raise Unavailable(f"agent of node {node.name} does not answer: {e}") from None
        if resp.status_code >= 400:
            body = await resp.aread()
            await resp.aclose()
            return Response(body, status_code=resp.status_code, media_type="application/json")

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in resp.aiter_raw():
                    yield chunk
            except httpx.HTTPError:
                return
            finally:
                await resp.aclose()

        return StreamingResponse(relay(), media_type="application/octet-stream")

    async def alloc_exec(self, ws: WebSocket) -> None:
        try:
            a, node = self._alloc_node(ws.path_params["id"])
        except PodiumError as e:
            await ws.send_denial_response(
                Response(msgspec.json.encode({"error": str(e)}), e.status_code,
                         media_type="application/json")
            )  # fmt: skip
            return
        link = self.ctx.agent_link
        query = ws.url.query
        url = link.url(node, f"/v1/agent/alloc/{a.id}/exec", ws=True) + (
            f"?{query}" if query else ""
        )
        kw: dict[str, Any] = {"max_size": EXEC_MAX_FRAME, "open_timeout": 10, "ping_interval": 20}
        if link.ssl is not None:
            kw |= {"ssl": link.ssl, "server_hostname": pki.node_name(node.id)}
        # The agent first: what it refuses (no such command, task not running) is refused
        # to the user with the same status, before the user's upgrade is accepted.
        try:
            up = await websockets.connect(url, **kw)
        except websockets.InvalidStatus as e:
            r = e.response
            await ws.send_denial_response(
                Response(bytes(r.body or b"{}"), r.status_code, media_type="application/json")
            )
            return
        except (OSError, websockets.WebSocketException, TimeoutError) as e:
            body = msgspec.json.encode({"error": f"agent of node {node.name}: {e}"})
            await ws.send_denial_response(Response(body, 503, media_type="application/json"))
            return
        try:
            await ws.accept()
            await _relay(ws, up)
        finally:
            await up.close()
            with contextlib.suppress(Exception):
                await ws.close()


async def _relay(client: WebSocket, agent: Any) -> None:
    """Frames both ways until one side ends; the other is then closed too."""

    async def down() -> None:  # agent -> client
        async for msg in agent:
            if isinstance(msg, bytes):
                await client.send_bytes(msg)
            else:
                await client.send_text(msg)

    async def up() -> None:  # client -> agent
        try:
            while True:
                msg = await client.receive()
                if msg["type"] == "websocket.disconnect":
                    return
                if msg.get("bytes") is not None:
                    await agent.send(msg["bytes"])
                elif msg.get("text") is not None:
                    await agent.send(msg["text"])
        except WebSocketDisconnect:
            return

    tasks = [asyncio.create_task(down()), asyncio.create_task(up())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
