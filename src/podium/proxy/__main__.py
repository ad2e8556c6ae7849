"""`python -m podium.proxy`: one listener as its own process (benchmarks, running outside an agent).

    python -m podium.proxy --listen 127.0.0.1:PORT --mode http|tcp \
        --backend 127.0.0.1:A --backend 127.0.0.1:B [--policy least_conn]

Prints one line "listening on HOST:PORT" when ready, then serves until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from podium.errors import ValidationError
from podium.proxy.config import MODES, POLICIES, Endpoint, UpstreamConfig
from podium.proxy.core import Proxy


def _address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


def _backend(value: str) -> tuple[str, int, int]:
    address, _, weight = value.partition("=")
    host, port = _address(address)
    if weight and not weight.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT[=WEIGHT], got {value!r}")
    return host, port, int(weight or 1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m podium.proxy", description=__doc__.split("\n")[0])
    p.add_argument("--listen", type=_address, required=True, metavar="HOST:PORT")
    p.add_argument("--mode", choices=MODES, default="tcp")
    p.add_argument("--policy", choices=POLICIES, default="round_robin")
    p.add_argument(
        "--backend", type=_backend, action="append", required=True, metavar="HOST:PORT[=WEIGHT]"
    )
    p.add_argument("--service", default="backend")
    p.add_argument("--retries", type=int, default=2)
    p.add_argument("--connect-timeout", type=float, default=1.0)
    p.add_argument("--request-timeout", type=float, default=30.0)
    p.add_argument("--no-uvloop", action="store_true", help="use the stock asyncio loop")
    p.add_argument("--no-metrics", action="store_true", help="count nothing (benchmark baseline)")
    return p.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    proxy = Proxy(metrics=not args.no_metrics)
    config = UpstreamConfig(
        mode=args.mode,
        policy=args.policy,
        retries=args.retries,
        connect_timeout=args.connect_timeout,
        request_timeout=args.request_timeout,
    )
    proxy.set_endpoints(
        args.service,
        [
            Endpoint(f"b{i}", host, port, weight)
            for i, (host, port, weight) in enumerate(args.backend)
        ],
    )
    host, port = args.listen
    await proxy.listen_upstream(args.service, host, port, config)
    bound = proxy.addresses()[0]
    print(f"listening on {bound[0]}:{bound[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await proxy.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.no_uvloop:
            asyncio.run(serve(args))
        else:
            import uvloop

            uvloop.run(serve(args))
    except ValidationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
