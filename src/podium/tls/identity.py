"""Who is calling: a typed identity read once per connection from the peer's certificate.

    role        what it may be granted (the routes table says which roles a route takes)
    management  the server's own CLI certificate: every route, operator ones included
    operator    a CLI certificate (`podium tls cert create --cli`): users' routes
    agent       a node's certificate: agents' routes, for its own node id only
    server      a server's certificate: what servers ask of agents (logs, exec)
    insecure    a server run with --insecure: no caller can be told apart (see docs)
    anonymous   no certificate: only the CA bundle and joining

The ACL layer maps these to policies; nothing here trusts a header the caller sets,
except a node secret on --insecure servers (checked against its stored hash).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from cryptography import x509

from podium.tls import pki


@dataclass(frozen=True, slots=True)
class Identity:
    role: str
    name: str = ""
    serial: int = 0
    issuer: str = ""  # the issuing CA's subject, to follow a CA rotation
    browser: bool = False  # a web UI session (a cookie), not a certificate

    @property
    def node_id(self) -> str:
        return self.name if self.role == "agent" else ""

    @property
    def authenticated(self) -> bool:
        return self.role != "anonymous"

    def describe(self) -> str:
        return f"{self.role} {self.name!r}" if self.name else self.role


# --insecure servers: an agent proves its node with the secret issued at registration.
NODE_ID_HEADER = "x-podium-node"
NODE_SECRET_HEADER = "x-podium-node-secret"

ANONYMOUS = Identity("anonymous")
INSECURE = Identity("insecure")


def of_certificate(der: bytes) -> Identity:
    cert = x509.load_der_x509_certificate(der)
    role, name = pki.role_and_name(cert)
    if not role:
        return ANONYMOUS
    return Identity(role, name, cert.serial_number, cert.issuer.rfc4514_string())


def of_ssl_object(obj: ssl.SSLObject | ssl.SSLSocket | None) -> Identity:
    if obj is None:
        return ANONYMOUS
    der = obj.getpeercert(binary_form=True)
    return of_certificate(der) if der else ANONYMOUS
