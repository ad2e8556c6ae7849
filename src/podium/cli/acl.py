"""`podium acl …`: bootstrap, tokens and policies (ACL on: `podium server`, `podium dev --acl`).

A token's secret is printed once, when it is made; lists and `info` show accessors only.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from podium.api.client import Client
from podium.cli.main import addr_option
from podium.cli.output import ago, console, print_json, table


@click.group()
def acl() -> None:
    """Access control: tokens carry policies; policies grant capabilities per namespace."""


def _show_token(t: dict[str, Any], *, secret: bool) -> None:
    console.print(f"accessor  {t['accessor']}")
    if secret:
        console.print(f"secret    {t['secret']}")
    console.print(f"name      {t['name'] or '-'}")
    console.print(f"type      {t['type']}")
    console.print(f"policies  {', '.join(t['policies']) or '-'}")
    expires = t["expiration_time"]
    console.print(f"expires   {ago(expires) if expires else 'never'}")


@acl.command()
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON")
@addr_option
def bootstrap(as_json: bool, addr: str | None) -> None:
    """Make the first management token (allowed once per cluster); prints its secret."""
    t = Client(addr).request("POST", "/v1/acl/bootstrap")
    if as_json:
        print_json(t)
        return
    _show_token(t, secret=True)
    console.print("keep the secret: it is shown only now (PODIUM_TOKEN, or `token` in cli.json)")


@acl.group()
def token() -> None:
    """ACL tokens: create, list, info, delete, self."""


@token.command("create")
@click.option("--name", default="", help="What the token is for")
@click.option("--policy", "policies", multiple=True, help="A policy it carries; repeat")
@click.option(
    "--type",
    "type_",
    type=click.Choice(["client", "management"]),
    default="client",
    help="client: its policies decide; management: everything",
)
@click.option("--ttl", default="", help="Lifetime such as 1h (default: until deleted)")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON")
@addr_option
def token_create(
    name: str, policies: tuple[str, ...], type_: str, ttl: str, as_json: bool, addr: str | None
) -> None:
    """Create a token; its secret is printed once."""
    body = {"name": name, "type": type_, "policies": list(policies), "ttl": ttl or None}
    t = Client(addr).request("POST", "/v1/acl/tokens", json=body)
    if as_json:
        print_json(t)
        return
    _show_token(t, secret=True)


@token.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON")
@addr_option
def token_list(as_json: bool, addr: str | None) -> None:
    """Every token (accessors, never secrets)."""
    rows = Client(addr).request("GET", "/v1/acl/tokens")
    if as_json:
        print_json(rows)
        return
    table(
        ["ACCESSOR", "NAME", "TYPE", "POLICIES", "EXPIRES"],
        [
            [
                t["accessor"][:8],
                t["name"] or "-",
                t["type"],
                ",".join(t["policies"]) or "-",
                ago(t["expiration_time"]) if t["expiration_time"] else "never",
            ]
            for t in rows
        ],
    )


@token.command("info")
@click.argument("accessor")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON")
@addr_option
def token_info(accessor: str, as_json: bool, addr: str | None) -> None:
    """One token, by accessor (or a unique prefix)."""
    t = Client(addr).request("GET", f"/v1/acl/token/{accessor}")
    print_json(t) if as_json else _show_token(t, secret=False)


@token.command("self")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON")
@addr_option
def token_self(as_json: bool, addr: str | None) -> None:
    """The token this CLI sends (PODIUM_TOKEN or the CLI config)."""
    t = Client(addr).request("GET", "/v1/acl/token/self")
    print_json(t) if as_json else _show_token(t, secret=False)


@token.command("delete")
@click.argument("accessor")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON")
@addr_option
def token_delete(accessor: str, as_json: bool, addr: str | None) -> None:
    """Revoke a token at once."""
    t = Client(addr).request("DELETE", f"/v1/acl/token/{accessor}")
    if as_json:
        print_json(t)
        return
    console.print(f"deleted token {t['accessor']}")


@acl.group()
def policy() -> None:
    """ACL policies (HCL or JSON files; docs/security.md has the language and examples)."""


@policy.command("apply")
@click.argument("name")
@click.argument("file", type=click.File("r"))
@click.option("--description", default="", help="What it is for (shown in lists)")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON")
@addr_option
def policy_apply(name: str, file: Any, description: str, as_json: bool, addr: str | None) -> None:
    """Create or replace policy NAME from FILE (- for stdin)."""
    body = {"rules": file.read(), "description": description}
    out = Client(addr).request("PUT", f"/v1/acl/policy/{name}", json=body)
    if as_json:
        print_json(out)
        return
    console.print(f"policy {out['name']} applied")


@policy.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON")
@addr_option
def policy_list(as_json: bool, addr: str | None) -> None:
    rows = Client(addr).request("GET", "/v1/acl/policies")
    if as_json:
        print_json(rows)
        return
    table(["NAME", "DESCRIPTION"], [[p["name"], p["description"] or "-"] for p in rows])


@policy.command("info")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON")
@addr_option
def policy_info(name: str, as_json: bool, addr: str | None) -> None:
    p = Client(addr).request("GET", f"/v1/acl/policy/{name}")
    if as_json:
        print_json(p)
        return
    sys.stdout.write(p["rules"] if p["rules"].endswith("\n") else p["rules"] + "\n")


@policy.command("delete")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON")
@addr_option
def policy_delete(name: str, as_json: bool, addr: str | None) -> None:
    out = Client(addr).request("DELETE", f"/v1/acl/policy/{name}")
    if as_json:
        print_json(out)
        return
    console.print(f"deleted policy {name}")
