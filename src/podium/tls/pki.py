"""Keys, certificate authorities and certificates, with the `cryptography` package.

A certificate names its holder's role in the subject's OU and its name in the CN:

    role         CN                 SAN (what a client checks when it connects)
    server       server id          DNS server.podium (+ the hosts it is reached at)
    agent        node id            DNS <node-id>.node.podium
    operator     user name          -
    management   user name          - (the server's own CLI certificate: every operator route)

The server never copies a role or name from a CSR: it takes only the public key and
writes what the join token or the caller's own certificate entitles it to.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROLES = ("server", "agent", "operator", "management")
SERVER_NAME = "server.podium"  # every server certificate carries it; clients check it
DEFAULT_LIFETIME = 30 * 24 * 3600.0  # seconds; renewed at 2/3
CA_LIFETIME = 10 * 365 * 24 * 3600.0
BACKDATE = 300.0  # seconds: tolerate clocks a little apart

PrivateKey = ec.EllipticCurvePrivateKey


def node_name(node_id: str) -> str:
    """The DNS name in an agent's certificate, checked by whoever connects to that node."""
    return f"{node_id}.node.podium"


def make_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


_CA_USAGE = x509.KeyUsage(
    digital_signature=True,
    key_cert_sign=True,
    crl_sign=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    encipher_only=False,
    decipher_only=False,
)


def _name(cn: str, ou: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "podium"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def create_ca(
    *, common_name: str = "podium cluster CA", lifetime: float = CA_LIFETIME
) -> tuple[x509.Certificate, PrivateKey]:
    key = make_key()
    name = _name(common_name, "ca")
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(seconds=BACKDATE))
        .not_valid_after(now + dt.timedelta(seconds=lifetime))
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def cross_sign(
    new_ca: x509.Certificate, old_ca: x509.Certificate, old_key: PrivateKey
) -> x509.Certificate:
    """The new CA's name and key, vouched for by the old CA: a peer that trusts only the old
    root accepts certificates from the new one while the rotation is under way."""
    return (
        x509.CertificateBuilder()
        .subject_name(new_ca.subject)
        .issuer_name(old_ca.subject)
        .public_key(new_ca.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(new_ca.not_valid_before_utc)
        .not_valid_after(min(new_ca.not_valid_after_utc, old_ca.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(new_ca.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(old_ca.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(old_key, hashes.SHA256())
    )


def issue(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    public_key: ec.EllipticCurvePublicKey,
    *,
    role: str,
    name: str,
    lifetime: float = DEFAULT_LIFETIME,
    hosts: Iterable[str] = (),
) -> x509.Certificate:
    """A leaf certificate for `role`/`name`; servers and agents get the SAN peers check."""
    if role not in ROLES:
        raise ValueError(f"role: expected one of {', '.join(ROLES)}, got {role!r}")
    now = _now()
    sans: list[x509.GeneralName] = []
    if role == "server":
        sans.append(x509.DNSName(SERVER_NAME))
    elif role == "agent":
        sans.append(x509.DNSName(node_name(name)))
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if role in ("server", "agent"):  # both answer connections (API, agent API, proxy)
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name, role))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(seconds=BACKDATE))
        .not_valid_after(now + dt.timedelta(seconds=lifetime))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def make_csr(key: PrivateKey) -> x509.CertificateSigningRequest:
    """A CSR proves the key is held; the server decides what the certificate names."""
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "podium")]))
        .sign(key, hashes.SHA256())
    )


def csr_public_key(pem: str) -> ec.EllipticCurvePublicKey:
    """The public key of a PEM CSR whose signature checks out (ValueError otherwise)."""
    try:
        csr = x509.load_pem_x509_csr(pem.encode())
    except (ValueError, TypeError) as e:
        raise ValueError(f"not a PEM certificate request ({e})") from None
    if not csr.is_signature_valid:
        raise ValueError("the request's signature does not match its key")
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("expected an EC (P-256) key")
    return key


# ── identity in a certificate ─────────────────────────────────────────────────────────


def role_and_name(cert: x509.Certificate) -> tuple[str, str]:
    ou = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    role = str(ou[0].value) if ou else ""
    return (role if role in ROLES else ""), (str(cn[0].value) if cn else "")


def digest(cert: x509.Certificate) -> str:
    """sha256 of the certificate's DER, in hex: what a join token pins."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def remaining(cert: x509.Certificate) -> float:
    return (cert.not_valid_after_utc - _now()).total_seconds()


def lifetime(cert: x509.Certificate) -> float:
    return (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds() - BACKDATE


def renew_due(cert: x509.Certificate, *, fraction: float = 2 / 3) -> float:
    """Seconds until the certificate is due for renewal (2/3 of its life; <= 0: now)."""
    life = max(lifetime(cert), 1.0)
    return remaining(cert) - life * (1 - fraction)


# ── PEM ───────────────────────────────────────────────────────────────────────────────


def cert_pem(*certs: x509.Certificate) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


def key_pem(key: PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def csr_pem(csr: x509.CertificateSigningRequest) -> str:
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def load_certs(pem: str | bytes) -> list[x509.Certificate]:
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise ValueError(f"not a PEM certificate ({e})") from None


def load_key(pem: str | bytes) -> PrivateKey:
    data = pem.encode() if isinstance(pem, str) else pem
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("expected an EC private key")
    return key


# ── the CA key at rest in a shared store ──────────────────────────────────────────────


def seal(kek: bytes, plaintext: bytes) -> bytes:
    """AES-256-GCM under the key-encryption key every server of the cluster holds."""
    nonce = os.urandom(12)
    return nonce + AESGCM(kek).encrypt(nonce, plaintext, b"podium-ca")


def unseal(kek: bytes, sealed: bytes) -> bytes:
    return AESGCM(kek).decrypt(sealed[:12], sealed[12:], b"podium-ca")


def new_kek() -> bytes:
    return AESGCM.generate_key(bit_length=256)
