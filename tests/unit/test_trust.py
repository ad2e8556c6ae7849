"""Trust, pure parts: certificates name their role, chains verify (also across a CA
rotation), every route declares who may call it, and access checks say no correctly."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from podium.errors import Forbidden, Unauthorized
from podium.server import access
from podium.server.app import ROUTES
from podium.store import snapshot
from podium.tls import pki
from podium.tls.authority import parse_token
from podium.tls.identity import ANONYMOUS, INSECURE, Identity


def _verify(
    leaf: x509.Certificate, roots: list[x509.Certificate], chain: list[x509.Certificate]
) -> None:
    verifier = (
        PolicyBuilder().store(Store(roots)).time(dt.datetime.now(dt.UTC)).build_client_verifier()
    )
    verifier.verify(leaf, chain)


def test_every_route_declares_what_it_requires() -> None:
    """A new route without a `requires` word that declares a capability (or with an
    unknown one) fails here: access.requirement reads each word of the routes table."""
    seen = set()
    for row in ROUTES:
        assert len(row) == 5, f"route {row[:3]} does not declare what it requires"
        method, path, _name, requires, summary = row
        try:
            need = access.requirement(requires)
        except ValueError as e:
            raise AssertionError(f"{method} {path}: {e}") from None
        assert summary, f"{method} {path}: no summary"
        seen.add((method, path))
        # An object's namespace comes from what the path names.
        if need.scope == "alloc":
            assert path.startswith("/v1/allocation/{id}"), (method, path)
        if need.scope == "deployment":
            assert path.startswith("/v1/deployment/{id}"), (method, path)
        if need.scope == "query":
            assert "{name:job}" in path or path.startswith(
                ("/v1/service/", "/v1/config", "/v1/secret")
            ), (method, path)
        if need.scope == "path":
            assert "{name}" in path, (method, path)
    assert len(seen) == len(ROUTES), "a route is listed twice"
    public = {(m, p) for m, p, _, r, _ in ROUTES if r == "public"}
    assert public == {
        ("GET", "/v1/tls/ca"),
        ("POST", "/v1/tls/join"),
        ("POST", "/v1/ui/session"),  # a login link's token is the credential
        ("GET", "/ui"),  # the UI's own files: the same for everyone, in the package
        ("GET", "/ui/"),
        ("GET", "/ui/{file}"),
        ("POST", "/v1/acl/bootstrap"),  # once per cluster
    }, public
    # Every route an agent acts for a node through takes the node id in its path.
    for m, p, _, r, _ in ROUTES:
        if r == "agent":
            assert "{id}" in p, (m, p)


def test_config_and_secret_routes_are_guarded_and_values_need_more_than_a_read() -> None:
    """Main's config, secret, keyring and template-data routes are in the table the access
    layer reads; secret values need a certificate, never an agent or a browser's cookie;
    template data only an agent, for its own node."""
    by_route = {(m, p): r for m, p, _, r, _ in ROUTES}
    assert by_route[("GET", "/v1/config/{path:path}")] == "ns:read-config@query"
    assert by_route[("GET", "/v1/configs")] == "ns:read-config@each"
    assert by_route[("PUT", "/v1/secret/{path:path}")] == "ns:write-secret@query"
    assert by_route[("GET", "/v1/secret/{path:path}")] == "ns:read-secret@query"
    assert by_route[("GET", "/v1/secret-values/{path:path}")] == "cert|ns:read-secret@query"
    assert by_route[("POST", "/v1/operator/keyring/rotate")] == "management"
    template = ("GET", "/v1/node/{id}/allocation/{alloc}/template-data")
    assert by_route[template] == "agent"
    agent, cli = Identity("agent", "n-1"), Identity("operator", "me")
    browser = Identity("operator", "ui:me", browser=True)
    for (m, p), word in by_route.items():
        if not p.startswith(("/v1/config", "/v1/secret")):
            continue
        need = access.requirement(word)
        assert need.role == "operator" and not need.agents, (m, p)
        with pytest.raises(Forbidden):
            access.check(agent, need.role, node_in_path=None, browser=need.browser)
        with pytest.raises(Forbidden):
            access.check(Identity("server", "s1"), need.role, node_in_path=None)
        access.check(cli, need.role, node_in_path=None, browser=need.browser)
        access.check(Identity("management", "admin"), need.role, node_in_path=None)
    names = access.requirement(by_route[("GET", "/v1/secret/{path:path}")])
    access.check(browser, names.role, node_in_path=None, browser=names.browser)  # names, keys
    values = access.requirement(by_route[("GET", "/v1/secret-values/{path:path}")])
    assert (values.capability, values.scope, values.browser) == ("read-secret", "query", False)
    with pytest.raises(Forbidden, match="web UI session"):
        access.check(browser, values.role, node_in_path=None, browser=values.browser)
    access.check(agent, "agent", node_in_path="n-1")
    for who in (cli, Identity("management", "admin"), browser):
        with pytest.raises(Forbidden):
            access.check(who, "agent", node_in_path="n-1")


def test_words_without_a_capability_are_refused() -> None:
    for word in ("operator", "agent|operator", "ns:read-job", "ns:fly@alloc", "ns:read-job@x",
                 "agent|public", "cert|any", "node:admin", "read-config", ""):  # fmt: skip
        with pytest.raises(ValueError, match="capability"):
            access.requirement(word)
    need = access.requirement("agent|ns:read-job@query")
    assert (need.role, need.capability, need.scope, need.agents) == (
        "agent|operator", "read-job", "query", True,
    )  # fmt: skip


def test_certificates_carry_role_and_name_and_verify_against_their_ca() -> None:
    ca, key = pki.create_ca()
    node_key = pki.make_key()
    leaf = pki.issue(ca, key, node_key.public_key(), role="agent", name="n-1", lifetime=60)
    assert pki.role_and_name(leaf) == ("agent", "n-1")
    assert (
        x509.DNSName("n-1.node.podium")
        in leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    )
    _verify(leaf, [ca], [])
    other, _ = pki.create_ca()
    with pytest.raises(VerificationError):
        _verify(leaf, [other], [])
    with pytest.raises(ValueError):
        pki.issue(ca, key, node_key.public_key(), role="root", name="x")


def test_a_cross_signed_ca_is_trusted_by_peers_that_know_only_the_old_root() -> None:
    old, old_key = pki.create_ca()
    new, new_key = pki.create_ca(common_name="podium cluster CA 2")
    cross = pki.cross_sign(new, old, old_key)
    leaf = pki.issue(new, new_key, pki.make_key().public_key(), role="agent", name="n-9")
    _verify(leaf, [old], [cross])  # an old peer, through the cross-certificate
    _verify(leaf, [new], [])  # a peer that has the new root
    with pytest.raises(VerificationError):
        _verify(leaf, [old], [])  # without the cross-cert the old root knows nothing of it


def test_csr_key_is_checked_and_renewal_is_due_at_two_thirds() -> None:
    k = pki.make_key()
    assert pki.csr_public_key(pki.csr_pem(pki.make_csr(k))).public_numbers() == (
        k.public_key().public_numbers()
    )
    with pytest.raises(ValueError, match="PEM"):
        pki.csr_public_key("not a csr")
    ca, key = pki.create_ca()
    leaf = pki.issue(ca, key, k.public_key(), role="agent", name="n", lifetime=300)
    assert 190 < pki.renew_due(leaf) <= 200  # due at 2/3 of 300 s


def test_kek_seals_the_ca_key() -> None:
    kek = pki.new_kek()
    sealed = pki.seal(kek, b"secret key")
    assert b"secret" not in sealed
    assert pki.unseal(kek, sealed) == b"secret key"
    with pytest.raises(Exception):  # noqa: B017 - cryptography's InvalidTag
        pki.unseal(pki.new_kek(), sealed)


def test_join_tokens_parse_strictly() -> None:
    token = f"podium1-a-{'ab' * 32}-{'cd' * 20}"
    assert parse_token(token) == ("agent", "ab" * 32, "cd" * 20)
    for bad in ("", "podium1", token.replace("-a-", "-x-"), token + "0", "SWMTKN-1-abc"):
        with pytest.raises(Exception, match="token"):
            parse_token(bad)


def test_access_refuses_the_wrong_role_and_the_wrong_node() -> None:
    agent = Identity("agent", "n-1")
    access.check(agent, "agent", node_in_path="n-1")
    with pytest.raises(Forbidden):
        access.check(agent, "agent", node_in_path="n-2")
    with pytest.raises(Forbidden):
        access.check(agent, "operator", node_in_path=None)
    with pytest.raises(Forbidden):
        access.check(Identity("operator", "me"), "node-register", node_in_path=None)
    with pytest.raises(Forbidden):
        access.check(Identity("operator", "me"), "management", node_in_path=None)
    with pytest.raises(Unauthorized):
        access.check(ANONYMOUS, "any", node_in_path=None)
    access.check(ANONYMOUS, "public", node_in_path=None)
    access.check(Identity("management", "admin"), "management", node_in_path=None)
    with pytest.raises(Forbidden):
        access.check(Identity("server", "s1"), "agent", node_in_path="n-1")


def test_insecure_node_secrets_prove_a_node_and_a_wrong_one_is_refused() -> None:
    digest = access.secret_hash("s3cret")
    who = access.resolve(
        ANONYMOUS, insecure=True, node_id="n-1", secret="s3cret", stored_hash=digest
    )
    assert who == Identity("agent", "n-1")
    with pytest.raises(Forbidden):
        access.resolve(ANONYMOUS, insecure=True, node_id="n-1", secret="guess", stored_hash=digest)
    with pytest.raises(Forbidden):
        access.resolve(ANONYMOUS, insecure=True, node_id="n-1", secret="x", stored_hash=None)
    assert (
        access.resolve(ANONYMOUS, insecure=True, node_id="", secret="", stored_hash=None)
        == INSECURE
    )
    # With TLS a header proves nothing: the certificate decides.
    assert (
        access.resolve(
            ANONYMOUS, insecure=False, node_id="n-1", secret="s3cret", stored_hash=digest
        )
        == ANONYMOUS
    )


def test_snapshot_entries_are_checked_against_their_kind_and_ids() -> None:
    assert snapshot.check_entry("/allocs/../../x", b"{}") is not None
    assert "Allocation" in (snapshot.check_entry("/allocs/abc-1", b'{"id": 5}') or "")
    assert "never restored" in (snapshot.check_entry("/tls/ca", b"{}") or "")
    assert snapshot.check_entry("/jobs/default/web/extra", b"{}") is not None
    job = b'{"name": "web/periodic-1700000000", "groups": []}'
    assert snapshot.check_entry("/jobs/default/web/periodic-1700000000", job) is None
    assert snapshot.check_entry("/jobversions/default/web/0000000001", job) is None


def test_denials_are_rate_limited() -> None:
    d = access.DenialLog(rate=0.0, burst=3)
    assert [d.allow() for _ in range(5)] == [True, True, True, False, False]
    assert d.dropped == 2


def test_every_event_type_the_server_writes_has_a_topic_a_reader_can_ask_for() -> None:
    """`podium events --topic security` (refusals) and `--topic tls` (joins, rotations)
    are accepted: each event type written with event_put has its topic in TOPICS."""
    import re
    from pathlib import Path

    import podium
    from podium.server.events import TOPICS, topic_of

    root = Path(podium.__file__).parent
    types = {
        m.group(1)
        for f in root.rglob("*.py")
        for m in re.finditer(r'event_put\(\s*"([a-z_]+\.[a-z_.]+)"', f.read_text())
    }
    assert {"security.denied", "tls.joined", "tls.rotate", "job.registered"} <= types, types
    unknown = sorted(t for t in types if topic_of(t) not in TOPICS)
    assert unknown == [], unknown
