"""The shapes of the API's answers and request bodies, as msgspec types: the OpenAPI
document's schemas are generated from them (openapi.py), and the API tests check real
answers against those schemas, so a field added to an answer without being declared here
fails a test instead of going undocumented.

Answers that are a resource kind as stored (Job, Node, Allocation, Deployment, Event) use
model/types.py directly; the rest (listings, summaries, acknowledgements) are declared
here. `forbid_unknown_fields` makes each schema say `additionalProperties: false`.
"""

from __future__ import annotations

import msgspec

from podium.model.diff import FieldChange
from podium.model.types import (
    Allocation,
    AllocUsage,
    Deployment,
    Job,
    Node,
    PlacementFailure,
    Preemption,
    ReportRejected,
)
from podium.server.catalog import Endpoint
from podium.server.keyring import Rotation
from podium.server.usage import JobUsage


class View(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Base of every answer declared here."""


# --------------------------------------------------------------------- meta


class Status(View):
    version: str
    leader: bool
    leader_address: str | None
    revision: int
    nodes: int
    jobs: int
    allocations: int
    store: str
    bad_values: int  # stored values that do not decode (skipped)
    controller_rounds: dict[str, int]  # rounds each leader controller completed here


class Member(View):
    id: str
    address: str
    started: float
    leader: bool
    leader_since: float | None
    insecure: bool  # started with --insecure: TLS off, callers not told apart


class MetricsTarget(View):
    targets: list[str]
    labels: dict[str, str]


# --------------------------------------------------------------------- jobs


class JobRow(View):
    name: str
    namespace: str
    type: str
    version: int
    priority: int
    status: str
    parent: str  # a run of a cron or parameterized job: the job that launched it
    index: int
    submit_time: float


class Registered(View):
    name: str
    namespace: str
    version: int
    index: int
    changed: bool
    deployment_id: str


class Validated(View):
    valid: bool
    job: Job


class PlannedPlacement(View):
    group: str
    index: int
    node: str
    replaces: str


class TouchedAlloc(View):
    id: str
    name: str
    action: str  # replace | restart | signal | noop


class ConfigChange(View, kw_only=True):
    """A config or secret pin the plan would move, and what it does to each live copy."""

    ref: str  # config:PATH | secret:PATH
    from_: int = msgspec.field(name="from")
    to: int
    allocs: list[TouchedAlloc]


class Plan(View):
    index: int
    changed: bool
    diff: list[FieldChange]
    create: int
    replace: int
    stop: int
    in_place: int
    canaries: int
    deployment: bool
    replace_later: int
    unchanged: int
    placements: list[PlannedPlacement]
    failures: list[PlacementFailure]
    preemptions: list[Preemption]
    config: list[ConfigChange]  # pins of configs and secrets that would move


class AllocRow(View):
    id: str
    namespace: str
    job: str
    group: str
    name: str
    node_id: str
    node_name: str
    job_version: int
    desired_status: str
    desired_reason: str
    migrate: bool
    client_status: str
    client_description: str
    healthy: bool | None
    healthy_since: float
    deployment_id: str
    ports: dict[str, int]
    restarts: int
    pids: dict[str, int]
    previous_alloc: str
    next_alloc: str
    create_time: float
    modify_time: float
    # job status: the config and secret versions this copy reads (its job version's pins)
    config_versions: dict[str, int] | None = None


class VersionCount(View):
    pending: int
    running: int
    healthy: int


class GroupSummary(View):
    desired: int
    pending: int
    running: int
    complete: int
    failed: int
    lost: int
    healthy: int
    unhealthy: int
    settled: int  # current-version copies healthy for the group's min_healthy_time
    restarts: int
    versions: dict[str, VersionCount]  # job version -> its serving copies
    # batch jobs only
    completions: int | None = None
    parallelism: int | None = None
    progress: str | None = None
    failed_reason: str | None = None


class ChildRun(View):
    """A run a cron or parameterized job launched."""

    name: str
    status: str
    submit_time: float


class JobSummary(View):
    deployment: Deployment | None
    job: Job
    status: str
    children: list[ChildRun]
    next_run: float | None  # a cron job's next run (wall time); None otherwise
    groups: dict[str, GroupSummary]
    allocations: list[AllocRow]
    placement_failures: list[PlacementFailure]


class Launched(View):
    """A run of a parameterized or cron job, launched now."""

    name: str
    index: int
    parent: str


class Dispatch(View):
    meta: dict[str, str] = msgspec.field(default_factory=dict)
    payload: str = ""  # base64, at most 16 KiB decoded


class Stopped(View):
    index: int
    purged: bool


class JobVersion(View):
    version: int
    submit_time: float
    diff: list[FieldChange]
    job: Job


class JobSubmission(View):
    """POST /v1/jobs, /v1/jobs/plan, /v1/jobs/validate: the job (or its YAML text) and,
    optionally, the index a plan was made at (refused with 409 if the job changed since).
    A bare job object, or YAML text with a yaml content type, is accepted as well."""

    job: Job | str
    check_index: int | None = None


class Revert(View):
    version: int
    check_index: int | None = None


class Scale(View):
    group: str
    count: int


# -------------------------------------------------------------- deployments


class DeploymentAllocRow(AllocRow, kw_only=True):
    canary: bool
    deployment_healthy: bool | None


class DeploymentView(View):
    deployment: Deployment
    allocations: list[DeploymentAllocRow]


class Promote(View):
    groups: list[str] | None = None  # None: every group with canaries


# -------------------------------------------------------------------- nodes


class Used(View):
    cpu: int
    memory: int


class NodeRow(Node, kw_only=True, forbid_unknown_fields=True):
    """A node as stored, with what its live allocs hold."""

    used: Used = msgspec.field(default_factory=lambda: Used(cpu=0, memory=0))
    allocations: int = 0  # live allocs


class NodePurged(Node, kw_only=True, forbid_unknown_fields=True):
    """A node as it was when purged."""

    purged: bool


class NodeRegistered(View):
    node: Node
    heartbeat_ttl: float
    heartbeat_in: float  # seconds until the node's next heartbeat is due
    tls_epoch: int  # the CA epoch: a node renews when it changes (a rotation)
    node_secret: str | None = None  # --insecure: issued once, at the first registration


class HeartbeatAck(View):
    heartbeat_ttl: float
    heartbeat_in: float  # seconds until the node's next heartbeat is due
    status: str
    tls_epoch: int


class Eligibility(View):
    eligible: bool


class Drain(View):
    enable: bool
    deadline: float | str | None = None  # seconds, or a duration such as "10m"


class Problem(View):
    path: str
    message: str


class Error(View):
    """Every error answer: what went wrong, and for bad input each problem by its path."""

    error: str
    problems: list[Problem] = msgspec.field(default_factory=list)


class NodeAllocs(View):
    index: int
    allocations: list[Allocation]
    node_status: str  # while "down", the agent heartbeats before it acts on these


class ReportsApplied(View):
    applied: int
    rejected: list[ReportRejected]


# -------------------------------------------------------------------- usage


class NodeUse(View):
    id: str
    name: str
    status: str
    offered: Used
    reserved: Used  # what its live allocs ask for
    cpu_percent: float | None  # as its agent measured (None: no figure)
    memory_bytes: int | None
    time: float | None


class AllocUse(AllocUsage, kw_only=True, forbid_unknown_fields=True):
    name: str = ""
    node_name: str = ""
    resources: Used = msgspec.field(default_factory=lambda: Used(cpu=0, memory=0))


class Usage(View):
    time: float
    nodes: list[NodeUse]
    jobs: list[JobUsage]
    allocations: list[AllocUse]


# ----------------------------------------------------------------- services


class ServiceRoute(View):
    host: str
    path: str


class Wake(View):
    """A service whose group may sleep (scaling min 0): how a proxy holds requests for it."""

    timeout: float  # seconds a request waits for a first copy
    queue: int  # requests held per proxy at most
    groups: list[str]  # JOB.GROUP behind it that may sleep


class ServiceRow(View):
    name: str
    namespace: str
    healthy: int
    total: int
    tags: list[str]
    ingress: list[ServiceRoute]
    index: int
    wake: Wake | None = None


class Services(View):
    index: int
    services: list[ServiceRow]


class Service(View):
    name: str
    namespace: str
    index: int
    known: bool
    endpoints: list[Endpoint]
    wake: Wake | None = None


class WokenGroup(View):
    job: str
    group: str
    count: int
    woken: bool  # False: it was awake already (or no longer may sleep)


class Woken(View):
    service: str
    namespace: str
    groups: list[WokenGroup]


# ----------------------------------------------------------------- operator


class Restored(View):
    restored: int
    deleted: int
    snapshot_revision: int
    revision: int


# ------------------------------------------------------- configs and secrets


class DataVersion(View):
    """One version of a config or a secret as listings, history and puts show it: a
    secret's keys and the keyring key that seals it, never its values."""

    kind: str  # config | secret
    namespace: str
    path: str
    version: int
    create_time: float
    created_by: str
    index: int
    keys: list[str]
    data: dict[str, str] | None = None  # a config's values; a secret's only on secret-values
    key_id: str | None = None  # a secret's: the keyring key that seals this version
    used_by: list[str] | None = None  # listings: the jobs that read it


class DataPut(View):
    data: dict[str, str] | None = None  # may be left out with merge (nothing new)
    cas: int | None = None  # refuse unless the current version is this (0: must not exist)
    merge: bool = False  # keep the current keys not given


class MovedJob(View):
    """A job moved to a new version by a config or secret change."""

    job: str
    version: int
    replaced_groups: list[str]
    deployment_id: str  # "" when no deployment rolls it out (applied in place)


class ConfigPut(View):
    config: DataVersion
    changed: bool
    jobs: list[MovedJob]


class SecretPut(View):
    secret: DataVersion
    changed: bool
    jobs: list[MovedJob]


class DataDeleted(View):
    index: int


class KeyringKey(View):
    id: str
    create_time: float
    active: bool
    secrets: int  # the secrets whose newest version it seals


class KeyringStatus(View):
    active: str
    root_key: str  # where the server's root key comes from (a file, or the environment)
    keys: list[KeyringKey]
    rotation: Rotation | None


class Rotate(View):
    full: bool = False  # re-encrypt every stored secret version under the new key


class Rotated(View):
    active: str
    full: bool


class TemplateData(View):
    """What one alloc's templates read, at its job version's pins (the agent's route)."""

    configs: dict[str, dict[str, str]]
    secrets: dict[str, dict[str, str]]
    versions: dict[str, int]


# --------------------------------------------------------------------- trust


class TlsJoin(View):
    token: str  # from `podium server join-token`
    csr: str  # PEM certificate request; the key never leaves the joiner
    node_id: str = ""  # an agent's proposed node id (kept if free)
    hosts: list[str] | None = None  # a server's other names and IPs


class TlsRenew(View):
    csr: str
    hosts: list[str] | None = None


class TlsIssued(View):
    role: str
    name: str
    cert: str  # PEM: the certificate and its chain
    ca: str  # PEM: every root to trust
    epoch: int
    kek: str | None = None  # a joining server: the key that seals the CA's key (base64)


class JoinTokenAsk(View):
    role: str = "agent"  # agent | server | operator
    ttl: float | str = "1h"


class JoinToken(View):
    token: str
    role: str
    ttl: float


class TlsStatus(View):
    epoch: int
    rotating: bool
    roots: int
    root_digest: str
    pending_nodes: list[str]
    nodes: int


class TlsRotated(View):
    epoch: int
    rotating: bool


# --------------------------------------------------------------------- web UI login


class UiLink(View):
    url: str  # https://SERVER/ui/#login=TOKEN
    expires_in: float


class UiLogin(View):
    token: str  # the TOKEN of a login link


class UiSession(View):
    name: str  # who asked for the link
    expires: float


class UiLoggedOut(View):
    closed: bool


# ------------------------------------------------------ ACL and namespaces


class AclTokenView(View):
    """A token as lists show it: never its secret, nor the secret's hash."""

    accessor: str
    name: str
    type: str  # client | management
    policies: list[str]
    create_time: float
    expiration_time: float  # 0: never


class AclTokenMade(AclTokenView, kw_only=True, forbid_unknown_fields=True):
    """A token just made (bootstrap, create): its secret, shown this once."""

    secret: str


class AclTokenCreate(View):
    name: str = ""
    type: str = "client"
    policies: list[str] = msgspec.field(default_factory=list)
    ttl: str | float | None = None  # a duration such as 24h; none: until deleted


class AclPolicyRow(View):
    name: str
    description: str


class AclPolicyView(AclPolicyRow, kw_only=True, forbid_unknown_fields=True):
    rules: str  # the policy's text (HCL or JSON)


class AclPolicyApply(View):
    rules: str
    description: str = ""


class Deleted(View):
    deleted: str


class NamespaceRow(View):
    name: str
    description: str
    jobs: int
    allocations: int  # live


class QuotaFigures(View):
    cpu: int = 0
    memory: int = 0
    allocs: int = 0
    jobs: int = 0


class NamespaceStatus(NamespaceRow, kw_only=True, forbid_unknown_fields=True):
    quota: QuotaFigures | None  # none: no limit
    used: QuotaFigures


class NamespaceCreate(View):
    name: str
    description: str = ""
