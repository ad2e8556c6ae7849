"""Autoscaling's stored record, what `scaling status` shows, and waking a sleeping group.

/scaling/<ns>/<job>: ScalingRecord {groups: {name: GroupRecord}}
  last_change   when the count last changed by the autoscaler or a wake
  decisions     the last MAX_DECISIONS changes, each with the figures that made it
  woken_at      a request woke the group and no copy is healthy yet (cold start)
  history       the group's demand in buckets (predictive policies' model)

POST /v1/service/NAME/wake (a proxy holds a request for it) -> wake(): each sleeping
group behind the service (scaling min 0, count 0) gets count 1, in one transaction
with its record's woken_at and a `scaling.wake` event. The autoscaler (on the leader)
tells the cold start once a copy is healthy. Any server takes a wake; the writes are
guarded like every other, so many proxies asking at once wake a group once.
"""

from __future__ import annotations

import msgspec

from podium.autoscale import Series
from podium.errors import Conflict, NotFound
from podium.model.types import Job
from podium.server import jobs as job_ops
from podium.server.catalog import Catalog
from podium.server.events import event_put
from podium.server.state import ClusterState, encode
from podium.store import keys
from podium.store.base import Compare, Put

MAX_DECISIONS = 20
AUTOSCALER = "autoscaler"  # who submits the versions it writes


class DecisionRecord(msgspec.Struct, kw_only=True):
    time: float
    before: int
    after: int
    reason: str  # the figures with their numbers
    held: str = ""  # what kept it from going further


class GroupRecord(msgspec.Struct, kw_only=True):
    last_change: float = 0.0
    decisions: list[DecisionRecord] = msgspec.field(default_factory=list)
    woken_at: float = 0.0
    history: Series | None = None
    history_metric: str = ""  # the forecast metric the history measures

    def add(self, d: DecisionRecord) -> None:
        self.decisions = [*self.decisions, d][-MAX_DECISIONS:]
        self.last_change = d.time


class ScalingRecord(msgspec.Struct, kw_only=True):
    groups: dict[str, GroupRecord] = msgspec.field(default_factory=dict)

    def group(self, name: str) -> GroupRecord:
        found = self.groups.get(name)
        if found is None:
            found = self.groups[name] = GroupRecord()
        return found


_decode = msgspec.json.Decoder(ScalingRecord).decode


async def read(state: ClusterState, namespace: str, job: str) -> tuple[ScalingRecord, int]:
    """The job's record and the revision to guard a write with (0: none stored yet)."""
    kv = await state.store.get(keys.scaling(namespace, job))
    if kv is None:
        return ScalingRecord(), 0
    try:
        return _decode(kv.value), kv.mod_rev
    except msgspec.DecodeError:
        return ScalingRecord(), kv.mod_rev  # unreadable: the next write replaces it


async def register_count(
    state: ClusterState,
    job: Job,
    group: str,
    count: int,
    *,
    record: ScalingRecord,
    rev: int,
    now: float,
    why: str,
    event: str,
    message: str,
    service: str = "",
) -> Job:
    """A new version of `job` with `group` at `count`, in one transaction with the job's
    scaling `record` (guarded by `rev`, from read()) and a `scaling.<event>` event. Conflict
    when the job or the record changed meanwhile. Returns the stored job."""
    key = keys.scaling(job.namespace, job.name)
    groups = [msgspec.structs.replace(g, count=count) if g.name == group else g for g in job.groups]
    stored, _ = await job_ops.register(
        state,
        msgspec.structs.replace(job, groups=groups),
        now=now,
        check_index=job.revision,
        submitted_by=AUTOSCALER,
        why=why,
        guards=[Compare(key, "mod_rev", "=", rev)],
        also=[
            Put(key, encode(record)),
            event_put(
                f"scaling.{event}",
                message,
                namespace=job.namespace,
                job=job.name,
                service=service,
                now=now,
            ),
        ],
        counts=True,
    )
    return stored


# ----------------------------------------------------------------------- views


class Figure(msgspec.Struct, kw_only=True):
    """One policy's reading and what it asks for."""

    metric: str
    value: float | None = None
    target: float = 0.0
    count: int | None = None  # None: no figure, no proposal
    text: str = ""


class ForecastView(msgspec.Struct, kw_only=True):
    metric: str
    season: float
    lead: float
    history_seconds: float  # how much of the group's demand is stored
    value: float | None = None  # the highest demand forecast within the lead (None: learning)
    at: float = 0.0  # when that is due
    level: float | None = None  # the demand measured last
    rise: float | None = None  # how much demand rose a season earlier from now to `at`
    count: int | None = None
    text: str = ""


class GroupStatus(msgspec.Struct, kw_only=True):
    group: str
    count: int
    min: int
    max: int
    live: bool  # figures measured by the leader now; False: only what the store keeps
    looked_at: float = 0.0
    next_look: float = 0.0
    figures: list[Figure] = msgspec.field(default_factory=list)
    forecast: ForecastView | None = None
    wanted: int | None = None  # what the figures ask for, within min..max
    held: str = ""  # why that is not (yet) the count
    next_change: float = 0.0  # the earliest a held change may come (0: none waits in time)
    idle_for: float | None = None  # seconds without a request (min 0 groups)
    decisions: list[DecisionRecord] = msgspec.field(default_factory=list)
    note: str = ""


class ScalingStatus(msgspec.Struct, kw_only=True):
    """`GET /v1/job/NAME/scaling`: every autoscaled group of the job."""

    namespace: str
    job: str
    groups: list[GroupStatus]
    leader: str = ""  # where the live figures are, when this server does not lead


def stored_status(job: Job, record: ScalingRecord, *, leader: str = "") -> ScalingStatus:
    """What a server that does not lead can say: the decisions and the stored history."""
    groups = []
    for g in job.groups:
        if g.scaling is None:
            continue
        rec = record.groups.get(g.name, GroupRecord())
        groups.append(
            GroupStatus(
                group=g.name,
                count=g.count,
                min=g.scaling.min,
                max=g.scaling.max,
                live=False,
                decisions=list(reversed(rec.decisions)),
                note="the leader measures the figures"
                + (f" (at {leader})" if leader else "")
                + "; this server shows the stored decisions",
            )
        )
    return ScalingStatus(namespace=job.namespace, job=job.name, groups=groups, leader=leader)


# ------------------------------------------------------------------------ wake


async def wake(
    state: ClusterState, catalog: Catalog, namespace: str, service: str, *, now: float
) -> list[dict[str, object]]:
    """Start one copy of each sleeping group behind `service` (a request waits for it)."""
    sleepers = catalog.sleepers(namespace, service)
    if not sleepers:
        raise NotFound(
            f"service {service!r} in namespace {namespace!r} does not sleep: no group "
            "behind it scales to 0"
        )
    out: list[dict[str, object]] = []
    for s in sleepers:
        for _ in range(5):  # a lost race (another proxy's wake, the autoscaler) re-reads
            job = state.jobs.get(f"{namespace}/{s.job}")
            group = job.group(s.group) if job is not None else None
            if job is None or job.stop or group is None or group.scaling is None:
                break
            if group.count > 0 or group.scaling.min != 0:
                out.append({"job": s.job, "group": s.group, "count": group.count, "woken": False})
                break
            try:
                await _wake_group(state, job, s.group, service, now=now)
            except Conflict:
                continue
            out.append({"job": s.job, "group": s.group, "count": 1, "woken": True})
            break
    return out


async def _wake_group(
    state: ClusterState, job: Job, group: str, service: str, *, now: float
) -> None:
    record, rev = await read(state, job.namespace, job.name)
    rec = record.group(group)
    reason = f"a request to service {service} woke it"
    rec.woken_at = now
    rec.add(DecisionRecord(time=now, before=0, after=1, reason=reason))
    await register_count(
        state,
        job,
        group,
        1,
        record=record,
        rev=rev,
        now=now,
        why=f"scale {group} to 1: woken by a request",
        event="wake",
        message=f"group {group}: 0 → 1: {reason}",
        service=service,
    )
