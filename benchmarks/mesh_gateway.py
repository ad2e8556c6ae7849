"""One node's mesh gateway as its own process, for benchmarks/proxy.py's mutual-TLS runs.

    .venv/bin/python benchmarks/mesh_gateway.py --listen 127.0.0.1:PORT \
        --tls-ca CA --tls-cert CERT --tls-key KEY --allow A --allow B

The agent's own gateway (podium.agent.mesh), on uvloop as an agent runs it: it accepts
agents' certificates of the cluster's CA and splices each connection to one of the
`--allow`ed ports on 127.0.0.1 (the ports the node's allocs hold). Prints one line
"listening on HOST:PORT" when ready, then serves until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import uvloop

from podium.agent.mesh import MeshGateway
from podium.tls.context import ServerTLS
from podium.tls.files import Credentials


async def serve(args: argparse.Namespace) -> None:
    host, _, port = args.listen.rpartition(":")
    tls = ServerTLS(Credentials(args.tls_ca, args.tls_cert, args.tls_key), require_client_cert=True)
    allowed = set(args.allow)
    gateway = MeshGateway(host, int(port), tls, allowed.__contains__)
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with asyncio.TaskGroup() as tg:
        run = tg.create_task(gateway.run(ready))
        print(f"listening on {await ready}", flush=True)
        await stop.wait()
        run.cancel()


def main() -> int:
    p = argparse.ArgumentParser(description="a mesh gateway (benchmarks/proxy.py)")
    p.add_argument("--listen", required=True, metavar="HOST:PORT")
    p.add_argument("--tls-ca", required=True)
    p.add_argument("--tls-cert", required=True)
    p.add_argument("--tls-key", required=True)
    p.add_argument("--allow", type=int, action="append", required=True, metavar="PORT")
    uvloop.run(serve(p.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
