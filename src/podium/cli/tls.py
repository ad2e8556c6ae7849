"""`podium tls …` (your own PKI, by hand), `podium server join-token`, `podium operator ca …`.

Podium runs its own CA by default (the first server makes it; nodes join with a token).
`podium tls ca create` and `podium tls cert create` are for operators who hand out
certificates themselves, as files for `--tls-ca/--tls-cert/--tls-key`.
"""

from __future__ import annotations

import os
import time
import uuid

import click

from podium.api.client import Client
from podium.cli.main import addr_option
from podium.cli.output import console, print_json
from podium.tls import pki
from podium.tls.authority import ID_RE
from podium.tls.files import write_private, write_public


@click.group()
def tls() -> None:
    """Certificates by hand, for your own PKI (podium runs its own CA by default)."""


@tls.group()
def ca() -> None:
    """A certificate authority of your own."""


@ca.command("create")
@click.option("--dir", "directory", default=".", show_default=True, help="Where to write")
@click.option("--days", default=3650, show_default=True, help="Lifetime in days")
def ca_create(directory: str, days: int) -> None:
    """Write ca.pem and ca-key.pem (0600)."""
    cert, key = pki.create_ca(lifetime=days * 86400.0)
    ca_path, key_path = os.path.join(directory, "ca.pem"), os.path.join(directory, "ca-key.pem")
    if os.path.exists(key_path):
        raise click.ClickException(f"{key_path} exists: not overwriting a CA key")
    write_private(key_path, pki.key_pem(key))
    write_public(ca_path, pki.cert_pem(cert))
    console.print(f"wrote {ca_path} and {key_path} (sha256 {pki.digest(cert)})")


@tls.group()
def cert() -> None:
    """Certificates signed by your CA."""


@cert.command("create")
@click.option("--server", "role", flag_value="server", help="A server certificate")
@click.option("--agent", "role", flag_value="agent", help="An agent (node) certificate")
@click.option("--cli", "role", flag_value="operator", help="A CLI (operator) certificate")
@click.option(
    "--management", "role", flag_value="management", help="A CLI certificate for every route"
)
@click.option("--ca", "ca_path", default="ca.pem", show_default=True, help="The CA certificate")
@click.option(
    "--ca-key", "ca_key_path", default="ca-key.pem", show_default=True, help="The CA's key"
)
@click.option("--name", default=None, help="CN: server id, node id (default: a new one), user")
@click.option("--host", "hosts", multiple=True, help="A name or IP the server is reached at")
@click.option("--days", default=365, show_default=True, help="Lifetime in days")
@click.option("--out", default=None, help="File name prefix (default: the role)")
def cert_create(
    role: str | None,
    ca_path: str,
    ca_key_path: str,
    name: str | None,
    hosts: tuple[str, ...],
    days: int,
    out: str | None,
) -> None:
    """Write PREFIX.pem and PREFIX-key.pem (0600), signed by your CA."""
    if role is None:
        raise click.UsageError("say which: --server, --agent, --cli or --management")
    try:
        with open(ca_path, encoding="utf-8") as f:
            ca_cert = pki.load_certs(f.read())[0]
        with open(ca_key_path, encoding="utf-8") as f:
            ca_key = pki.load_key(f.read())
    except (OSError, ValueError) as e:
        raise click.ClickException(f"cannot read the CA: {e}") from None
    default_name = {"server": "server", "agent": str(uuid.uuid4()), "operator": "operator",
                    "management": "admin"}[role]  # fmt: skip
    name = name or default_name
    key = pki.make_key()
    leaf = pki.issue(
        ca_cert, ca_key, key.public_key(), role=role, name=name, lifetime=days * 86400.0,
        hosts=hosts,
    )  # fmt: skip
    prefix = out or ("cli" if role in ("operator", "management") else role)
    write_private(f"{prefix}-key.pem", pki.key_pem(key))
    write_public(f"{prefix}.pem", pki.cert_pem(leaf))
    what = f"node id {name}" if role == "agent" else name
    console.print(f"wrote {prefix}.pem and {prefix}-key.pem: {role} certificate for {what}")


@tls.command("join")
@click.option("--server", "server_addr", required=True, help="A server: https://HOST:4646")
@click.option("--token", required=True, help="From `podium server join-token --role operator`")
@click.option("--name", default="", help="Who the certificate names (default: operator-...)")
@click.option(
    "--dir",
    "directory",
    default=os.path.join("~", ".config", "podium"),
    show_default=True,
    help="Where to write ca.pem, cli.pem, cli-key.pem (0600) and cli.json",
)
def tls_join(server_addr: str, token: str, name: str, directory: str) -> None:
    """Get an operator (CLI) certificate from the cluster's CA with a one-use token.

    For a user, or a Prometheus scraping the cluster. The key never leaves this machine."""
    import asyncio

    from podium.errors import PodiumError
    from podium.tls.client import CliConfig, write_config
    from podium.tls.files import Credentials
    from podium.tls.join import https, join

    if name and not ID_RE.fullmatch(name):
        raise click.BadParameter("expected [a-z0-9-], at most 63", param_hint="--name")
    key = pki.make_key()
    try:
        data = asyncio.run(join(server_addr, token, key, role="operator", proposed_id=name))
    except PodiumError as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:
        raise click.ClickException(f"cannot reach {server_addr}: {e}") from None
    d = os.path.abspath(os.path.expanduser(directory))
    creds = Credentials.in_dir(d, "cli")
    creds.save(chain_pem=data["cert"], key=key, ca_pem=data["ca"])
    path = os.path.join(d, "cli.json")
    write_config(path, CliConfig(https(server_addr), creds.ca, creds.cert, creds.key))
    console.print(f"operator certificate for {data['name']} in {d}; the CLI reads {path}")


@tls.command("renew")
@addr_option
def tls_renew(addr: str | None) -> None:
    """A fresh certificate for the one the CLI uses now (same role and name), in place."""
    c = Client(addr)
    if c.creds is None or not c.creds.cert:
        raise click.ClickException("the CLI has no client certificate to renew")
    key = pki.make_key()
    data = c.request("POST", "/v1/tls/renew", json={"csr": pki.csr_pem(pki.make_csr(key))})
    c.creds.save(chain_pem=data["cert"], key=key, ca_pem=data["ca"])
    leaf = pki.load_certs(data["cert"])[0]
    console.print(
        f"renewed {c.creds.cert}: valid until {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    )


@click.command("join-token")
@click.option(
    "--role",
    type=click.Choice(["agent", "server", "operator"]),
    default="agent",
    show_default=True,
    help="agent: a node; server: another server (etcd); operator: a user (`podium tls join`)",
)
@click.option("--ttl", default="1h", show_default=True, help="How long it may be used (once)")
@click.option("--json", "as_json", is_flag=True, help="Print {token, role, ttl} as JSON")
@addr_option
def join_token(role: str, ttl: str, as_json: bool, addr: str | None) -> None:
    """A one-use token that lets one node (or server) join; it pins the cluster's CA."""
    out = Client(addr).request("POST", "/v1/tls/join-token", json={"role": role, "ttl": ttl})
    if as_json:
        print_json(out)
    else:
        click.echo(out["token"])


@click.group("ca")
def operator_ca() -> None:
    """The cluster CA: its state, and rotating it."""


@operator_ca.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the CA status as JSON")
@addr_option
def ca_status(as_json: bool, addr: str | None) -> None:
    """CA epoch, whether a rotation is under way, nodes not yet renewed."""
    st = Client(addr).request("GET", "/v1/tls/status")
    if as_json:
        print_json(st)
        return
    state = "rotating" if st["rotating"] else "steady"
    console.print(f"CA epoch {st['epoch']} ({state}), root sha256 {st['root_digest']}")
    if st["pending_nodes"]:
        console.print(f"nodes still to renew: {', '.join(st['pending_nodes'])}")


@operator_ca.command("rotate")
@click.option("--timeout", default=600.0, show_default=True, help="Seconds to wait for it")
@click.option("--json", "as_json", is_flag=True, help="Print the final CA status as JSON")
@addr_option
def ca_rotate(timeout: float, as_json: bool, addr: str | None) -> None:
    """New CA, cross-signed by the old; every node renews by itself; then the old goes."""
    c = Client(addr)
    started = c.request("POST", "/v1/tls/rotate")
    target = started["epoch"] + 1
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        st = c.request("GET", "/v1/tls/status")
        if st["epoch"] >= target and not st["rotating"]:
            break
        line = f"rotating: {st['nodes'] - len(st['pending_nodes'])}/{st['nodes']} nodes renewed"
        if line != last and not as_json:
            console.print(line)
            last = line
        if time.monotonic() > deadline:
            raise click.ClickException(
                f"not finished after {timeout:g}s; waiting for {', '.join(st['pending_nodes'])}"
            )
        time.sleep(0.5)
    if as_json:
        print_json(st)
    else:
        console.print(f"CA rotated: epoch {st['epoch']}, root sha256 {st['root_digest']}")
