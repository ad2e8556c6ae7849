"""The autoscaler: each autoscaled group's count, from its figures, on the leader.

    every look (at most MAX_GROUPS_PER_LOOK groups due, oldest first; each group every
    scaling.interval):
      figures   usage.refresh() -> cpu, memory per copy; TrafficMeter -> rps, concurrency,
                latency_p95; Prometheus -> prometheus (scaling_figures.py)
      forecast  predictive policies: demand into the group's Series, forecast() ahead
      decide    autoscale.decide(): HPA's maths and safety rules, held by a deployment
                rolling out, copies that could not be placed, a quota (quotas.py)
      change    a new job version with the count, the record (/scaling/NS/JOB) and a
                scaling.up/down/idle event with the numbers, in one guarded transaction
    cold start  a group woken from 0 by a request (server/scaling.wake): when its first
                copy is healthy, a scaling.cold_start event and the server's histogram

Its memory (recommendation windows, rates, idle clocks) is per term: a new leader starts
each group's window with the count it finds (so no scale-down for a window after a
leader change) and its idle clock at the term's start. Demand histories are stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import msgspec

from podium.autoscale import Reading, Series, Situation, Window, decide, forecast, propose
from podium.autoscale.forecast import step_for
from podium.autoscale.hpa import Decision, Proposal, show_value
from podium.errors import Conflict, PodiumError
from podium.model import spec as jobspec
from podium.model.types import Allocation, Group, Job, Predictive, ScalingPolicy
from podium.runtime.clock import Clock
from podium.scheduler.reconcile import deployment_id
from podium.server import quotas
from podium.server import scaling as records
from podium.server.catalog import Catalog
from podium.server.events import event_put
from podium.server.metrics import ServerMetrics
from podium.server.scaling import (
    DecisionRecord,
    Figure,
    ForecastView,
    GroupStatus,
    ScalingRecord,
    ScalingStatus,
)
from podium.server.scaling_figures import (
    CpuRates,
    Prometheus,
    Traffic,
    TrafficMeter,
    copy_cores,
    copy_utilization,
)
from podium.server.state import ClusterState, encode
from podium.server.usage import UsageGatherer
from podium.store import keys
from podium.store.base import Compare, Put

log = logging.getLogger(__name__)

MAX_GROUPS_PER_LOOK = 100  # bounded work per look; the rest wait for the next one
HISTORY_EVERY = 30.0  # seconds between two writes of a group's demand history
WARMUP = 5.0  # a copy's CPU and memory count this long after its start (or 2 looks)
Quota = Callable[[ClusterState, Job, Group], tuple[int | None, str]]
GroupKey = tuple[str, str, str]  # (namespace, job, group)


@dataclass
class AutoscalerSettings:
    max_groups: int = MAX_GROUPS_PER_LOOK
    max_sleep: float = 1.0  # look at least this often for groups that came due
    history_every: float = HISTORY_EVERY


@dataclass
class _Group:
    """What the leader remembers of one group during its term."""

    window: Window
    last_active: float  # the last look that saw a request (or a held one)
    next_look: float = 0.0
    last_look: float = 0.0
    series: Series | None = None
    series_metric: str = ""
    history_saved: float = 0.0
    status: GroupStatus | None = None


@dataclass
class _Waking:
    """A group that went from 0 to 1: waiting for its first healthy copy."""

    healthy_at: float = 0.0
    alloc: str = ""


@dataclass
class _Look:
    """What one look shares between groups: the figures gathered once."""

    now: float
    prometheus: dict[str, tuple[float | None, str]] = field(default_factory=dict)


class Autoscaler:
    def __init__(
        self,
        state: ClusterState,
        clock: Clock,
        usage: UsageGatherer,
        catalog: Catalog,
        *,
        prometheus_url: str = "",
        metrics: ServerMetrics | None = None,
        settings: AutoscalerSettings | None = None,
        quota: Quota = quotas.scaling_limit,
    ) -> None:
        self.state = state
        self.clock = clock
        self.usage = usage
        self.catalog = catalog
        self.prometheus = Prometheus(prometheus_url) if prometheus_url else None
        self.metrics = metrics or ServerMetrics(None)
        self.settings = settings or AutoscalerSettings()
        self.quota = quota
        self.running = False
        self.meter = TrafficMeter()
        self.cpu = CpuRates()
        self._groups: dict[GroupKey, _Group] = {}
        self._waking: dict[GroupKey, _Waking] = {}
        self._count_only: dict[str, bool] = {}  # deployment id -> its version changed counts only
        self._wake = asyncio.Event()
        state.add_listener(self._on_change)

    # ------------------------------------------------------------------ run

    async def run(self) -> None:
        """Leader-only: look at every autoscaled group when it is due, for the whole term."""
        await self.state.ready.wait()
        self._groups, self._waking = {}, {}
        self.meter = TrafficMeter()
        self.cpu = CpuRates()
        self.running = True
        try:
            await self._load_histories()
            async with httpx.AsyncClient() as client:
                while True:
                    self._wake.clear()
                    try:
                        wake_at = await self.look(client)
                    except (PodiumError, OSError) as e:
                        log.warning("autoscaler look failed (%s); trying again", e)
                        wake_at = self.clock.now() + 1.0
                    delay = min(self.settings.max_sleep, max(0.0, wake_at - self.clock.now()))
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._wake.wait()
        finally:
            self.running = False

    def _on_change(self, prefix: str, old: object | None, new: object | None) -> None:
        """Mark groups that woke from 0, and the moment their first copy is healthy."""
        if not self.running:
            return
        if prefix == keys.JOBS and isinstance(new, Job) and isinstance(old, Job):
            for g in new.groups:
                before = old.group(g.name)
                if (
                    g.scaling is not None
                    and g.count > 0
                    and before is not None
                    and not before.count
                ):
                    self._waking[(new.namespace, new.name, g.name)] = _Waking()
                    self._wake.set()
        elif prefix == keys.ALLOCS and isinstance(new, Allocation) and self._waking:
            waking = self._waking.get((new.namespace, new.job, new.group))
            if waking is not None and not waking.healthy_at and self._serves(new):
                waking.healthy_at, waking.alloc = self.clock.now(), new.id
                self._wake.set()

    def _serves(self, a: Allocation) -> bool:
        job = self.state.jobs.get(f"{a.namespace}/{a.job}")
        group = job.group(a.group) if job is not None else None
        if group is None:
            return False
        return any(
            e.alloc_id == a.id
            for svc in group.services
            for e in self.catalog.endpoints(a.namespace, svc.name)
        )

    # ----------------------------------------------------------------- look

    async def look(self, client: httpx.AsyncClient) -> float:
        """Decide for every group that is due; return when the next one is."""
        now = self.clock.now()
        groups = [
            (job, g)
            for job in self.state.jobs.values()
            if job.type == "service" and not job.stop
            for g in job.groups
            if g.scaling is not None
        ]
        known = {(job.namespace, job.name, g.name) for job, g in groups}
        for gone in [k for k in self._groups if k not in known]:
            del self._groups[gone]
        for job, g in groups:
            self._group_state(job, g, now)
        due = sorted(
            (x for x in groups if self._groups[self._key(*x)].next_look <= now),
            key=lambda x: self._groups[self._key(*x)].next_look,
        )[: self.settings.max_groups]
        if due:
            await self.usage.refresh(max_age=0.25)
            now = self.clock.now()
            self.meter.observe(self.usage.nodes.values(), now)
            self.cpu.observe(self.usage.allocs())
            look = _Look(now=now)
            await self._query_prometheus(client, due, look)
            for job, g in due:
                current = self.state.jobs.get(job.key)
                fresh = current.group(g.name) if current is not None else None
                if current is None or current.stop or fresh is None or fresh.scaling is None:
                    continue
                await self._look_at(current, fresh, look)
                await asyncio.sleep(0)  # let the loop breathe between groups
        await self._cold_starts()
        pending = [s.next_look for s in self._groups.values()]
        return min(pending, default=now + self.settings.max_sleep)

    @staticmethod
    def _key(job: Job, g: Group) -> GroupKey:
        return (job.namespace, job.name, g.name)

    def _group_state(self, job: Job, g: Group, now: float) -> _Group:
        key = self._key(job, g)
        st = self._groups.get(key)
        if st is None:
            # A new term (or group): the window starts with the count as it is, so no
            # scale-down comes for a window after a leader change.
            st = self._groups[key] = _Group(window=Window(), last_active=now, next_look=now)
            st.window.add(now, g.count)
        return st

    async def _query_prometheus(
        self, client: httpx.AsyncClient, due: list[tuple[Job, Group]], look: _Look
    ) -> None:
        queries = {
            p.prometheus
            for _, g in due
            if g.scaling is not None
            for p in g.scaling.policies
            if p.metric == "prometheus" and p.prometheus
        }
        if not queries:
            return
        if self.prometheus is None:
            why = "no Prometheus configured (podium server --prometheus-url)"
            look.prometheus = {q: (None, why) for q in queries}
            return
        prom = self.prometheus
        answers = await asyncio.gather(*(prom.value(client, q) for q in sorted(queries)))
        look.prometheus = dict(zip(sorted(queries), answers, strict=True))

    async def _look_at(self, job: Job, g: Group, look: _Look) -> None:
        sc = g.scaling
        assert sc is not None
        now = look.now
        st = self._groups[self._key(job, g)]
        span = now - st.last_look if st.last_look else sc.interval
        st.last_look = now
        st.next_look = now + sc.interval
        copies = [
            a
            for a in self.state.allocs_of_job(job.namespace, job.name)
            if a.group == g.name and a.live
        ]
        traffic = self.meter.group(job, g)
        if traffic is not None and (traffic.requests > 0 or traffic.held > 0):
            st.last_active = now
        if g.count == 0:
            st.last_active = now  # asleep: the idle clock starts when it wakes
        figures: list[Figure] = []
        proposals: list[Proposal] = []
        predictive: ScalingPolicy | None = None
        for policy in sc.policies:
            if policy.predictive is not None:
                predictive = policy
                continue
            reading = self._reading(policy, copies, traffic, look, max(WARMUP, 2 * sc.interval))
            p = propose(reading, g.count, sc.tolerance)
            proposals.append(p)
            figures.append(
                Figure(
                    metric=policy.metric,
                    value=p.value,
                    target=policy.target,
                    count=p.count,
                    text=p.text,
                )
            )
        forecast_view: ForecastView | None = None
        forecast_proposal: Proposal | None = None
        if predictive is not None and predictive.predictive is not None:
            forecast_view, forecast_proposal = await self._forecast(
                job, g, st, predictive, copies, traffic, now, span, sc.tolerance
            )
        unplaced = sum(
            f.unplaced for f in self.state.placement_failures.get(job.key, []) if f.group == g.name
        )
        limit, why = self.quota(self.state, job, g)
        situation = Situation(
            now=now,
            current=g.count,
            proposals=tuple(proposals),
            forecast=forecast_proposal,
            idle_for=now - st.last_active if g.services else None,
            last_change=await self._last_change(job, g),
            rollout=await self._rollout(job),
            unplaced=unplaced,
            quota=limit,
            quota_why=why,
        )
        d = decide(sc, situation, st.window)
        st.status = GroupStatus(
            group=g.name,
            count=g.count,
            min=sc.min,
            max=sc.max,
            live=True,
            looked_at=now,
            next_look=st.next_look,
            figures=figures,
            forecast=forecast_view,
            wanted=d.wanted,
            held=d.held,
            next_change=d.next_change,
            idle_for=situation.idle_for,
        )
        if d.count != g.count:
            await self._change(job, g, d, now)

    def _reading(
        self,
        policy: ScalingPolicy,
        copies: list[Allocation],
        traffic: Traffic | None,
        look: _Look,
        warmup: float,
    ) -> Reading:
        metric, target = policy.metric, policy.target
        if metric in ("cpu", "memory"):
            values = copy_utilization(
                metric,
                copies,
                self.usage,
                self.state.nodes,
                now=look.now,
                warmup=warmup,
                cpu=self.cpu,
            )
            return Reading(metric, target, copies=values)
        if metric == "prometheus":
            value, why = look.prometheus.get(policy.prometheus, (None, "not asked"))
            return Reading(metric, target, value=value, missing=why)
        if traffic is None:
            why = "no proxy has counted its requests twice yet"
            if self.meter.known():
                return Reading(
                    metric,
                    target,
                    value=0.0 if metric != "latency_p95" else None,
                    missing="no request through any proxy",
                )
            return Reading(metric, target, missing=why)
        if metric == "rps":
            return Reading(metric, target, value=traffic.rps)
        if metric == "concurrency":
            return Reading(metric, target, value=traffic.concurrency)
        p95 = traffic.p95()
        return Reading(metric, target, value=p95, missing="no request in the span")

    # ------------------------------------------------------------- forecast

    async def _forecast(
        self,
        job: Job,
        g: Group,
        st: _Group,
        policy: ScalingPolicy,
        copies: list[Allocation],
        traffic: Traffic | None,
        now: float,
        span: float,
        tolerance: float,
    ) -> tuple[ForecastView, Proposal]:
        spec = policy.predictive
        assert spec is not None
        step = step_for(spec.season, spec.lead)
        if st.series is None or st.series_metric != spec.metric or st.series.step != step:
            st.series, st.series_metric = Series(step=step), spec.metric
        keep = 2 * round(spec.season / step) + math.ceil(spec.lead / step) + 8
        demand, per_copy = self._demand(spec, policy, copies, traffic)
        if demand is not None:
            st.series.add(now, demand, span, keep=keep)
        if now - st.history_saved >= max(self.settings.history_every, 10 * step):
            await self._save_history(job, g, st, now)
        f = forecast(st.series, now, spec.season, spec.lead, tolerance=tolerance)
        view = ForecastView(
            metric=spec.metric,
            season=spec.season,
            lead=spec.lead,
            history_seconds=round(st.series.seconds(), 1),
        )
        if f is None:
            text = (
                f"forecast {spec.metric}: learning ({st.series.seconds():.0f}s of the "
                f"{spec.season:g}s season seen)"
            )
            view.text = text
            return view, Proposal(f"forecast {spec.metric}", None, text)
        # HPA's maths on the forecast figure, tolerance included (a forecast within it of
        # what the copies carry keeps the count, as a reactive figure does).
        count = (
            propose(Reading("rps", per_copy, value=f.value), g.count, tolerance).count
            if per_copy > 0
            else None
        )
        unit = "%" if spec.metric == "cpu" else ""
        text = (
            f"forecast {spec.metric} {show_value(spec.metric, f.value)} within "
            f"{spec.lead:g}s (now {show_value(spec.metric, f.level)} + a rise of "
            f"{show_value(spec.metric, f.rise)} a season ago; target "
            f"{show_value(spec.metric, policy.target)}{unit} per copy) → {count}"
        )
        view.value, view.at, view.level, view.rise = f.value, f.at, f.level, f.rise
        view.count, view.text = count, text
        return view, Proposal(f"forecast {spec.metric}", count, text, f.value)

    def _demand(
        self,
        spec: Predictive,
        policy: ScalingPolicy,
        copies: list[Allocation],
        traffic: Traffic | None,
    ) -> tuple[float | None, float]:
        """(the group's demand now, what one copy is meant to carry of it)."""
        if spec.metric == "cpu":
            running = [a for a in copies if a.client_status == "running"]
            rates = [self.cpu.percent(a.id, since=0.0) for a in running]
            cores = [r / 100 for r in rates if r is not None]
            per = [copy_cores(a, self.state.nodes.get(a.node_id)) for a in copies]
            size = sum(per) / len(per) if per else 0.0
            return (sum(cores) if cores else None), size * policy.target / 100
        if traffic is None:
            return (0.0 if self.meter.known() else None), policy.target
        value = traffic.rps if spec.metric == "rps" else traffic.concurrency
        return value, policy.target

    async def _load_histories(self) -> None:
        """A new term picks up each group's stored demand history."""
        kvs, _ = await self.state.store.list(keys.SCALING)
        for kv in kvs:
            ns, _, name = kv.key[len(keys.SCALING) :].partition("/")
            try:
                record = msgspec.json.decode(kv.value, type=ScalingRecord)
            except msgspec.DecodeError:
                continue
            job = self.state.jobs.get(f"{ns}/{name}")
            if job is None:
                continue
            now = self.clock.now()
            for gname, rec in record.groups.items():
                g = job.group(gname)
                if g is None or g.scaling is None or rec.history is None:
                    continue
                st = self._group_state(job, g, now)
                st.series, st.series_metric = rec.history, rec.history_metric
                st.history_saved = now

    async def _save_history(self, job: Job, g: Group, st: _Group, now: float) -> None:
        record, rev = await records.read(self.state, job.namespace, job.name)
        rec = record.group(g.name)
        rec.history, rec.history_metric = st.series, st.series_metric
        key = keys.scaling(job.namespace, job.name)
        res = await self.state.store.txn(
            [Compare(key, "mod_rev", "=", rev)], [Put(key, encode(record))]
        )
        if res.succeeded:
            st.history_saved = now  # a lost race (a wake, a change) tries at the next look

    # -------------------------------------------------------------- holds

    async def _last_change(self, job: Job, g: Group) -> float:
        """When the group's count last changed (for the cooldown), as the record says."""
        if g.scaling is None or not g.scaling.cooldown:
            return 0.0
        record, _ = await records.read(self.state, job.namespace, job.name)
        rec = record.groups.get(g.name)
        return rec.last_change if rec is not None else 0.0

    async def _rollout(self, job: Job) -> str:
        """A deployment of the job that is rolling out ("" when none): one whose version
        changed more than counts (a version that only scales is not a rollout)."""
        dep = self.state.latest_deployment(job.namespace, job.name)
        if dep is None or not dep.active:
            return ""
        only = self._count_only.get(dep.id)
        if only is None:
            only = self._count_only[dep.id] = await self._counts_only(job, dep.job_version)
        if only:
            return ""
        return f"deployment {dep.id[:8]} of version {dep.job_version} is rolling out"

    async def _counts_only(self, job: Job, version: int) -> bool:
        if version == 0:
            return False
        got = []
        for v in (version, version - 1):
            kv = await self.state.store.get(keys.job_version(job.namespace, job.name, v))
            if kv is None:
                return False
            got.append(msgspec.json.decode(kv.value, type=Job))
        return _without_counts(got[0]) == _without_counts(got[1])

    # ------------------------------------------------------------- changes

    async def _change(self, job: Job, g: Group, d: Decision, now: float) -> None:
        record, rev = await records.read(self.state, job.namespace, job.name)
        rec = record.group(g.name)
        rec.add(
            DecisionRecord(time=now, before=g.count, after=d.count, reason=d.reason, held=d.held)
        )
        kind = "idle" if d.count == 0 else "up" if d.count > g.count else "down"
        message = f"group {g.name}: {g.count} → {d.count}: {d.reason}"
        if d.held:
            message += f" ({d.held})"
        try:
            stored = await records.register_count(
                self.state,
                job,
                g.name,
                d.count,
                record=record,
                rev=rev,
                now=now,
                why=f"scale {g.name} to {d.count} ({kind})",
                event=kind,
                message=message,
            )
        except Conflict as e:
            log.info("autoscaler: %s changed meanwhile (%s); next look decides again", job.key, e)
            return
        self._count_only[deployment_id(stored)] = True  # its deployment is no rollout
        self.metrics.scaling_changes.labels(kind).inc()
        log.info("autoscaler: %s %s", job.key, message)
        if d.count == 0:
            self._groups[self._key(job, g)].last_active = now

    async def _cold_starts(self) -> None:
        """Tell each woken group's cold start once its first copy is healthy."""
        for key, waking in list(self._waking.items()):
            if not waking.healthy_at:
                continue
            del self._waking[key]
            ns, name, group = key
            record, rev = await records.read(self.state, ns, name)
            rec = record.groups.get(group)
            if rec is None or not rec.woken_at:
                continue  # woken by a forecast or by hand: no request waited
            took = max(0.0, waking.healthy_at - rec.woken_at)
            rec.woken_at = 0.0
            skey = keys.scaling(ns, name)
            message = (
                f"group {group}: first copy {waking.alloc[:8]} healthy {took:.2f}s after a "
                "request woke it (scaled from zero)"
            )
            res = await self.state.store.txn(
                [Compare(skey, "mod_rev", "=", rev)],
                [
                    Put(skey, encode(record)),
                    event_put(
                        "scaling.cold_start",
                        message,
                        namespace=ns,
                        job=name,
                        alloc=waking.alloc,
                        now=self.clock.now(),
                    ),
                ],
            )
            if res.succeeded:
                self.metrics.cold_start.observe(took)
            else:
                self._waking[key] = waking  # the record moved: try again at the next look

    # --------------------------------------------------------------- status

    async def status(self, job: Job) -> ScalingStatus:
        """The live figures of the job's autoscaled groups (this server leads), with the
        decisions the record keeps, newest first."""
        record, _ = await records.read(self.state, job.namespace, job.name)
        out = []
        for g in job.groups:
            if g.scaling is None:
                continue
            st = self._groups.get(self._key(job, g))
            view = st.status if st is not None and st.status is not None else None
            if view is None:
                view = GroupStatus(
                    group=g.name,
                    count=g.count,
                    min=g.scaling.min,
                    max=g.scaling.max,
                    live=True,
                    note="not looked at yet",
                )
            rec = record.groups.get(g.name)
            decisions = list(reversed(rec.decisions)) if rec is not None else []
            out.append(msgspec.structs.replace(view, count=g.count, decisions=decisions))
        return ScalingStatus(namespace=job.namespace, job=job.name, groups=out)


def _without_counts(job: Job) -> dict[str, object]:
    spec = jobspec.user_spec(job)
    for g in spec.get("groups", []):
        g["count"] = 0
    return spec
