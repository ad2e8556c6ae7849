"""`podium operator snapshot save|restore FILE`: the whole store to a file and back;
`podium operator keyring status|rotate [--full]`: the keys that encrypt secrets.

Through a running server's API (GET/PUT /v1/operator/snapshot), or with `--store URL`
straight from a store no server is using (a SQLite file is locked by its server; an
etcd cluster may be read while servers run, but restore into it with them stopped).
The file format is in podium/store/snapshot.py; it is the same for every backend.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from podium.api.client import Client
from podium.cli.main import addr_option, json_option
from podium.cli.output import ago, console, err_console, print_json, table
from podium.store import open_store
from podium.store import snapshot as snap

_store_option = click.option(
    "--store",
    "store_url",
    default=None,
    help="Use this store directly (sqlite:///file.db, etcd://host:port,...) instead of "
    "a server's API",
)


@click.group()
def operator() -> None:
    """Cluster operations."""


@operator.group()
def snapshot() -> None:
    """Save the store to a file, or restore it from one."""


@snapshot.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@_store_option
@json_option("what was saved (file, keys, revision)")
@addr_option
def save(file: Path, store_url: str | None, as_json: bool, addr: str | None) -> None:
    """Write every key and value (leased ones left out) to FILE."""
    if store_url:
        db = (
            store_url.removeprefix("sqlite://")
            if "://" not in store_url.replace("sqlite://", "")
            else ""
        )
        if db and not Path(db).exists():  # opening would create an empty store to save
            raise click.BadParameter(f"no store file at {db}", param_hint="--store")
        data, header = asyncio.run(_direct(store_url, _dump))
        keys, rev = header.keys, header.revision
    else:
        data = Client(addr).request("GET", "/v1/operator/snapshot", raw=True)
        header, _ = snap.parse(data)
        keys, rev = header.keys, header.revision
    tmp = file.with_name(f".{file.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, file)  # never a half-written snapshot under the real name
    if as_json:
        print_json({"file": str(file), "keys": keys, "revision": rev})
        return
    console.print(f"saved {keys} keys (store revision {rev}) to {file}")


@snapshot.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Delete what the store holds first")
@_store_option
@json_option("what was restored (keys restored and deleted, revision)")
@addr_option
def restore(
    file: Path, force: bool, store_url: str | None, as_json: bool, addr: str | None
) -> None:
    """Write FILE's keys into an empty store (or, with --force, a wiped one)."""
    data = file.read_bytes()
    snap.parse(data)  # a bad file fails here, before anything is sent or written
    if store_url:

        async def run(store: Any) -> dict[str, Any]:
            return await snap.restore(store, data, force=force)

        done = asyncio.run(_direct(store_url, run))
    else:
        params = {"force": "true"} if force else {}
        done = Client(addr).request(
            "PUT",
            "/v1/operator/snapshot",
            content=data,
            params=params,
            headers={"content-type": snap.MEDIA_TYPE},
        )
    if as_json:
        print_json(done)
        return
    console.print(
        f"restored {done['restored']} keys from {file}"
        + (f" (deleted {done['deleted']} first)" if done["deleted"] else "")
        + f"; store revision now {done['revision']}"
    )


async def _dump(store: Any) -> tuple[bytes, snap.Header]:
    return await snap.dump(store)


async def _direct(url: str, fn: Any) -> Any:
    try:
        store = open_store(url)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--store") from None
    try:
        start = getattr(store, "start", None)
        if start is not None:
            await start()
        return await fn(store)
    finally:
        await store.close()


@operator.group()
def keyring() -> None:
    """The keyring that encrypts secrets: its keys, and rotating them."""


@keyring.command("status")
@json_option("the keyring's keys and rotation")
@addr_option
def keyring_status(as_json: bool, addr: str | None) -> None:
    """The keys (which is active, how many secrets each seals) and any rotation."""
    data = Client(addr).keyring()
    if as_json:
        print_json(data)
        return
    console.print(f"root key from {data['root_key']}")
    table(
        ["KEY", "ACTIVE", "SECRETS", "CREATED"],
        [
            [k["id"], "yes" if k["active"] else "", k["secrets"], ago(k["create_time"])]
            for k in data["keys"]
        ],
    )
    rot = data["rotation"]
    if rot:
        console.print(
            f"full rotation to {rot['key_id']}: {rot['status']}, {rot['done']}/{rot['total']}"
        )


@keyring.command("rotate")
@click.option("--full", is_flag=True, help="Also re-encrypt every stored secret under the new key")
@click.option("--detach", is_flag=True, help="Return at once; do not follow a full rotation")
@click.option(
    "--timeout", default=600.0, show_default=True, help="Seconds to follow a full rotation"
)
@json_option("the new active key and the rotation")
@addr_option
def keyring_rotate(
    full: bool, detach: bool, timeout: float, as_json: bool, addr: str | None
) -> None:
    """A new active key for new secrets; with --full every secret is re-encrypted under it."""
    c = Client(addr)
    resp = c.keyring_rotate(full=full)
    key_id = resp["active"]
    if not full or detach:
        if as_json:
            print_json(resp)
        else:
            console.print(
                f"keyring key {key_id} is active"
                + (" (re-encrypting in the background)" if full else "")
            )
        return
    rotation = _follow_rotation(c, key_id, timeout=timeout, quiet=as_json)
    if as_json:
        print_json({**resp, "rotation": rotation})
    if rotation is None or rotation["status"] != "done":
        raise click.ClickException(f"the rotation to {key_id} did not finish within {timeout:g}s")
    if not as_json:
        console.print(f"keyring key {key_id} is active: {rotation['message']}")


def _follow_rotation(
    c: Client, key_id: str, *, timeout: float, quiet: bool
) -> dict[str, Any] | None:
    """Poll the rotation's progress until it is done: a bar on a terminal, else a line each
    time the count moves (at most every half second); nothing when `quiet`."""
    deadline = time.monotonic() + timeout
    rotation: dict[str, Any] | None = None
    live = err_console.is_terminal and not quiet
    last, printed_at = "", 0.0
    with Progress(
        TextColumn("re-encrypting secrets"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err_console, disable=not live,
    ) as progress:  # fmt: skip
        bar = progress.add_task("rotate", total=None)
        while time.monotonic() < deadline:
            rotation = c.keyring()["rotation"]
            if rotation and rotation["key_id"] == key_id:
                progress.update(bar, total=rotation["total"] or None, completed=rotation["done"])
                line = f"re-encrypting secrets: {rotation['done']}/{rotation['total']}"
                done = rotation["status"] == "done"
                if (
                    not live
                    and not quiet
                    and line != last
                    and (done or time.monotonic() - printed_at > 0.5)
                ):
                    err_console.print(line)
                    last, printed_at = line, time.monotonic()
                if done:
                    return rotation
            time.sleep(0.2)
    return rotation
