"""`python -m podium.proxy`: one listener as its own process (benchmarks, running outside an agent).

    python -m podium.proxy --listen 127.0.0.1:PORT --mode http|tcp \
        --backend 127.0.0.1:A --backend 127.0.0.1:B [--policy least_conn] \
        [--via HOST:PORT --tls-ca CA --tls-cert CERT --tls-key KEY --tls-name NAME]

With `--via`, the backends are on another node: every connection to one goes through that
node's mesh gateway over mutual TLS (as an agent's proxy reaches a copy on another node;
`NAME` is what the gateway's certificate must name, `<node-id>.node.podium`).

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
from podium.tls.context import client_context
from podium.tls.files import Credentials


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
    p.add_argument("--via", type=_address, metavar="HOST:PORT", help="the backends' mesh gateway")
    p.add_argument("--tls-ca", help="with --via: the CA bundle the gateway is checked against")
    p.add_argument("--tls-cert", help="with --via: this node's (agent) certificate")
    p.add_argument("--tls-key", help="with --via: its key")
    p.add_argument("--tls-name", help="with --via: the name the gateway's certificate holds")
    args = p.parse_args(argv)
    mesh = ("tls_ca", "tls_cert", "tls_key", "tls_name")
    if args.via is not None:
        missing = [f"--{m.replace('_', '-')}" for m in mesh if not getattr(args, m)]
        if missing:
            p.error(f"--via needs {', '.join(missing)}")
    elif any(getattr(args, m) for m in mesh):
        p.error("--tls-ca, --tls-cert, --tls-key and --tls-name go with --via")
    return args


def endpoints(args: argparse.Namespace) -> list[Endpoint]:
    """The backends, straight or (with --via) through a mesh gateway over mutual TLS."""
    ssl_ctx = None
    if args.via is not None:
        ssl_ctx = client_context(Credentials(args.tls_ca, args.tls_cert, args.tls_key))
    return [
        Endpoint(
            f"b{i}", host, port, weight, via=args.via, tls_name=args.tls_name or "", ssl=ssl_ctx
        )
        for i, (host, port, weight) in enumerate(args.backend)
    ]


async def serve(args: argparse.Namespace) -> None:
    proxy = Proxy(metrics=not args.no_metrics)
    config = UpstreamConfig(
        mode=args.mode,
        policy=args.policy,
        retries=args.retries,
        connect_timeout=args.connect_timeout,
        request_timeout=args.request_timeout,
    )
    proxy.set_endpoints(args.service, endpoints(args))
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
