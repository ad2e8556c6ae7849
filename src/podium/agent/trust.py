"""The agent's credentials: joining with a token, renewing, following a CA rotation.

    first start:  --join-token -> GET /v1/tls/ca (unverified) -> its digest must be the
                  token's -> POST /v1/tls/join {token, CSR} over TLS pinned to that CA
                  -> <data-dir>/tls/{ca.pem, agent.pem, agent-key.pem (0600)}
    running:      renew at 2/3 of the certificate's life (POST /v1/tls/renew, mTLS);
                  a heartbeat answer with another CA epoch -> fetch the bundle, renew now
    --insecure:   no certificates; the node secret the server issues once is kept 0600

New credentials are loaded into the SSL contexts in use (new connections take them): no
task restarts, no dropped connections. A trust bundle that *shrank* (a rotation ended)
needs fresh contexts; the agent's client and listeners are rebuilt for it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Callable

import httpx

from podium.errors import PodiumError, Problem, Unavailable, ValidationError
from podium.tls import pki
from podium.tls.context import ServerTLS, client_context
from podium.tls.files import Credentials, epoch_path, read_text, write_private, write_public
from podium.tls.join import join

log = logging.getLogger(__name__)

RETRY = 5.0  # seconds between renewal attempts that failed


class AgentTrust:
    def __init__(
        self,
        data_dir: str,
        *,
        join_token: str = "",
        own: Credentials | None = None,
        insecure: bool = False,
    ) -> None:
        self.insecure = insecure
        self.join_token = join_token
        self.creds = own or Credentials.in_dir(os.path.join(data_dir, "tls"), "agent")
        self.own_pki = own is not None
        self.secret_path = os.path.join(data_dir, "node-secret")
        self.client_ssl: ssl.SSLContext | None = None
        self.listener: ServerTLS | None = None
        self.epoch = 0
        self.on_rebuild: list[Callable[[], None]] = []  # the trust bundle shrank
        self.hosts: list[str] = []  # the node's address: in its certificate, for scrapers

    # ----------------------------------------------------------------- start

    @property
    def enabled(self) -> bool:
        return not self.insecure

    def node_id(self) -> str:
        return pki.role_and_name(self.creds.leaf())[1]

    async def ensure(self, servers: list[str], *, proposed_id: str) -> None:
        """Certificates on disk (joining first if there are none), contexts loaded."""
        if self.insecure:
            return
        if not self.creds.exist():
            if self.own_pki:
                raise Unavailable(f"TLS files missing: {self.creds}")
            if not self.join_token:
                raise Unavailable(
                    "this agent has no certificate: start it once with --join-token TOKEN "
                    "(from `podium server join-token`), or give --tls-ca/--tls-cert/--tls-key"
                )
            await self._join(servers, proposed_id)
        self.epoch = self._saved_epoch()
        role, _ = pki.role_and_name(self.creds.leaf())
        if role != "agent":
            raise ValidationError(
                [Problem("--tls-cert", f"expected an agent certificate, got role {role!r}")]
            )
        self.client_ssl = client_context(self.creds)
        self.listener = ServerTLS(self.creds, require_client_cert=True)

    async def _join(self, servers: list[str], proposed_id: str) -> None:
        last: Exception | None = None
        for server in servers:
            key = pki.make_key()
            try:
                data = await join(server, self.join_token, key, role="agent",
                                  proposed_id=proposed_id, hosts=self.hosts)  # fmt: skip
            except (httpx.HTTPError, OSError) as e:
                last = e
                continue
            self.creds.save(chain_pem=data["cert"], key=key, ca_pem=data["ca"])
            self._save_epoch(int(data.get("epoch", 0)))
            log.info("joined the cluster at %s as node %s", server, data["name"])
            return
        raise Unavailable(f"could not join through {', '.join(servers)}: {last}")

    def _saved_epoch(self) -> int:
        """The CA epoch that issued the certificate on disk (kept beside it)."""
        try:
            return int(read_text(epoch_path(self.creds)).strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _save_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        write_public(epoch_path(self.creds), f"{epoch}\n")

    # ------------------------------------------------------------- node secret

    def node_secret(self) -> str:
        try:
            return read_text(self.secret_path).strip()
        except FileNotFoundError:
            return ""

    def save_node_secret(self, secret: str) -> None:
        write_private(self.secret_path, secret)

    # ----------------------------------------------------------------- renew

    def due_in(self) -> float:
        return pki.renew_due(self.creds.leaf())

    async def renew(self, request: Callable[..., object]) -> None:
        """Ask for a fresh certificate (mTLS with the current one) and load it."""
        key = pki.make_key()
        data = await request(  # type: ignore[misc]
            "POST",
            "/v1/tls/renew",
            json={"csr": pki.csr_pem(pki.make_csr(key)), "hosts": self.hosts},
        )
        old_roots = read_text(self.creds.ca)
        self.creds.save(chain_pem=data["cert"], key=key, ca_pem=data["ca"])
        self._save_epoch(int(data.get("epoch", self.epoch)))
        self._load(shrank=_shrank(old_roots, data["ca"]))
        log.info("certificate renewed (valid %.0fs)", pki.remaining(self.creds.leaf()))

    def _load(self, *, shrank: bool) -> None:
        assert self.client_ssl is not None and self.listener is not None
        if shrank:
            self.client_ssl = client_context(self.creds)
            for fn in self.on_rebuild:
                fn()
        else:
            self.client_ssl.load_verify_locations(self.creds.ca)
            self.client_ssl.load_cert_chain(self.creds.cert, self.creds.key)
        self.listener.reload()

    async def run(self, request: Callable[..., object], epoch: Callable[[], int]) -> None:
        """Renew at 2/3 of life, or at once when the server's CA epoch is not ours."""
        if self.insecure or self.own_pki:
            return
        while True:
            wait = max(0.0, min(self.due_in(), 1.0))
            await asyncio.sleep(wait)
            seen = epoch()
            if self.due_in() > 0 and (not seen or seen == self.epoch):
                continue
            try:
                await self.renew(request)
            except PodiumError as e:
                log.warning("certificate renewal failed (retrying in %.0fs): %s", RETRY, e)
                await asyncio.sleep(RETRY)


def _shrank(old_pem: str, new_pem: str) -> bool:
    old = {pki.digest(c) for c in pki.load_certs(old_pem)}
    new = {pki.digest(c) for c in pki.load_certs(new_pem)}
    return bool(old - new)
