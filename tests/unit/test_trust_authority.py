"""The server's CA on a real (in-memory) store: one-use tokens, joining, renewal, rotation
state, and a purged node losing its certificate at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest

from podium.errors import Forbidden, Unavailable
from podium.model.types import Node
from podium.server.runtime import _revoke_purged
from podium.server.state import ClusterState
from podium.store import keys
from podium.store.memory import MemoryStore
from podium.tls import pki
from podium.tls.authority import Authority, AuthorityConfig
from podium.tls.identity import Identity


def _csr() -> str:
    return pki.csr_pem(pki.make_csr(pki.make_key()))


async def test_tokens_are_one_use_and_join_names_role_and_node(tmp_path: Path) -> None:
    store = MemoryStore()
    auth = Authority(store, AuthorityConfig(str(tmp_path / "tls"), "s1"))
    await auth.start()
    assert (tmp_path / "tls" / "kek").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "tls" / "server-key.pem").stat().st_mode & 0o777 == 0o600
    token = await auth.new_token("agent", 60)
    assert token.split("-")[2] == auth.root_digest()
    out = await auth.join(token, _csr(), proposed_id="node-a", taken=lambda _: False)
    assert pki.role_and_name(pki.load_certs(out["cert"])[0]) == ("agent", "node-a")
    assert "kek" not in out  # only servers get the key-encryption key
    with pytest.raises(Forbidden, match="used"):
        await auth.join(token, _csr(), proposed_id="node-b", taken=lambda _: False)
    # The CA key in the store is sealed: no PEM key in any stored value.
    kvs, _ = await store.list("")
    assert not any(b"PRIVATE KEY" in kv.value for kv in kvs)
    renewed = await auth.renew(Identity("agent", "node-a"), _csr())
    assert pki.role_and_name(pki.load_certs(renewed["cert"])[0]) == ("agent", "node-a")
    # A second server without the KEK cannot use this store's CA.
    other = Authority(store, AuthorityConfig(str(tmp_path / "other"), "s2"))
    with pytest.raises(Unavailable, match="join"):
        await other.start()


async def test_rotation_trusts_both_roots_then_only_the_new(tmp_path: Path) -> None:
    auth = Authority(MemoryStore(), AuthorityConfig(str(tmp_path / "tls"), "s1"))
    await auth.start()
    old = auth.root_digest()
    await auth.join(
        await auth.new_token("agent", 60), _csr(), proposed_id="n1", taken=lambda _: False
    )
    state = await auth.rotate()
    assert state.rotating and len(state.roots) == 2 and state.chain
    assert await auth.pending_nodes(["n1"]) == ["n1"]
    cert = pki.load_certs((await auth.renew(Identity("agent", "n1"), _csr()))["cert"])
    assert len(cert) == 2  # leaf + the cross-signed new CA
    assert await auth.pending_nodes(["n1"]) == []
    assert await auth.finish_rotation()
    assert auth.state is not None and not auth.state.rotating and len(auth.state.roots) == 1
    assert auth.root_digest() != old
    assert (
        pki.load_certs((tmp_path / "tls" / "ca.pem").read_text())[0].subject
        == pki.load_certs(auth.state.roots[0])[0].subject
    )


async def test_a_purged_node_is_revoked_at_once(tmp_path: Path) -> None:
    store = MemoryStore()
    auth = Authority(store, AuthorityConfig(str(tmp_path / "tls"), "s1", check_every=0.05))
    await auth.start()
    state = ClusterState(store)
    state.add_listener(_revoke_purged(auth, state))
    tasks = [asyncio.create_task(state.run()), asyncio.create_task(auth.run(lambda: []))]
    try:
        await state.ready.wait()
        rev = await store.put(keys.node("n1"), msgspec.json.encode(Node(id="n1", name="n1")))
        await state.wait_for(rev)
        assert "n1" not in auth.revoked
        rev = await store.delete(keys.node("n1"))
        await state.wait_for(rev)
        assert "n1" in auth.revoked  # this server refuses it from this moment
        for _ in range(100):
            if await store.get(keys.tls_revoked("n1")) is not None:
                break
            await asyncio.sleep(0.02)
        assert await store.get(keys.tls_revoked("n1")) is not None  # and so does every server
        with pytest.raises(Forbidden):
            await auth.renew(Identity("agent", "n1"), _csr())
        with pytest.raises(Forbidden):  # nor can its id join again
            await auth.join(await auth.new_token("agent", 60), _csr(), proposed_id="n1",
                            taken=lambda _: False)  # fmt: skip
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
