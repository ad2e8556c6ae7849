"""Credentials on disk: a trust bundle, a certificate (with its chain) and its key.

Files are written whole to a temporary name and renamed, so a reader never sees half a
certificate; keys (and anything secret) are created 0600.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography import x509

from podium.tls import pki


def write_private(path: str, data: str | bytes) -> None:
    """Write `data` to `path` atomically, readable by the owner only."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_public(path: str, data: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def read_text(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


@dataclass(frozen=True)
class Credentials:
    """Paths of one holder's trust bundle, certificate chain and key."""

    ca: str
    cert: str
    key: str

    @classmethod
    def in_dir(cls, directory: str, name: str) -> Credentials:
        """`<dir>/ca.pem`, `<dir>/<name>.pem`, `<dir>/<name>-key.pem`."""
        return cls(
            os.path.join(directory, "ca.pem"),
            os.path.join(directory, f"{name}.pem"),
            os.path.join(directory, f"{name}-key.pem"),
        )

    def exist(self) -> bool:
        return all(os.path.exists(p) for p in (self.ca, self.cert, self.key))

    def save(self, *, chain_pem: str, key: pki.PrivateKey | None, ca_pem: str) -> None:
        """Key first, then the certificate: a reader that finds the new certificate finds
        the key that goes with it (the old key is kept when `key` is None)."""
        if key is not None:
            write_private(self.key, pki.key_pem(key))
        write_public(self.cert, chain_pem)
        write_public(self.ca, ca_pem)

    def leaf(self) -> x509.Certificate:
        return pki.load_certs(read_text(self.cert))[0]

    def mtime(self) -> float:
        """The newest change among the three files (0 if one is missing)."""
        try:
            return max(os.stat(p).st_mtime_ns for p in (self.ca, self.cert, self.key)) / 1e9
        except FileNotFoundError:
            return 0.0


def epoch_path(creds: Credentials) -> str:
    """Beside a node's certificate: the CA epoch that issued it (to follow rotations)."""
    return os.path.join(os.path.dirname(creds.cert), "epoch")
