"""Running a server: the context the routes and controllers share, and the run loop.

Server.run()
  Authority.start (the cluster CA, own certificates; unless --insecure or own PKI)
  TaskGroup: ClusterState.run (store watch) | uvicorn (HTTPS API, mutual TLS)
             | Authority.run (renewal at 2/3 of life, CA rotation)
             | Catalog (service endpoints) | DnsServer (udp+tcp) | AuditLog (audit events)
             | Leadership (leader.py) -> each term: Server.leader_work (leader-only controllers,
               the autoscaler among them: any server asks it for a job's scaling status)
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from podium.errors import StoreError
from podium.model.types import Node
from podium.runtime import http
from podium.runtime.clock import Clock, SystemClock
from podium.runtime.limits import raise_open_files_limit
from podium.server import failures_mirror
from podium.server.access import DenialLog
from podium.server.acl import AclStore
from podium.server.agents import AgentLink
from podium.server.audit import AuditLog
from podium.server.catalog import Catalog
from podium.server.controllers.autoscaler import Autoscaler
from podium.server.dns import DnsConfig, DnsServer
from podium.server.events import EventRing
from podium.server.heartbeat_leases import HeartbeatLeases
from podium.server.keyring import ENV_KEY, Keyring, KeyringError, load_root_key
from podium.server.leader import Leadership, LeadershipConfig
from podium.server.metrics import ClusterCollector, ServerMetrics, TimedStore, backend_of
from podium.server.namespaces import Namespaces
from podium.server.nodes import HeartbeatPolicy, Heartbeats
from podium.server.state import ClusterState
from podium.server.ui_login import UiSessions
from podium.server.usage import UsageGatherer
from podium.store import Store, keys, open_store
from podium.templates.worker import TemplateWorker
from podium.tls import pki
from podium.tls.authority import Authority, AuthorityConfig
from podium.tls.context import ServerTLS
from podium.tls.files import Credentials

log = logging.getLogger(__name__)


@dataclass
class TLSSettings:
    """Mutual TLS for the API: podium's own CA under `<data_dir>/tls`, or your PKI's files."""

    data_dir: str
    lifetime: float = pki.DEFAULT_LIFETIME  # of the certificates this server issues
    own: Credentials | None = None  # --tls-ca/--tls-cert/--tls-key: no CA of podium's
    hosts: list[str] = field(default_factory=list)  # extra names in the server certificate
    check_every: float = 1.0

    @property
    def tls_dir(self) -> str:
        import os

        return os.path.join(self.data_dir, "tls")


@dataclass
class ServerConfig:
    store_url: str
    host: str = "127.0.0.1"
    port: int = 4646
    heartbeat_ttl: float = 3.0  # a node silent this long is down (the least TTL)
    # The most heartbeats all nodes send per second, on average: beyond
    # heartbeat_ttl * max / 3 nodes, the TTL grows with the cluster (nodes.HeartbeatPolicy).
    max_heartbeats_per_second: float = 200.0
    # After a server start (or an election) no node is declared down for this long on
    # top of its TTL.
    startup_grace: float | None = None  # None: one heartbeat TTL for the cluster's size
    clock: Clock = field(default_factory=SystemClock)
    dns: DnsConfig | None = None  # None: no DNS server
    # When the DNS port is taken, listen on a free one instead (with a warning): for the
    # default address, which several clusters on one machine would fight over.
    dns_fallback: bool = False
    # Several servers on one store elect a leader through a lease of this TTL; None:
    # elect when the store is etcd (one SQLite server simply leads).
    elect: bool | None = None
    leader_ttl: float = 3.0
    server_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    metrics: bool = True  # False: /v1/metrics is empty and nothing is counted
    events: EventRing = field(default_factory=EventRing)  # how many events kept, how long
    prometheus_url: str = ""  # a user's Prometheus, for `prometheus:` scaling policies
    # The keyring's root key (see server/keyring.py); "" = keyring.key beside a SQLite
    # store's file, or none (secrets refused) on etcd. PODIUM_KEYRING_KEY wins over both.
    keyring_file: str = ""
    tls: TLSSettings | None = None  # None: --insecure (plain HTTP, callers not told apart)
    etcd_security: Any = None  # store.etcd.EtcdSecurity: TLS and user/password to etcd
    acl: bool = False  # tokens and policies decide what each caller may do (server/acl.py)
    audit_path: str | None = None  # the audit trail's JSON lines (server/audit.py); None: none


@dataclass
class ServerContext:
    state: ClusterState
    heartbeats: Heartbeats
    clock: Clock
    store_url: str
    heartbeat_ttl: float
    catalog: Catalog | None = None
    leadership: Leadership | None = None
    metrics: ServerMetrics = field(default_factory=lambda: ServerMetrics(None))
    usage: UsageGatherer | None = None  # resource use gathered from the agents
    autoscaler: Autoscaler | None = None  # runs on the leader; any server asks it for status
    keyring: Keyring | None = None
    templates: TemplateWorker | None = None  # parses and renders user templates, bounded
    insecure: bool = False
    authority: Authority | None = None
    tls: ServerTLS | None = None
    agent_link: AgentLink = field(default_factory=lambda: AgentLink(None))
    denials: DenialLog = field(default_factory=DenialLog)
    node_secrets: dict[str, str] = field(default_factory=dict)  # --insecure: id -> hash
    ui: UiSessions | None = None  # the web UI's browser sessions (TLS on)
    acl: AclStore | None = None  # None: ACL off (every authenticated user may do anything)
    namespaces: Namespaces | None = None  # made from `state` when not given
    audit: AuditLog | None = None

    def __post_init__(self) -> None:
        if self.namespaces is None:
            self.namespaces = Namespaces(self.state)


class Server:
    def __init__(self, config: ServerConfig, *, store: Store | None = None) -> None:
        self.config = config
        self.store = store
        self.started = asyncio.Event()
        self.ctx: ServerContext | None = None
        self.dns: DnsServer | None = None

    @property
    def address(self) -> str:
        scheme = "https" if self.config.tls else "http"
        return f"{scheme}://{self.config.host}:{self.config.port}"

    async def leader_work(self, state: ClusterState) -> None:
        """Leader-only controllers: started when this server wins, cancelled when it loses.

        `state` is the shared cache whose store is fenced by this term (fencing.py), so
        whatever runs here writes only while this server leads. Add controllers here.
        """
        from podium.server.config_rollout import RolloutController
        from podium.server.controllers.deployments import DeploymentController
        from podium.server.controllers.drain import DrainController
        from podium.server.controllers.gc import GarbageCollector, GCSettings
        from podium.server.controllers.keyring import KeyringController
        from podium.server.controllers.node_liveness import NodeLivenessController
        from podium.server.controllers.periodic import PeriodicController
        from podium.server.controllers.placement import PlacementController

        assert self.ctx is not None
        cfg, hb, metrics = self.config, self.ctx.heartbeats, self.ctx.metrics
        hb.restart_grace()  # a new leader gives every node a TTL before judging it
        async with asyncio.TaskGroup() as tg:
            tg.create_task(
                PlacementController(state, cfg.clock, metrics=metrics).run(), name="placement"
            )
            tg.create_task(
                NodeLivenessController(state, hb, cfg.clock, metrics=metrics).run(),
                name="liveness",
            )
            tg.create_task(DrainController(state, cfg.clock).run(), name="drain")
            tg.create_task(
                GarbageCollector(
                    state, cfg.clock, GCSettings(events=cfg.events), metrics=metrics
                ).run(),
                name="gc",
            )
            if self.ctx.leadership is not None and self.ctx.leadership.config.elect:
                tg.create_task(failures_mirror.publish(state), name="failures-publish")
            tg.create_task(DeploymentController(state, cfg.clock).run(), name="deployments")
            tg.create_task(PeriodicController(state, cfg.clock).run(), name="periodic")
            if self.ctx.autoscaler is not None:
                tg.create_task(self.ctx.autoscaler.run(), name="autoscaler")
            tg.create_task(RolloutController(state, cfg.clock).run(), name="config-rollout")
            assert self.ctx.keyring is not None
            tg.create_task(
                KeyringController(state, self.ctx.keyring, cfg.clock).run(), name="keyring"
            )

    def _keyring(self, store: Store) -> Keyring:
        path = self.config.keyring_file
        if not path and self.config.store_url.startswith("sqlite:///"):
            db = self.config.store_url.removeprefix("sqlite://")
            path = os.path.join(os.path.dirname(os.path.normpath(db)), "keyring.key")
        if not path and not os.environ.get(ENV_KEY):
            return Keyring(
                store, None, source="", problem="no keyring root key: start the server with "
                "--keyring-file (or PODIUM_KEYRING_KEY) to use secrets",
            )  # fmt: skip
        try:
            root, source = load_root_key(path)
        except (KeyringError, OSError) as e:
            log.error("secrets are unavailable: %s", e)
            return Keyring(store, None, source=path, problem=f"secrets are unavailable: {e}")
        return Keyring(store, root, source=source)

    async def _start_keyring(self) -> None:
        assert self.ctx is not None and self.ctx.keyring is not None
        try:
            await self.ctx.keyring.start(now=self.config.clock.now())
        except KeyringError as e:
            log.error("secrets are unavailable: %s", e)
            self.ctx.keyring.problem = self.ctx.keyring.problem or str(e)
        except StoreError as e:  # tried again at the first secret written
            log.warning("keyring not checked at start: %s", e)

    async def run(self) -> None:
        from podium.server.app import create_app

        cfg = self.config
        raise_open_files_limit()  # a connection or two per agent
        sock = http.bind(cfg.host, cfg.port)
        cfg.port = sock.getsockname()[1]
        raw = self.store or open_store(cfg.store_url, etcd_security=cfg.etcd_security)
        start = getattr(raw, "start", None)
        if start is not None:
            await start()
        metrics = ServerMetrics(CollectorRegistry(auto_describe=True) if cfg.metrics else None)
        store: Store = raw
        if metrics.on:
            store = TimedStore(raw, backend_of(cfg.store_url), metrics)
        authority, server_tls, link = await self._trust(store)
        state = ClusterState(store)
        if authority is not None:
            state.add_listener(_revoke_purged(authority, state))
        grace = cfg.startup_grace
        elect = cfg.store_url.startswith("etcd://") if cfg.elect is None else cfg.elect
        policy = HeartbeatPolicy(
            min_ttl=cfg.heartbeat_ttl, max_per_second=cfg.max_heartbeats_per_second
        )

        def count() -> int:
            return len(state.nodes)

        hb = (
            HeartbeatLeases(
                store,
                cfg.clock,
                ttl=cfg.heartbeat_ttl,
                startup_grace=grace,
                policy=policy,
                nodes=count,
            )
            if elect
            else Heartbeats(cfg.clock, startup_grace=grace, policy=policy, nodes=count)
        )
        leadership = Leadership(
            store,
            state,
            LeadershipConfig(
                cfg.server_id,
                self.address,
                ttl=cfg.leader_ttl,
                elect=elect,
                insecure=cfg.tls is None,
            ),
            clock=cfg.clock,
        )
        self.ctx = ServerContext(
            state=state,
            heartbeats=hb,
            clock=cfg.clock,
            store_url=cfg.store_url,
            heartbeat_ttl=cfg.heartbeat_ttl,
            catalog=Catalog(state),
            leadership=leadership,
            metrics=metrics,
            usage=UsageGatherer(state, link),
            insecure=cfg.tls is None,
            authority=authority,
            tls=server_tls,
            agent_link=link,
            ui=UiSessions(store, cfg.clock) if cfg.tls is not None else None,
            acl=_acl_store(store, state) if cfg.acl else None,
            namespaces=Namespaces(state),
            audit=AuditLog(store, cfg.audit_path, events=cfg.acl),
        )
        assert self.ctx.catalog is not None and self.ctx.usage is not None
        self.ctx.autoscaler = Autoscaler(
            state,
            cfg.clock,
            self.ctx.usage,
            self.ctx.catalog,
            prometheus_url=cfg.prometheus_url,
            metrics=metrics,
        )
        self.ctx.keyring = self._keyring(store)
        self.ctx.templates = TemplateWorker()
        if metrics.registry is not None:
            metrics.registry.register(ClusterCollector(state, lambda: leadership, cfg.server_id))
        api = http.server(create_app(self.ctx), tls=server_tls)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(state.run(), name="state")
                await state.ready.wait()
                await self._start_keyring()
                if isinstance(hb, HeartbeatLeases):
                    tg.create_task(hb.run(), name="heartbeats")
                if elect:
                    tg.create_task(
                        failures_mirror.follow(state, lambda: leadership.is_leader),
                        name="failures-follow",
                    )
                tg.create_task(leadership.run(self.leader_work), name="leadership")
                assert self.ctx.audit is not None
                tg.create_task(self.ctx.audit.run(), name="audit")
                if authority is not None:
                    tg.create_task(authority.run(self._ready_nodes), name="certificates")
                elif server_tls is not None:
                    tg.create_task(self._follow_files(server_tls, link), name="tls-files")
                assert self.ctx.catalog is not None
                tg.create_task(self.ctx.catalog.run(), name="catalog")
                if cfg.dns is not None:
                    self.dns = DnsServer(self.ctx.catalog, cfg.dns, fallback=cfg.dns_fallback)
                    tg.create_task(self.dns.run(), name="dns")
                    await self.dns.started.wait()
                tg.create_task(api.serve(sockets=[sock]), name="http")
                while not api.started:
                    await asyncio.sleep(0.01)
                log.info("server listening on %s (store %s)", self.address, cfg.store_url)
                self.started.set()
        finally:
            await link.close()
            await self.ctx.templates.close()
            await leadership.close()
            await store.close()

    async def _trust(self, store: Store) -> tuple[Authority | None, ServerTLS | None, AgentLink]:
        """The CA (or your PKI's files), the listener's TLS, and the client for agents."""
        t = self.config.tls
        if t is None:
            log.warning(
                "INSECURE: TLS is off (--insecure): anyone who reaches %s can run anything "
                "on every node; see docs/security.md",
                self.address,
            )
            return None, None, AgentLink(None)
        authority: Authority | None = None
        if t.own is not None:
            creds = t.own
        else:
            authority = Authority(
                store,
                AuthorityConfig(
                    t.tls_dir,
                    self.config.server_id,
                    lifetime=t.lifetime,
                    hosts=[self.config.host, *t.hosts],
                    check_every=t.check_every,
                ),
            )
            await authority.start()
            creds = authority.server_creds
        server_tls = ServerTLS(creds, require_client_cert=False)
        link = AgentLink(creds)
        if authority is not None:
            authority.on_change += [server_tls.reload, link.reload]
        return authority, server_tls, link

    def _ready_nodes(self) -> list[str]:
        assert self.ctx is not None
        return [n.id for n in self.ctx.state.nodes.values() if n.status == "ready"]

    async def _follow_files(self, server_tls: ServerTLS, link: AgentLink) -> None:
        """Your PKI's files: reloaded when they change (renewed by whatever issues them)."""
        while True:
            await asyncio.sleep(5.0)
            if server_tls.reload_if_changed():
                link.reload()
                log.info("TLS files changed: reloaded %s", server_tls.creds.cert)


def _acl_store(store: Store, state: ClusterState) -> AclStore:
    acls = AclStore(store)
    state.add_key_listener(keys.ACL, acls.changed)
    return acls


def _revoke_purged(
    authority: Authority, state: ClusterState
) -> Callable[[str, object | None, object | None], None]:
    """A node record deleted from the store (purged) loses its certificate at once (one
    that merely failed to decode is not a purge)."""

    def on_change(prefix: str, old: object | None, new: object | None) -> None:
        purged = prefix == keys.NODES and new is None and isinstance(old, Node)
        if purged and keys.node(old.id) not in state.bad_values:  # type: ignore[union-attr]
            authority.node_removed(old.id)  # type: ignore[union-attr]

    return on_change
