"""Job files: parse YAML/JSON, fill every default (canonicalize), report every problem (validate).

    text --parse_job_text--> dict --canonicalize--> dict --validate--> types.Job

`types.py` owns the shape of a job; this module owns its rules. It is pure (no I/O) and
total: any input gives a Job or a ValidationError listing every problem with its path,
never another exception, so a bad file cannot crash a server.

Rules a user meets:
- Job, namespace, group, task and service names are DNS labels: 1-63 lowercase letters,
  digits or '-', starting and ending with a letter or digit, so `NAME.service.podium`
  and alloc names need no escaping anywhere.
- Port labels: a letter, then letters, digits, '_' or '-' (at most 63). A task sees each
  as `PODIUM_PORT_<LABEL>` (upper-cased, '-' -> '_'), so two labels may not collide there.
- `null` means "use the default" for every optional field (YAML's bare `env:`).
- Durations are seconds (a number) or strings such as "500ms", "5s", "1m30s", "2h", "1d".
- Constraint attributes: `${node.name}`, `${node.id}`, `${node.datacenter}`,
  `${node.address}`, `${node.labels.X}`, `${node.attributes.X}`; the aliases `${meta.X}`
  and `${attr.X}` are rewritten to the labels/attributes forms.
"""

from __future__ import annotations

import datetime
import json
import math
import re
import shlex
import signal
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

import msgspec
import yaml

from podium.drivers.schemas import SCHEMAS
from podium.errors import Problem, ValidationError
from podium.model import data as datamodel
from podium.model.cron import MACROS as _CRON_MACROS
from podium.model.cron import cron_ok, time_zone
from podium.model.pattern import PatternError, compile_pattern
from podium.model.show import near, show, unknown_field
from podium.model.types import (
    Check,
    Constraint,
    DisconnectPolicy,
    EnvRef,
    Group,
    Ingress,
    Job,
    MigrateStrategy,
    NetworkSpec,
    Node,
    Parameterized,
    Periodic,
    PortSpec,
    Predictive,
    ReschedulePolicy,
    Resources,
    RestartPolicy,
    Scaling,
    ScalingPolicy,
    ServiceSpec,
    Spread,
    Task,
    Template,
    UpdateStrategy,
    Upstream,
)

JOB_TYPES = ("service", "batch", "system", "cron")
OPERATORS = ("=", "!=", "regexp", "version", "set_contains", "distinct_hosts")
CHECK_TYPES = ("http", "tcp", "command")
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
MAX_DURATION = 3650 * 86400.0  # ten years: beyond it timers overflow and it is surely a typo
MAX_VALUES = 100_000  # per document, counting YAML aliases each time they are used
MAX_DEPTH = 64
MAX_CONFIG_VALUES = 10_000  # per task config
MAX_CONFIG_DEPTH = 32
MAX_ITEMS = 1000  # per list or mapping in the spec (groups, tasks, env, ...)
SIGNALS = frozenset(s.name for s in signal.Signals)
# Set by the server; accepted (a job read back can be submitted again) and ignored.
SERVER_FIELDS = ("version", "stop", "submit_time", "revision", "parent", "payload")
# Every field the server sets on a stored version (the rest is the user's spec).
STORED_FIELDS = (*SERVER_FIELDS, "submitted_by", "stable", "config_versions")
CHANGE_MODES = ("rolling", "restart", "signal", "noop")
MAX_TEMPLATE_BYTES = 1024 * 1024  # of one template's text (the sandbox's own limit)
MAX_JOB_BYTES = 4 * 1024 * 1024  # the server's request body limit (runtime.bodies.MAX_BODY)
BATCH_FIELDS = ("completions", "parallelism", "backoff_limit", "active_deadline")
CONCURRENCY = ("allow", "forbid", "replace")
DEFAULT_BACKOFF_LIMIT = 6  # as Kubernetes' Job
MAX_CHECK_PATH = 1024

_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*")
NAME_RULE = "of 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit"
_PORT_LABEL = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,62}")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_ATTRIBUTE = re.compile(
    r"\$\{node\.(?:id|name|datacenter|address)\}"
    r"|\$\{node\.(?:labels|attributes)\.[A-Za-z0-9_./-]+\}"
)
_ATTRIBUTE_ALIASES = (("${meta.", "${node.labels."), ("${attr.", "${node.attributes."))
_VERSION_CLAUSE = re.compile(
    r"\s*(?:=|==|!=|>=|<=|>|<|~>)?\s*v?\d+(?:\.\d+)*(?:-[0-9A-Za-z.-]+)?\s*"
)
PAYLOAD_RULES = ("optional", "required", "forbidden")
_DURATION = re.compile(r"(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|ms|s|m|h|d))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}
_DURATION_UNITS |= {"h": 3600.0, "d": 86400.0}
_BRACKETS = re.compile(r"[\[\]{}]")
_CHECK_PATH = re.compile(r"/[\x21-\x7e]*")  # visible ASCII: no space, CR, LF or other control
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(mb|mib|m|gb|gib|g|tb|tib|t)\s*", re.IGNORECASE)
_SIZE_MB = {"m": 1, "g": 1024, "t": 1024 * 1024}

_RESTART_DURATIONS = ("interval", "delay")
_RESCHEDULE_DURATIONS = ("interval", "delay", "max_delay")
_UPDATE_DURATIONS = ("min_healthy_time", "healthy_deadline", "progress_deadline", "check_grace")
_DISCONNECT_DURATIONS = ("stop_after_disconnect", "lost_after")


# ----------------------------------------------------------------- parsing


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as "500ms", "5s", "1m30s", "2h", "1d".

    Raises ValueError (with a message fit for a user) on negatives, garbage, NaN/inf
    and anything longer than ten years.
    """
    expected = (
        'expected a duration such as "500ms", "5s", "1m30s" or a number of seconds, '
        f"got {show(value)}"
    )
    if isinstance(value, bool):
        raise ValueError(expected)
    if isinstance(value, int) and abs(value) > MAX_DURATION:
        seconds = math.inf if value > 0 else -math.inf  # float() of a huge int would overflow
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("-") and len(text) < 64:
            raise ValueError(f"expected a duration that is not negative, got {show(value)}")
        if len(text) > 64:
            raise ValueError(expected)
        if re.fullmatch(r"\d+(?:\.\d*)?|\.\d+", text):
            seconds = float(text)  # a bare number in a string: seconds, as for numbers
        elif _DURATION.fullmatch(text):
            seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))
        else:
            raise ValueError(expected)
    else:
        raise ValueError(expected)
    if math.isnan(seconds):
        raise ValueError(expected)
    if seconds < 0:
        raise ValueError(f"expected a duration that is not negative, got {show(value)}")
    if seconds > MAX_DURATION:
        raise ValueError(f"expected a duration of at most 3650d, got {show(value)}")
    return seconds


def _construct_mapping(loader: Any, node: Any) -> dict[Any, Any]:
    # PyYAML silently keeps the last of two equal keys; a user who wrote `count` twice
    # deserves to hear about it. Keys arriving through `<<` merges may be overridden.
    seen: set[str] = set()
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
            if key_node.value in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {show(key_node.value)}", key_node.start_mark
                )
            seen.add(key_node.value)
    return cast(dict[Any, Any], loader.construct_mapping(node))


_Loader: Any = type("_Loader", (yaml.SafeLoader,), {})
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {show(key)}")
        out[key] = value
    return out


def parse_job_text(text: str, *, filename: str = "") -> dict[str, Any]:
    """The raw mapping in a job file: JSON when `filename` ends in .json, else YAML.

    Only safe YAML is read (no Python objects). Syntax errors carry line and column.
    """
    where = f"{filename}: " if filename else ""
    if _flow_depth(text) > MAX_DEPTH:
        # PyYAML's scanner is quadratic in flow nesting: refuse before it spends seconds.
        raise _bad(f"{where}the document is nested more than {MAX_DEPTH} levels deep")
    data: Any
    try:
        if filename.endswith(".json"):
            try:
                data = json.loads(text, object_pairs_hook=_json_pairs)
            except json.JSONDecodeError as e:
                raise _bad(
                    f"{where}invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}"
                ) from None
        else:
            try:
                data = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no Python objects
            except yaml.MarkedYAMLError as e:
                mark = e.problem_mark
                at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
                raise _bad(f"{where}invalid YAML{at}: {e.problem or e}") from None
            except yaml.YAMLError as e:
                raise _bad(f"{where}invalid YAML: {' '.join(str(e).split())}") from None
    except RecursionError:
        raise _bad(f"{where}the document is nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as e:
        # Huge integers, impossible dates ("2024-13-45"), duplicate JSON keys.
        raise _bad(f"{where}invalid document: {' '.join(str(e).split())[:200]}") from None
    if not isinstance(data, dict):
        got = "an empty document" if data is None else show(data)
        raise _bad(
            f"{where}expected a job: a mapping with fields such as name and groups, got {got}"
        )
    _check_size(data, where)
    return cast(dict[str, Any], data)


def _flow_depth(text: str) -> int:
    """The deepest bracket nesting, counting brackets inside strings too (a rough bound)."""
    depth = deepest = 0
    for bracket in _BRACKETS.findall(text):
        depth = depth + 1 if bracket in "[{" else max(depth - 1, 0)
        deepest = max(deepest, depth)
    return deepest


def _bad(message: str) -> ValidationError:
    return ValidationError([Problem("", message)])


def _check_size(data: object, where: str) -> None:
    # YAML aliases can make a small file expand to billions of values ("billion laughs")
    # or loop back on itself; count every use so later walks stay bounded.
    stack: list[tuple[object, int]] = [(data, 0)]
    count = 0
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise _bad(f"{where}the document is too large: more than {MAX_VALUES} values")
        if depth > MAX_DEPTH:
            raise _bad(f"{where}the document is nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


# ----------------------------------------------------------- canonicalize


def _restart_defaults(job_type: str) -> dict[str, Any]:
    long_interval = job_type in ("batch", "cron")
    interval = 86400.0 if long_interval else 300.0
    return {"attempts": 3, "interval": interval, "delay": 1.0, "mode": "fail"}


def _reschedule_defaults(job_type: str) -> dict[str, Any]:
    if job_type in ("batch", "cron"):
        return {
            "attempts": 1,
            "interval": 86400.0,
            "delay": 5.0,
            "max_delay": 60.0,
            "delay_function": "constant",
            "unlimited": False,
        }
    return {
        "attempts": 0,
        "interval": 0.0,
        "delay": 1.0,
        "max_delay": 60.0,
        "delay_function": "exponential",
        "unlimited": True,
    }


def _update_defaults() -> dict[str, Any]:
    return {
        "max_parallel": 1,
        "min_healthy_time": 5.0,
        "healthy_deadline": 300.0,
        "progress_deadline": 600.0,
        "auto_revert": True,
        "auto_promote": False,
        "canary": 0,
        "health_check": "checks",
        "unhealthy_after": 3,
        "check_grace": 5.0,
    }


def canonicalize(raw: dict[str, Any]) -> dict[str, Any]:
    """A copy of `raw` with every default filled and durations as float seconds.

    The one place defaults live:
    - job: namespace "default", type "service", priority 50 (100 for system jobs, which
      so outrank the others and may preempt them), no constraints/meta.
    - cron: `type: cron` with `schedule` (short form) or `periodic:` on a batch job
      (the job becomes type cron); periodic {schedule: one expression or a list,
      time_zone "UTC", concurrency "allow", starting_deadline 0 (never skipped for
      lateness), successful_history 3, failed_history 1, suspend false}.
    - parameterized (dispatch jobs): {payload "optional", meta_required [],
      meta_optional []}.
    - group: count 1, spread false, no constraints/services/meta, no ports. Batch and
      cron groups: completions = count (either may be given), parallelism = completions
      (all at once), backoff_limit 6, active_deadline 0 (none); other groups: none.
    - restart (per task, local to the node): service and system jobs {attempts 3,
      interval 5m, delay 1s, mode fail}; batch and cron jobs {attempts 3, interval 24h,
      delay 1s, mode fail}. "fail" hands a task that keeps crashing back to the server,
      which reschedules the alloc (maybe elsewhere) with backoff. A task inherits its
      group's policy, field by field.
    - reschedule: service/system {unlimited, delay 1s doubling up to 60s}; batch/cron
      {1 attempt in 24h, delay 5s, constant}.
    - update: max_parallel 1, min_healthy_time 5s, healthy_deadline 5m,
      progress_deadline 10m, canary 0, auto_revert true, auto_promote false,
      health_check "checks", unhealthy_after 3, check_grace 5s.
    - migrate (drains): max_parallel 1. disconnect: stop_after_disconnect 0 (never),
      lost_after 0 (replace copies on a down node at once), reconcile keep_original (a
      copy whose node comes back runs on unless its replacement already runs elsewhere).
      shutdown_delay 0.
    - task: driver "process", config {}, resources {cpu 100, memory 64},
      kill_signal SIGTERM, kill_timeout 5s. Env and meta numbers/booleans become strings;
      memory may be written "512MB" or "2GB". No upstreams; an upstream: mode tcp,
      policy round_robin. An env value {secret|config: PATH} reads key "value".
    - template: change_mode rolling (service jobs) or restart (others), change_signal
      SIGHUP, splay 5s, perms "" (0644; 0400 under secrets/), env false.
    - service: port "", no tags, no meta, no ingress; an ingress: host "" (any), path "/".
      check: type http, port = the service's port,
      name "<service>-<type>-<i>", path "/", method GET, interval 2s, timeout 1s;
      a command given as one string is split like a shell would.
    - constraint: operator "=" ("==" accepted), attribute aliases rewritten.
    - scaling (service groups): min 1, no policies, interval 15s, cooldown 0,
      scale_down_window 5m, tolerance 0.1, idle_timeout 5m, hold_timeout 30s,
      hold_requests 1000, during_rollout false; max has no default. With scaling and no
      count, count = min (at least 1). A policy `{prometheus: QUERY}` has metric
      "prometheus"; predictive {metric rps, season 24h, lead 5m}, and its target, when
      not given, is the target of the reactive policy on the same metric. A latency_p95
      target may be written as a duration ("200ms").

    Never raises: a value of the wrong type stays where it is for `validate` to report.
    """
    if not isinstance(raw, dict):
        return raw
    job = dict(raw)
    _fill(job, "namespace", "default")
    _fill(job, "type", "service")
    _canon_periodic(job)
    kind = job["type"] if isinstance(job["type"], str) and job["type"] in JOB_TYPES else "service"
    _fill(job, "priority", 100 if kind == "system" else 50)
    if job.get("parameterized") is not None:
        job["parameterized"] = _merged(
            {"payload": "optional", "meta_required": [], "meta_optional": []},
            job["parameterized"],
        )
    job["constraints"] = _canon_list(job.get("constraints"), _canon_constraint)
    job["meta"] = _canon_str_map(job.get("meta"))
    job["groups"] = _canon_list(job.get("groups"), lambda g: _canon_group(g, kind))
    return job


def _canon_periodic(job: dict[str, Any]) -> None:
    """`type: cron` + `schedule`, or `periodic:` on a batch job: one canonical form, type
    cron with every setting in `periodic` (schedule a list) and the short form cleared."""
    _fill(job, "schedule", "")
    periodic, short = job.get("periodic"), job["schedule"]
    if periodic is None and job["type"] != "cron":
        return
    if periodic is None:
        periodic = {}
    if not isinstance(periodic, dict):
        return  # validate reports it
    periodic = dict(periodic)
    if periodic.get("schedule") is None and short != "":
        periodic["schedule"], job["schedule"] = short, ""
    if isinstance(periodic.get("schedule"), str):
        periodic["schedule"] = [periodic["schedule"]]
    defaults = {
        "schedule": [],
        "time_zone": "UTC",
        "concurrency": "allow",
        "starting_deadline": 0.0,
        "successful_history": 3,
        "failed_history": 1,
        "suspend": False,
    }
    job["periodic"] = _merged(defaults, periodic, ("starting_deadline",))
    if job["type"] == "batch":
        job["type"] = "cron"


def _fill(doc: dict[str, Any], key: str, default: object) -> None:
    if doc.get(key) is None:
        doc[key] = default


def _canon_list(value: object, canon: Callable[[dict[str, Any]], object]) -> object:
    if value is None:
        return []
    if isinstance(value, list) and len(value) <= MAX_ITEMS:  # longer: validate rejects it
        return [canon(x) if isinstance(x, dict) else x for x in value]
    return value


def _merged(defaults: dict[str, Any], given: object, durations: Iterable[str] = ()) -> object:
    if given is None:
        out = dict(defaults)
    elif isinstance(given, dict):
        # null means "the default" for a known field; an unknown one stays to be reported.
        out = {**defaults, **{k: v for k, v in given.items() if v is not None or k not in defaults}}
    else:
        return given
    for key in durations:
        out[key] = _try_duration(out.get(key))
    return out


def _try_duration(value: object) -> object:
    try:
        return parse_duration(value)
    except ValueError:
        return value


def _scalar_str(value: object) -> object:
    """Numbers, booleans and dates written where a string belongs, as strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and value.bit_length() <= 64:
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return str(value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    return value


def _canon_str_map(value: object) -> object:
    if value is None:
        return {}
    if isinstance(value, dict):
        return {k: _scalar_str(v) for k, v in value.items()}
    return value


def _canon_spread(raw: Any) -> Any:
    if not isinstance(raw, dict):
        return raw
    out = dict(raw)
    _fill(out, "weight", 50)
    targets = out.get("targets", out.pop("target", None))
    out["targets"] = {} if targets is None else targets
    if isinstance(out["targets"], dict):
        out["targets"] = {str(k): v for k, v in out["targets"].items()}
    return out


def _canon_group(raw: dict[str, Any], kind: str) -> dict[str, Any]:
    group = dict(raw)
    _fill(group, "count", 1)
    if isinstance(group.get("spread"), list):
        # `spread: [{attribute, targets, weight}]`: spread over an attribute's values.
        group["spreads"], group["spread"] = group["spread"], False
    _fill(group, "spread", False)
    group["spreads"] = _canon_list(group.get("spreads"), _canon_spread)
    group["constraints"] = _canon_list(group.get("constraints"), _canon_constraint)
    group["restart"] = _merged(_restart_defaults(kind), group.get("restart"), _RESTART_DURATIONS)
    group["reschedule"] = _merged(
        _reschedule_defaults(kind), group.get("reschedule"), _RESCHEDULE_DURATIONS
    )
    group["update"] = _merged(_update_defaults(), group.get("update"), _UPDATE_DURATIONS)
    group["migrate"] = _merged({"max_parallel": 1}, group.get("migrate"), ())
    group["disconnect"] = _merged(
        {"stop_after_disconnect": 0.0, "lost_after": 0.0, "reconcile": "keep_original"},
        group.get("disconnect"),
        _DISCONNECT_DURATIONS,
    )
    _fill(group, "shutdown_delay", 0.0)
    group["shutdown_delay"] = _try_duration(group["shutdown_delay"])
    if kind in ("batch", "cron"):
        if group.get("completions") is not None and raw.get("count") is None:
            group["count"] = group["completions"]
        _fill(group, "completions", group["count"])
        _fill(group, "parallelism", group["completions"])
        _fill(group, "backoff_limit", DEFAULT_BACKOFF_LIMIT)
        _fill(group, "active_deadline", 0.0)
        group["active_deadline"] = _try_duration(group["active_deadline"])
    if group.get("scaling") is not None:
        group["scaling"] = _canon_scaling(group["scaling"])
        scaling = group["scaling"]
        if raw.get("count") is None and isinstance(scaling, dict):
            low, high = scaling.get("min"), scaling.get("max")
            if _number(low) is not None:
                start = max(int(cast(int, low)), 1)
                group["count"] = min(start, high) if isinstance(high, int) else start
    group["network"] = _canon_network(group.get("network"))
    group["services"] = _canon_list(group.get("services"), _canon_service)
    restart = group["restart"]
    inherited = restart if isinstance(restart, dict) else _restart_defaults(kind)
    group["tasks"] = _canon_list(group.get("tasks"), lambda t: _canon_task(t, inherited, kind))
    group["meta"] = _canon_str_map(group.get("meta"))
    return group


SCALING_DEFAULTS: dict[str, Any] = {
    "min": 1,
    "policies": [],
    "interval": 15.0,
    "cooldown": 0.0,
    "scale_down_window": 300.0,
    "tolerance": 0.1,
    "idle_timeout": 300.0,
    "hold_timeout": 30.0,
    "hold_requests": 1000,
    "during_rollout": False,
}
_SCALING_DURATIONS = ("interval", "cooldown", "scale_down_window", "idle_timeout", "hold_timeout")
PREDICTIVE_DEFAULTS: dict[str, Any] = {"metric": "rps", "season": 86400.0, "lead": 300.0}


def _canon_scaling(value: object) -> object:
    scaling = _merged(SCALING_DEFAULTS, value, _SCALING_DURATIONS)
    if not isinstance(scaling, dict):
        return scaling
    policies = _canon_list(scaling.get("policies"), _canon_policy)
    scaling["policies"] = policies
    if isinstance(policies, list):
        # A predictive policy steers by the target of the reactive one on its metric.
        targets = {
            p["metric"]: p["target"]
            for p in policies
            if isinstance(p, dict) and p.get("predictive") is None and "target" in p
        }
        for p in policies:
            if isinstance(p, dict) and isinstance(p.get("predictive"), dict):
                metric = p["predictive"].get("metric")
                if p.get("target") is None and isinstance(metric, str) and metric in targets:
                    p["target"] = targets[metric]
    return scaling


def _canon_policy(raw: dict[str, Any]) -> dict[str, Any]:
    policy = dict(raw)
    if policy.get("metric") is None:
        policy["metric"] = "prometheus" if policy.get("prometheus") is not None else ""
    _fill(policy, "prometheus", "")
    if policy["metric"] == "latency_p95" and isinstance(policy.get("target"), str):
        policy["target"] = _try_duration(policy["target"])  # "200ms" as well as 0.2
    if policy.get("predictive") is not None:
        policy["predictive"] = _merged(
            PREDICTIVE_DEFAULTS, policy["predictive"], ("season", "lead")
        )
    return policy


def _canon_network(value: object) -> object:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        return value
    network = dict(value)
    ports = network.get("ports")
    if ports is None:
        ports = {}
    elif isinstance(ports, list) and all(isinstance(p, str) for p in ports):
        ports = dict.fromkeys(ports)  # `ports: [http, admin]`: all dynamic
    if isinstance(ports, dict):
        ports = {label: _canon_port(spec) for label, spec in ports.items()}
    network["ports"] = ports
    return network


def _canon_port(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool):
        return {"static": value}  # `http: 8080` is short for `http: {static: 8080}`
    return _merged({"static": 0}, value)


def default_change_mode(job_type: str) -> str:
    """`rolling` for services (a change rolls out as a deployment), `restart` otherwise."""
    return "rolling" if job_type == "service" else "restart"


def _canon_env(value: object) -> object:
    if not isinstance(value, dict):
        return _canon_str_map(value)
    out: dict[Any, Any] = {}
    for k, v in value.items():
        if isinstance(v, dict):
            out[k] = {"secret": "", "config": "", "key": "value"} | {
                f: x for f, x in v.items() if x is not None or f not in ("secret", "config", "key")
            }
        else:
            out[k] = _scalar_str(v)
    return out


def _canon_template(raw: dict[str, Any], kind: str) -> dict[str, Any]:
    template = dict(raw)
    _fill(template, "data", "")
    _fill(template, "source", "")
    _fill(template, "change_mode", default_change_mode(kind))
    _fill(template, "change_signal", "SIGHUP")
    template["change_signal"] = _canon_signal(template["change_signal"])
    _fill(template, "splay", 5.0)
    template["splay"] = _try_duration(template["splay"])
    _fill(template, "perms", "")
    _fill(template, "env", False)
    _fill(template, "reads", [])
    return template


def _canon_signal(value: object) -> object:
    if isinstance(value, str):
        name = value.strip().upper()
        name = name if name.startswith("SIG") else "SIG" + name
        if name in SIGNALS:
            return name
    return value


def _canon_task(raw: dict[str, Any], group_restart: dict[str, Any], kind: str) -> dict[str, Any]:
    task = dict(raw)
    _fill(task, "driver", "process")
    _fill(task, "config", {})
    resources = _merged({"cpu": 100, "memory": 64}, task.get("resources"))
    if isinstance(resources, dict) and isinstance(resources.get("memory"), str):
        resources["memory"] = _parse_size(resources["memory"])
    task["resources"] = resources
    task["env"] = _canon_env(task.get("env"))
    task["templates"] = _canon_list(task.get("templates"), lambda t: _canon_template(t, kind))
    task["restart"] = _merged(group_restart, task.get("restart"), _RESTART_DURATIONS)
    _fill(task, "kill_signal", "SIGTERM")
    task["kill_signal"] = _canon_signal(task["kill_signal"])
    _fill(task, "kill_timeout", 5.0)
    task["kill_timeout"] = _try_duration(task["kill_timeout"])
    task["upstreams"] = _canon_list(
        task.get("upstreams"), lambda u: _merged({"mode": "tcp", "policy": "round_robin"}, u)
    )
    return task


def _parse_size(text: str) -> object:
    """Megabytes from "512MB", "2GB", "1.5G"; the text itself when it is not a size."""
    match = _SIZE.fullmatch(text) if len(text) < 32 else None
    if match is None:
        return text
    megabytes = float(match[1]) * _SIZE_MB[match[2][0].lower()]
    return int(megabytes) if megabytes.is_integer() else text


def _canon_service(raw: dict[str, Any]) -> dict[str, Any]:
    service = dict(raw)
    _fill(service, "port", "")
    _fill(service, "tags", [])
    service["meta"] = _canon_str_map(service.get("meta"))
    if service.get("ingress") is not None:
        service["ingress"] = _merged({"host": "", "path": "/"}, service["ingress"])
    checks = service.get("checks")
    if checks is None:
        checks = []
    elif isinstance(checks, list):
        checks = [
            _canon_check(c, service, i) if isinstance(c, dict) else c for i, c in enumerate(checks)
        ]
    service["checks"] = checks
    return service


def _canon_check(raw: dict[str, Any], service: dict[str, Any], index: int) -> dict[str, Any]:
    check = dict(raw)
    _fill(check, "type", "http")
    if check.get("port") is None:
        check["port"] = service["port"] if isinstance(service["port"], str) else ""
    name, kind = service.get("name"), check["type"]
    if check.get("name") is None and isinstance(name, str) and isinstance(kind, str):
        check["name"] = f"{name}-{kind}-{index}"
    _fill(check, "path", "/")
    _fill(check, "method", "GET")
    if isinstance(check["method"], str):
        check["method"] = check["method"].upper()
    _fill(check, "command", [])
    if isinstance(check["command"], str):
        try:
            check["command"] = shlex.split(check["command"])
        except ValueError:
            pass  # unbalanced quotes: validate says a list is expected
    _fill(check, "interval", 2.0)
    _fill(check, "timeout", 1.0)
    check["interval"] = _try_duration(check["interval"])
    check["timeout"] = _try_duration(check["timeout"])
    return check


def _canon_constraint(raw: dict[str, Any]) -> dict[str, Any]:
    constraint = dict(raw)
    _fill(constraint, "operator", "=")
    _fill(constraint, "attribute", "")
    _fill(constraint, "value", "")
    if constraint["operator"] == "==":
        constraint["operator"] = "="
    attribute = constraint["attribute"]
    if isinstance(attribute, str):
        if re.match(r"(?:node|meta|attr)\.", attribute):
            attribute = "${" + attribute + "}"  # the braces are easy to forget
        for alias, canonical in _ATTRIBUTE_ALIASES:
            if attribute.startswith(alias):
                attribute = canonical + attribute[len(alias) :]
        constraint["attribute"] = attribute
    constraint["value"] = _scalar_str(constraint["value"])
    return constraint


# --------------------------------------------------------------- validate


def _at(path: str, key: object) -> str:
    """`path.key` for plain names, `path[0]` for list indexes, `path["odd key"]` otherwise."""
    if isinstance(key, str) and _PLAIN_KEY.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{show(key)}]"


def _valid_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_Rule = Callable[["_Checker", Any, str], object]


class _Checker:
    """Collects problems; each method checks one value and says whether it passed."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def expect(self, path: str, what: str, got: object) -> bool:
        self.add(path, f"expected {what}, got {show(got)}")
        return False

    def struct(
        self,
        value: object,
        path: str,
        kind: type[msgspec.Struct],
        rules: dict[str, _Rule],
        *,
        required: tuple[str, ...] = (),
        extra: tuple[str, ...] = (),
    ) -> dict[str, Any] | None:
        """Check a mapping for a struct: unknown fields, required ones, then each rule."""
        if not isinstance(value, dict):
            self.expect(path, "a mapping", value)
            return None
        valid = kind.__struct_fields__
        for key in value:
            if not isinstance(key, str) or (key not in valid and key not in extra):
                self.add(_at(path, key), _unknown_field(key, valid))
        for key in required:
            if key not in value:
                self.add(_at(path, key), "required field is missing")
        for key, rule in rules.items():
            if key in value:
                rule(self, value[key], _at(path, key))
        return value

    def integer(self, value: object, path: str, lo: int, hi: int, unit: str = "") -> bool:
        suffix = f" ({unit})" if unit else ""
        if isinstance(value, bool) or not isinstance(value, int):
            what = {0: "a non-negative integer", 1: "a positive integer"}.get(lo, "an integer")
            return self.expect(path, what + suffix, value)
        if not lo <= value <= hi:
            return self.expect(path, f"an integer from {lo} to {hi}{suffix}", value)
        return True

    def string(self, value: object, path: str, *, nonempty: bool = False) -> bool:
        if not isinstance(value, str):
            return self.expect(path, "a string", value)
        if nonempty and not value.strip():
            return self.expect(path, "a non-empty string", value)
        if not _valid_utf8(value):
            self.add(path, "contains invalid unicode (a lone surrogate)")
            return False
        return True

    def exec_string(self, value: object, path: str, *, nonempty: bool = False) -> bool:
        """A string handed to the OS (argv, env): NUL cannot pass through exec."""
        if not self.string(value, path, nonempty=nonempty):
            return False
        if "\x00" in cast(str, value):
            self.add(path, "must not contain a NUL character")
            return False
        return True

    def name(self, value: object, path: str, what: str) -> bool:
        if isinstance(value, str) and _NAME.fullmatch(value):
            return True
        return self.expect(path, f"{what} {NAME_RULE}", value)

    def choice(self, value: object, path: str, options: tuple[str, ...]) -> bool:
        if isinstance(value, str) and value in options:
            return True
        return self.expect(path, "one of " + ", ".join(f'"{o}"' for o in options), value)

    def boolean(self, value: object, path: str) -> bool:
        return isinstance(value, bool) or self.expect(path, "true or false", value)

    def duration(self, value: object, path: str, *, positive: bool) -> float | None:
        try:
            seconds = parse_duration(value)
        except ValueError as e:
            self.add(path, str(e))
            return None
        if positive and seconds <= 0:
            self.expect(path, "a duration greater than 0", value)
            return None
        return seconds

    def items(self, value: object, path: str, what: str) -> list[Any] | None:
        if not isinstance(value, list):
            self.expect(path, f"a list of {what}", value)
            return None
        if len(value) > MAX_ITEMS:
            self.add(path, f"expected at most {MAX_ITEMS} {what}, got {len(value)}")
            return None
        return value

    def strings(self, value: object, path: str, what: str, *, exec_safe: bool = False) -> bool:
        values = self.items(value, path, what)
        if values is None:
            return False
        check = self.exec_string if exec_safe else self.string
        return all([check(v, _at(path, i)) for i, v in enumerate(values)])

    def str_map(self, value: object, path: str, *, env: bool = False) -> None:
        if not isinstance(value, dict):
            self.expect(path, "a mapping of strings to strings", value)
            return
        if len(value) > MAX_ITEMS:
            self.add(path, f"expected at most {MAX_ITEMS} entries, got {len(value)}")
            return
        for key, item in value.items():
            key_path = _at(path, key)
            if env and not (isinstance(key, str) and _ENV_KEY.fullmatch(key)):
                self.expect(key_path, "an environment variable name ([A-Za-z_][A-Za-z0-9_]*)", key)
            elif not isinstance(key, str) or not key or not _valid_utf8(key):
                self.expect(key_path, "a non-empty string as key", key)
            elif env and isinstance(item, dict):  # {secret: PATH} or {config: PATH}
                _check_env_ref(self, item, key_path)
            elif env:
                self.exec_string(item, key_path)
            else:
                self.string(item, key_path)


def is_name(value: object) -> bool:
    """Whether `value` is a valid job, group, service or namespace name."""
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


def _unknown_field(key: object, valid: tuple[str, ...]) -> str:
    return unknown_field(key, [f for f in valid if f not in STORED_FIELDS and f != "reads"])


def _int(lo: int, hi: int, unit: str = "") -> _Rule:
    return lambda c, v, p: c.integer(v, p, lo, hi, unit)


def _dur(*, positive: bool) -> _Rule:
    return lambda c, v, p: c.duration(v, p, positive=positive)


def _one_of(*options: str) -> _Rule:
    return lambda c, v, p: c.choice(v, p, options)


def _named(what: str) -> _Rule:
    return lambda c, v, p: c.name(v, p, what)


def _bool(c: _Checker, value: object, path: str) -> object:
    return c.boolean(value, path)


def _str_map(c: _Checker, value: object, path: str) -> object:
    c.str_map(value, path)
    return None


def _non_negative_number(c: _Checker, value: object, path: str) -> object:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        return c.expect(path, "a non-negative number", value)
    return True


_RESTART_RULES: dict[str, _Rule] = {
    "attempts": _int(0, 1000),
    "interval": _dur(positive=True),
    "delay": _dur(positive=False),
    "mode": _one_of("fail", "delay"),
}
_RESCHEDULE_RULES: dict[str, _Rule] = {
    "attempts": _int(0, 1000),
    "interval": _dur(positive=False),
    "delay": _dur(positive=False),
    "max_delay": _dur(positive=False),
    "delay_function": _one_of("constant", "exponential"),
    "unlimited": _bool,
}
_UPDATE_RULES: dict[str, _Rule] = {
    "max_parallel": _int(0, 10_000),
    "min_healthy_time": _dur(positive=False),
    "healthy_deadline": _dur(positive=True),
    "progress_deadline": _dur(positive=False),
    "auto_revert": _bool,
    "auto_promote": _bool,
    "canary": _int(0, 10_000),
    "health_check": _one_of("checks", "task_states"),
    "unhealthy_after": _int(0, 1000),
    "check_grace": _dur(positive=False),
}
_MIGRATE_RULES: dict[str, _Rule] = {"max_parallel": _int(1, 10_000)}
_DISCONNECT_RULES: dict[str, _Rule] = {
    "stop_after_disconnect": _dur(positive=False),
    "lost_after": _dur(positive=False),
    "reconcile": _one_of("keep_original", "keep_replacement"),
}
_RESOURCE_RULES: dict[str, _Rule] = {
    "cpu": _int(1, 1_000_000, "MHz"),
    "memory": _int(1, 10_000_000, "MB"),
    "pids": _int(0, 4_194_304, "processes"),
}
_JOB_RULES: dict[str, _Rule] = {
    "name": _named("a job name"),
    "namespace": _named("a namespace name"),
    "type": _one_of(*JOB_TYPES),
    "priority": _int(1, 100),
    "meta": _str_map,
    "parent": lambda c, v, p: c.string(v, p),
    "payload": lambda c, v, p: c.string(v, p),
    "version": _int(0, 2**63 - 1),
    "revision": _int(0, 2**63 - 1),
    "stop": _bool,
    "submit_time": _non_negative_number,
    "submitted_by": lambda c, v, p: c.string(v, p),
    "stable": _bool,
    "config_versions": lambda c, v, p: _check_versions(c, v, p),
}


def _check_versions(c: _Checker, value: object, path: str) -> None:
    if not isinstance(value, dict):
        c.expect(path, "a mapping of config:PATH or secret:PATH to versions", value)
        return
    for k, v in value.items():
        try:
            datamodel.parse_ref(k) if isinstance(k, str) else datamodel.parse_ref("")
        except ValueError as e:
            c.add(_at(path, k), str(e))
        else:
            c.integer(v, _at(path, k), 1, 2**63 - 1)


_GROUP_RULES: dict[str, _Rule] = {
    "name": _named("a group name"),
    "count": _int(0, 10_000),
    "spread": _bool,
    "meta": _str_map,
    "shutdown_delay": _dur(positive=False),
}
_BATCH_RULES: dict[str, _Rule] = {
    "completions": _int(0, 10_000),
    "parallelism": _int(1, 10_000),
    "backoff_limit": _int(0, 10_000),
    "active_deadline": _dur(positive=False),
}
_PERIODIC_RULES: dict[str, _Rule] = {
    "concurrency": _one_of(*CONCURRENCY),
    "starting_deadline": _dur(positive=False),
    "successful_history": _int(0, 1000),
    "failed_history": _int(0, 1000),
    "suspend": _bool,
}


def validate(doc: dict[str, Any]) -> Job:
    """The Job in a canonical document, or ValidationError listing every problem with its path."""
    c = _Checker()
    job = c.struct(doc, "", Job, _JOB_RULES, required=("name",), extra=SERVER_FIELDS)
    if job is not None:
        _check_job(c, job)
    if c.problems:
        raise ValidationError(c.problems)
    return _convert(doc, Job)


S = TypeVar("S", bound=msgspec.Struct)


def _convert(doc: object, kind: type[S]) -> S:
    try:
        return msgspec.convert(doc, type=kind)
    except msgspec.ValidationError as e:
        # A safety net for rules this module does not know yet (a field new in types.py).
        message, _, at = str(e).partition(" - at `$")
        raise ValidationError([Problem(at.rstrip("`").lstrip("."), message)]) from None


def _check_job(c: _Checker, job: dict[str, Any]) -> None:
    kind = job.get("type", "service")
    schedule = job.get("schedule", "")
    if kind != "cron" and schedule != "":
        c.expect("schedule", 'nothing: only a "cron" job takes a schedule', schedule)
    elif kind == "cron" and schedule != "" and job.get("periodic") is not None:
        c.add("schedule", "give the schedule once: here or as periodic.schedule")
    periodic = job.get("periodic")
    if periodic is not None:
        if kind != "cron":
            c.add("periodic", 'only a batch (or "cron") job runs on a schedule')
        _check_periodic(c, periodic, "periodic")
    elif kind == "cron":
        c.add("schedule", "a cron job needs a schedule (schedule or periodic.schedule)")
    if job.get("parameterized") is not None:
        if kind != "batch":
            c.add("parameterized", f"only a batch job can be dispatched, not a {kind} job")
        _check_parameterized(c, job["parameterized"], "parameterized")
    if "constraints" in job:
        _check_constraints(c, job["constraints"], "constraints")
    groups = c.items(job.get("groups", []), "groups", "groups")
    if groups is None:
        return
    if not groups:
        c.add("groups", "a job needs at least one group")
    seen: dict[str, str] = {}
    for i, group in enumerate(groups):
        path = _at("groups", i)
        checked = _check_group(c, group, path)
        _unique(c, checked, path, seen, "group name")
        if checked is not None:
            _check_batch(c, checked, path, batch=kind in ("batch", "cron"))
            if checked.get("scaling") is not None:
                _check_scaling(c, checked, _at(path, "scaling"), kind)


def _check_batch(c: _Checker, group: dict[str, Any], path: str, *, batch: bool) -> None:
    """completions, parallelism, backoff_limit, active_deadline: batch groups only."""
    if not batch:
        for key in BATCH_FIELDS:
            if group.get(key) is not None:
                c.add(_at(path, key), "only a batch or cron job's groups take this")
        return
    for key, rule in _BATCH_RULES.items():
        if key in group:
            rule(c, group[key], _at(path, key))
    completions, count = group.get("completions"), group.get("count")
    if _number(completions) is not None and _number(count) is not None and completions != count:
        c.add(
            _at(path, "completions"),
            f"must equal count ({count}): for a batch group they are the same; give one",
        )


SCALING_METRICS = ("cpu", "memory", "rps", "latency_p95", "concurrency", "prometheus")
FORECAST_METRICS = ("rps", "concurrency", "cpu")
PROXY_METRICS = ("rps", "latency_p95", "concurrency")  # measured by the proxies
MAX_QUERY = 4096  # characters of a PromQL query
_SCALING_RULES: dict[str, _Rule] = {
    "min": _int(0, 10_000),
    "max": _int(1, 10_000),
    "interval": lambda c, v, p: c.duration(v, p, positive=True),
    "cooldown": _dur(positive=False),
    "scale_down_window": _dur(positive=False),
    "idle_timeout": _dur(positive=True),
    "hold_timeout": _dur(positive=True),
    "hold_requests": _int(1, 100_000),
    "during_rollout": _bool,
}


def _check_scaling(c: _Checker, group: dict[str, Any], path: str, kind: object) -> None:
    """A group's `scaling`: bounds, policies, and what each needs of the group."""
    scaling = c.struct(group["scaling"], path, Scaling, _SCALING_RULES, required=("max",))
    if scaling is None:
        return
    if kind != "service":
        c.add(path, f"only a service job's groups scale themselves, not a {kind} job's")
    interval = _number(scaling.get("interval"))
    if interval is not None and 0 < interval < 1:
        c.expect(_at(path, "interval"), "at least 1s", scaling["interval"])
    tolerance = scaling.get("tolerance", 0.1)
    if _number(tolerance) is None or not 0 <= cast(float, tolerance) < 1:
        c.expect(_at(path, "tolerance"), "a share from 0 to below 1, such as 0.1", tolerance)
    low, high = _number(scaling.get("min")), _number(scaling.get("max"))
    if low is not None and high is not None and high < low:
        c.add(_at(path, "max"), f"must be at least min ({low:g})")
    count = _number(group.get("count"))
    if count is not None and low is not None and high is not None and not low <= count <= high:
        c.add(
            _at(path.rpartition(".")[0], "count"),
            f"must be within scaling min..max ({low:g}..{high:g}), got {count:g}",
        )
    services = group.get("services")
    has_service = isinstance(services, list) and bool(services)
    if low == 0 and not has_service:
        c.add(_at(path, "min"), "0 needs a service in the group: a request to it wakes the group")
    policies = c.items(scaling.get("policies", []), _at(path, "policies"), "policies")
    if policies is None:
        return
    if not policies and low != 0:
        c.add(
            _at(path, "policies"),
            "expected at least one policy such as {metric: cpu, target: 60} "
            "(only a group with min 0 may go without: it then only sleeps and wakes)",
        )
    for i, raw in enumerate(policies):
        _check_policy(c, raw, _at(_at(path, "policies"), i), has_service=has_service)


def _check_policy(c: _Checker, raw: object, path: str, *, has_service: bool) -> None:
    policy = c.struct(raw, path, ScalingPolicy, {})
    if policy is None:
        return
    metric, predictive = policy.get("metric", ""), policy.get("predictive")
    target = policy.get("target")
    if predictive is not None:
        if metric != "":
            c.add(_at(path, "metric"), "give a predictive policy's metric inside `predictive`")
        _check_predictive(c, predictive, _at(path, "predictive"), has_service=has_service)
        if target is None:
            c.add(
                _at(path, "target"),
                "a predictive policy needs a target: give one here, or a reactive policy "
                "on the same metric",
            )
    else:
        if target is None:
            c.add(
                _at(path, "target"),
                "required field is missing: the figure to hold, e.g. 60 (percent) for cpu, "
                "or requests per second per copy for rps",
            )
        if not (isinstance(metric, str) and metric in SCALING_METRICS):
            choices = ", ".join(f'"{m}"' for m in SCALING_METRICS)
            c.expect(_at(path, "metric"), f"one of {choices}, or `prometheus: QUERY`", metric)
        elif metric in PROXY_METRICS and not has_service:
            c.add(
                _at(path, "metric"),
                f"{metric} needs a service in the group: the proxies measure it",
            )
    query = policy.get("prometheus", "")
    if c.string(query, _at(path, "prometheus")):
        if metric == "prometheus" and not query.strip():
            c.add(
                _at(path, "prometheus"),
                "expected a PromQL query such as sum(rate(http_requests_total[1m]))",
            )
        elif metric != "prometheus" and query:
            c.add(
                _at(path, "prometheus"),
                f"only a prometheus policy takes a query, not a {metric or 'predictive'} one",
            )
        elif len(query) > MAX_QUERY:
            c.add(
                _at(path, "prometheus"),
                f"expected at most {MAX_QUERY} characters, got {len(query)}",
            )
    if target is not None and (_number(target) is None or not 0 < cast(float, target) <= 1e9):
        c.expect(_at(path, "target"), "a number greater than 0", target)


def _check_predictive(c: _Checker, value: object, path: str, *, has_service: bool) -> None:
    forecast = c.struct(
        value,
        path,
        Predictive,
        {
            "metric": _one_of(*FORECAST_METRICS),
            "season": lambda c, v, p: c.duration(v, p, positive=True),
            "lead": _dur(positive=False),
        },
    )
    if forecast is None:
        return
    season, lead = _number(forecast.get("season")), _number(forecast.get("lead"))
    if season is not None and season < 60:
        c.expect(_at(path, "season"), "at least 1m", forecast["season"])
    elif season is not None and lead is not None and lead >= season:
        c.add(_at(path, "lead"), f"must be shorter than the season ({season:g}s)")
    metric = forecast.get("metric", "rps")
    if metric in PROXY_METRICS and metric in FORECAST_METRICS and not has_service:
        c.add(_at(path, "metric"), "needs a service in the group: the proxies measure it")


def _check_periodic(c: _Checker, value: object, path: str) -> None:
    periodic = c.struct(value, path, Periodic, _PERIODIC_RULES)
    if periodic is None:
        return
    zone = periodic.get("time_zone", "UTC")
    if c.string(zone, _at(path, "time_zone"), nonempty=True) and time_zone(zone) is None:
        c.expect(_at(path, "time_zone"), 'an IANA time zone such as "Europe/Berlin" or "UTC"', zone)
    schedules = c.items(periodic.get("schedule", []), _at(path, "schedule"), "cron expressions")
    if schedules is None:
        return
    if not schedules:
        c.add("schedule", "a cron job needs a schedule: `schedule`, or periodic.schedule")
    for i, expr in enumerate(schedules):
        where = _at(_at(path, "schedule"), i) if len(schedules) > 1 else _at(path, "schedule")
        if not (isinstance(expr, str) and cron_ok(expr)):
            c.expect(
                where,
                "a cron schedule of 5 fields (minute hour day month weekday) "
                'such as "*/5 * * * *", 6 with seconds first, or one of ' + ", ".join(_CRON_MACROS),
                expr,
            )


def _check_parameterized(c: _Checker, value: object, path: str) -> None:
    params = c.struct(value, path, Parameterized, {"payload": _one_of(*PAYLOAD_RULES)})
    if params is None:
        return
    keys_seen: dict[str, str] = {}
    for key in ("meta_required", "meta_optional"):
        names = params.get(key, [])
        if not c.strings(names, _at(path, key), "meta keys"):
            continue
        for i, name in enumerate(names):
            where = _at(_at(path, key), i)
            if not _ENV_KEY.fullmatch(name):
                c.expect(where, "a meta key ([A-Za-z_][A-Za-z0-9_]*)", name)
            elif name in keys_seen:
                c.add(where, f"{show(name)} is also listed in {keys_seen[name]}")
            else:
                keys_seen[name] = key


def _unique(
    c: _Checker, item: dict[str, Any] | None, path: str, seen: dict[str, str], what: str
) -> None:
    """Report a second use of a name; `seen` maps names to where they were first used."""
    if item is None or not isinstance(item.get("name"), str):
        return
    name = item["name"]
    if name in seen:
        c.add(_at(path, "name"), f"duplicate {what} {show(name)}: also used by {seen[name]}")
    else:
        seen[name] = path


def _check_group(c: _Checker, value: object, path: str) -> dict[str, Any] | None:
    group = c.struct(value, path, Group, _GROUP_RULES, required=("name",))
    if group is None:
        return None
    if "constraints" in group:
        _check_constraints(c, group["constraints"], _at(path, "constraints"))
    if "spreads" in group:
        _check_spreads(c, group["spreads"], _at(path, "spread"))
    for key, kind, rules in (
        ("restart", RestartPolicy, _RESTART_RULES),
        ("reschedule", ReschedulePolicy, _RESCHEDULE_RULES),
        ("update", UpdateStrategy, _UPDATE_RULES),
        ("migrate", MigrateStrategy, _MIGRATE_RULES),
        ("disconnect", DisconnectPolicy, _DISCONNECT_RULES),
    ):
        if key in group:
            c.struct(group[key], _at(path, key), kind, rules)
    _check_policy_ranges(c, group, path)
    labels = _check_network(c, group.get("network", {}), _at(path, "network"))
    _check_services(c, group.get("services", []), _at(path, "services"), labels)
    tasks = c.items(group.get("tasks", []), _at(path, "tasks"), "tasks")
    if tasks is None:
        return group
    if not tasks:
        c.add(_at(path, "tasks"), "a group needs at least one task")
    seen: dict[str, str] = {}
    local_ports: dict[int, str] = {}
    for i, task in enumerate(tasks):
        task_path = _at(_at(path, "tasks"), i)
        checked = _check_task(c, task, task_path, labels, group.get("restart"))
        _unique(c, checked, task_path, seen, "task name")
        if checked is not None and "upstreams" in checked:
            upstreams_path = _at(task_path, "upstreams")
            _check_upstreams(c, checked["upstreams"], upstreams_path, local_ports)
    return group


def _check_policy_ranges(c: _Checker, group: dict[str, Any], path: str) -> None:
    """Cross-field rules of the reschedule and update policies."""
    resched = group.get("reschedule")
    if isinstance(resched, dict):
        delay, top = _number(resched.get("delay")), _number(resched.get("max_delay"))
        if delay is not None and top is not None and top < delay:
            c.add(_at(_at(path, "reschedule"), "max_delay"), f"must be at least delay ({delay}s)")
    update = group.get("update")
    if isinstance(update, dict):
        low, high = _number(update.get("min_healthy_time")), _number(update.get("healthy_deadline"))
        if low is not None and high is not None and high <= low:
            c.add(
                _at(_at(path, "update"), "healthy_deadline"),
                f"must be longer than min_healthy_time ({low}s)",
            )
        progress = _number(update.get("progress_deadline"))
        if progress and high is not None and progress < high:
            c.add(
                _at(_at(path, "update"), "progress_deadline"),
                f"must be 0 (none) or at least healthy_deadline ({high}s)",
            )
        canary, count = _number(update.get("canary")), _number(group.get("count"))
        if canary is not None and count is not None and 0 <= count < canary:
            c.add(
                _at(_at(path, "update"), "canary"),
                f"must be at most the group's count ({count:g})",
            )


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) if isinstance(value, float) or value.bit_length() < 1000 else None
    return None


def _check_network(c: _Checker, value: object, path: str) -> set[str]:
    """Check the ports; return the labels that services and drivers may name."""
    network = c.struct(value, path, NetworkSpec, {})
    labels: set[str] = set()
    if network is None or "ports" not in network:
        return labels
    ports, path = network["ports"], _at(path, "ports")
    if not isinstance(ports, dict):
        c.expect(path, "a mapping of port labels to {} (dynamic) or {static: N}", ports)
        return labels
    env_names: dict[str, str] = {}
    statics: dict[int, str] = {}
    for label, spec in list(ports.items())[:MAX_ITEMS]:
        label_path = _at(path, label)
        if not (isinstance(label, str) and _PORT_LABEL.fullmatch(label)):
            c.expect(
                label_path,
                "a port label: a letter, then letters, digits, '_' or '-' (at most 63)",
                label,
            )
            continue
        labels.add(label)
        env = label.upper().replace("-", "_")
        if env in env_names:
            c.add(label_path, f"collides with {show(env_names[env])}: both are PODIUM_PORT_{env}")
        env_names.setdefault(env, label)
        port = c.struct(spec, label_path, PortSpec, {})
        static = port.get("static", 0) if port is not None else 0
        static_path = _at(label_path, "static")
        if isinstance(static, bool) or not isinstance(static, int) or not 0 <= static <= 65535:
            c.expect(static_path, "a port number from 1 to 65535, or 0 for a dynamic port", static)
        elif static and static in statics:
            c.add(static_path, f"port {static} is also used by {show(statics[static])}")
        elif static:
            statics[static] = label
    return labels


def _check_port_ref(
    c: _Checker, value: object, path: str, labels: set[str], *, allow_empty: bool = True
) -> None:
    if not isinstance(value, str):
        c.expect(path, "a port label of the group", value)
    elif value == "" and allow_empty:
        pass
    elif value not in labels:
        known = ", ".join(sorted(labels)) or "none; declare one under network.ports"
        c.expect(path, f"a port label of the group (it has: {known})", value)


def _check_services(c: _Checker, value: object, path: str, labels: set[str]) -> None:
    services = c.items(value, path, "services")
    if services is None:
        return
    service_names: dict[str, str] = {}
    check_names: dict[str, str] = {}
    for i, raw in enumerate(services):
        service_path = _at(path, i)
        service = c.struct(
            raw, service_path, ServiceSpec, {"name": _named("a service name")}, required=("name",)
        )
        if service is None:
            continue
        _unique(c, service, service_path, service_names, "service name")
        if "port" in service:
            _check_port_ref(c, service["port"], _at(service_path, "port"), labels)
        if "tags" in service:
            c.strings(service["tags"], _at(service_path, "tags"), "tags")
        if "meta" in service:
            c.str_map(service["meta"], _at(service_path, "meta"))
        if service.get("ingress") is not None:
            _check_ingress(c, service["ingress"], _at(service_path, "ingress"))
        checks = c.items(service.get("checks", []), _at(service_path, "checks"), "checks")
        for j, check in enumerate(checks or []):
            check_path = _at(_at(service_path, "checks"), j)
            checked = _check_check(c, check, check_path, labels, service.get("port", ""))
            _unique(c, checked, check_path, check_names, "check name")


def _check_ingress(c: _Checker, value: object, path: str) -> None:
    ingress = c.struct(value, path, Ingress, {})
    if ingress is None:
        return
    host = ingress.get("host", "")
    if c.string(host, _at(path, "host")) and host and not _HOST.fullmatch(host):
        c.expect(_at(path, "host"), "a host name such as api.example.com (no port)", host)
    prefix = ingress.get("path", "/")
    if c.string(prefix, _at(path, "path")) and not prefix.startswith("/"):
        c.expect(_at(path, "path"), 'a URL path prefix starting with "/"', prefix)


def _check_upstreams(c: _Checker, value: object, path: str, ports: dict[int, str]) -> None:
    """Each upstream; `ports` maps local ports already taken in the group to where."""
    for i, raw in enumerate(c.items(value, path, "upstreams") or []):
        item_path = _at(path, i)
        upstream = c.struct(
            raw,
            item_path,
            Upstream,
            {
                "service": _named("a service name"),
                # "": the job's own namespace (what a struct round trip writes)
                "namespace": lambda c, v, p: v if v == "" else c.name(v, p, "a namespace name"),
                "mode": _one_of("tcp", "http"),
                "policy": _one_of("round_robin", "weighted", "least_conn"),
            },
            required=("service", "local_port"),
        )
        if upstream is None or "local_port" not in upstream:
            continue
        port, port_path = upstream["local_port"], _at(item_path, "local_port")
        if not c.integer(port, port_path, 1, 65535, "a port on 127.0.0.1"):
            continue
        if port in ports:
            c.add(port_path, f"port {port} is also used by {ports[port]}")
        else:
            ports[port] = item_path


def _check_check(
    c: _Checker, value: object, path: str, labels: set[str], service_port: object
) -> dict[str, Any] | None:
    check = c.struct(value, path, Check, {"type": _one_of(*CHECK_TYPES)})
    if check is None:
        return None
    kind = check.get("type", "http")
    if "name" in check:
        c.string(check["name"], _at(path, "name"), nonempty=True)
    port = check.get("port", "")
    if kind in ("http", "tcp") and port == "":
        article = "an" if kind == "http" else "a"
        c.add(
            _at(path, "port"), f"{article} {kind} check needs a port: set it here or on the service"
        )
    elif "port" in check and port != service_port:  # an inherited port was checked on the service
        _check_port_ref(c, port, _at(path, "port"), labels)
    if "path" in check and c.string(check["path"], _at(path, "path")):
        problem = check_path_problem(check["path"])
        if problem:
            c.expect(_at(path, "path"), problem, check["path"])
    if "method" in check:
        c.choice(check["method"], _at(path, "method"), HTTP_METHODS)
    command = check.get("command", [])
    command_ok = c.strings(command, _at(path, "command"), "strings", exec_safe=True)
    if command_ok and kind == "command" and not command:
        c.add(_at(path, "command"), "a command check needs a command: a non-empty list")
    interval = c.duration(check.get("interval", 2.0), _at(path, "interval"), positive=True)
    timeout = c.duration(check.get("timeout", 1.0), _at(path, "timeout"), positive=True)
    if interval is not None and timeout is not None and timeout > interval:
        c.add(_at(path, "timeout"), f"must not be longer than the interval ({interval}s)")
    return check


def check_path_problem(path: str) -> str:
    """ "" when `path` is safe to send as an HTTP check's request target, else what it must be
    (the agent asks again before each probe: a spec stored before this rule is not trusted)."""
    if len(path) > MAX_CHECK_PATH:
        return f"a URL path of at most {MAX_CHECK_PATH} characters"
    if not _CHECK_PATH.fullmatch(path):
        return (
            'a URL path starting with "/", in visible ASCII characters '
            "(no spaces, CR, LF or other control characters; percent-encode the rest)"
        )
    return ""


def _check_task(
    c: _Checker, value: object, path: str, labels: set[str], group_restart: object
) -> dict[str, Any] | None:
    task = c.struct(
        value,
        path,
        Task,
        {"name": _named("a task name"), "kill_timeout": _dur(positive=False)},
        required=("name",),
    )
    if task is None:
        return None
    driver = task.get("driver", "process")
    if c.string(driver, _at(path, "driver"), nonempty=True) and driver not in SCHEMAS:
        c.add(
            _at(path, "driver"),
            f"unknown driver {show(driver)}{near(driver, list(SCHEMAS))}; "
            f"podium's drivers are: {', '.join(sorted(SCHEMAS))}",
        )
    if "config" in task:
        _check_config(c, task["config"], _at(path, "config"), driver, labels)
    if "resources" in task:
        c.struct(task["resources"], _at(path, "resources"), Resources, _RESOURCE_RULES)
    if "env" in task:
        c.str_map(task["env"], _at(path, "env"), env=True)
    if "templates" in task:
        _check_templates(c, task["templates"], _at(path, "templates"))
    if isinstance(task.get("env"), dict) and isinstance(task.get("config"), dict):
        _check_no_secret_in_config(c, task["env"], task["config"], _at(path, "config"))
    restart = task.get("restart")
    # Inherited from the group: any problem in it was reported there already.
    if restart is not None and restart != group_restart:
        c.struct(restart, _at(path, "restart"), RestartPolicy, _RESTART_RULES)
    signal_name = task.get("kill_signal", "SIGTERM")
    if not (isinstance(signal_name, str) and signal_name in SIGNALS):
        c.expect(
            _at(path, "kill_signal"), 'a signal name such as "SIGTERM" or "SIGINT"', signal_name
        )
    return task


def _check_env_ref(c: _Checker, item: dict[str, Any], path: str) -> None:
    ref = c.struct(item, path, EnvRef, {})
    if ref is None:
        return
    secret, config = ref.get("secret", ""), ref.get("config", "")
    if bool(secret) == bool(config):
        c.add(path, "expected exactly one of secret: PATH or config: PATH")
        return
    field = "secret" if secret else "config"
    problem = datamodel.path_problem(secret or config, _at(path, field))
    if problem is not None:
        c.problems.append(problem)
    key = ref.get("key", "value")
    if not (isinstance(key, str) and datamodel.KEY.fullmatch(key)):
        c.expect(_at(path, "key"), "a key of 1-128 letters, digits, '_', '-' or '.'", key)


_DESTINATION_PART = re.compile(r"[A-Za-z0-9_@+=,-][A-Za-z0-9_.@+=,-]*")


def _check_templates(c: _Checker, value: object, path: str) -> None:
    templates = c.items(value, path, "templates")
    destinations: dict[str, str] = {}
    for i, raw in enumerate(templates or []):
        item_path = _at(path, i)
        template = c.struct(
            raw,
            item_path,
            Template,
            {
                "change_mode": _one_of(*CHANGE_MODES),
                "splay": _dur(positive=False),
                "env": _bool,
            },
            required=("destination",),
        )
        if template is None:
            continue
        dest = template.get("destination")
        dest_path = _at(item_path, "destination")
        if not (
            isinstance(dest, str)
            and len(dest) <= 255
            and all(_DESTINATION_PART.fullmatch(p) for p in dest.split("/"))
        ):
            c.expect(
                dest_path,
                "a file path inside the task's directory such as app.conf or secrets/db.env "
                "(no '..', no leading '/')",
                dest,
            )
        elif dest.split("/")[0] == "logs":
            c.add(dest_path, "logs/ holds the task's own logs: choose another directory")
        elif dest == "secrets":
            c.add(dest_path, "secrets/ is the task's secrets directory: name a file in it")
        elif dest in destinations:
            c.add(dest_path, f"also the destination of {destinations[dest]}")
        else:
            destinations[dest] = item_path
        data, source = template.get("data", ""), template.get("source", "")
        if c.string(data, _at(item_path, "data")) and c.string(source, _at(item_path, "source")):
            if not data and not source:
                c.add(item_path, "expected data (the template's text) or source (a file)")
            elif not data:
                c.add(
                    _at(item_path, "source"),
                    "is read by the podium CLI (job run, plan, validate): send the file's "
                    "text as data",
                )
            elif len(data.encode("utf-8", "surrogatepass")) > MAX_TEMPLATE_BYTES:
                c.add(_at(item_path, "data"), f"expected at most {MAX_TEMPLATE_BYTES} bytes")
        signal_name = template.get("change_signal", "SIGHUP")
        if not (isinstance(signal_name, str) and signal_name in SIGNALS):
            c.expect(_at(item_path, "change_signal"), 'a signal name such as "SIGHUP"', signal_name)
        perms = template.get("perms", "")
        if not (isinstance(perms, str) and (perms == "" or re.fullmatch(r"0?[0-7]{3}", perms))):
            c.expect(
                _at(item_path, "perms"),
                'octal permissions as a string such as "0640" (quoted: YAML reads 0640 as a '
                "number)",
                perms,
            )
        mode = template.get("change_mode", "rolling")
        if template.get("env") is True and mode in ("signal", "noop"):
            c.add(
                _at(item_path, "change_mode"),
                f"{mode} cannot change a running process's environment: an env template "
                "needs rolling or restart",
            )
        reads = template.get("reads", [])
        if c.strings(reads, _at(item_path, "reads"), "references"):
            for j, r in enumerate(reads):
                try:
                    datamodel.check_read(r)
                except ValueError as e:
                    c.add(_at(_at(item_path, "reads"), j), str(e))


_INTERPOLATED = re.compile(r"\$\{([A-Za-z0-9_.\-]+)\}")


def _check_no_secret_in_config(
    c: _Checker, env: dict[str, Any], config: dict[str, Any], path: str
) -> None:
    """A secret in a command line would show in `ps`: `${X}` of a secret env var is refused."""
    secret_vars = {k for k, v in env.items() if isinstance(v, dict) and v.get("secret")}
    if not secret_vars:
        return
    stack: list[tuple[object, str]] = [(config, path)]
    while stack:
        item, item_path = stack.pop()
        if isinstance(item, dict):
            stack.extend((v, _at(item_path, k)) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, _at(item_path, i)) for i, v in enumerate(item))
        elif isinstance(item, str):
            for name in _INTERPOLATED.findall(item):
                if name in secret_vars:
                    c.add(
                        item_path,
                        f"${{{name}}} comes from a secret and would show in the process list: "
                        "read it from the environment instead",
                    )


def _check_config(c: _Checker, value: object, path: str, driver: object, labels: set[str]) -> None:
    """A JSON-like mapping, bounded; then what its driver's schema says about it."""
    if not isinstance(value, dict):
        c.expect(path, "a mapping", value)
        return
    if not _json_like(c, value, path):
        return
    schema = SCHEMAS.get(driver) if isinstance(driver, str) else None
    if schema is None:
        return  # the driver itself was reported
    for where, message in schema.problems(value, port_labels=labels):
        at = path
        for part in where:
            at = _at(at, part)
        c.add(at, message)


def _json_like(c: _Checker, value: object, path: str) -> bool:
    """Only values that survive a JSON round trip through the store; bounded in size."""
    stack: list[tuple[object, str, int]] = [(value, path, 0)]
    count = 0
    while stack:
        item, item_path, depth = stack.pop()
        count += 1
        if count > MAX_CONFIG_VALUES:
            c.add(path, f"expected at most {MAX_CONFIG_VALUES} values, got more")
            return False
        if depth > MAX_CONFIG_DEPTH:
            c.add(item_path, f"nested more than {MAX_CONFIG_DEPTH} levels deep")
            return False
        if isinstance(item, dict):
            for key, sub in item.items():
                if not isinstance(key, str) or not _valid_utf8(key):
                    return c.expect(_at(item_path, key), "a string key", key)
                stack.append((sub, _at(item_path, key), depth + 1))
        elif isinstance(item, list):
            stack.extend((sub, _at(item_path, i), depth + 1) for i, sub in enumerate(item))
        elif isinstance(item, str):
            if not c.string(item, item_path):
                return False
        elif isinstance(item, bool) or item is None:
            pass
        elif isinstance(item, int):
            if not -(2**63) <= item < 2**64:
                return c.expect(item_path, "an integer that fits in 64 bits", item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                return c.expect(item_path, "a finite number", item)
        else:
            return c.expect(item_path, "a string, number, boolean, null, list or mapping", item)
    return True


def _check_constraints(c: _Checker, value: object, path: str) -> None:
    constraints = c.items(value, path, "constraints")
    for i, raw in enumerate(constraints or []):
        item_path = _at(path, i)
        constraint = c.struct(
            raw, item_path, Constraint, {"operator": _one_of(*OPERATORS), "value": _str_value}
        )
        if constraint is None:
            continue
        operator = constraint.get("operator", "=")
        attribute = constraint.get("attribute", "")
        attribute_path = _at(item_path, "attribute")
        if operator == "distinct_hosts" and attribute == "":
            pass  # distinct_hosts compares allocs, not a node attribute
        elif not (isinstance(attribute, str) and _ATTRIBUTE.fullmatch(attribute)):
            c.expect(
                attribute_path,
                "an attribute such as ${node.name}, ${node.datacenter}, ${node.labels.X} "
                "or ${node.attributes.X}",
                attribute,
            )
        text = constraint.get("value", "")
        if isinstance(text, str):
            _check_constraint_value(c, operator, text, _at(item_path, "value"))


def _check_spreads(c: _Checker, value: object, path: str) -> None:
    spreads = c.items(value, path, "spreads")
    for i, raw in enumerate(spreads or []):
        item_path = _at(path, i)
        spread = c.struct(raw, item_path, Spread, {"weight": _int(1, 100)}, required=("attribute",))
        if spread is None:
            continue
        attribute = spread.get("attribute")
        if not (isinstance(attribute, str) and _ATTRIBUTE.fullmatch(attribute)):
            c.expect(
                _at(item_path, "attribute"),
                "an attribute such as ${node.datacenter}, ${node.labels.X} or ${node.attributes.X}",
                attribute,
            )
        targets = spread.get("targets")
        targets_path = _at(item_path, "targets")
        if not isinstance(targets, dict):
            c.expect(targets_path, "a mapping of attribute values to percentages", targets)
            continue
        total = 0.0
        for k, pct in targets.items():
            if isinstance(pct, bool) or not isinstance(pct, int | float) or not 0 <= pct <= 100:
                c.expect(_at(targets_path, k), "a percentage from 0 to 100", pct)
            else:
                total += pct
        if total > 100:
            c.add(targets_path, f"the percentages add up to {total:g}, more than 100")


def _str_value(c: _Checker, value: object, path: str) -> object:
    return c.string(value, path)


def _check_constraint_value(c: _Checker, operator: object, text: str, path: str) -> None:
    if operator == "regexp":
        try:
            compile_pattern(text)
        except PatternError as e:
            c.add(path, f"expected a regular expression, got {show(text)}: {e} (RE2 syntax)")
    elif operator == "version":
        clauses = text.split(",")
        if not text.strip() or not all(_VERSION_CLAUSE.fullmatch(x) for x in clauses):
            c.expect(path, 'a version constraint such as ">= 1.2, < 2"', text)
    elif operator == "set_contains" and not all(x.strip() for x in text.split(",")):
        c.expect(path, 'a comma-separated list of values such as "a,b"', text)


# -------------------------------------------------------------- load / dump


def load_job(text: str, *, filename: str = "") -> Job:
    """Parse, canonicalize and validate a job file in one step."""
    return validate(canonicalize(parse_job_text(text, filename=filename)))


def job_to_dict(job: Job) -> dict[str, Any]:
    """The job as plain data, for display and for editing and re-submitting."""
    return cast(dict[str, Any], msgspec.to_builtins(job))


# ------------------------------------------------------- node registration

# Node ids name store keys and URL paths: a conservative alphabet, no separators.
_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_NODE_RESOURCE_RULES: dict[str, _Rule] = {
    "cpu": _int(0, 1_000_000_000, "MHz"),  # 0: not fingerprinted; a node has many cores
    "memory": _int(0, 1_000_000_000, "MB"),
    "port_min": _int(1, 65535),
    "port_max": _int(1, 65535),
}


def validate_node(doc: object) -> Node:
    """The Node an agent registers, or ValidationError listing every problem with its path.

    Unknown fields pass (a newer agent may send more); what the scheduler counts on is
    held to the same kind of bounds as a job's resources."""
    c = _Checker()
    if not isinstance(doc, dict):
        c.expect("", "a node object", doc)
        raise ValidationError(c.problems)
    node_id = doc.get("id")
    if not (isinstance(node_id, str) and _NODE_ID.fullmatch(node_id)):
        c.expect("id", "a node id of 1-128 letters, digits, '.', '_' or '-'", node_id)
    name = doc.get("name")
    if not (isinstance(name, str) and name.strip() and len(name) <= 255):
        c.expect("name", "a node name of 1-255 characters", name)
    elif not _valid_utf8(name):
        c.add("name", "contains invalid unicode (a lone surrogate)")
    for key in ("labels", "attributes"):
        if key in doc:
            c.str_map(doc[key], key)
    res = doc.get("resources", {})
    if not isinstance(res, dict):
        c.expect("resources", "a mapping", res)
    else:
        for key, rule in _NODE_RESOURCE_RULES.items():
            if key in res:
                rule(c, res[key], _at("resources", key))
        low, high = res.get("port_min", 20000), res.get("port_max", 32000)
        if isinstance(low, int) and isinstance(high, int) and low > high:
            c.add("resources.port_max", f"expected at least port_min ({low}), got {high}")
        reserved = c.items(res.get("reserved_ports", []), "resources.reserved_ports", "ports")
        for i, port in enumerate(reserved or []):
            c.integer(port, _at("resources.reserved_ports", i), 1, 65535)
    if c.problems:
        raise ValidationError(c.problems)
    return _convert(doc, Node)


def user_spec(job: Job) -> dict[str, Any]:
    """The user's part of a job (no field the server sets): what a submit compares and sends."""
    d = job_to_dict(job)
    for f in STORED_FIELDS:
        d.pop(f, None)
    return d
