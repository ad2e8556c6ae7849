"""Who may call which route: the caller's identity against the route's `requires`.

    request ─► identity (certificate, per connection; or a node secret on --insecure)
            ─► REQUIRES[route's word] allows its role? ─► node routes: its own node only
            ─► refused: 401 (no credentials) / 403 (wrong ones) + a `security.denied` event

The words (the routes table in app.py gives one to every route):

    public        anyone, no credentials (the CA bundle, joining with a token)
    any           any authenticated caller
    operator      CLI certificates (operator, management)
    management    the management certificate only (snapshots, join tokens, CA rotation)
    agent         an agent, and only for its own node id (`{id}` in the path)
    node-register an agent registering itself (on --insecure: anyone, for a new node id)
    agent|operator either; handlers narrow what an agent sees to its own node

On an --insecure server nobody can be told apart: a caller without a node secret counts
as an operator (docs/security.md says what that gives up).

Users' routes name the capability they need, checked when ACL is on (server/acl.py) and
standing for `operator` (above) when it is off:

    operator:read|write   node:read|write      the operator and node areas of a policy
    agent:read            the agent area: the members and agents the cluster runs
    ns:CAP@SCOPE          a namespace capability (acl/policy.py), checked against the
                          namespace of the OBJECT, found by SCOPE:
        query       the job named in the path, in ?namespace= (default "default")
        path        the namespace named in the path ({name})
        alloc       the allocation {id} names: its namespace, never the request's
        deployment  the deployment {id} names
        body        the job in the body: its handler checks it (Api.permit)
        each        a list or stream: its handler keeps only what may be read (Api.may)
    agent|WORD            an agent too (its own node's objects only), else WORD
    cert|WORD             WORD, and only over a certificate: never a web UI session (a
                          secret's values leave the server only to the CLI or to the
                          node that renders them)

Configs and secrets are namespaced objects like jobs: ns:read-config, ns:write-config,
ns:read-secret (names, keys, versions), ns:write-secret, and cert|ns:read-secret@query
for a secret's values; never an agent, whose templates read through its own allocs'
template data (`agent`).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import time
from dataclasses import dataclass

from podium.errors import Forbidden, Unauthorized
from podium.tls.identity import (
    ANONYMOUS,
    INSECURE,
    NODE_ID_HEADER,
    NODE_SECRET_HEADER,
    Identity,
)

log = logging.getLogger(__name__)

REQUIRES: dict[str, frozenset[str]] = {
    "public": frozenset({"anonymous", "insecure", "operator", "management", "agent", "server"}),
    "any": frozenset({"insecure", "operator", "management", "agent", "server"}),
    "operator": frozenset({"insecure", "operator", "management"}),
    "management": frozenset({"insecure", "management"}),
    "agent": frozenset({"agent"}),
    "node-register": frozenset({"agent", "insecure"}),
    "agent|operator": frozenset({"agent", "insecure", "operator", "management"}),
}


_PLAIN = ("public", "any", "management", "agent", "node-register")
SCOPES = ("query", "path", "alloc", "deployment", "body", "each")
AREA_WORDS = ("operator:read", "operator:write", "node:read", "node:write", "agent:read")


@dataclass(frozen=True)
class Requirement:
    """A route's `requires` word, read: the transport's word (Trust I), what ACL checks."""

    word: str
    role: str  # a key of REQUIRES: what the connection's certificate must be
    capability: str = ""  # "", "management", an area word, or a namespace capability
    scope: str = ""  # for a namespace capability: where the object's namespace comes from
    agents: bool = False  # agent|...: an agent may call it for its own node's objects
    browser: bool = True  # False (cert|...): a web UI session may not call it


@functools.cache
def requirement(word: str) -> Requirement:
    """The Requirement a routes-table word declares; ValueError for one that declares none."""
    from podium.acl.policy import CAPABILITIES

    agents, browser, rest = False, True, word
    if rest.startswith("cert|"):
        browser, rest = False, rest[len("cert|") :]
    if rest.startswith("agent|"):
        agents, rest = True, rest[len("agent|") :]
    if rest in _PLAIN:
        if agents or not browser:
            raise ValueError(f"{word!r}: agent| and cert| go with a capability")
        return Requirement(word, rest, "management" if rest == "management" else "")
    role = "agent|operator" if agents else "operator"
    if rest in AREA_WORDS:
        return Requirement(word, role, rest, "", agents, browser)
    cap, _, scope = rest.removeprefix("ns:").partition("@")
    if rest.startswith("ns:") and cap in CAPABILITIES and cap != "deny" and scope in SCOPES:
        return Requirement(word, role, cap, scope, agents, browser)
    raise ValueError(
        f"{word!r} declares no capability: expected one of {sorted(_PLAIN)}, "
        f"{list(AREA_WORDS)}, or ns:CAPABILITY@SCOPE (scopes {list(SCOPES)}), "
        "after agent| or cert| if any"
    )


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check(who: Identity, requires: str, *, node_in_path: str | None, browser: bool = True) -> None:
    """Raise Unauthorized/Forbidden unless `who` may call a route that `requires` this
    (a role of REQUIRES; `browser` False: not over a web UI session's cookie)."""
    allowed = REQUIRES[requires]
    if who.role not in allowed:
        if not who.authenticated:
            raise Unauthorized("this route needs a client certificate (see docs/security.md)")
        raise Forbidden(f"{who.describe()} may not call this route (it needs {requires})")
    if who.browser and not browser:
        raise Forbidden("a web UI session may not call this route (it needs a certificate)")
    if who.role == "agent" and node_in_path is not None and node_in_path != who.node_id:
        raise Forbidden(f"{who.describe()} may not act for node {node_in_path}")


def resolve(
    peer: Identity, *, insecure: bool, node_id: str, secret: str, stored_hash: str | None
) -> Identity:
    """The identity a request acts with. On --insecure servers: INSECURE, or an agent whose
    node secret matches the stored hash (a wrong one is refused, never downgraded)."""
    if not insecure or peer.authenticated:
        return peer
    if not secret:
        return INSECURE
    if (
        not node_id
        or stored_hash is None
        or not hmac.compare_digest(secret_hash(secret), stored_hash)
    ):
        raise Forbidden(f"the node secret does not match node {node_id or '(none)'}")
    return Identity("agent", node_id)


class DenialLog:
    """Refusals become events, at most `rate` a second (a flood must not fill the store)."""

    def __init__(self, *, rate: float = 5.0, burst: int = 20) -> None:
        self.rate, self.burst = rate, burst
        self._tokens = float(burst)
        self._at = time.monotonic()
        self.dropped = 0

    def allow(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        self.dropped += 1
        return False


__all__ = [
    "ANONYMOUS",
    "INSECURE",
    "NODE_ID_HEADER",
    "NODE_SECRET_HEADER",
    "REQUIRES",
    "DenialLog",
    "Requirement",
    "check",
    "requirement",
    "resolve",
]
