"""`podium operator snapshot save|restore FILE`: the whole store to a file and back.

Through a running server's API (GET/PUT /v1/operator/snapshot), or with `--store URL`
straight from a store no server is using (a SQLite file is locked by its server; an
etcd cluster may be read while servers run, but restore into it with them stopped).
The file format is in podium/store/snapshot.py; it is the same for every backend.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import click

from podium.api.client import Client
from podium.cli.main import addr_option, json_option
from podium.cli.output import console, print_json
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
