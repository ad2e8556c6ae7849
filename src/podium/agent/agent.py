"""The agent's main loop: register, heartbeat, follow its allocs, run them, report.

Agent.run()
  TaskGroup: heartbeat | watch (blocking query -> sync) | reporter (batched updates)
             | log relay (task pipes -> rotated files) | agent HTTP (logs, exec, usage,
             metrics) | one AllocRunner per alloc
             | ProxyManager (upstream listeners, ingress, service watches)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

import msgspec

from podium.agent import fingerprint
from podium.agent.alloc_runner import AllocHooks, AllocRunner
from podium.agent.disconnect import Contact, DisconnectWatch
from podium.agent.local_state import LocalState
from podium.agent.log_index import LogIndexer
from podium.agent.logs import LogRelay
from podium.agent.mesh import MeshGateway
from podium.agent.metrics import AgentMetrics
from podium.agent.proxy_manager import ProxyManager
from podium.agent.source import source_address
from podium.agent.templates import ServerData, remove_alloc_secrets
from podium.agent.trust import AgentTrust
from podium.agent.usage import UsageSampler
from podium.api.client import AsyncClient
from podium.drivers.base import Driver, TaskHandle
from podium.errors import NotFound, PodiumError
from podium.model.types import (
    Allocation,
    AllocUpdate,
    DriverInfo,
    Job,
    Node,
    NodeResources,
    ReportRejected,
)
from podium.runtime.backoff import Backoff
from podium.runtime.clock import SystemClock
from podium.runtime.ids import short_alloc
from podium.runtime.limits import raise_open_files_limit
from podium.runtime.logfiles import LogLimits
from podium.templates.worker import TemplateWorker
from podium.tls.files import Credentials
from podium.tls.identity import NODE_ID_HEADER, NODE_SECRET_HEADER

log = logging.getLogger(__name__)

FINGERPRINT_EVERY = 10.0  # seconds between driver health checks (an engine may come or go)
_LOOPBACK = ("127.0.0.1", "localhost", "::1", "0.0.0.0", "::")


@runtime_checkable
class ListingDriver(Protocol):
    """A driver that can list the tasks it runs for a node by itself (containers, by label),
    so tasks survive the loss of the agent's state file without being duplicated or leaked."""

    async def list_handles(self, node_id: str) -> list[TaskHandle]: ...


@dataclass
class AgentConfig:
    servers: list[str]
    data_dir: str
    name: str = field(default_factory=socket.gethostname)
    address: str = "127.0.0.1"  # where this node's tasks are reached (ports bind here)
    http_port: int = 0  # the agent's own API (logs, exec); 0 picks a free port
    datacenter: str = "dc1"
    labels: dict[str, str] = field(default_factory=dict)
    cpu: int = 0  # 0 = fingerprint
    memory: int = 0
    reserve_cpu: int | None = None  # kept for the system and the agent; None = a default
    reserve_memory: int | None = None  # (see fingerprint.default_reserve)
    port_min: int = 20000
    port_max: int = 32000
    watch_wait: float = 30.0
    report_interval: float = 0.05
    ingress_addr: str = ""  # HOST:PORT of the HTTP ingress; "" = none
    ingress_fallback: bool = False  # a taken ingress port: take a free one instead of failing
    log_limits: LogLimits = field(default_factory=LogLimits)  # per task stream
    # Trust (agent/trust.py): a join token for the first start, or your PKI's files, or
    # --insecure (plain HTTP; the node secret the server issues proves the node instead).
    join_token: str = ""
    tls_own: Credentials | None = None
    insecure: bool = False
    mesh_port: int = 0  # the mesh gateway (TLS: service traffic from other nodes); 0 = any


class Agent:
    def __init__(self, config: AgentConfig, drivers: dict[str, Driver]) -> None:
        self.config = config
        self.drivers = drivers
        os.makedirs(config.data_dir, exist_ok=True)
        self.local = LocalState(os.path.join(config.data_dir, "agent-state.json"))
        self.trust = AgentTrust(
            config.data_dir,
            join_token=config.join_token,
            own=config.tls_own,
            insecure=config.insecure,
        )
        self.trust.hosts = [config.address]
        self.server_epoch = 0  # the CA epoch the servers announce (heartbeats)
        self.mesh: MeshGateway | None = None
        self.client = AsyncClient(
            config.servers, local_address=source_address(config.address, config.servers)
        )
        self.runners: dict[str, AllocRunner] = {}
        self.node: Node | None = None
        self.heartbeat_ttl = 3.0
        self.heartbeat_in = 1.0  # seconds until the next heartbeat, as the server said
        self.registered = asyncio.Event()
        self.synced = asyncio.Event()  # first sync with the server done
        self._pending: dict[str, AllocUpdate] = {}  # reports to send, the newest per alloc
        self._ending: set[str] = set()  # stopped allocs without a runner, being reported done
        self.reports_sent = 0  # requests the server answered
        self.reports_dropped = 0  # reports the server refused for good (alloc gone)
        self.syncs = 0  # times the runners were matched to the server's allocs
        self._report_wake = asyncio.Event()
        self._jobs: dict[tuple[str, str, int], Job] = {}
        self._tg: asyncio.TaskGroup | None = None
        self.contact = Contact(SystemClock())  # when a server last answered
        self.proxies = ProxyManager(
            self.client,
            ingress_addr=config.ingress_addr,
            ingress_fallback=config.ingress_fallback,
            watch_wait=config.watch_wait,
        )
        self.logs = LogRelay(config.log_limits)
        self.log_index = LogIndexer(self.logs)  # when each log byte came: `logs --since`
        self.usage = UsageSampler(self.runners)
        self.metrics = AgentMetrics(self)
        self.templates = TemplateWorker()  # renders this node's templates, bounded

    # -------------------------------------------------------------- identity

    def _node_id(self) -> str:
        """This node's id: the one its certificate names (TLS), else the one kept on disk."""
        path = os.path.join(self.config.data_dir, "node-id")
        nid = ""
        if self.trust.enabled and self.trust.creds.exist():
            nid = self.trust.node_id()
        else:
            try:
                with open(path, encoding="utf-8") as f:
                    nid = f.read().strip()
            except FileNotFoundError:
                pass
        if not nid:
            nid = str(uuid.uuid4())
        with open(path, "w", encoding="utf-8") as f:
            f.write(nid)
        return nid

    def own_ports(self) -> dict[int, str]:
        """The ports this node's own podium services listen on, and what each is: tasks
        cannot have them, and checks never probe them."""
        out: dict[int, str] = {}
        for url in self.config.servers:
            parsed = urlsplit(url if "://" in url else f"http://{url}")
            if parsed.port and parsed.hostname in (self.config.address, *_LOOPBACK):
                out[parsed.port] = "the podium server's API"
        ingress = self.config.ingress_addr.rpartition(":")[2]
        if ingress.isdigit() and int(ingress):
            out[int(ingress)] = "the node's ingress"
        for _, port in self.proxies.proxy.addresses():
            out[port] = "a listener of the node's proxy"
        if self.node is not None and self.node.http_addr:
            out[int(self.node.http_addr.rpartition(":")[2])] = "the agent's API"
        if self.node is not None and self.node.mesh_addr:
            out[int(self.node.mesh_addr.rpartition(":")[2])] = "the node's mesh gateway"
        return out

    async def _trust_start(self) -> None:
        """Credentials first (joining if need be): every request after this is mTLS."""
        await self.trust.ensure(self.config.servers, proposed_id=self._node_id())
        if self.trust.client_ssl is not None:
            self.client.set_tls(self.trust.client_ssl)
            self.trust.on_rebuild.append(self._new_tls)
        elif self.trust.insecure:
            self._node_headers()

    def _new_tls(self) -> None:
        """The trust bundle shrank (a CA rotation ended): fresh contexts from now on."""
        assert self.trust.client_ssl is not None
        self.client.set_tls(self.trust.client_ssl)
        self.proxies.mesh_ssl = self.trust.client_ssl

    def _serves_port(self, port: int) -> bool:
        """Whether a running alloc of this node holds `port` (what the mesh may reach)."""
        return any(port in r.alloc.ports.values() for r in self.runners.values())

    def _node_headers(self) -> None:
        secret = self.trust.node_secret()
        if secret:
            self.client.headers = {
                NODE_ID_HEADER: self._node_id(),
                NODE_SECRET_HEADER: secret,
            }

    async def _fingerprint(self, http_addr: str) -> Node:
        c = self.config
        res = fingerprint.resources(
            cpu=c.cpu,
            memory=c.memory,
            reserve_cpu=c.reserve_cpu,
            reserve_memory=c.reserve_memory,
        )
        res.port_min, res.port_max = c.port_min, c.port_max
        # The node's own services' ports count even before they listen (the ingress and the
        # proxy start after this).
        own = {**self.own_ports(), int(http_addr.rpartition(":")[2]): "the agent's API"}
        res.reserved_ports = self._taken_ports(fingerprint.bound_ports(c.address) | own.keys())
        infos, attrs = await fingerprint.drivers(self.drivers)
        return Node(
            id=self._node_id(),
            name=c.name,
            address=c.address,
            http_addr=http_addr,
            datacenter=c.datacenter,
            labels=dict(c.labels),
            attributes={**self._attributes(res), **attrs},
            drivers=infos,
            resources=res,
        )

    @staticmethod
    def _attributes(res: NodeResources) -> dict[str, str]:
        return {
            **fingerprint.attributes(),
            **fingerprint.cpu_attributes(res.cpu + res.reserved_cpu),
        }

    def _taken_ports(self, bound: set[int]) -> list[int]:
        """Of the ports bound on the host, those not held by our allocs: placement avoids
        them (a clash would otherwise be found only as a task's failed bind)."""
        ours = {p for r in self.runners.values() for p in r.alloc.ports.values()}
        return sorted(bound - ours)

    # ------------------------------------------------------------------ run

    async def run(self) -> None:
        from podium.agent.http import serve_agent_http

        self.local.load()
        raise_open_files_limit()
        await self._trust_start()
        http_ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        mesh_ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(
                    serve_agent_http(
                        self,
                        self.config.address,
                        self.config.http_port,
                        http_ready,
                        tls=self.trust.listener,
                    ),
                    name="agent-http",
                )
                mesh_addr = ""
                if self.trust.listener is not None:
                    self.mesh = MeshGateway(
                        self.config.address,
                        self.config.mesh_port,
                        self.trust.listener,
                        self._serves_port,
                    )
                    tg.create_task(self.mesh.run(mesh_ready), name="mesh")
                    mesh_addr = await mesh_ready
                self.node = await self._fingerprint(await http_ready)
                self.node.mesh_addr = mesh_addr
                self.proxies.node_id = self.node.id
                self.proxies.mesh_ssl = self.trust.client_ssl
                tg.create_task(self.logs.run(), name="log-relay")
                tg.create_task(self.log_index.run(), name="log-index")
                tg.create_task(self.proxies.run(), name="proxy")
                await self._register()
                tg.create_task(self._heartbeat_loop(), name="heartbeat")
                tg.create_task(self._reporter_loop(), name="reporter")
                tg.create_task(self._watch_loop(), name="watch")
                tg.create_task(self._fingerprint_loop(), name="fingerprint")
                tg.create_task(
                    self.trust.run(self.client.request, lambda: self.server_epoch),
                    name="certificates",
                )
                tg.create_task(
                    DisconnectWatch(self.contact, self.runners, self._spawn).run(),
                    name="disconnect",
                )
        finally:
            try:
                await self.local.flush()
            finally:
                await self.templates.close()
                await self.client.close()

    async def _register(self) -> None:
        assert self.node is not None
        backoff = Backoff(base=0.2, cap=5.0)
        while True:
            try:
                resp = await self.client.register_node(self.node)
                self.contact.heard()
                self._heard_ttl(resp)
                self.server_epoch = int(resp.get("tls_epoch", 0))
                if resp.get("node_secret"):  # --insecure: issued once, kept 0600
                    self.trust.save_node_secret(resp["node_secret"])
                    self._node_headers()
                log.info(
                    "node %s (%s) registered with %s",
                    self.node.name,
                    self.node.id[:8],
                    self.client.address,
                )
                self.registered.set()
                return
            except PodiumError as e:
                delay = backoff.next()
                log.warning("register failed (%s); retrying in %.1fs", e, delay)
                await asyncio.sleep(delay)

    def _heard_ttl(self, resp: dict[str, object]) -> None:
        """The TTL the server granted and when it wants the next beat (it spreads the
        cluster's heartbeats: a third of the TTL, less a random part)."""
        ttl = resp.get("heartbeat_ttl", self.heartbeat_ttl)
        self.heartbeat_ttl = float(ttl) if isinstance(ttl, int | float) else self.heartbeat_ttl
        after = resp.get("heartbeat_in")
        ok = isinstance(after, int | float) and 0 < after <= self.heartbeat_ttl
        self.heartbeat_in = float(after) if ok else self.heartbeat_ttl / 3  # type: ignore[arg-type]

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_in)
            self.heartbeat_in = self.heartbeat_ttl / 3  # unless the answer says otherwise
            try:
                await self._beat()
            except PodiumError as e:
                log.warning("heartbeat failed: %s", e)

    async def _beat(self) -> None:
        assert self.node is not None
        try:
            # A heartbeat stuck longer than the TTL is worth nothing: give up and send a
            # fresh one rather than wait out the client's default timeout.
            resp = await self.client.heartbeat(
                self.node.id, timeout=max(1.0, self.heartbeat_ttl / 2)
            )
        except NotFound:
            await self._register()
            return
        self.contact.heard()
        self._heard_ttl(resp)
        self.server_epoch = int(resp.get("tls_epoch", 0))

    async def _fingerprint_loop(self) -> None:
        """Re-register when a driver's health changed: an engine that went away takes no new
        placements; what already runs is left alone. Apart from the heartbeat, so a hung
        engine never delays one."""
        assert self.node is not None
        while True:
            await asyncio.sleep(FINGERPRINT_EVERY)
            infos, attrs = await fingerprint.drivers(self.drivers)
            if infos != self.node.drivers:
                await self._refingerprint(infos, attrs)
            bound = await asyncio.to_thread(fingerprint.bound_ports, self.config.address)
            ports = self._taken_ports(bound | self.own_ports().keys())
            if ports != self.node.resources.reserved_ports:
                log.info("ports taken on the host changed: %d reserved now", len(ports))
                self.node.resources.reserved_ports = ports
                await self._register()

    async def _refingerprint(self, infos: dict[str, DriverInfo], attrs: dict[str, str]) -> None:
        assert self.node is not None
        log.warning(
            "driver health changed: %s",
            ", ".join(f"{n}={'healthy' if i.healthy else 'unhealthy'}" for n, i in infos.items()),
        )
        self.node.drivers = infos
        self.node.attributes = {**self._attributes(self.node.resources), **attrs}
        await self._register()

    async def _watch_loop(self) -> None:
        assert self.node is not None
        # The first look answers at once (the sync below sweeps orphans); later ones block.
        # Not keyed on the index: a node that never had an alloc stays at index 0, and
        # asking with wait=0 again and again would spin a core.
        index, wait = 0, 0.0
        backoff = Backoff(base=0.2, cap=5.0)
        while True:
            try:
                new_index, allocs, node_status = await self.client.node_allocs(
                    self.node.id, index=index, wait=wait
                )
                self.contact.heard()
                if node_status == "down":
                    # The server has not heard from us since it marked the node down, nor
                    # decided which of our lost copies run on: tell it we are here, then
                    # look again (the heartbeat makes the node ready with that decision).
                    await self._beat()
                    wait = 0.0
                    await asyncio.sleep(backoff.next())
                    continue
                backoff.reset()
            except PodiumError as e:
                delay = backoff.next()
                log.warning("watching allocs failed (%s); retrying in %.1fs", e, delay)
                await asyncio.sleep(delay)
                continue
            await self.sync(allocs)
            index, wait = new_index, self.config.watch_wait

    # ----------------------------------------------------------------- sync

    async def sync(self, allocs: list[Allocation]) -> None:
        """Make this node's runners match what the server wants."""
        wanted = {a.id: a for a in allocs}
        for a in allocs:
            runner = self.runners.get(a.id)
            if runner is None:
                if a.desired_status == "run" and a.client_status in ("pending", "running"):
                    await self._start_runner(a)
                elif a.desired_status == "stop" and not a.terminal and a.id not in self._ending:
                    # Stopped before it ever ran here (or while this agent was away): say
                    # so, or the stop never finishes.
                    self._ending.add(a.id)
                    self._spawn(self._end_unstarted(a))
                continue
            if a.desired_status == "stop":
                self._spawn(runner.stop(reason=a.desired_reason or "stop requested", drain=True))
                continue
            if a.restart_seq > runner.restart_seq:
                runner.restart_seq = a.restart_seq
                self._spawn(runner.restart())
            if runner.templates is not None and a.job_version > runner.templates_version:
                # Updated in place (a config read by a restart/signal/noop template moved).
                runner.templates_version = a.job_version
                self._spawn(self._update_templates(runner, a))
        self._ending.intersection_update(i for i, a in wanted.items() if not a.terminal)
        for alloc_id, runner in list(self.runners.items()):
            if alloc_id not in wanted:
                # The server forgot it (garbage-collected or purged): it must not keep running.
                self._spawn(runner.stop(reason="no longer known to the server"))
                if runner.finished.is_set():
                    self.runners.pop(alloc_id, None)
        if not self.synced.is_set():
            # Tasks in the local state that belong to no live alloc: stop them, once.
            for alloc_id, handles in list(self.local.allocs.items()):
                if alloc_id not in self.runners and alloc_id not in self._ending:
                    self._spawn(self._stop_orphan(alloc_id, handles))
            self._spawn(self._sweep_listed())
            self.synced.set()
        self.syncs += 1

    async def _start_runner(self, a: Allocation) -> None:
        assert self.node is not None and self._tg is not None
        try:
            job = await self._job(a)
            runner = AllocRunner(
                a,
                job,
                self.node,
                self.drivers,
                self.config.data_dir,
                AllocHooks(
                    report=self._report,
                    save=self.local.set_alloc,
                    metrics=self.metrics,
                    own_ports=self.own_ports,
                    data=ServerData(self.client, self.templates, self.node.id),
                    watch_service=self._watch_service,
                ),
                recovered=self.local.allocs.get(a.id),
            )
            upstreams = [u for t in runner.group.tasks for u in t.upstreams]
            await self.proxies.ensure(a.id, a.namespace, upstreams)
            for t in runner.tasks.values():  # before any task starts: its pipes must exist
                self.logs.add(t.cfg.stdout_path)
                self.logs.add(t.cfg.stderr_path)
        except (PodiumError, ValueError, OSError) as e:
            log.error("cannot run alloc %s: %s", short_alloc(a.id), e)
            self._report(
                AllocUpdate(
                    id=a.id,
                    client_status="failed",
                    client_description=f"agent could not set up the alloc: {e}",
                )
            )
            return
        self.runners[a.id] = runner
        self._tg.create_task(self._guard(runner), name=f"alloc:{short_alloc(a.id)}")

    async def _guard(self, runner: AllocRunner) -> None:
        try:
            await runner.run()
        except Exception as e:
            log.exception("alloc runner %s crashed", short_alloc(runner.alloc.id))
            self._report(
                AllocUpdate(
                    id=runner.alloc.id,
                    client_status="failed",
                    client_description=f"agent error: {e}",
                )
            )
        finally:
            for t in runner.tasks.values():
                self.logs.remove(t.cfg.stdout_path)
                self.logs.remove(t.cfg.stderr_path)
            await self.proxies.release(runner.alloc.id)

    async def _update_templates(self, runner: AllocRunner, a: Allocation) -> None:
        try:
            job = await self._job(a)
        except PodiumError as e:
            log.warning("alloc %s: job version %d not read: %s", a.id[:8], a.job_version, e)
            runner.templates_version = 0  # the next sync tries again
            return
        if runner.templates is not None:
            runner.templates.submit(job)

    async def _stop_orphan(self, alloc_id: str, handles: dict[str, TaskHandle]) -> None:
        for handle in handles.values():
            driver = self.drivers.get(handle.driver)
            if driver is None:
                continue
            with contextlib.suppress(PodiumError, OSError):
                if await driver.recover(handle):
                    log.warning(
                        "stopping orphaned task %s of alloc %s", handle.task, short_alloc(alloc_id)
                    )
                    await driver.stop(handle, timeout=5.0)
                await driver.destroy(handle)
        await remove_alloc_secrets(os.path.join(self.config.data_dir, "allocs", alloc_id))
        self.local.set_alloc(alloc_id, {})

    async def _end_unstarted(self, a: Allocation) -> None:
        """An alloc the server stopped that runs nothing here: stop what a previous run of
        this agent may have left of it, then report it complete."""
        handles = self.local.allocs.get(a.id)
        if handles:
            await self._stop_orphan(a.id, handles)
        now = time.time()
        states = {
            name: msgspec.structs.replace(t, state="dead", finished_at=t.finished_at or now)
            for name, t in a.task_states.items()
        }
        why = a.desired_reason or "stop requested"
        started = a.client_status == "running" or bool(handles)
        self._report(
            AllocUpdate(
                id=a.id,
                client_status="complete",
                client_description=f"stopped: {why}"
                if started
                else f"stopped before it started: {why}",
                task_states=states,
            )
        )

    async def _sweep_listed(self) -> None:
        """Stop the tasks a driver lists for this node that belong to no live alloc (e.g.
        containers whose handles were lost with the state file)."""
        assert self.node is not None
        for name, driver in self.drivers.items():
            if not isinstance(driver, ListingDriver):
                continue
            try:
                handles = await driver.list_handles(self.node.id)
            except (PodiumError, OSError) as e:
                log.warning("listing %s tasks failed: %s", name, e)
                continue
            orphans: dict[str, dict[str, TaskHandle]] = {}
            for h in handles:
                if h.alloc_id not in self.runners and h.alloc_id not in self.local.allocs:
                    orphans.setdefault(h.alloc_id, {})[h.task or h.state.get("id", "")] = h
            for alloc_id, by_task in orphans.items():
                await self._stop_orphan(alloc_id, by_task)

    async def _job(self, a: Allocation) -> Job:
        key = (a.namespace, a.job, a.job_version)
        job = self._jobs.get(key)
        if job is None:
            data = await self.client.job_version(a.namespace, a.job, a.job_version)
            job = msgspec.convert(data, Job)
            self._jobs[key] = job
        return job

    async def _watch_service(self, namespace: str, service: str, index: int) -> int:
        wait = 0.0 if index < 0 else self.config.watch_wait
        data = await self.client.service(namespace, service, index=max(index, 0), wait=wait)
        return int(data.get("index", 0))

    def _spawn(self, coro: object) -> None:
        assert self._tg is not None
        self._tg.create_task(coro)  # type: ignore[arg-type]

    # ------------------------------------------------------------- reporting

    def _report(self, update: AllocUpdate) -> None:
        self._queue(update)
        self._report_wake.set()

    def _queue(self, update: AllocUpdate, *, older: bool = False) -> None:
        """Keep `update` to send: one report per alloc, the newest; the events of an older
        one (`older`: a report sent before and not applied) go first."""
        other = self._pending.get(update.id)
        if other is None:
            self._pending[update.id] = update
        elif older:
            other.events = update.events + other.events
        else:
            update.events = other.events + update.events
            self._pending[update.id] = update

    async def _reporter_loop(self) -> None:
        """Send what was reported, batched; keep what the server did not apply (a lost
        race, a server that has not seen the alloc yet, no server at all) and send it
        again with backoff, until it is applied or the server says the alloc is gone."""
        assert self.node is not None
        backoff = Backoff(base=0.2, cap=5.0)
        while True:
            await self._report_wake.wait()
            await asyncio.sleep(self.config.report_interval)  # gather a burst into one request
            self._report_wake.clear()
            batch, self._pending = self._pending, {}
            if not batch:
                continue
            try:
                answer = await self.client.alloc_updates(self.node.id, list(batch.values()))
                again = self._not_applied(batch, answer)
                self.reports_sent += 1
            except PodiumError as e:
                again, why = list(batch.values()), str(e)
            else:
                if not again:
                    backoff.reset()
                    continue
                why = f"{len(again)} not applied yet"
            for update in again:
                self._queue(update, older=True)
            delay = backoff.next()
            log.warning("reporting alloc status: %s; sending again in %.1fs", why, delay)
            await asyncio.sleep(delay)
            self._report_wake.set()

    def _not_applied(self, batch: dict[str, AllocUpdate], answer: object) -> list[AllocUpdate]:
        """The reports of `batch` to send again, by the server's answer; those it refused
        for good (the alloc is gone, or not this node's) are dropped, with a log line."""
        rejected = answer.get("rejected", []) if isinstance(answer, dict) else []
        again = []
        for r in msgspec.convert(rejected, list[ReportRejected]):
            update = batch.get(r.id)
            if update is None:
                continue
            if r.retry:
                again.append(update)
            else:
                self.reports_dropped += 1
                log.info("report for alloc %s dropped: %s", r.id[:8], r.reason)
        return again
