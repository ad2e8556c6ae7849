"""The resource kinds as typed structs (msgspec), the wire and storage format.

Spec kinds (Job, Group, Task, ...) arrive already canonicalized: every default
is filled by `model.spec.canonicalize`, so code reading them never guesses.
Durations are float seconds; memory is MB; cpu is MHz-equivalent shares.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

JobType = Literal["service", "batch", "system", "cron"]
DesiredStatus = Literal["run", "stop"]
ClientStatus = Literal["pending", "running", "complete", "failed", "lost"]
NodeStatus = Literal["initializing", "ready", "down"]
TaskStateName = Literal["pending", "running", "dead"]


class Struct(msgspec.Struct, kw_only=True, omit_defaults=False):
    """Base for every kind: keyword-only, JSON-encodable with msgspec."""


# --------------------------------------------------------------------- spec


class Resources(msgspec.Struct, kw_only=True, omit_defaults=False, frozen=True):
    """Frozen: the allocs of one group share one."""

    cpu: int = 100  # MHz-equivalent: placement counts it, and the task is held to it
    memory: int = 64
    pids: int = 0  # most processes and threads the task may have; 0 = the node's default


class PortSpec(Struct):
    static: int = 0  # 0 = dynamic, picked from the node's range


class NetworkSpec(Struct):
    ports: dict[str, PortSpec] = msgspec.field(default_factory=dict)


class Check(Struct):
    name: str = ""
    type: Literal["http", "tcp", "command"] = "http"
    port: str = ""  # a port label of the group; defaults to the service's port
    path: str = "/"
    method: str = "GET"
    command: list[str] = msgspec.field(default_factory=list)
    interval: float = 2.0
    timeout: float = 1.0


class Ingress(Struct):
    """Route outside HTTP traffic to a service through the agents' ingress listener."""

    host: str = ""  # "" = any host
    path: str = "/"  # path prefix


class ServiceSpec(Struct):
    name: str
    port: str = ""
    tags: list[str] = msgspec.field(default_factory=list)
    checks: list[Check] = msgspec.field(default_factory=list)
    meta: dict[str, str] = msgspec.field(default_factory=dict)
    ingress: Ingress | None = None


class Upstream(Struct):
    """A service a task reaches through the node's proxy at 127.0.0.1:local_port."""

    service: str
    local_port: int
    namespace: str = ""  # the service's namespace; "": the alloc's own
    mode: Literal["tcp", "http"] = "tcp"
    policy: Literal["round_robin", "weighted", "least_conn"] = "round_robin"


class Constraint(Struct):
    attribute: str = ""
    operator: Literal["=", "!=", "regexp", "version", "set_contains", "distinct_hosts"] = "="
    value: str = ""


class Spread(Struct):
    """Spread a group's copies over the values of a node attribute, toward target shares
    (Nomad's `spread`): e.g. 70% of the copies in zone a and 30% in zone b."""

    attribute: str  # e.g. "${node.datacenter}" or "${node.labels.zone}"
    weight: int = 50  # 1..100: its say against the group's other spreads
    # value -> percent of the copies; values not named share what is left evenly.
    # None named: an even share for every value the nodes have.
    targets: dict[str, float] = msgspec.field(default_factory=dict)


class RestartPolicy(Struct):
    attempts: int = 3
    interval: float = 300.0
    delay: float = 1.0
    mode: Literal["fail", "delay"] = "fail"


class ReschedulePolicy(Struct):
    attempts: int = 0  # 0 with unlimited=True means no cap
    interval: float = 0.0
    delay: float = 1.0
    max_delay: float = 60.0
    delay_function: Literal["constant", "exponential"] = "exponential"
    unlimited: bool = True


class UpdateStrategy(Struct):
    """How a new job version rolls out over a group's allocs (a deployment)."""

    max_parallel: int = 1  # allocs replaced at once; 0 = no deployment, replace all at once
    min_healthy_time: float = 5.0  # an alloc must stay healthy this long to count as healthy
    healthy_deadline: float = 300.0  # ...or be marked unhealthy after this long
    progress_deadline: float = 600.0  # a deployment with no new healthy alloc this long fails
    auto_revert: bool = True  # a failed deployment rolls back to the last stable version
    auto_promote: bool = False  # promote canaries once they are all healthy
    canary: int = 0  # new-version allocs started beside the old ones before the rollout
    # What "healthy" means: every task running and every check passing, or tasks only.
    health_check: Literal["checks", "task_states"] = "checks"
    # Fail fast: a new copy is unhealthy at once when one of its checks fails this many
    # times in a row, or its tasks exit this many times; 0 = only healthy_deadline judges.
    unhealthy_after: int = 3
    # Check failures within this long of a task's start are not counted (it is starting).
    check_grace: float = 5.0


class MigrateStrategy(Struct):
    """How a drain moves a group's copies off a node."""

    max_parallel: int = 1  # copies of the group migrating (not yet healthy elsewhere) at once


class DisconnectPolicy(Struct):
    """What a copy does when its node loses the servers (a partition, not a crash)."""

    # The agent stops the copy after this long without any server answering; 0 = never.
    stop_after_disconnect: float = 0.0
    # The server waits this long after the node goes down before it marks the copy
    # lost and replaces it; 0 = replace at once.
    lost_after: float = 0.0
    # When the node comes back: keep_original runs the lost copy on (its tasks were
    # never touched) and cancels its replacement, unless that already runs on another
    # node; keep_replacement stops the original.
    reconcile: Literal["keep_original", "keep_replacement"] = "keep_original"


ScalingMetric = Literal["cpu", "memory", "rps", "latency_p95", "concurrency", "prometheus"]
ForecastMetric = Literal["rps", "concurrency", "cpu"]


class Predictive(Struct):
    """Scale ahead of a forecast of the group's own demand: the demand now plus the rise
    one season ago saw within the lead (autoscale/forecast.py)."""

    metric: ForecastMetric = "rps"
    season: float = 86400.0  # the length of the pattern that repeats (a day)
    lead: float = 300.0  # scale for the highest demand forecast between now and this far ahead


class ScalingPolicy(Struct):
    """One figure the autoscaler steers by. Written `{metric: cpu, target: 60}`,
    `{prometheus: QUERY, target: N}` or `{predictive: {...}, target: N}`."""

    metric: ScalingMetric | Literal[""] = ""  # "" only for a predictive policy
    prometheus: str = ""  # the PromQL query (metric prometheus)
    # cpu, memory: percent of what each copy reserves; rps, concurrency, prometheus: per
    # copy; latency_p95: seconds. A predictive policy's defaults to its metric's reactive one.
    target: float = 0.0
    predictive: Predictive | None = None


class Scaling(Struct, kw_only=True):
    """A group that sets its own count, between min and max (HPA's maths and safety rules)."""

    min: int = 1
    max: int
    policies: list[ScalingPolicy] = msgspec.field(default_factory=list)
    interval: float = 15.0  # how often the group is looked at
    cooldown: float = 0.0  # no change for this long after a change
    scale_down_window: float = 300.0  # a scale-down takes the highest count asked for in it
    tolerance: float = 0.1  # a figure within this share of its target changes nothing
    idle_timeout: float = 300.0  # min 0: no request for this long scales the group to 0
    hold_timeout: float = 30.0  # min 0: a request waits this long for a copy, then 503
    hold_requests: int = 1000  # min 0: requests held per proxy at most (more: 503 at once)
    during_rollout: bool = False  # change the count while a deployment rolls out too


ChangeMode = Literal["rolling", "restart", "signal", "noop"]


class EnvRef(Struct, forbid_unknown_fields=True):
    """An environment variable read from a Config or a Secret (one of the two), by key."""

    secret: str = ""
    config: str = ""
    key: str = "value"


class Template(Struct):
    """A file rendered on the node from a Jinja2 template over configs, secrets, the task's
    env, the node and services; what happens to the task when its inputs change."""

    destination: str  # inside the task dir; under secrets/ it goes on the task's tmpfs
    data: str = ""  # the template text (`source` is read into it by the CLI)
    source: str = ""  # a file beside the job file, read by the CLI into `data`
    change_mode: ChangeMode = "rolling"  # canonicalize: rolling for services, else restart
    change_signal: str = "SIGHUP"
    splay: float = 5.0  # restart: each copy waits a random time up to this first
    perms: str = ""  # octal, e.g. "0640"; "" = 0644, or 0400 under secrets/
    env: bool = False  # read the file as KEY=value lines into the task's environment
    # Set by the server from the text: the configs and secrets it reads ("config:db/settings").
    reads: list[str] = msgspec.field(default_factory=list)


class Task(Struct):
    name: str
    driver: str = "process"
    config: dict[str, Any] = msgspec.field(default_factory=dict)
    resources: Resources = msgspec.field(default_factory=Resources)
    env: dict[str, str | EnvRef] = msgspec.field(default_factory=dict)
    templates: list[Template] = msgspec.field(default_factory=list)
    restart: RestartPolicy | None = None  # None: the group's policy
    kill_signal: str = "SIGTERM"
    kill_timeout: float = 5.0
    upstreams: list[Upstream] = msgspec.field(default_factory=list)


class Group(Struct):
    name: str
    count: int = 1  # copies; for a batch group, the successful completions it needs
    constraints: list[Constraint] = msgspec.field(default_factory=list)
    restart: RestartPolicy = msgspec.field(default_factory=RestartPolicy)
    reschedule: ReschedulePolicy = msgspec.field(default_factory=ReschedulePolicy)
    update: UpdateStrategy = msgspec.field(default_factory=UpdateStrategy)
    network: NetworkSpec = msgspec.field(default_factory=NetworkSpec)
    services: list[ServiceSpec] = msgspec.field(default_factory=list)
    tasks: list[Task] = msgspec.field(default_factory=list)
    spread: bool = False  # prefer the emptiest node instead of binpacking
    spreads: list[Spread] = msgspec.field(default_factory=list)  # `spread: [...]` in a job file
    meta: dict[str, str] = msgspec.field(default_factory=dict)
    migrate: MigrateStrategy = msgspec.field(default_factory=MigrateStrategy)
    disconnect: DisconnectPolicy = msgspec.field(default_factory=DisconnectPolicy)
    # On stop, the copy leaves the catalog at once; its tasks get the kill signal this
    # much later, so clients and proxies stop sending to it first (drain).
    shutdown_delay: float = 0.0
    # Batch groups only (job type batch or cron; None elsewhere, filled for batch by
    # canonicalize): `completions` copies must each exit 0, indexes 0..completions-1
    # (PODIUM_ALLOC_INDEX; the same as count), at most `parallelism` at once. More
    # than `backoff_limit` failed copies, or `active_deadline` seconds since the job
    # version was submitted (0: none), fail the group: its copies stop, none is placed.
    completions: int | None = None
    parallelism: int | None = None
    backoff_limit: int | None = None
    active_deadline: float | None = None
    # Service groups: the autoscaler sets `count` (server/controllers/autoscaler.py).
    scaling: Scaling | None = None

    def resources(self) -> Resources:
        return Resources(
            cpu=sum(t.resources.cpu for t in self.tasks),
            memory=sum(t.resources.memory for t in self.tasks),
        )


class Periodic(Struct):
    """When a cron job launches a run: each run is a child batch job NAME/periodic-<unix time>."""

    # Cron expressions (5 fields; 6 with seconds first; or @hourly, @daily...): the job
    # runs at every time any of them names.
    schedule: list[str] = msgspec.field(default_factory=list)
    time_zone: str = "UTC"  # IANA name; the schedule is read in it (DST included)
    # A run is due while the previous one still runs: start it too, skip it, or stop
    # the previous one first.
    concurrency: Literal["allow", "forbid", "replace"] = "allow"
    starting_deadline: float = 0.0  # a run missed by more than this is skipped; 0 = never
    successful_history: int = 3  # finished runs kept (purged beyond these)
    failed_history: int = 1
    suspend: bool = False  # no runs while true (runs due meanwhile are skipped)


class Parameterized(Struct):
    """A job that runs only when dispatched (`podium job dispatch`): each dispatch is a
    child batch job NAME/dispatch-<unix time>-<id> with its own meta and payload."""

    payload: Literal["optional", "required", "forbidden"] = "optional"
    meta_required: list[str] = msgspec.field(default_factory=list)
    meta_optional: list[str] = msgspec.field(default_factory=list)


class Job(Struct):
    name: str
    namespace: str = "default"
    type: JobType = "service"
    # 1-100: a job that cannot be placed may preempt allocs of lower-priority jobs.
    priority: int = 50
    # The short form of periodic.schedule for `type: cron` (canonicalize moves it there).
    schedule: str = ""
    periodic: Periodic | None = None  # cron jobs
    parameterized: Parameterized | None = None  # dispatch jobs (batch)
    constraints: list[Constraint] = msgspec.field(default_factory=list)
    groups: list[Group] = msgspec.field(default_factory=list)
    meta: dict[str, str] = msgspec.field(default_factory=dict)  # tasks see PODIUM_META_<KEY>
    # Set by the server, not by the user:
    version: int = 0
    stop: bool = False
    submit_time: float = 0.0
    submitted_by: str = ""  # who submitted this version (as the client said)
    stable: bool = False  # a deployment of this version finished healthy
    parent: str = ""  # a cron or dispatch run: the job that launched it
    payload: str = ""  # a dispatch run: its payload, base64 (written to PODIUM_PAYLOAD_FILE)
    # The version of each config and secret the tasks read, e.g. {"config:db/settings": 4}:
    # resolved at submit, moved by a config change (a new job version), kept by a revert.
    config_versions: dict[str, int] = msgspec.field(default_factory=dict)
    revision: int = 0  # the store revision this copy was read at

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def group(self, name: str) -> Group | None:
        for g in self.groups:
            if g.name == name:
                return g
        return None


# ------------------------------------------------------------------- cluster


class DriverInfo(Struct):
    detected: bool = True
    healthy: bool = True
    description: str = ""


class NodeResources(Struct):
    cpu: int = 0  # what tasks may be given: the machine's less `reserved_cpu`
    memory: int = 0  # likewise, less `reserved_memory`
    reserved_cpu: int = 0  # kept for the system and the agent itself
    reserved_memory: int = 0
    port_min: int = 20000
    port_max: int = 32000
    reserved_ports: list[int] = msgspec.field(default_factory=list)


class Node(Struct):
    id: str
    name: str
    address: str = "127.0.0.1"
    http_addr: str = ""  # the agent's own API (logs, exec), host:port
    mesh_addr: str = ""  # host:port of its mesh gateway: service traffic from other nodes (mTLS)
    datacenter: str = "dc1"
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    attributes: dict[str, str] = msgspec.field(default_factory=dict)
    drivers: dict[str, DriverInfo] = msgspec.field(default_factory=dict)
    resources: NodeResources = msgspec.field(default_factory=NodeResources)
    status: NodeStatus = "ready"
    eligible: bool = True
    drain: bool = False
    drain_deadline: float = 0.0  # wall time after which a drain stops whatever is left; 0 none
    drain_started: float = 0.0
    heartbeat_ttl: float = 3.0
    last_heartbeat: float = 0.0
    register_time: float = 0.0
    status_description: str = ""
    status_time: float = 0.0  # wall time of the last status change
    revision: int = 0

    @property
    def schedulable(self) -> bool:
        return self.status == "ready" and self.eligible and not self.drain

    @property
    def cpu_per_core(self) -> int:
        """What one core of this node counts in cpu units (MHz): the base of CPU quotas."""
        try:
            return max(1, int(self.attributes.get("cpu.frequency", "1000")))
        except ValueError:
            return 1000


class TaskState(Struct, gc=False):  # plain values: see Allocation
    state: TaskStateName = "pending"
    failed: bool = False
    restarts: int = 0
    last_restart: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    exit_code: int | None = None
    signal: int | None = None
    oom_killed: bool = False
    pid: int = 0
    message: str = ""


class CheckStatus(Struct, gc=False):  # plain values: see Allocation
    name: str
    status: Literal["passing", "warning", "critical", "pending"] = "pending"
    output: str = ""
    checked_at: float = 0.0


class Allocation(Struct, gc=False):
    # gc=False: a data tree that never refers back to itself, so it cannot be part of a
    # cycle, and a server holds 100,000s of them: untracked, the collector skips them.
    id: str
    namespace: str
    job: str
    job_version: int
    group: str
    index: int
    node_id: str
    node_name: str = ""
    # The scheduler's hash of the group spec this copy runs (count excluded): when a new
    # job version keeps it, the copy is updated in place instead of replaced.
    group_hash: str = ""
    resources: Resources = msgspec.field(default_factory=Resources)
    ports: dict[str, int] = msgspec.field(default_factory=dict)
    desired_status: DesiredStatus = "run"
    desired_reason: str = ""
    client_status: ClientStatus = "pending"
    client_description: str = ""
    task_states: dict[str, TaskState] = msgspec.field(default_factory=dict)
    # Tuples, not lists: a tuple of plain values is left alone by the collector (a list
    # never is), and every alloc of a million would hold two.
    checks: tuple[CheckStatus, ...] = ()
    healthy: bool | None = None
    # Since when (agent's wall time) the copy has been healthy without a break, as its
    # group's update.health_check defines it; 0 while it is not.
    healthy_since: float = 0.0
    previous_alloc: str = ""
    next_alloc: str = ""
    reschedule_count: int = 0
    # When this copy's line was rescheduled after failures: the reschedule policy counts
    # those within its `interval` against `attempts`.
    reschedule_times: tuple[float, ...] = ()
    reschedule_after: float = 0.0  # do not replace before this time
    restart_seq: int = 0  # bumped by `alloc restart`; the agent restarts tasks when it grows
    migrate: bool = False  # set by the drain controller: move this copy off its draining node
    deployment_id: str = ""  # the deployment that placed this copy
    canary: bool = False  # placed beside the old version, waiting for promotion
    # The agent's verdict for the deployment: healthy for min_healthy_time (True), or not
    # healthy by healthy_deadline (False); None while undecided.
    deployment_healthy: bool | None = None
    deployment_health_time: float = 0.0
    deployment_health_description: str = ""  # why the agent gave its verdict
    create_time: float = 0.0
    modify_time: float = 0.0
    revision: int = 0

    @property
    def name(self) -> str:
        return f"{self.job}.{self.group}[{self.index}]"

    @property
    def terminal(self) -> bool:
        """The alloc runs nothing and never will again."""
        return self.client_status in ("complete", "failed", "lost")

    @property
    def live(self) -> bool:
        """The alloc holds (or may hold) resources on its node."""
        return self.desired_status == "run" and not self.terminal


DeploymentStatus = Literal["running", "paused", "successful", "failed", "cancelled"]


class DeploymentGroup(Struct):
    """One group's part in a deployment; counts are kept by the deployment controller."""

    desired_total: int = 0
    desired_canaries: int = 0
    promoted: bool = False
    auto_promote: bool = False
    auto_revert: bool = True
    placed: int = 0
    healthy: int = 0
    unhealthy: int = 0
    progress_deadline: float = 600.0
    require_progress_by: float = 0.0  # wall time; 0 = no deadline


class Deployment(Struct):
    """The rollout of one job version: progress, and what happened to it."""

    id: str
    namespace: str
    job: str
    job_version: int
    status: DeploymentStatus = "running"
    status_description: str = ""
    groups: dict[str, DeploymentGroup] = msgspec.field(default_factory=dict)
    reverted_to: int = -1  # the version an automatic rollback submitted; -1 none
    config_versions: dict[str, int] = msgspec.field(default_factory=dict)  # the job version's
    create_time: float = 0.0
    modify_time: float = 0.0
    revision: int = 0

    @property
    def active(self) -> bool:
        return self.status in ("running", "paused")

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.job}"


class Config(Struct):
    """One version of a Config: a named map of keys to text (`db/settings`), namespaced.
    The newest version is also kept as the head, with whether its change was rolled out."""

    namespace: str
    path: str
    version: int = 1
    data: dict[str, str] = msgspec.field(default_factory=dict)
    create_time: float = 0.0
    created_by: str = ""
    rolled_out: bool = False  # the head only: jobs that use it were moved to this version
    revision: int = 0


class Sealed(Struct):
    """AES-256-GCM envelope: `ciphertext` under a fresh data key, itself wrapped by the
    keyring key `key_id` (each with its own nonce in front)."""

    key_id: str
    data_key: bytes
    ciphertext: bytes


class Secret(Struct):
    """One version of a Secret: like a Config, but its values are only ever stored sealed."""

    namespace: str
    path: str
    version: int = 1
    keys: list[str] = msgspec.field(default_factory=list)  # the names, never the values
    sealed: Sealed | None = None
    create_time: float = 0.0
    created_by: str = ""
    rolled_out: bool = False
    revision: int = 0


class Event(Struct):
    seq: int = 0
    time: float = 0.0
    type: str = ""  # e.g. "alloc.placed", "task.started", "node.down"
    namespace: str = ""
    job: str = ""
    alloc: str = ""
    node: str = ""
    service: str = ""  # service.* events: the service whose endpoint changed
    message: str = ""


# ------------------------------------------------------------------ planning


class PlacementFailure(Struct):
    """Why a group's copies could not be placed: the CLI prints this."""

    group: str
    unplaced: int
    nodes_evaluated: int = 0
    nodes_filtered: dict[str, int] = msgspec.field(default_factory=dict)  # filter name -> nodes
    nodes_exhausted: dict[str, int] = msgspec.field(default_factory=dict)  # resource -> nodes
    message: str = ""


class StopRequest(Struct):
    alloc_id: str
    reason: str


class Preemption(Struct):
    """A lower-priority alloc the plan stops to make room for one of its placements."""

    alloc_id: str
    alloc_name: str  # e.g. "batch.work[3]"
    namespace: str
    job: str
    priority: int
    node_id: str
    node_name: str
    for_alloc: str  # the placement it makes room for (id)
    for_name: str  # e.g. "big.main[0]"


class Plan(Struct):
    """What the scheduler wants done; the plan applier re-checks and commits it."""

    namespace: str
    job: str
    job_version: int
    placements: list[Allocation] = msgspec.field(default_factory=list)
    stops: list[StopRequest] = msgspec.field(default_factory=list)
    failures: list[PlacementFailure] = msgspec.field(default_factory=list)
    # Allocs of lower-priority jobs stopped to make room (also listed in `stops`).
    preemptions: list[Preemption] = msgspec.field(default_factory=list)
    priority: int = 50  # the job's, for the events of its preemptions

    @property
    def empty(self) -> bool:
        return not self.placements and not self.stops


# ------------------------------------------------------------ agent reports


class TaskUsage(Struct):
    """One task's resource use as its driver last measured it (wall time `time`)."""

    time: float = 0.0
    cpu_percent: float = 0.0  # of one core, over the time since the previous sample
    cpu_seconds: float = 0.0  # used since the task started (a counter)
    memory_bytes: int = 0  # working set (RSS without inactive page cache)
    memory_limit_bytes: int = 0
    pids: int = 0


class AllocUsage(Struct):
    """An alloc's resource use: the sum of its tasks', and each task's."""

    id: str
    namespace: str = ""
    job: str = ""
    group: str = ""
    node_id: str = ""
    time: float = 0.0
    cpu_percent: float = 0.0
    cpu_seconds: float = 0.0
    memory_bytes: int = 0
    memory_limit_bytes: int = 0
    tasks: dict[str, TaskUsage] = msgspec.field(default_factory=dict)


class ServiceTraffic(Struct):
    """What one node's proxy counted for one service: counters since the proxy started,
    and gauges of now. `buckets` are the latency histogram's (proxy/metrics.BUCKETS, +Inf)."""

    requests: int = 0  # answered (http) or relayed (tcp)
    errors: int = 0
    latency_sum: float = 0.0  # seconds, summed over `requests`
    buckets: list[int] = msgspec.field(default_factory=list)
    held: int = 0  # requests waiting now for a first copy (scale from zero)


class TaskEvent(Struct):
    type: str  # e.g. "task.started", "task.restarting", "task.oom_killed"
    message: str = ""
    task: str = ""


class ReportRejected(Struct):
    """An agent report the server did not apply: why, and whether to send it again
    (False: the alloc is gone or not this node's, so the report has nowhere to go)."""

    id: str
    reason: str
    retry: bool


class AllocUpdate(Struct):
    """What an agent reports about one of its allocs (the client half of the alloc)."""

    id: str
    client_status: ClientStatus
    client_description: str = ""
    task_states: dict[str, TaskState] = msgspec.field(default_factory=dict)
    checks: list[CheckStatus] = msgspec.field(default_factory=list)
    healthy: bool | None = None
    healthy_since: float = 0.0
    deployment_healthy: bool | None = None
    deployment_health_time: float = 0.0
    deployment_health_description: str = ""
    events: list[TaskEvent] = msgspec.field(default_factory=list)
