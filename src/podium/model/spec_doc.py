"""docs/job-spec.md, generated: every job-file field with its type, default, meaning, example.

    types.py (which fields, their types) ─┐
    spec.canonicalize (defaults) ─────────┼─> markdown()  ─> docs/job-spec.md
    drivers/schemas.py (driver configs) ──┤   doc_link(problem path) ─> "docs/job-spec.md#update"
    MEANINGS below (words, examples) ─────┘

Only the words are written by hand; types and defaults are read from the model, so the page
cannot drift from it, and tests/unit/test_spec_doc.py regenerates it, compares, and checks
that every field the validator accepts is here and every example here is accepted.
Regenerate: `.venv/bin/python -m podium.model.spec_doc > docs/job-spec.md`.
"""

from __future__ import annotations

import re
import sys
import types as pytypes
from dataclasses import dataclass
from typing import Any, Literal, Union, cast, get_args, get_origin

import msgspec
import yaml

from podium.drivers.schemas import SCHEMAS
from podium.model import spec
from podium.model import types as t

DOC = "docs/job-spec.md"
Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Section:
    anchor: str  # the heading, and so the link: docs/job-spec.md#<anchor>
    kind: type[msgspec.Struct]
    path: Path  # where one sits in a job (list items as index 0), for defaults and examples
    intro: str


TASK: Path = ("groups", 0, "tasks", 0)
SECTIONS: tuple[Section, ...] = (
    Section("job", t.Job, (), "The top level of a job file."),
    Section(
        "group",
        t.Group,
        ("groups", 0),
        "`count` copies of a set of tasks, placed together on one node (they share its "
        "network and an alloc dir). Each copy is an allocation.",
    ),
    Section("task", t.Task, TASK, "One process or container of a group."),
    Section("resources", t.Resources, (*TASK, "resources"), "What one task reserves on its node."),
    Section(
        "restart",
        t.RestartPolicy,
        ("groups", 0, "restart"),
        "What the node does when a task exits: restart it in place, a few times. Set on the "
        "group (every task inherits it, field by field) or on one task.",
    ),
    Section(
        "reschedule",
        t.ReschedulePolicy,
        ("groups", 0, "reschedule"),
        "What the server does with a failed allocation: place a replacement, maybe on another "
        "node, with backoff.",
    ),
    Section(
        "update",
        t.UpdateStrategy,
        ("groups", 0, "update"),
        "How a new version of the group rolls out (a deployment). Only groups whose spec "
        "changed roll; a count change is applied in place.",
    ),
    Section(
        "migrate", t.MigrateStrategy, ("groups", 0, "migrate"), "How a node drain moves copies."
    ),
    Section(
        "disconnect",
        t.DisconnectPolicy,
        ("groups", 0, "disconnect"),
        "What happens to copies on a node that loses the servers (a partition, not a crash).",
    ),
    Section("network", t.NetworkSpec, ("groups", 0, "network"), "The group's ports."),
    Section(
        "port",
        t.PortSpec,
        ("groups", 0, "network", "ports", "http"),
        "One port of the group, under a label (`http` here): a task sees it as "
        "`PODIUM_PORT_<LABEL>` and its address as `PODIUM_ADDR_<LABEL>`. `http: {}` (or "
        "`ports: [http]`) is dynamic, picked from the node's range; `http: 8080` is short "
        "for `http: {static: 8080}`.",
    ),
    Section(
        "service",
        t.ServiceSpec,
        ("groups", 0, "services", 0),
        "A named endpoint set: the group's copies are in the catalog (DNS "
        "`NAME.service.podium`, the proxy, the ingress) while they run and every check passes.",
    ),
    Section("check", t.Check, ("groups", 0, "services", 0, "checks", 0), "A health check."),
    Section(
        "ingress",
        t.Ingress,
        ("groups", 0, "services", 0, "ingress"),
        "Route outside HTTP traffic to the service through the agents' ingress listener.",
    ),
    Section(
        "upstream",
        t.Upstream,
        (*TASK, "upstreams", 0),
        "A service the task reaches through its node's proxy, at `127.0.0.1:local_port`.",
    ),
    Section(
        "template",
        t.Template,
        (*TASK, "templates", 0),
        "A file rendered on the node before the task starts, from a Jinja2 template (sandboxed) "
        "over configs, secrets, the task's env, the node and healthy services; and what happens "
        "to the task when they change. See docs/configuration.md.",
    ),
    Section(
        "env-ref",
        t.EnvRef,
        (*TASK, "env", "DB_PASSWORD"),
        "An `env` value read from a config or a secret instead of written out: "
        "`{secret: db/password, key: value}`. Shown as `<secret:PATH>`, never as the value.",
    ),
    Section(
        "constraint",
        t.Constraint,
        ("groups", 0, "constraints", 0),
        "Which nodes may run the copies (on the job: every group; on a group: that group).",
    ),
    Section(
        "spread",
        t.Spread,
        ("groups", 0, "spreads", 0),
        "Spread a group's copies over the values of a node attribute, toward target shares. "
        "Written as a list under the group's `spread` (or `spreads`).",
    ),
    Section(
        "scaling",
        t.Scaling,
        ("groups", 0, "scaling"),
        "Service groups that set their own `count`, between `min` and `max`, from their "
        "figures: CPU and memory from the nodes, requests per second, latency and concurrency "
        "from the proxies that carry the traffic, or a query to your Prometheus (`podium "
        "server --prometheus-url`). Kubernetes HPA's maths: desired = ceil(copies x figure / "
        "target), nothing changes within `tolerance`, a scale-down takes the highest count "
        "asked for within `scale_down_window`, a scale-up adds at most 4 copies or 100 %. "
        "With `min: 0` an idle group stops altogether and a request through the ingress or a "
        "node's proxy wakes it: the request waits (up to `hold_timeout`) and goes through. "
        "A new version of the job keeps the count the group has; `podium job scaling status "
        "NAME` shows the figures, the decisions and the forecast.",
    ),
    Section(
        "scaling-policy",
        t.ScalingPolicy,
        ("groups", 0, "scaling", "policies", 0),
        "One figure a group steers by. The highest count any policy asks for wins.",
    ),
    Section(
        "predictive",
        t.Predictive,
        ("groups", 0, "scaling", "policies", 1, "predictive"),
        "Scale ahead of demand, from the group's own history: the forecast for a moment "
        "within `lead` is the demand now plus how much demand rose, one season earlier, from "
        "this moment to that one (the season's curve averaged over a span as long as the "
        "lead; a fall, or a rise within the group's `tolerance`, counts as none), and the "
        "group is sized for the highest such forecast, never below what the reactive "
        "policies ask. Scale-downs follow the reactive policies' `scale_down_window` alone: "
        "the forecast's count lasts only while it sees a rise ahead, so it adds copies before "
        "a rise and holds none after it. Until one season of history is stored, only the "
        "reactive policies act.",
    ),
    Section(
        "periodic",
        t.Periodic,
        ("periodic",),
        "When a cron job (`type: cron`, or a batch job with `periodic`) starts a run. Each "
        "run is a batch job of its own, `NAME/periodic-<unix time>`, started once per time "
        "the schedule names (a restart or a leader change starts none twice and loses none).",
    ),
    Section(
        "parameterized",
        t.Parameterized,
        ("parameterized",),
        "A batch job that runs only when dispatched (`podium job dispatch NAME [--meta k=v] "
        "[PAYLOAD_FILE|-]`): each dispatch is a batch job of its own, "
        "`NAME/dispatch-<unix time>-<id>`, with its meta (as `PODIUM_META_<KEY>`) and its "
        "payload (at most 16 KiB, in the file `PODIUM_PAYLOAD_FILE` names, in the task dir).",
    ),
)

# (meaning, example) of each field, by section. The example is YAML for the field's value.
MEANINGS: dict[str, dict[str, tuple[str, str]]] = {
    "job": {
        "name": ("The job's name, unique in its namespace.", "web"),
        "namespace": ("The namespace it lives in.", "team-a"),
        "type": (
            "`service` keeps running; `batch` runs to completion; `system` runs one copy on "
            "every eligible node; `cron` is a batch launched on a schedule (see #periodic).",
            "batch",
        ),
        "priority": (
            "1-100. A copy that fits on no node may stop (preempt) the fewest copies of jobs "
            "with a lower priority that make room: lowest priority first, then newest. "
            "`podium job plan` shows what it would preempt.",
            "70",
        ),
        "schedule": (
            "Cron jobs only: the short form of `periodic.schedule` (see #periodic).",
            '"*/5 * * * *"',
        ),
        "periodic": (
            "Run on a schedule (see #periodic); a batch job with it becomes a cron job.",
            '{schedule: "0 9 * * 1-5", time_zone: Europe/Berlin}',
        ),
        "parameterized": (
            "Batch jobs: run only when dispatched (see #parameterized).",
            "{payload: required, meta_required: [customer]}",
        ),
        "constraints": (
            "Constraints for every group (see #constraint).",
            "[{attribute: '${node.datacenter}', value: dc1}]",
        ),
        "groups": ("The groups (see #group); at least one.", "[{name: web, tasks: [...]}]"),
        "meta": (
            "Free-form strings, kept with the job; tasks see each as `PODIUM_META_<KEY>`.",
            "{owner: team-a}",
        ),
        "version": ("Set by the server: the version number. Ignored when submitted.", "3"),
        "stop": ("Set by the server: the job was stopped. Ignored when submitted.", "false"),
        "submit_time": (
            "Set by the server: when this version was submitted (unix seconds).",
            "1700000000.0",
        ),
        "submitted_by": (
            "Set by the server: who submitted this version, as the client said.",
            "alice",
        ),
        "stable": ("Set by the server: a deployment of this version finished healthy.", "true"),
        "parent": (
            "Set by the server on a cron or dispatch run: the job that started it.",
            "report",
        ),
        "payload": (
            "Set by the server on a dispatch run: its payload, base64. Ignored when submitted.",
            "aGVsbG8=",
        ),
        "config_versions": (
            "Set by the server: the version of each config and secret the tasks read, "
            "pinned when the job is submitted and moved by a config or secret change.",
            "{'config:db/settings': 4}",
        ),
        "revision": ("Set by the server: the store revision this copy was read at.", "42"),
    },
    "group": {
        "name": ("The group's name, unique in the job.", "frontend"),
        "count": (
            "How many copies to run (0-10000); for a batch group, how many must succeed.",
            "3",
        ),
        "constraints": (
            "Constraints for this group (see #constraint).",
            "[{attribute: '${node.labels.zone}', value: a}]",
        ),
        "restart": ("Restart policy for its tasks (see #restart).", "{attempts: 5, delay: 2s}"),
        "reschedule": ("Reschedule policy (see #reschedule).", "{delay: 5s, max_delay: 2m}"),
        "update": ("Rollout policy (see #update).", "{max_parallel: 2, canary: 1}"),
        "network": ("Ports (see #network).", "{ports: {http: {}}}"),
        "services": ("Services its copies provide (see #service).", "[{name: web, port: http}]"),
        "tasks": (
            "The tasks of each copy (see #task); at least one.",
            "[{name: server, config: {command: sleep, args: ['1000']}}]",
        ),
        "spread": (
            "`true`: prefer the emptiest node instead of packing nodes full. A list: spread "
            "over attribute values toward target shares (see #spread).",
            "true",
        ),
        "spreads": (
            "The list form of `spread` (see #spread).",
            "[{attribute: '${node.labels.zone}'}]",
        ),
        "meta": ("Free-form strings, kept with the group.", "{tier: frontend}"),
        "migrate": ("Drain policy (see #migrate).", "{max_parallel: 2}"),
        "disconnect": ("Partition policy (see #disconnect).", "{lost_after: 1m}"),
        "shutdown_delay": (
            "On stop, a copy leaves the catalog at once and its tasks get the kill signal "
            "this much later, so clients move away first.",
            "5s",
        ),
        "completions": (
            "Batch groups: the copies that must each exit 0, indexes 0 to completions-1 "
            "(`PODIUM_ALLOC_INDEX`); the same as `count`, give either.",
            "10",
        ),
        "parallelism": ("Batch groups: at most this many copies run at once.", "3"),
        "backoff_limit": (
            "Batch groups: more failed tries than this fail the group (its copies stop, "
            "none is placed).",
            "2",
        ),
        "active_deadline": (
            "Batch groups: this long after the version was submitted, an unfinished group "
            "fails (its copies stop); 0: no deadline.",
            "30m",
        ),
        "scaling": (
            "Service groups: let the group set its own count (see #scaling).",
            "{min: 1, max: 10, policies: [{metric: cpu, target: 60}]}",
        ),
    },
    "scaling": {
        "min": (
            "The fewest copies (0-10000). 0: an idle group stops and a request wakes it; "
            "it needs a service.",
            "0",
        ),
        "max": ("The most copies (1-10000).", "20"),
        "policies": (
            "What to steer by (see #scaling-policy); none only with `min: 0`.",
            "[{metric: rps, target: 50}]",
        ),
        "interval": ("How often the group is looked at (at least 1s).", "30s"),
        "cooldown": ("After a change, no other for this long.", "1m"),
        "scale_down_window": (
            "A scale-down takes the highest count asked for within this window, so a "
            "short dip does not shrink the group (and the count turns at most once in it).",
            "10m",
        ),
        "tolerance": (
            "A figure within this share of its target changes nothing (0 to below 1).",
            "0.2",
        ),
        "idle_timeout": (
            "`min: 0`: no request through any proxy for this long takes the group to 0.",
            "15m",
        ),
        "hold_timeout": (
            "`min: 0`: how long a request waits for a first copy; then 503 with Retry-After.",
            "1m",
        ),
        "hold_requests": (
            "`min: 0`: requests each proxy holds at most while the group wakes; more are "
            "answered 503 with Retry-After at once.",
            "200",
        ),
        "during_rollout": (
            "Change the count while a deployment of the job rolls out (normally it waits).",
            "true",
        ),
    },
    "scaling-policy": {
        "metric": (
            "`cpu` or `memory`: percent of what each copy reserves, averaged; `rps`: "
            "requests per second through the proxies; `latency_p95`: the proxies' 95th "
            "percentile, seconds; `concurrency`: requests in flight on average; `prometheus`: "
            "the query's value (set by giving `prometheus`).",
            "rps",
        ),
        "prometheus": (
            "A PromQL query for your Prometheus; it must give one number (wrap it in `sum()`).",
            "sum(rate(http_requests_total{job='web'}[1m]))",
        ),
        "target": (
            "The figure to hold: percent for `cpu` and `memory`, seconds (or a duration such "
            'as "200ms") for `latency_p95`, per copy for `rps`, `concurrency` and `prometheus`.',
            "60",
        ),
        "predictive": ("Forecast demand and scale ahead of it (see #predictive).", "{metric: rps}"),
    },
    "predictive": {
        "metric": ("The demand to forecast: `rps`, `concurrency` or `cpu`.", "concurrency"),
        "season": ("The length of the pattern that repeats (at least 1m).", "7d"),
        "lead": (
            "How far ahead to scale: about how long a new copy takes to start, and more.",
            "2m",
        ),
    },
    "task": {
        "name": ("The task's name, unique in the group.", "server"),
        "driver": ("What runs it: `process`, `docker` (or `mock` for tests).", "docker"),
        "config": (
            "The driver's settings (see #config).",
            "{command: python3, args: ['-m', 'http.server']}",
        ),
        "resources": ("What it reserves (see #resources).", "{cpu: 500, memory: 256MB}"),
        "env": (
            "Environment variables (numbers and booleans become strings), or values read from "
            "a config or secret (see #env-ref). Podium adds PODIUM_ALLOC_ID, PODIUM_TASK, "
            "PODIUM_PORT_<LABEL>, PODIUM_ADDR_<LABEL> and more.",
            "{GREETING: hello, DB_PASSWORD: {secret: db/password}}",
        ),
        "templates": (
            "Files rendered from configs, secrets and services before it starts (see #template).",
            "[{destination: app.conf, data: 'port={{ env.PODIUM_PORT_HTTP }}'}]",
        ),
        "restart": ("This task's own restart policy (see #restart).", "{attempts: 10}"),
        "kill_signal": ("The signal that asks it to stop.", "SIGINT"),
        "kill_timeout": ("How long it has to stop before SIGKILL.", "30s"),
        "upstreams": (
            "Services it reaches through the node's proxy (see #upstream).",
            "[{service: api, local_port: 9001}]",
        ),
    },
    "resources": {
        "cpu": (
            "CPU in MHz-equivalents (1-1000000): what placement counts, the task's share, and"
            " a hard limit (a CFS quota of `cpu` / the node's `cpu.frequency` cores).",
            "500",
        ),
        "memory": ('Memory in MB (1-10000000); "512MB" and "2GB" are accepted.', "512MB"),
        "pids": (
            "Most processes and threads the task may have (a cgroup pids limit); 0 takes the"
            " node's default (`podium agent --pids-limit`, 4096).",
            "256",
        ),
    },
    "restart": {
        "attempts": ("Restarts allowed within `interval` (0-1000).", "5"),
        "interval": ("The window `attempts` counts in.", "10m"),
        "delay": ("The wait before each restart.", "3s"),
        "mode": (
            "When attempts run out: `fail` fails the allocation (the server reschedules it); "
            "`delay` waits for the window to pass and goes on.",
            "delay",
        ),
    },
    "reschedule": {
        "attempts": ("Replacements allowed within `interval` (0-1000), unless `unlimited`.", "3"),
        "interval": ("The window `attempts` counts in.", "1h"),
        "delay": ("The wait before the first replacement.", "5s"),
        "max_delay": ("The longest wait, however often it failed.", "5m"),
        "delay_function": ("`constant`, or `exponential`: the wait doubles each time.", "constant"),
        "unlimited": ("Replace without a cap on attempts.", "false"),
    },
    "update": {
        "max_parallel": ("Copies replaced at a time; 0: all at once, without a deployment.", "2"),
        "min_healthy_time": ("A new copy must stay healthy this long to count.", "10s"),
        "healthy_deadline": (
            "...or it is unhealthy after this long, and the deployment fails.",
            "2m",
        ),
        "progress_deadline": (
            "No new healthy copy this long: the deployment fails (0: none).",
            "15m",
        ),
        "auto_revert": ("A failed deployment rolls back to the last stable version.", "false"),
        "auto_promote": ("Promote the canaries once they are all healthy.", "true"),
        "canary": (
            "New copies started beside the old ones first; equal to `count` is blue-green.",
            "1",
        ),
        "health_check": (
            "What healthy means: `checks` (every task running, every check passing) or "
            "`task_states` (running is enough).",
            "task_states",
        ),
        "unhealthy_after": (
            "Fail fast: a new copy is unhealthy at once when one of its checks fails this many "
            "times in a row, or its tasks exit this many times (0-1000; 0: only "
            "`healthy_deadline` judges).",
            "5",
        ),
        "check_grace": (
            "Check failures this soon after a task starts are not counted (it is starting).",
            "30s",
        ),
    },
    "migrate": {
        "max_parallel": ("Copies of the group moving off a draining node at once (1-10000).", "2"),
    },
    "disconnect": {
        "stop_after_disconnect": (
            "The node's agent stops the copy after this long without any server (0: never).",
            "30s",
        ),
        "lost_after": (
            "The server waits this long after the node is down before it replaces the copy "
            "(0: at once).",
            "1m",
        ),
        "reconcile": (
            "When the node comes back: keep_original runs the copy on and cancels its "
            "replacement unless that already runs on another node; keep_replacement stops "
            "the copy.",
            "keep_replacement",
        ),
    },
    "network": {
        "ports": ("Port labels and their specs (see #port).", "{http: {}, admin: {static: 9000}}"),
    },
    "port": {
        "static": (
            "A fixed port number (1-65535); 0 picks a free one from the node's range.",
            "8080",
        ),
    },
    "service": {
        "name": ("The service's name (DNS: `NAME.service.podium`), unique in the group.", "web"),
        "port": ("The port label it is reached at.", "http"),
        "tags": ("Tags (DNS: `TAG.NAME.service.podium`).", "[v2, blue]"),
        "checks": ("Its health checks (see #check).", "[{type: http, path: /health}]"),
        "meta": (
            'Free-form strings; `weight` ("1" by default) weighs a copy in the proxy.',
            "{weight: '2'}",
        ),
        "ingress": ("Outside HTTP routing (see #ingress).", "{host: api.example.com, path: /}"),
    },
    "check": {
        "name": ("The check's name, unique in the group.", "web-ready"),
        "type": (
            "`http` (a 2xx or 3xx answer; redirects are not followed), `tcp` (a connection), "
            "or `command` (exit code 0).",
            "tcp",
        ),
        "port": (
            "The port label it checks (never one of the node's own listeners: the agent and "
            "server API, the proxy, the ingress).",
            "http",
        ),
        "path": (
            'HTTP path to request: starts with "/", visible ASCII only (no spaces, CR or LF), '
            "at most 1024 characters.",
            "/health",
        ),
        "method": ("HTTP method.", "HEAD"),
        "command": (
            "For `command` checks: the command and its arguments, run inside the group's first "
            "task through its driver (its cgroup, its container, its environment); one string "
            "is split like a shell would.",
            "[pg_isready, -q]",
        ),
        "interval": ("How often it runs.", "5s"),
        "timeout": ("How long one run may take (at most the interval).", "2s"),
    },
    "ingress": {
        "host": ("The Host header to match (no port); empty: any host.", "api.example.com"),
        "path": ('A URL path prefix, starting with "/".', "/api"),
    },
    "template": {
        "destination": (
            "Where the file goes, inside the task's directory (`PODIUM_TASK_DIR`, the working "
            "directory of a process, `/local` in a container); under `secrets/` it goes on a "
            "tmpfs, removed when the copy stops.",
            "secrets/db.env",
        ),
        "data": (
            'The template\'s text (Jinja2): `{{ config("db/settings")["host"] }}`, '
            '`secret("PATH")`, `service("api")` (healthy endpoints), `env`, `node`.',
            '\'host={{ config("db/settings")["host"] }}\'',
        ),
        "source": (
            "A file beside the job file whose text the CLI reads into `data`.",
            "app.conf.j2",
        ),
        "change_mode": (
            "When what it reads changes: `rolling` replaces the copies as a deployment under "
            "the group's `update` policy (health gated, auto_revert to the previous version); "
            "`restart` restarts the task in place after a random wait of up to `splay`; "
            "`signal` sends `change_signal` to the running task; `noop` only updates the file.",
            "signal",
        ),
        "change_signal": ("The signal `signal` sends.", "SIGUSR1"),
        "splay": ("The longest random wait before a `restart`.", "30s"),
        "perms": ("The file's permissions, as an octal string.", "'0640'"),
        "env": (
            "Read the rendered file as KEY=value lines into the task's environment "
            "(`rolling` or `restart` only).",
            "true",
        ),
        "reads": (
            "Set by the server from the text: the configs, secrets and services it reads.",
            "['config:db/settings']",
        ),
    },
    "env-ref": {
        "secret": ("The secret to read (its path); or `config`.", "db/password"),
        "config": ("The config to read (its path); or `secret`.", "db/settings"),
        "key": ("Which of its keys.", "host"),
    },
    "upstream": {
        "service": ("The service to reach.", "api"),
        "namespace": (
            "The service's namespace, when it is not the job's (submitting the job then "
            "needs read-job there, with ACL on).",
            "shared",
        ),
        "local_port": ("The port on 127.0.0.1 the task connects to (1-65535).", "9001"),
        "mode": ("`tcp` (bytes), or `http` (requests: retries, per-request balancing).", "http"),
        "policy": (
            "How copies are picked: `round_robin`, `weighted` (meta.weight), `least_conn`.",
            "least_conn",
        ),
    },
    "constraint": {
        "attribute": (
            "`${node.name}`, `${node.id}`, `${node.datacenter}`, `${node.address}`, "
            "`${node.labels.X}` or `${node.attributes.X}` (`${meta.X}` and `${attr.X}` are "
            "aliases; the braces may be left out).",
            "'${node.labels.zone}'",
        ),
        "operator": (
            '`=` (`==`), `!=`, `regexp` (RE2), `version` (e.g. ">= 1.2, < 2"), '
            "`set_contains` (comma-separated values), or `distinct_hosts` (no attribute: "
            "copies on different nodes).",
            "regexp",
        ),
        "value": ("What the attribute is compared with.", "^eu-"),
    },
    "spread": {
        "attribute": (
            "The node attribute to spread over, as in a constraint.",
            "'${node.datacenter}'",
        ),
        "weight": ("1-100: its say against the group's other spreads.", "80"),
        "targets": (
            "Attribute value -> percent of the copies (`target` is accepted too); values not "
            "named share what is left; none named: an even share per value.",
            "{a: 70, b: 30}",
        ),
    },
}

# Other names a field is accepted under (canonicalize rewrites them), by section.
MEANINGS["periodic"] = {
    "schedule": (
        "Cron expressions: 5 fields (minute hour day month weekday), 6 with seconds first, or a "
        "macro such as `@daily`; one, or a list (a run at every time any of them names).",
        '["0 9 * * 1-5", "0 12 * * 6"]',
    ),
    "time_zone": (
        "The IANA zone the schedule is read in. DST: a time that does not exist runs at the "
        "end of the gap; in the repeated hour a schedule with fixed hours runs once.",
        "Europe/Berlin",
    ),
    "concurrency": (
        "A run falls due while an earlier one still runs: `allow` it, `forbid` it (skipped, "
        "with an event), or `replace` the earlier one (stopped first).",
        "forbid",
    ),
    "starting_deadline": (
        "A run that would start later than this after its time is skipped, with an event "
        "(after downtime); 0: never skipped for lateness.",
        "5m",
    ),
    "successful_history": ("Runs that completed, kept; older ones are purged.", "10"),
    "failed_history": ("Runs that failed or were stopped, kept; older ones are purged.", "3"),
    "suspend": ("No runs while true; runs due meanwhile are not caught up.", "true"),
}
MEANINGS["parameterized"] = {
    "payload": (
        "Whether a dispatch must (`required`), may (`optional`) or must not (`forbidden`) "
        "carry a payload.",
        "required",
    ),
    "meta_required": ("Meta keys every dispatch must give.", "[customer]"),
    "meta_optional": ("Meta keys a dispatch may give; no others are taken.", "[format]"),
}

ALIASES: dict[str, dict[str, str]] = {"spread": {"target": "targets"}}

VALUES = """\
## Values

- **Names** (job, namespace, group, task, service): 1-63 lowercase letters, digits or
  `-`, starting and ending with a letter or digit.
- **Durations**: a number of seconds, or a string such as `"500ms"`, `"5s"`, `"1m30s"`,
  `"2h"`, `"1d"` (at most ten years).
- **`null`** (or an empty YAML value) means "the default" for every optional field.
- **Strings from numbers**: in `env` and `meta`, numbers and booleans become strings.
- **Port labels**: a letter, then letters, digits, `_` or `-`; two labels may not map to
  the same `PODIUM_PORT_<LABEL>`.
- **Interpolation**: `${...}` in a task's `config` and `env` is filled in on the node
  (`${PODIUM_PORT_HTTP}`, `${node.name}`, ...).
- A file is at most 4 MiB, nested at most 64 levels, with at most 100,000 values.
"""


# ------------------------------------------------------------------ reading the model


def base_doc() -> dict[str, Any]:
    """A valid job with one of everything: where defaults are read and examples tried."""
    return {
        "name": "example",
        "constraints": [{"attribute": "${node.datacenter}", "value": "dc1"}],
        "groups": [
            {
                "name": "web",
                "constraints": [{"attribute": "${node.datacenter}", "value": "dc1"}],
                "spreads": [{"attribute": "${node.datacenter}"}],
                "network": {"ports": {"http": {}}},
                "services": [
                    {"name": "web", "port": "http", "checks": [{}], "ingress": {}},
                ],
                "scaling": {
                    "max": 5,
                    "policies": [
                        {"metric": "cpu", "target": 60},
                        {"predictive": {}, "target": 10},
                    ],
                },
                "tasks": [
                    {
                        "name": "server",
                        "config": {"command": "sleep", "args": ["1000"]},
                        "env": {"DB_PASSWORD": {"secret": "db/password"}},
                        "upstreams": [{"service": "api", "local_port": 9001}],
                        "templates": [{"destination": "app.conf", "data": "port=1"}],
                    }
                ],
            }
        ],
    }


def at(doc: Any, path: Path) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def _yaml(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text: str = yaml.safe_dump(value, default_flow_style=True, width=1000, sort_keys=False)
    return text.strip().removesuffix("\n...").removesuffix("...").strip()


def with_value(path: Path, value: object) -> dict[str, Any]:
    """The base document with `value` at `path` (mappings on the way made as needed)."""
    doc = base_doc()
    where: Any = doc
    for part in path[:-1]:
        if isinstance(part, str) and not isinstance(where.get(part), dict | list):
            where[part] = {}
        where = where[part]
    where[path[-1]] = value
    return doc


def _is_duration(section: Section, name: str) -> bool:
    canonical = spec.canonicalize(with_value((*section.path, name), "1m"))
    return bool(at(canonical, section.path).get(name) == 60.0)


def _type_words(section: Section, name: str, annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin in (Union, pytypes.UnionType):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        return " or ".join(_type_words(section, name, a) for a in inner)
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in get_args(annotation))
    if origin is list:
        (item,) = get_args(annotation)
        if isinstance(item, type) and issubclass(item, msgspec.Struct):
            return f"list of {_anchor_of(item)}"
        return f"list of {_type_words(section, name, item)}s"
    if origin is dict:
        _, value = get_args(annotation)
        if isinstance(value, type) and issubclass(value, msgspec.Struct):
            return f"mapping of labels to {_anchor_of(value)}"
        if value is Any:
            return "mapping (see [config](#config))"
        if get_origin(value) in (Union, pytypes.UnionType):
            kinds = [a for a in get_args(value) if a is not type(None)]
            return "mapping of strings to " + " or ".join(
                f"{_type_words(section, name, a)}s" if a is str else _anchor_of(a) for a in kinds
            )
        return f"mapping of strings to {_type_words(section, name, value)}s"
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return f"mapping: {_anchor_of(annotation)}"
    if annotation is bool:
        return "boolean"
    if annotation is int:
        return "integer"
    if annotation is str:
        return "string"
    if annotation is float:
        return "duration" if _is_duration(section, name) else "number"
    raise ValueError(f"{section.anchor}.{name}: no words for the type {annotation!r}")


def _anchor_of(kind: type) -> str:
    for s in SECTIONS:
        if s.kind is kind:
            return f"[{s.anchor}](#{s.anchor})"
    raise ValueError(f"no section documents {kind.__name__}")


def _defaults(section: Section) -> tuple[dict[str, Any], dict[str, Any]]:
    """The section's canonical values in a service job and in a batch job (for the cron
    and dispatch sections: in such a job)."""
    if section.anchor in _JOB_OF:
        values = at(spec.canonicalize(example_doc(section, "", None)), section.path)
        return values, values
    service = at(spec.canonicalize(base_doc()), section.path)
    batch = at(spec.canonicalize({**base_doc(), "type": "batch"}), section.path)
    return service, batch


# The job a section or field needs around it: its type, and what that type requires.
_JOB_OF: dict[str, dict[str, Any]] = {
    "periodic": {"type": "cron", "periodic": {"schedule": "@daily"}},
    "parameterized": {"type": "batch", "parameterized": {}},
}
_FIELD_JOB: dict[tuple[str, str], dict[str, Any]] = {
    ("job", "schedule"): {"type": "cron"},
    ("job", "periodic"): {"type": "cron"},
    ("job", "parameterized"): {"type": "batch"},
    **{("group", f): {"type": "batch"} for f in spec.BATCH_FIELDS},
}


def example_doc(section: Section, name: str, value: object) -> dict[str, Any]:
    """The base document with `value` as the section's field `name` ("" for none), in a
    job of the type the field needs (a cron job for `periodic`, a batch job for a batch
    group's fields...)."""
    doc = base_doc()
    for key, needed in {**_JOB_OF.get(section.anchor, {}),
                        **_FIELD_JOB.get((section.anchor, name), {})}.items():  # fmt: skip
        doc[key] = dict(needed) if isinstance(needed, dict) else needed
    if not name:
        return _service_only(doc)
    where: Any = doc
    path = (*section.path, name)
    for part in path[:-1]:
        if isinstance(part, str) and not isinstance(where.get(part), dict | list):
            where[part] = {}
        where = where[part]
    where[path[-1]] = value
    for other in _REPLACES.get((section.anchor, name), ()):
        where.pop(other, None)
    return _service_only(doc)


def _service_only(doc: dict[str, Any]) -> dict[str, Any]:
    """Only a service job's groups scale themselves: no `scaling` in another job's."""
    if doc.get("type", "service") != "service" and isinstance(doc.get("groups"), list):
        for group in doc["groups"]:
            if isinstance(group, dict):
                group.pop("scaling", None)
    return doc


# Fields whose example stands in for a sibling of the base document's.
_REPLACES: dict[tuple[str, str], tuple[str, ...]] = {
    ("scaling-policy", "prometheus"): ("metric",),
    ("scaling-policy", "predictive"): ("metric",),
}


def _default_words(section: Section, f: msgspec.structs.FieldInfo) -> str:
    if f.required:
        return "required"
    if section.kind is t.Job and f.name in spec.STORED_FIELDS:
        return "set by the server"
    if section.anchor == "task" and f.name == "restart":
        return "the group's"
    if section.anchor == "check" and f.name == "name":
        return "`<service>-<type>-<index>`"
    if section.anchor == "check" and f.name == "port":
        return "the service's port"
    if section.anchor == "periodic" and f.name == "schedule":
        return "required (or the job's `schedule`)"
    if section.anchor == "scaling-policy" and f.name in ("metric", "target"):
        return {
            "metric": "required (or `prometheus` or `predictive`)",
            "target": "required (predictive: the reactive policy's on its metric)",
        }[f.name]
    if section.anchor == "job" and f.name == "priority":
        return "`50` (system: `100`)"
    if section.anchor == "group" and f.name in spec.BATCH_FIELDS:
        return {
            "completions": "none (batch and cron: `count`)",
            "parallelism": "none (batch and cron: `completions`, all at once)",
            "backoff_limit": f"none (batch and cron: `{spec.DEFAULT_BACKOFF_LIMIT}`)",
            "active_deadline": "none (batch and cron: `0`, no deadline)",
        }[f.name]
    nested = _nested(section.kind, f.name)
    if nested is not None and get_origin(f.type) not in (list, dict):
        return f"see [{_anchor_name(nested)}](#{_anchor_name(nested)})"
    service, batch = _defaults(section)
    parent = _walk(base_doc(), list(section.path))
    parent = parent if isinstance(parent, dict) else {}
    # Set in the base document: its default is the struct's.
    given = f.name in parent
    value = _struct_default(section.kind, f.name) if given else service.get(f.name)
    duration = f.type is float and _is_duration(section, f.name)
    words = _value_words(value, duration=duration)
    if f.name not in parent and batch.get(f.name) != value:
        words += f" (batch and cron: {_value_words(batch.get(f.name), duration=duration)})"
    return words


def _anchor_name(kind: type) -> str:
    return next(s.anchor for s in SECTIONS if s.kind is kind)


def _struct_default(kind: type[msgspec.Struct], name: str) -> Any:
    for f in msgspec.structs.fields(kind):
        if f.name == name:
            if f.default is not msgspec.NODEFAULT:
                return f.default
            if f.default_factory is not msgspec.NODEFAULT:
                return f.default_factory()
    return None


def _value_words(value: Any, *, duration: bool = False) -> str:
    value = msgspec.to_builtins(value)
    if duration and isinstance(value, int | float):
        return f"`{_duration(float(value))}`"
    if value is None or value == [] or value == {}:
        return "none"
    if value == "":
        return '`""`'
    if isinstance(value, str):
        return f"`{value}`"
    return f"`{_yaml(value)}`"


def _duration(seconds: float) -> str:
    """300.0 -> "5m", 86400.0 -> "1d", 1.5 -> "1.5s"."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size and (seconds / size).is_integer():
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


# ------------------------------------------------------------------ writing the page


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _section_md(section: Section) -> list[str]:
    words = MEANINGS.get(section.anchor)
    if words is None:
        raise ValueError(f"MEANINGS has no section {section.anchor!r}")
    fields = msgspec.structs.fields(section.kind)
    names = [f.name for f in fields]
    missing = [n for n in names if n not in words]
    extra = [n for n in words if n not in names]
    if missing or extra:
        raise ValueError(
            f"{section.anchor}: fields without words {missing}, words without a field {extra}; "
            f"edit MEANINGS in {__name__}"
        )
    out = [f"## {section.anchor}", "", section.intro, ""]
    out += ["| field | type | default | meaning | example |", "| --- | --- | --- | --- | --- |"]
    for f in fields:
        meaning, example = words[f.name]
        out.append(
            f"| `{f.name}` | {_cell(_type_words(section, f.name, f.type))} | "
            f"{_cell(_default_words(section, f))} | {_cell(_link(meaning))} | "
            f"`{_cell(example)}` |"
        )
    for alias, target in ALIASES.get(section.anchor, {}).items():
        out.append(f"| `{alias}` | | | the same as `{target}` | |")
    out.append("")
    return out


def render_path(path: Path) -> str:
    """("groups", 0, "update") -> "groups[0].update", as problems name places."""
    out = ""
    for part in path:
        out = spec._at(out, part)
    return out


def _link(text: str) -> str:
    return re.sub(r"\(see #([a-z-]+)\)", r"(see [\1](#\1))", text)


def _config_md() -> list[str]:
    out = [
        "## config",
        "",
        "A task's `config` is its driver's: each driver takes the fields below and no others.",
        "",
    ]
    for name in sorted(SCHEMAS):
        schema = SCHEMAS[name]
        out += [f"### config: {name}", "", schema.summary, ""]
        out += ["| field | type | default | meaning | example |", "| --- | --- | --- | --- | --- |"]
        for f in schema.fields:
            default = "required" if f.required else (f.default or "none")
            out.append(
                f"| `{f.name}` | {_cell(f.type_words())} | {_cell(default)} | {_cell(f.help)} | "
                f"`{_cell(_yaml(f.example))}` |"
            )
        out += ["", "```yaml", f"driver: {name}", f"config: {_yaml(schema.example)}", "```", ""]
    return out


def markdown() -> str:
    out = [
        "# Job file reference",
        "",
        "<!-- Generated from the model (podium/model/spec_doc.py): "
        "`.venv/bin/python -m podium.model.spec_doc > docs/job-spec.md`. Do not edit. -->",
        "",
        "A job file is YAML, or JSON when its name ends in `.json`. `podium job validate FILE` "
        "checks one without a server and names every problem with its path and a link to the "
        "section here; `podium job inspect NAME` prints a stored job in this form, ready to edit "
        "and run again. Sections: "
        + ", ".join(f"[{s.anchor}](#{s.anchor})" for s in SECTIONS)
        + ", [config](#config), [values](#values).",
        "",
        "```yaml",
        EXAMPLE.strip(),
        "```",
        "",
    ]
    for section in SECTIONS:
        out += _section_md(section)
    out += _config_md()
    out += [VALUES]
    return "\n".join(out).rstrip() + "\n"


EXAMPLE = """\
name: web
type: service
groups:
  - name: frontend
    count: 3
    network:
      ports: {http: {}}
    update: {max_parallel: 1, canary: 1, auto_promote: true}
    services:
      - name: web
        port: http
        checks: [{type: http, path: /, interval: 2s, timeout: 1s}]
    tasks:
      - name: server
        driver: process
        config: {command: python3, args: ["-m", "http.server", "${PODIUM_PORT_HTTP}"]}
        resources: {cpu: 500, memory: 64}
"""


# ------------------------------------------------------------------ links from problems


def doc_link(path: str, raw: object = None) -> str:
    """The section of docs/job-spec.md a problem at `path` is about ("" for the document).

    `raw`, the job as written, tells which driver a task's `config` belongs to.
    """
    parts: list[str | int] = []
    for name, index in re.findall(r"([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]", path):
        parts.append(int(index) if index else name)
    anchor, kind = "job", cast(type[msgspec.Struct], t.Job)
    for i, part in enumerate(parts):
        if isinstance(part, int):
            continue
        if kind is t.Task and part == "config":
            task = _walk(raw, parts[:i])
            driver = task.get("driver") if isinstance(task, dict) else None
            driver = driver if isinstance(driver, str) and driver in SCHEMAS else "process"
            return f"{DOC}#config-{driver}"
        if kind is t.NetworkSpec and part == "ports":
            return f"{DOC}#port"
        if kind is t.Group and part == "spread":
            return f"{DOC}#spread"
        nested = _nested(kind, part)
        if nested is None:
            break
        kind = nested
        anchor = next(s.anchor for s in SECTIONS if s.kind is kind)
    return f"{DOC}#{anchor}"


def _walk(doc: object, parts: list[str | int]) -> object:
    for part in parts:
        try:
            doc = doc[part]  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            return None
    return doc


def _nested(kind: type[msgspec.Struct], name: str) -> type[msgspec.Struct] | None:
    for f in msgspec.structs.fields(kind):
        if f.name != name:
            continue
        annotation = f.type
        for _ in range(3):
            origin = get_origin(annotation)
            if origin in (Union, pytypes.UnionType):
                annotation = next(a for a in get_args(annotation) if a is not type(None))
            elif origin in (list, dict):
                annotation = get_args(annotation)[-1]
        if (
            isinstance(annotation, type)
            and issubclass(annotation, msgspec.Struct)
            and any(s.kind is annotation for s in SECTIONS)
        ):
            return annotation
    return None


if __name__ == "__main__":
    sys.stdout.write(markdown())
