"""`podium ui`: a one-use link that logs a browser into the web UI.

The CLI asks with its own certificate; the link (https://SERVER/ui/#login=TOKEN) works
once, within 5 minutes, and gives the browser a 12-hour session cookie. The browser must
trust the cluster's CA to open it without a warning (docs/security.md says how).
"""

from __future__ import annotations

import webbrowser

import click

from podium.api.client import Client
from podium.cli.main import addr_option
from podium.cli.output import print_json
from podium.errors import Conflict


@click.command()
@click.option("--open", "open_", is_flag=True, help="Open the link in this machine's browser")
@click.option("--json", "as_json", is_flag=True, help="Print {url, expires_in} as JSON")
@addr_option
def ui(open_: bool, as_json: bool, addr: str | None) -> None:
    """Print a login link for the web UI (one use, within 5 minutes)."""
    client = Client(addr)
    try:
        out = client.request("POST", "/v1/ui/login")
    except Conflict:  # an --insecure server: the UI needs no login there
        out = {"url": f"{client.address}/ui/", "expires_in": None}
    if as_json:
        print_json(out)
    else:
        click.echo(out["url"])
        if out["expires_in"]:
            click.echo(
                f"(opens the web UI once, within {int(out['expires_in']) // 60} minutes; "
                "the browser must trust the cluster CA, see docs/security.md)",
                err=True,
            )
    if open_:
        webbrowser.open(out["url"])
