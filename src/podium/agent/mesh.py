"""The mesh gateway: service traffic from other nodes' proxies, over mutual TLS.

    proxy on node A ──TLS (A's agent cert; B checked as <B>.node.podium)──► gateway on B
        "PODIUM-MESH/1 <port>\\n" then bytes ──► B's address:<port>, plain, inside the node

Only agents of the cluster get in (the handshake wants the cluster's CA, the role must
be `agent`), and only to a port one of this node's running allocs holds: the gateway is
no open relay to whatever else listens on the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from podium.runtime import http
from podium.tls.context import ServerTLS
from podium.tls.identity import of_ssl_object

log = logging.getLogger(__name__)

PREAMBLE_LIMIT = 64
PREAMBLE_TIMEOUT = 5.0
CHUNK = 65536


class MeshGateway:
    def __init__(
        self, address: str, port: int, tls: ServerTLS, allowed: Callable[[int], bool]
    ) -> None:
        self.address = address
        self.port = port
        self.tls = tls
        self.allowed = allowed
        self.connections = 0  # spliced, since start
        self.refused = 0

    async def run(self, ready: asyncio.Future[str]) -> None:
        sock = http.bind(self.address, self.port)
        server = await asyncio.start_server(
            self._handle, sock=sock, ssl=self.tls.listen_context, ssl_handshake_timeout=10
        )
        host, port = sock.getsockname()[:2]
        ready.set_result(f"{host}:{port}")
        async with server:
            await server.serve_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            peer = of_ssl_object(writer.get_extra_info("ssl_object"))
            port = await self._target(reader)
            if peer.role != "agent" or port is None or not self.allowed(port):
                self.refused += 1
                log.warning("mesh: refused %s to port %s", peer.describe(), port)
                return
            try:
                up_r, up_w = await asyncio.open_connection(self.address, port)
            except OSError:
                return
            self.connections += 1
            async with asyncio.TaskGroup() as tg:
                tg.create_task(_pipe(reader, up_w))
                tg.create_task(_pipe(up_r, writer))
        except (OSError, ValueError, TimeoutError, EOFError, asyncio.LimitOverrunError):
            return
        finally:
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()

    async def _target(self, reader: asyncio.StreamReader) -> int | None:
        async with asyncio.timeout(PREAMBLE_TIMEOUT):
            line = await reader.readuntil(b"\n")
        if len(line) > PREAMBLE_LIMIT or not line.startswith(b"PODIUM-MESH/1 "):
            return None
        raw = line[len(b"PODIUM-MESH/1 ") :].strip()
        if not raw.isdigit() or not 0 < int(raw) < 65536:
            return None
        return int(raw)


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while chunk := await src.read(CHUNK):
            dst.write(chunk)
            await dst.drain()
    except (OSError, ConnectionError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if dst.can_write_eof():
                dst.write_eof()
            else:
                dst.close()
