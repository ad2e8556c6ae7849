"""The root `podium` command: error handling, and the long-running `dev`, `server`, `agent`."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import click

from podium import __version__
from podium.cli.output import err_console
from podium.drivers.base import DEFAULT_PIDS
from podium.errors import PodiumError, ValidationError


class PodiumGroup(click.Group):
    """Turns podium errors into a clear message and a non-zero exit, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from podium.cli.jobfile import InvalidJobFile

        try:
            return super().invoke(ctx)
        except InvalidJobFile as e:
            n = len(e.problems)
            err_console.print(
                f"[red]Error:[/] {e.source} is not a valid job "
                f"({n} problem{'s' if n != 1 else ''}):",
                highlight=False,
            )
            for line in e.lines():
                err_console.print(f"  - {line}", markup=False)
            sys.exit(1)
        except ValidationError as e:
            err_console.print("[red]Error:[/] invalid input")
            for p in e.problems:
                err_console.print(f"  - {p}", markup=False)
            sys.exit(1)
        except PodiumError as e:
            err_console.print(f"[red]Error:[/] {e}")
            sys.exit(1)


def addr_option(f: Any) -> Any:
    return click.option(
        "--addr",
        "--address",
        "addr",
        envvar="PODIUM_ADDR",
        default=None,
        help="Server address(es), comma-separated: the next is tried when one does not "
        "answer (or PODIUM_ADDR); default http://127.0.0.1:4646",
    )(f)


def _check_namespace(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from podium.model.spec import is_name

    if value is not None and value != "*" and not is_name(value):
        raise click.BadParameter(
            f"expected a namespace name (lowercase letters, digits, '-') or * (listings: "
            f"every namespace you may read), got {value!r}"
        )
    return value


def namespace_option(f: Any) -> Any:
    """`-n/--namespace` (or PODIUM_NAMESPACE), the one way every command is told a namespace.

    Commands on one object use it or "default"; listings show only it, or every namespace
    when it is not given. `namespace_given(ctx)` says whether it was typed on the command line.
    """
    return click.option(
        "-n",
        "--namespace",
        "namespace",
        envvar="PODIUM_NAMESPACE",
        default=None,
        callback=_check_namespace,
        help='Namespace (or PODIUM_NAMESPACE); one object: default "default"; '
        "listings: every namespace you may read unless given (or *)",
    )(f)


Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def log_level_option(f: Any) -> Any:
    return click.option(
        "--log-level",
        default="info",
        show_default=True,
        type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
        help="How much the process logs",
    )(f)


def json_option(what: str) -> Decorator:
    """`--json`: print `what` as JSON for programs (progress, if any, goes to stderr)."""
    return click.option("--json", "as_json", is_flag=True, help=f"Print {what} as JSON")


def timeout_option(default: float, what: str) -> Decorator:
    """`--timeout SECONDS`: how long to follow `what` before giving up (non-zero exit)."""
    return click.option(
        "--timeout",
        default=default,
        show_default=True,
        type=click.FloatRange(min=0),
        help=f"Seconds to wait for {what}; then exit non-zero",
    )


def namespace_given(ctx: click.Context) -> bool:
    return ctx.get_parameter_source("namespace") == click.core.ParameterSource.COMMANDLINE


def _split_addr(addr: str, option: str = "--addr") -> tuple[str, int]:
    addr = addr.removeprefix("http://")
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise click.BadParameter(f"expected HOST:PORT, got {addr!r}", param_hint=option)
    return host, int(port)


def _dns_config(ctx: click.Context, dns_addr: str) -> tuple[Any, bool]:
    """(DnsConfig or None for "off", whether a taken default port may fall back to a free one)."""
    from podium.server.dns import DnsConfig

    if dns_addr in ("", "off"):
        return None, False
    host, port = _split_addr(dns_addr, "--dns-addr")
    explicit = ctx.get_parameter_source("dns_addr") != click.core.ParameterSource.DEFAULT
    return DnsConfig(host=host, port=port), not explicit


def _ingress_addr(ctx: click.Context, ingress_addr: str) -> tuple[str, bool]:
    """("HOST:PORT" or "" for off, whether a taken default port may fall back to a free one)."""
    if ingress_addr in ("", "off"):
        return "", False
    host, port = _split_addr(ingress_addr, "--ingress-addr")
    explicit = ctx.get_parameter_source("ingress_addr") != click.core.ParameterSource.DEFAULT
    return f"{host}:{port}", not explicit


def events_options(f: Any) -> Any:
    """--events-max and --events-max-age: the event ring the server keeps in its store."""
    f = click.option(
        "--events-max-age",
        default="24h",
        show_default=True,
        help="Events older than this are dropped (a duration: 90m, 24h, 7d)",
    )(f)
    return click.option(
        "--events-max",
        default=10_000,
        show_default=True,
        type=click.IntRange(min=1),
        help="Events kept (the newest; a restart or failover keeps them)",
    )(f)


def _prometheus_url(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if value and not value.startswith(("http://", "https://")):
        raise click.BadParameter(f"expected an http:// or https:// URL, got {value!r}")
    return value.rstrip("/")


def prometheus_option(f: Any) -> Any:
    """--prometheus-url: where `prometheus:` scaling policies send their queries."""
    return click.option(
        "--prometheus-url",
        default="",
        envvar="PODIUM_PROMETHEUS_URL",
        callback=_prometheus_url,
        help="Your Prometheus (http://HOST:9090): scaling policies with `prometheus: QUERY` ask it",
    )(f)


def _event_ring(max_events: int, max_age: str) -> Any:
    from podium.model.spec import parse_duration
    from podium.server.events import EventRing

    try:
        age = float(parse_duration(max_age))
    except (ValueError, ValidationError):
        raise click.BadParameter(
            f"expected a duration such as 24h, got {max_age!r}", param_hint="--events-max-age"
        ) from None
    if age <= 0:
        raise click.BadParameter("expected a positive duration", param_hint="--events-max-age")
    return EventRing(max_events=max_events, max_age=age)


def run_until_signal(main: Coroutine[Any, Any, None], *, tune_heap: bool = True) -> None:
    """Run `main` on uvloop; SIGINT/SIGTERM cancel it cleanly. `tune_heap`: a process
    that holds the cluster's state (server, dev) takes podium.runtime.heap's collector
    thresholds; an agent keeps CPython's (see there)."""
    import uvloop

    from podium.runtime import heap

    if tune_heap:
        heap.tune()

    async def wrapper() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await main
        except asyncio.CancelledError:
            # Requests still open (agents' blocking queries) are cancelled as the loop
            # closes; that is the shutdown we asked for, not an error worth a traceback.
            logging.getLogger("uvicorn.error").disabled = True

    try:
        uvloop.run(wrapper())
    except (OSError, PodiumError, ExceptionGroup) as e:
        # An address already in use, a refused join: one line naming it, not a traceback.
        err = _os_error(e)
        if err is None:
            raise
        raise click.ClickException(f"cannot start: {err}") from None


def _os_error(e: BaseException) -> OSError | PodiumError | None:
    if isinstance(e, OSError | PodiumError):
        return e
    if isinstance(e, BaseExceptionGroup):
        for inner in e.exceptions:
            found = _os_error(inner)
            if found is not None:
                return found
    return None


def _env_from(name: str) -> Any:
    def set_env(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        if value:
            os.environ[name] = os.path.abspath(os.path.expanduser(value))

    return set_env


@click.group(cls=PodiumGroup)
@click.version_option(__version__, prog_name="podium")
@click.option(
    "--ca-cert",
    expose_value=False,
    callback=_env_from("PODIUM_CACERT"),
    help="The cluster's CA certificate (or PODIUM_CACERT)",
)
@click.option(
    "--client-cert",
    expose_value=False,
    callback=_env_from("PODIUM_CLIENT_CERT"),
    help="Your client certificate (or PODIUM_CLIENT_CERT)",
)
@click.option(
    "--client-key",
    expose_value=False,
    callback=_env_from("PODIUM_CLIENT_KEY"),
    help="Its key (or PODIUM_CLIENT_KEY)",
)
def cli() -> None:
    """podium: run workloads on a cluster. Start with `podium dev`.

    Address and credentials: --addr/PODIUM_ADDR, --ca-cert/--client-cert/--client-key
    (PODIUM_CACERT, PODIUM_CLIENT_CERT, PODIUM_CLIENT_KEY), else the CLI config that
    `podium dev` and `podium server` write (.podium/dev/cli.json, .podium/server/cli.json,
    $PODIUM_CONFIG or ~/.config/podium/cli.json).
    """


def _tls_options(f: Any) -> Any:
    for opt in reversed(
        [
            click.option(
                "--insecure",
                is_flag=True,
                help="No TLS: plain HTTP, callers not told apart (see docs/security.md)",
            ),
            click.option("--tls-ca", default=None, help="Your PKI: the CA certificate(s) to trust"),
            click.option("--tls-cert", default=None, help="Your PKI: this process's certificate"),
            click.option("--tls-key", default=None, help="Your PKI: its key"),
        ]
    ):
        f = opt(f)
    return f


def _own_pki(tls_ca: str | None, tls_cert: str | None, tls_key: str | None) -> Any:
    from podium.tls.files import Credentials

    given = [x for x in (tls_ca, tls_cert, tls_key) if x]
    if not given:
        return None
    if len(given) != 3:
        raise click.UsageError("--tls-ca, --tls-cert and --tls-key go together")
    for opt, path in (("--tls-ca", tls_ca), ("--tls-cert", tls_cert), ("--tls-key", tls_key)):
        if not os.path.isfile(str(path)):
            raise click.BadParameter(f"no file {path}", param_hint=opt)
    return Credentials(*(os.path.abspath(str(p)) for p in (tls_ca, tls_cert, tls_key)))


def _loopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _warn_insecure(what: str, host: str) -> None:
    if _loopback(host):
        logging.getLogger("podium").warning(
            "%s runs with --insecure on %s: TLS off, callers not told apart", what, host
        )
        return
    logging.getLogger("podium").warning(
        "!!! INSECURE: %s on %s has TLS OFF (--insecure): anyone who can reach it can run "
        "any command on every node of this cluster. See docs/security.md. !!!",
        what,
        host,
    )


def write_cli_config(data_dir: str, addr: str, creds: Any, *, token: str = "") -> str:
    """<data-dir>/cli.json (the CLI reads it without flags) and <data-dir>/env (for `.`);
    `creds` None: --insecure, the address alone (no stale credentials of an earlier run);
    `token`: an ACL token's secret, kept in cli.json only (0600), never in env."""
    from podium.tls.client import CliConfig, env_file_text, write_config
    from podium.tls.files import write_public

    cfg = CliConfig(addr, creds.ca, creds.cert, creds.key) if creds else CliConfig(addr)
    cfg = dataclasses.replace(cfg, token=token)
    path = os.path.join(data_dir, "cli.json")
    write_config(path, cfg)
    write_public(os.path.join(data_dir, "env"), env_file_text(cfg))
    return path


def _data_dir(path: str | None, default: str) -> str:
    d = os.path.abspath(os.path.expanduser(path or default))
    os.makedirs(d, exist_ok=True)
    return d


@cli.group(invoke_without_command=True)
@click.option("--data-dir", default=None, help="Where state lives (default ./.podium/dev)")
@click.option("--addr", default="127.0.0.1:4646", show_default=True, help="API listen address")
@click.option(
    "--insecure", is_flag=True, help="No TLS (plain HTTP; the CLI then needs no credentials)"
)
@click.option(
    "--acl",
    is_flag=True,
    help="ACL on: tokens and policies decide who may do what (the management token goes "
    "into <data-dir>/cli.json)",
)
@click.option(
    "--cert-lifetime",
    default="720h",
    show_default=True,
    help="Lifetime of the certificates the cluster issues (renewed at 2/3)",
)
@click.option(
    "--dns-addr",
    default="127.0.0.1:8600",
    show_default=True,
    help="Service DNS (udp+tcp) address; off to disable; the default falls back to a free port",
)
@click.option(
    "--ingress-addr",
    default="127.0.0.1:8080",
    show_default=True,
    help="HTTP ingress address; off to disable; the default falls back to a free port",
)
@log_level_option
@events_options
@prometheus_option
@click.pass_context
def dev(
    ctx: click.Context,
    data_dir: str | None,
    addr: str,
    insecure: bool,
    acl: bool,
    cert_lifetime: str,
    dns_addr: str,
    ingress_addr: str,
    log_level: str,
    events_max: int,
    events_max_age: str,
    prometheus_url: str,
) -> None:
    """A real single-node cluster: server and agent in one process, on SQLite.

    TLS is on: the cluster makes its CA, and writes <data-dir>/cli.json (which the CLI
    reads from the directory you started it in) and <data-dir>/env (`podium dev env`).
    """
    if ctx.invoked_subcommand is not None:
        return
    from podium.agent.agent import Agent, AgentConfig
    from podium.drivers import builtin_drivers
    from podium.runtime.logging import setup
    from podium.server.runtime import Server, ServerConfig, TLSSettings
    from podium.tls.files import Credentials

    setup(log_level)
    host, port = _split_addr(addr)
    ddir = _data_dir(data_dir, ".podium/dev")
    dns, dns_fallback = _dns_config(ctx, dns_addr)
    ingress, ingress_fallback = _ingress_addr(ctx, ingress_addr)
    if insecure:
        _warn_insecure("podium dev", host)
    server = Server(
        ServerConfig(
            store_url=f"sqlite:///{ddir}/podium.db",
            host=host,
            port=port,
            dns=dns,
            dns_fallback=dns_fallback,
            events=_event_ring(events_max, events_max_age),
            prometheus_url=prometheus_url,
            tls=None if insecure else TLSSettings(ddir, lifetime=_duration(cert_lifetime)),
            acl=acl,
            audit_path=os.path.join(ddir, "audit.log"),
        )
    )
    agent_dir = os.path.join(ddir, "agent")
    cli_path = os.path.join(ddir, "cli.json")
    kept = _kept_token(ddir) if acl else ""

    async def main() -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(server.run())
            await server.started.wait()
            authority = server.ctx.authority if server.ctx else None
            token, fresh = await _dev_token(server, kept, cli_path) if acl else ("", False)
            cli_json = write_cli_config(
                ddir, server.address, authority.cli_creds if authority else None, token=token
            )
            if authority is not None:
                agent_creds = Credentials.in_dir(os.path.join(agent_dir, "tls"), "agent")
                if not agent_creds.exist():
                    # Same process, same CA: the agent's certificate comes straight from
                    # it, for the node id it had (a restart re-adopts its tasks).
                    await authority.issue_node(agent_creds, _dev_node_id(agent_dir), hosts=[host])
            agent = Agent(
                AgentConfig(
                    servers=[server.address],
                    data_dir=agent_dir,
                    name="dev",
                    address=host,
                    ingress_addr=ingress,
                    ingress_fallback=ingress_fallback,
                    insecure=insecure,
                ),
                builtin_drivers(),
            )
            tg.create_task(agent.run())
            await agent.registered.wait()
            click.echo(f"podium dev: API at {server.address} (data in {ddir})", err=True)
            click.echo(f"  web UI at {server.address}/ui/", err=True)
            if server.dns is not None:
                dns_at = f"{server.dns.config.host}:{server.dns.port}"
                click.echo(f"  service DNS at {dns_at} (udp+tcp, NAME.service.podium)", err=True)
            if agent.proxies.ingress_at:
                click.echo(f"  ingress at http://{agent.proxies.ingress_at}", err=True)
            if authority is not None:
                click.echo(
                    f"  mutual TLS on; the CLI reads {ddir}/cli.json from this directory "
                    f"(elsewhere: . {ddir}/env)",
                    err=True,
                )
            if acl:
                _say_dev_token(token, fresh, cli_json)
            click.echo("  try: podium job run examples/web.yaml", err=True)

    run_until_signal(main())


def _kept_token(ddir: str) -> str:
    from podium.tls.client import read_config

    path = os.path.join(ddir, "cli.json")
    return read_config(path).token if os.path.exists(path) else ""


async def _dev_token(server: Any, kept: str, path: str) -> tuple[str, bool]:
    """The management token of a dev cluster with ACL: bootstrapped on its first start,
    then kept in <data-dir>/cli.json (its only copy: the store holds its hash)."""
    acls = server.ctx.acl
    if not await acls.bootstrapped():
        _, secret = await acls.bootstrap(now=server.config.clock.now())
        return secret, True
    token = kept
    if not token:
        logging.getLogger("podium").warning(
            "ACL was bootstrapped before, and %s holds no token: use your management token "
            "(PODIUM_TOKEN)",
            path,
        )
    return token, False


def _say_dev_token(token: str, fresh: bool, cli_json: str) -> None:
    """The bootstrap token goes to a terminal only: a log file must never hold a secret."""
    shown = token if fresh and sys.stderr.isatty() else "(in the CLI config)"
    click.echo(f"  ACL on: management token {shown}", err=True)
    click.echo(f"  the CLI config {cli_json} holds it (0600); others need tokens: "
               "podium acl token create --policy NAME", err=True)  # fmt: skip


@dev.command("env")
@click.option("--data-dir", default=None, help="The dev cluster's data dir (./.podium/dev)")
def dev_env(data_dir: str | None) -> None:
    """Print the dev cluster's environment: `. <(podium dev env)` or `. .podium/dev/env`."""
    path = os.path.join(os.path.abspath(data_dir or ".podium/dev"), "env")
    try:
        with open(path, encoding="utf-8") as f:
            click.echo(f.read(), nl=False)
    except FileNotFoundError:
        raise click.ClickException(f"no {path}: start `podium dev` first") from None


def _dev_node_id(agent_dir: str) -> str:
    import uuid

    path = os.path.join(agent_dir, "node-id")
    try:
        with open(path, encoding="utf-8") as f:
            nid = f.read().strip()
    except FileNotFoundError:
        nid = ""
    return nid or str(uuid.uuid4())


def _duration(raw: str) -> float:
    from podium.model import spec as jobspec

    try:
        value = float(jobspec.parse_duration(raw))
    except (ValueError, ValidationError):
        raise click.BadParameter(f"expected a duration such as 720h, got {raw!r}") from None
    if value < 5:
        raise click.BadParameter("expected at least 5s")
    return value


@cli.group(invoke_without_command=True)
@click.option("--data-dir", default=None, help="Where state lives (default ./.podium/server)")
@click.option("--addr", default="127.0.0.1:4646", show_default=True, help="API listen address")
@click.option(
    "--store",
    "store_url",
    default=None,
    help="Store URL: sqlite:///PATH (default: podium.db in the data dir), or "
    "etcd://HOST:PORT[,HOST:PORT...] for several servers (one leads, elected)",
)
@click.option(
    "--leader-ttl",
    default=3.0,
    show_default=True,
    type=click.FloatRange(min=0.5),
    help="Seconds a silent leader keeps the lead (etcd store)",
)
@click.option(
    "--heartbeat-ttl",
    default=3.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds before a silent node is down (the least: it grows with the cluster)",
)
@click.option(
    "--max-heartbeats-per-second",
    default=200.0,
    show_default=True,
    type=click.FloatRange(min=1.0),
    help="Heartbeats all nodes send per second at most, on average: beyond "
    "heartbeat-ttl x this / 3 nodes, the TTL grows with the node count",
)
@click.option(
    "--dns-addr",
    default="127.0.0.1:8600",
    show_default=True,
    help="Service DNS (udp+tcp) address; off to disable; the default falls back to a free port",
)
@click.option(
    "--keyring-file",
    envvar="PODIUM_KEYRING_FILE",
    default=None,
    help="The keyring's root key, which encrypts secrets (made 0600 when missing; every "
    "server of a cluster needs the same); default DATA_DIR/keyring.key. PODIUM_KEYRING_KEY "
    "(the key itself, base64) wins over it",
)
@log_level_option
@events_options
@prometheus_option
@_tls_options
@click.option(
    "--cert-lifetime",
    default="720h",
    show_default=True,
    help="Lifetime of the certificates this server issues (renewed at 2/3)",
)
@click.option(
    "--tls-host", "tls_hosts", multiple=True, help="Another name or IP in the server certificate"
)
@click.option("--join", "join_addr", default=None, help="Another server to join (with etcd)")
@click.option("--etcd-cacert", default=None, help="etcd's CA certificate: TLS to etcd")
@click.option("--etcd-cert", default=None, help="Client certificate for etcd")
@click.option("--etcd-key", default=None, help="Its key")
@click.option(
    "--etcd-user", default=None, help="etcd user (password: PODIUM_ETCD_PASSWORD, not a flag)"
)
@click.option("--join-token", default=None, help="A server join token (first start only)")
@click.option(
    "--acl/--no-acl",
    default=None,
    help="Tokens and policies decide who may do what (default: on when bound beyond loopback)",
)
@click.pass_context
def server(
    ctx: click.Context,
    data_dir: str | None,
    addr: str,
    store_url: str | None,
    heartbeat_ttl: float,
    max_heartbeats_per_second: float,
    dns_addr: str,
    keyring_file: str | None,
    log_level: str,
    leader_ttl: float,
    events_max: int,
    events_max_age: str,
    prometheus_url: str,
    insecure: bool,
    tls_ca: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    cert_lifetime: str,
    tls_hosts: tuple[str, ...],
    join_addr: str | None,
    join_token: str | None,
    etcd_cacert: str | None,
    etcd_cert: str | None,
    etcd_key: str | None,
    etcd_user: str | None,
    acl: bool | None,
) -> None:
    """Run a server (API, scheduler, controllers); `podium server members` lists them.

    TLS is on: the first server makes the cluster's CA and writes the management
    credentials to <data-dir>/cli.json and <data-dir>/env. A second server on the same
    etcd joins with `--join ADDR --join-token $(podium server join-token --role server)`.
    """
    if ctx.invoked_subcommand is not None:
        return
    from podium.runtime.logging import setup
    from podium.server.runtime import Server, ServerConfig, TLSSettings

    setup(log_level)
    host, port = _split_addr(addr)
    ddir = _data_dir(data_dir, ".podium/server")
    url = store_url or f"sqlite:///{ddir}/podium.db"
    own = _own_pki(tls_ca, tls_cert, tls_key)
    if insecure and (own or join_token):
        raise click.UsageError("--insecure turns TLS off: it does not go with --tls-*/--join")
    tls = None
    if insecure:
        _warn_insecure("podium server", host)
    else:
        tls = TLSSettings(ddir, lifetime=_duration(cert_lifetime), own=own, hosts=list(tls_hosts))
        if join_token:
            if not join_addr:
                raise click.UsageError("--join-token needs --join ADDR (a running server)")
            _join_server(tls.tls_dir, join_addr, join_token)
    etcd_security = None
    if url.startswith("etcd://"):
        from podium.store.etcd import EtcdSecurity, EtcdStore

        try:
            EtcdStore.from_url(url)  # parses the url only; it connects on first use
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--store") from None
        if (etcd_cert or etcd_key) and not etcd_cacert:
            raise click.UsageError("--etcd-cert/--etcd-key need --etcd-cacert")
        password = os.environ.get("PODIUM_ETCD_PASSWORD", "")
        if etcd_user and not password:
            raise click.UsageError("--etcd-user needs its password in PODIUM_ETCD_PASSWORD")
        for opt, path in (("--etcd-cacert", etcd_cacert), ("--etcd-cert", etcd_cert),
                          ("--etcd-key", etcd_key)):  # fmt: skip
            if path and not os.path.isfile(path):
                raise click.BadParameter(f"no file {path}", param_hint=opt)
        etcd_security = EtcdSecurity(
            etcd_cacert or "", etcd_cert or "", etcd_key or "", etcd_user or "", password
        )
    dns, dns_fallback = _dns_config(ctx, dns_addr)
    srv = Server(
        ServerConfig(
            store_url=url,
            host=host,
            port=port,
            heartbeat_ttl=heartbeat_ttl,
            max_heartbeats_per_second=max_heartbeats_per_second,
            dns=dns,
            dns_fallback=dns_fallback,
            leader_ttl=leader_ttl,
            events=_event_ring(events_max, events_max_age),
            prometheus_url=prometheus_url,
            keyring_file=keyring_file or os.path.join(ddir, "keyring.key"),
            tls=tls,
            etcd_security=etcd_security,
            acl=not _loopback(host) if acl is None else acl,
            audit_path=os.path.join(ddir, "audit.log"),
        )
    )

    async def main() -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(srv.run())
            await srv.started.wait()
            if srv.ctx is not None and srv.ctx.authority is not None:
                path = write_cli_config(ddir, srv.address, srv.ctx.authority.cli_creds)
                log = logging.getLogger("podium")
                log.info("management credentials: %s (and %s/env)", path, ddir)

    run_until_signal(main())


def _join_server(tls_dir: str, join_addr: str, token: str) -> None:
    """First start of a server on a shared store: its certificate and the cluster's KEK."""
    import base64

    from podium.tls import pki
    from podium.tls.files import Credentials, write_private
    from podium.tls.join import join

    creds = Credentials.in_dir(tls_dir, "server")
    if os.path.exists(os.path.join(tls_dir, "kek")):
        return  # joined before
    key = pki.make_key()
    try:
        data = asyncio.run(join(join_addr, token, key, role="server"))
    except PodiumError as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:
        raise click.ClickException(f"cannot reach {join_addr}: {e}") from None
    write_private(os.path.join(tls_dir, "kek"), base64.b64decode(data["kek"]))
    creds.save(chain_pem=data["cert"], key=key, ca_pem=data["ca"])


@cli.command()
@click.option(
    "--server",
    "--servers",
    "servers",
    multiple=True,
    envvar="PODIUM_ADDR",
    required=True,
    help="Server address(es): comma-separated or repeated; the next is tried when one fails",
)
@click.option("--data-dir", default=None, help="Where the agent keeps its state and alloc dirs")
@click.option("--name", default=None, help="Node name (default: hostname)")
@click.option(
    "--address",
    default="127.0.0.1",
    show_default=True,
    help="Address tasks bind to and are reached at",
)
@click.option("--http-port", default=0, help="Agent API port (logs, exec); 0 = any")
@click.option(
    "--mesh-port", default=0, help="Mesh gateway port (service traffic from other nodes); 0 = any"
)
@click.option("--label", "labels", multiple=True, help="KEY=VALUE node label; repeat")
@click.option("--cpu", default=0, help="cpu to offer (MHz shares); 0 = fingerprint")
@click.option("--memory", default=0, help="memory to offer (MB); 0 = fingerprint")
@click.option(
    "--reserve-cpu",
    type=click.IntRange(min=0),
    default=None,
    help="cpu (MHz) kept for the system and the agent [default: 5%, at least 100]",
)
@click.option(
    "--reserve-memory",
    type=click.IntRange(min=0),
    default=None,
    help="memory (MB) kept for the system and the agent [default: 5%, 256 MB to 2 GB]",
)
@click.option(
    "--log-max-file-size",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="size (MB) at which a task's log file is rotated",
)
@click.option(
    "--log-max-files",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="log files kept per task stream, the current one included",
)
@click.option(
    "--pids-limit",
    type=click.IntRange(min=1),
    default=DEFAULT_PIDS,
    show_default=True,
    help="most processes and threads per task, unless the task sets resources.pids",
)
@click.option(
    "--ingress-addr", default="off", show_default=True, help="HTTP ingress HOST:PORT, or off"
)
@log_level_option
@click.option(
    "--join-token", default="", help="From `podium server join-token`: needed on first start"
)
@_tls_options
@click.pass_context
def agent(
    ctx: click.Context,
    servers: tuple[str, ...],
    data_dir: str | None,
    name: str | None,
    address: str,
    http_port: int,
    mesh_port: int,
    labels: tuple[str, ...],
    cpu: int,
    memory: int,
    reserve_cpu: int | None,
    reserve_memory: int | None,
    log_max_file_size: int,
    log_max_files: int,
    pids_limit: int,
    ingress_addr: str,
    log_level: str,
    join_token: str,
    insecure: bool,
    tls_ca: str | None,
    tls_cert: str | None,
    tls_key: str | None,
) -> None:
    """Run an agent on this machine (a node of the cluster).

    First start: `--join-token TOKEN` (from `podium server join-token` on a server); the
    agent gets its certificate and keeps it (and renews it) under its data dir.
    """
    import socket

    from podium.agent import fingerprint
    from podium.agent.agent import Agent, AgentConfig
    from podium.drivers import builtin_drivers
    from podium.runtime.logfiles import MIB, LogLimits
    from podium.runtime.logging import setup

    setup(log_level)
    parsed = {}
    for item in labels:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--label")
        parsed[k] = v
    node_name = name or socket.gethostname()
    own = _own_pki(tls_ca, tls_cert, tls_key)
    agent_dir = _data_dir(data_dir, f".podium/agent-{node_name}")
    if insecure:
        if own or join_token:
            raise click.UsageError("--insecure turns TLS off: it does not go with --tls-*")
        _warn_insecure("podium agent", address)
    elif (
        not own
        and not join_token
        and not os.path.exists(os.path.join(agent_dir, "tls", "agent.pem"))
    ):
        raise click.UsageError(
            "this agent has no certificate yet: give --join-token TOKEN (run "
            "`podium server join-token` on a server), or --tls-ca/--tls-cert/--tls-key"
        )
    cfg = AgentConfig(
        servers=[s for x in servers for s in x.split(",")],
        data_dir=agent_dir,
        name=node_name,
        address=address,
        http_port=http_port,
        mesh_port=mesh_port,
        labels=parsed,
        cpu=cpu,
        memory=memory,
        reserve_cpu=reserve_cpu,
        reserve_memory=reserve_memory,
        ingress_addr=_ingress_addr(ctx, ingress_addr)[0],
        log_limits=LogLimits(max_file_size=log_max_file_size * MIB, max_files=log_max_files),
        join_token=join_token,
        tls_own=own,
        insecure=insecure,
    )
    try:  # the reservations must leave something: say so before anything starts
        fingerprint.resources(
            cpu=cpu, memory=memory, reserve_cpu=reserve_cpu, reserve_memory=reserve_memory
        )
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--reserve-cpu/--reserve-memory") from None
    # An agent holds little that lives long: CPython's collector thresholds free the
    # garbage of task churn soon (podium.runtime.heap).
    run_until_signal(Agent(cfg, builtin_drivers(pids_limit=pids_limit)).run(), tune_heap=False)


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell code that completes podium's commands, options and arguments.

    \b
    bash:  eval "$(podium completion bash)"        (in ~/.bashrc)
    zsh:   eval "$(podium completion zsh)"         (in ~/.zshrc)
    fish:  podium completion fish > ~/.config/fish/completions/podium.fish
    """
    from click.shell_completion import get_completion_class

    kind = get_completion_class(shell)
    assert kind is not None  # click knows all three
    click.echo(kind(build(), {}, "podium", "_PODIUM_COMPLETE").source())


def build() -> click.Group:
    """The whole `podium` command, every noun added (idempotent; tests invoke it in-process)."""
    from podium.cli import (
        acl,
        alloc,
        data,
        deployment,
        events,
        job,
        logs,
        namespace,
        node,
        operator,
        scaling,
        server_ops,
        service,
        top,
        ui,
    )
    from podium.cli import tls as tls_cli

    server.add_command(server_ops.members)
    job.job.add_command(scaling.scaling)
    server.add_command(tls_cli.join_token)
    operator.operator.add_command(tls_cli.operator_ca)
    for group in (
        job.job,
        deployment.deployment,
        alloc.alloc,
        node.node,
        service.service,
        data.config,
        data.secret,
        operator.operator,
        events.events,
        logs.logs,
        top.top,
        tls_cli.tls,
        ui.ui,
        acl.acl,
        namespace.namespace,
    ):
        cli.add_command(group)
    return cli


def main() -> None:
    build()(prog_name="podium")


if __name__ == "__main__":
    main()
