"""The kinds of multi-tenancy and access control: Namespace (with its Quota), AclPolicy,
AclToken. Stored as JSON under the keys of store/keys.py; the server's acl modules own them.

A token's secret is never stored: only its SHA-256 (`secret_hash`), looked up by it.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from podium.model.types import Struct

TokenType = Literal["client", "management"]


class Quota(Struct):
    """Most a namespace's live allocs may hold together; 0 = no limit on that figure."""

    cpu: int = 0  # MHz shares, summed over live allocs
    memory: int = 0  # MB
    allocs: int = 0  # live allocs
    jobs: int = 0  # jobs not stopped


class Namespace(Struct):
    name: str
    description: str = ""
    quota: Quota | None = None
    create_time: float = 0.0
    revision: int = 0


class AclPolicy(Struct):
    name: str
    description: str = ""
    rules: str = ""  # the text as applied (HCL or JSON): parsed again where it is used
    revision: int = 0


class AclToken(Struct):
    accessor: str  # public: lists and audit name a token by it
    secret_hash: str  # sha256 of the secret, hex; the secret is shown once, at creation
    name: str = ""
    type: TokenType = "client"
    policies: list[str] = msgspec.field(default_factory=list)
    create_time: float = 0.0
    expiration_time: float = 0.0  # 0: never
    revision: int = 0

    def expired(self, now: float) -> bool:
        return bool(self.expiration_time) and now >= self.expiration_time

    def public(self) -> dict[str, object]:
        """What lists and `token info` show: everything but the secret's hash."""
        return {
            "accessor": self.accessor,
            "name": self.name,
            "type": self.type,
            "policies": self.policies,
            "create_time": self.create_time,
            "expiration_time": self.expiration_time,
        }
