"""A small asyncio client for the Docker Engine API over its unix socket (httpx, no SDK).

Only what the docker driver needs: JSON requests, raw streams, and the demultiplexer for
the 8-byte-framed stdout/stderr streams that `logs` and `exec` return for non-TTY
containers. Errors become `EngineError` (a DriverError) carrying the HTTP status.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

from podium.errors import DriverError

DEFAULT_SOCKET = "/var/run/docker.sock"
API_TIMEOUT = 30.0


class EngineError(DriverError):
    def __init__(self, message: str, *, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class Engine:
    """One connection pool per event loop (tests run several loops in one process)."""

    def __init__(self, socket_path: str = DEFAULT_SOCKET) -> None:
        self.socket_path = socket_path
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = httpx.AsyncClient(
                # Unbounded: every running container holds one long request (its log
                # stream) for its whole life, and stops must never queue behind those.
                transport=httpx.AsyncHTTPTransport(
                    uds=self.socket_path,
                    limits=httpx.Limits(max_connections=None, max_keepalive_connections=20),
                ),
                base_url="http://docker",
                timeout=API_TIMEOUT,
            )
            self._loop = loop
        return self._client

    async def close(self) -> None:
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.aclose()
        self._client = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        content: Any = None,
        timeout: float | None = API_TIMEOUT,
    ) -> Any:
        """The decoded JSON reply (None when empty); EngineError on any HTTP error."""
        try:
            r = await self._http().request(
                method,
                path,
                params=params,
                json=body,
                content=content,
                timeout=httpx.Timeout(timeout, connect=5.0),
            )
        except httpx.HTTPError as e:
            raise EngineError(self._unreachable(e)) from e
        if r.status_code >= 400:
            raise EngineError(_message(r.status_code, r.content), status=r.status_code)
        if not r.content:
            return None
        try:
            return r.json()
        except ValueError:
            return r.text

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        timeout: float | None = None,
    ) -> AsyncIterator[httpx.Response]:
        try:
            async with self._http().stream(
                method,
                path,
                params=params,
                json=body,
                timeout=httpx.Timeout(timeout, connect=5.0),
            ) as r:
                if r.status_code >= 400:
                    raise EngineError(
                        _message(r.status_code, await r.aread()), status=r.status_code
                    )
                yield r
        except httpx.HTTPError as e:
            raise EngineError(self._unreachable(e)) from e

    def _unreachable(self, e: Exception) -> str:
        return f"docker engine at unix://{self.socket_path} did not answer: {type(e).__name__} {e}"


def _message(status: int, content: bytes) -> str:
    try:
        msg = json.loads(content).get("message", "")
    except (ValueError, AttributeError):
        msg = content.decode("utf-8", "replace").strip()
    return f"docker engine: {msg or 'error'} (HTTP {status})"


class Demux:
    """Splits Docker's multiplexed stream: frames of [stream, 0, 0, 0, size (u32 BE)] + data."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> Iterator[tuple[int, bytes]]:
        """(stream, payload) for every complete frame so far; stream 1 = stdout, 2 = stderr."""
        self._buf += chunk
        while len(self._buf) >= 8:
            kind, size = self._buf[0], struct.unpack(">I", self._buf[4:8])[0]
            if len(self._buf) < 8 + size:
                return
            payload = bytes(self._buf[8 : 8 + size])
            del self._buf[: 8 + size]
            yield kind, payload


async def hijack(
    socket_path: str, path: str, body: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """POST `path` and take the connection over (Docker's attach/exec-start protocol): after
    the 101 (or 200) answer the socket carries the process's stdin and output streams."""
    reader, writer = await asyncio.open_unix_connection(socket_path)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n"
        f"Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    await writer.drain()
    raw = await reader.readuntil(b"\r\n\r\n")
    status = raw.split(b" ", 2)[1] if raw.count(b" ") >= 2 else b""
    if status not in (b"101", b"200"):
        writer.close()
        raise EngineError(f"docker engine: exec start answered {raw[:80]!r}", status=0)
    return reader, writer
