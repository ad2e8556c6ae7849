"""Configs and secrets on the in-memory store: versions, guards, sealing, the keyring,
what jobs pin and how a change rolls out to them."""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from podium.errors import Conflict, ValidationError
from podium.model import data as datamodel
from podium.model import spec
from podium.model.types import Job, Secret
from podium.runtime.clock import SystemClock
from podium.scheduler.reconcile import group_hash
from podium.server import config_rollout, configs, jobs
from podium.server.controllers.keyring import KeyringController
from podium.server.keyring import ENV_KEY, Keyring, KeyringError, load_root_key
from podium.server.state import ClusterState
from podium.store import keys
from podium.templates import jobs as template_jobs
from support.state import memory_state

CANARY = "canary-7f3a9c-value"


@pytest.fixture
async def state() -> AsyncIterator[ClusterState]:
    async with memory_state() as st:
        yield st


@pytest.fixture
def keyring(state: ClusterState) -> Keyring:
    return Keyring(state.store, os.urandom(32), source="test")


async def _dump(state: ClusterState) -> bytes:
    kvs, _ = await state.store.list("")
    return b"\n".join(kv.key.encode() + b"=" + kv.value for kv in kvs)


# ------------------------------------------------------------------ the data


def test_paths_keys_and_the_size_limit() -> None:
    assert datamodel.is_path("db/settings") and datamodel.is_path("a.b/c_d-e")
    for bad in ("", "/db", "db/", "db//x", "../x", "db/.hidden", "a b", "x@1", "x" * 257):
        assert not datamodel.is_path(bad), bad
    assert datamodel.check_data({"host": "db1"}) == []
    assert "at least one key" in datamodel.check_data({})[0].message
    assert "keys of 1-128" in datamodel.check_data({"a b": "x"})[0].message
    too_big = datamodel.check_data({"blob": "x" * (1024 * 1024)})
    assert "at most 1,048,576 bytes (1 MiB)" in too_big[0].message
    # A value of the wrong type is named by its type only: it may be a secret.
    typed = datamodel.check_data({"pin": 12345})
    assert "12345" not in typed[0].message and "int" in typed[0].message


# --------------------------------------------------------------- the keyring


async def test_sealed_values_open_only_under_their_own_name(keyring: Keyring) -> None:
    sealed = await keyring.seal(CANARY.encode(), b"ns|db/pw|1")
    assert CANARY.encode() not in msgspec.json.encode(sealed)
    assert await keyring.open(sealed, b"ns|db/pw|1") == CANARY.encode()
    with pytest.raises(KeyringError, match="damaged or moved"):
        await keyring.open(sealed, b"ns|db/other|1")


async def test_another_root_key_does_not_open_the_keyring(state: ClusterState) -> None:
    first = Keyring(state.store, os.urandom(32), source="a")
    sealed = await first.seal(b"x", b"aad")
    second = Keyring(state.store, os.urandom(32), source="/etc/other.key")
    with pytest.raises(KeyringError, match="every server of a cluster needs the same root key"):
        await second.open(sealed, b"aad")


async def test_a_server_without_a_root_key_says_why(state: ClusterState) -> None:
    none = Keyring(state.store, None, source="", problem="no keyring root key: start with ...")
    with pytest.raises(KeyringError, match="no keyring root key"):
        await none.seal(b"x", b"aad")


def test_the_root_key_file_is_made_0600_and_refused_when_open_to_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_KEY, raising=False)
    path = tmp_path / "keyring.key"
    key, source = load_root_key(str(path))
    assert len(key) == 32 and source == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_root_key(str(path))[0] == key  # read again, not made again
    path.chmod(0o644)
    with pytest.raises(KeyringError, match="chmod 600"):
        load_root_key(str(path))
    path.write_text("not a key")
    path.chmod(0o600)
    with pytest.raises(KeyringError, match="does not hold a keyring key"):
        load_root_key(str(path))
    monkeypatch.setenv(ENV_KEY, base64.b64encode(b"k" * 32).decode())
    assert load_root_key(str(tmp_path / "absent")) == (b"k" * 32, ENV_KEY)


async def test_rotation_activates_a_new_key_and_old_secrets_still_open(
    state: ClusterState, keyring: Keyring
) -> None:
    await configs.put(state, keyring, "secret", "default", "db/pw", {"value": CANARY}, now=1.0)
    first = await keyring.active_id()
    second = await keyring.rotate(full=False, now=2.0)
    assert second != first and await keyring.active_id() == second
    old = await configs.get(state, "secret", "default", "db/pw")
    assert isinstance(old, Secret) and old.sealed is not None and old.sealed.key_id == first
    assert await configs.reveal(keyring, old) == {"value": CANARY}
    new, _ = await configs.put(state, keyring, "secret", "default", "db/pw", {"value": "b"}, now=3)
    assert isinstance(new, Secret) and new.sealed is not None and new.sealed.key_id == second


async def test_a_full_rotation_reseals_every_version_with_progress(
    state: ClusterState, keyring: Keyring
) -> None:
    for i in range(60):
        await configs.put(
            state, keyring, "secret", "default", f"s/{i}", {"v": f"{CANARY}{i}"}, now=1
        )
    await configs.put(state, keyring, "secret", "default", "s/0", {"v": "second"}, now=2)
    key_id = await keyring.rotate(full=True, now=3.0)
    rotation, rev = await keyring.rotation()
    assert rotation is not None and rotation.status == "running"
    await KeyringController(state, keyring, SystemClock()).rotate(rotation, rev)
    done, _ = await keyring.rotation()
    assert done is not None and (done.status, done.done, done.total) == (
        "done",
        121,
        121,
    )  # 60 heads, 61 versions
    for prefix in (keys.SECRETS, keys.SECRET_VERSIONS):
        kvs, _ = await state.store.list(prefix)
        for kv in kvs:
            secret = msgspec.json.decode(kv.value, type=Secret)
            assert secret.sealed is not None and secret.sealed.key_id == key_id
    assert CANARY.encode() not in await _dump(state)
    found = await configs.get(state, "secret", "default", "s/7")
    assert isinstance(found, Secret)
    assert await configs.reveal(keyring, found) == {"v": f"{CANARY}7"}


# ------------------------------------------------------- versions and guards


async def test_versions_history_cas_merge_and_unchanged_puts(
    state: ClusterState, keyring: Keyring
) -> None:
    put = configs.put
    rec, changed = await put(state, keyring, "config", "default", "db/s", {"a": "1"}, now=1, cas=0)
    assert (rec.version, changed) == (1, True)
    with pytest.raises(Conflict, match="at version 1, not 0"):
        await put(state, keyring, "config", "default", "db/s", {"a": "2"}, now=2, cas=0)
    rec, changed = await put(state, keyring, "config", "default", "db/s", {"a": "1"}, now=2)
    assert (rec.version, changed) == (1, False)
    rec, _ = await put(state, keyring, "config", "default", "db/s", {"b": "2"}, now=3, merge=True)
    got = await configs.get(state, "config", "default", "db/s")
    assert got.version == 2 and getattr(got, "data", None) == {"a": "1", "b": "2"}
    assert [r.version for r in await configs.history(state, "config", "default", "db/s")] == [2, 1]
    assert getattr(await configs.get(state, "config", "default", "db/s", 1), "data", None) == {
        "a": "1"
    }
    with pytest.raises(ValidationError, match="1 MiB"):
        await put(state, keyring, "config", "default", "db/s", {"x": "y" * 1048577}, now=4)


async def test_history_keeps_the_last_hundred_versions(
    state: ClusterState, keyring: Keyring
) -> None:
    for i in range(datamodel.MAX_HISTORY + 5):
        await configs.put(state, keyring, "config", "default", "h", {"i": str(i)}, now=i)
    versions = [r.version for r in await configs.history(state, "config", "default", "h")]
    assert versions[0] == 105 and versions[-1] == 6 and len(versions) == datamodel.MAX_HISTORY


async def test_secrets_are_stored_sealed_and_events_name_keys_only(
    state: ClusterState, keyring: Keyring
) -> None:
    await configs.put(
        state, keyring, "secret", "default", "db/pw", {"value": CANARY}, now=1, by="alice"
    )
    dump = await _dump(state)
    assert CANARY.encode() not in dump
    assert b"secret db/pw version 1 (keys: value) by alice" in dump  # the event
    meta = configs.metadata(await configs.get(state, "secret", "default", "db/pw"))
    assert "data" not in meta and CANARY not in str(meta)


# ------------------------------------------------------------ jobs that read it


def _job(mode: str = "rolling", *, env_ref: bool = False) -> Job:
    task: dict[str, object] = {
        "name": "t",
        "config": {"command": "x"},
        "templates": [
            {"destination": "app.conf", "data": '{{ config("db/s")["a"] }}', "change_mode": mode}
        ],
    }
    if env_ref:
        task["env"] = {"PW": {"secret": "db/pw"}}
    raw = {"name": "web", "groups": [{"name": "g", "count": 2, "tasks": [task]}]}
    job, problems = template_jobs.check(spec.validate(spec.canonicalize(raw)))
    assert not problems
    return job


async def test_a_job_pins_what_it_reads_and_a_missing_one_is_named(
    state: ClusterState, keyring: Keyring
) -> None:
    with pytest.raises(ValidationError) as e:
        await config_rollout.resolve(state, _job(env_ref=True))
    paths = {p.path: p.message for p in e.value.problems}
    assert "config 'db/s' does not exist" in paths["groups[0].tasks[0].templates[0].data"]
    assert "secret 'db/pw' does not exist" in paths["groups[0].tasks[0].env.PW"]
    await configs.put(state, keyring, "config", "default", "db/s", {"a": "1"}, now=1)
    await configs.put(state, keyring, "secret", "default", "db/pw", {"value": CANARY}, now=1)
    pinned = await config_rollout.resolve(state, _job(env_ref=True))
    assert pinned.config_versions == {"config:db/s": 1, "secret:db/pw": 1}


async def test_a_change_moves_each_reader_to_a_new_version_once(
    state: ClusterState, keyring: Keyring
) -> None:
    await configs.put(state, keyring, "config", "default", "db/s", {"a": "1"}, now=1)
    job = await config_rollout.resolve(state, _job())
    await jobs.register(state, job, now=1)
    await configs.put(state, keyring, "config", "default", "db/s", {"a": "2"}, now=2)
    moved = await config_rollout.roll_out(state, "config", "default", "db/s", now=2)
    assert [(m["job"], m["version"], m["replaced_groups"]) for m in moved] == [("web", 1, ["g"])]
    assert moved[0]["deployment_id"]
    stored = state.jobs["default/web"]
    assert stored.config_versions == {"config:db/s": 2}
    assert stored.submitted_by == "podium (config db/s)"
    head = await configs.get(state, "config", "default", "db/s")
    assert head.rolled_out
    assert await config_rollout.roll_out(state, "config", "default", "db/s", now=3) == []
    with pytest.raises(Conflict, match="read by job"):
        await configs.delete(state, "config", "default", "db/s", force=False, now=4)
    await configs.delete(state, "config", "default", "db/s", force=True, now=4)


def test_only_rolling_reads_change_the_groups_hash() -> None:
    for mode, replaced in (("rolling", True), ("restart", False), ("signal", False)):
        job = _job(mode)
        old = msgspec.structs.replace(job, config_versions={"config:db/s": 1})
        new = msgspec.structs.replace(job, config_versions={"config:db/s": 2})
        g = job.groups[0]
        assert (group_hash(old, g) != group_hash(new, g)) is replaced, mode


def test_their_events_have_topics() -> None:
    from podium.server.events import TOPICS, topic_of

    assert {"config", "secret", "keyring"} <= set(TOPICS)
    assert [topic_of(t) for t in ("config.updated", "template.failed", "template.changed")] == [
        "config",
        "alloc",
        "alloc",
    ]
