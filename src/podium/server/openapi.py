"""The OpenAPI 3.1 document at /v1/openapi.json, built from the route table (app.ROUTES)
and, per route, what DOCS says: its query parameters, its request body and the shape of
its answer, each a msgspec type (views.py, model/types.py) turned into JSON Schema by
msgspec. A route without an entry in DOCS is listed with an untyped answer; the API
tests fail on it, so every route gets one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import msgspec

from podium import __version__
from podium.model.types import (
    Allocation,
    AllocUpdate,
    AllocUsage,
    Deployment,
    Event,
    Job,
    Node,
)
from podium.server import views as v
from podium.server.scaling import ScalingStatus

JSON = "application/json"
REF = "#/components/schemas/{name}"


@dataclass(frozen=True)
class Query:
    name: str
    type: str  # JSON Schema type: string, integer, boolean
    description: str
    example: str = ""


@dataclass(frozen=True)
class Doc:
    response: Any = None  # the type of a 200 answer's JSON (None: `media` says what it is)
    body: Any = None  # the type of the JSON request body, if the route takes one
    query: tuple[Query, ...] = ()
    media: str = JSON  # the 200 answer's media type
    yaml_body: bool = False  # a job file's YAML text is accepted as the body, too
    raw_body: str = ""  # the media type of a body that is not JSON (a snapshot file)


NAMESPACE = Query("namespace", "string", "The namespace (default: default).")
INDEX = Query("index", "integer", "Blocking query: answer once the index passes this one.")
WAIT = Query("wait", "string", "Blocking query: wait at most this long (up to 5m).", "30s")
JOB = Query("job", "string", "Only this job's.")
TAG = Query("tag", "string", "Only endpoints with this tag.")
CHECK_INDEX = Query("check_index", "integer", "Refuse (409) if the job changed since.")
ONLY_NS = Query("namespace", "string", "Only this one.")
PREFIX = Query("prefix", "string", "Only paths that start with this.")
VERSION = Query("version", "integer", "This version instead of the newest.")
FORCE = Query("force", "boolean", "Even while a job that runs reads it.")
KINDS = ("config", "secret")
MAX_AGE = Query("max_age", "string", "Figures at most this old (asks the agents again).", "2s")

DOCS: dict[str, Doc] = {
    "ui_page": Doc(media="text/html"),
    "ui_asset": Doc(media="text/*"),
    "status": Doc(v.Status),
    "members": Doc(list[v.Member]),
    "openapi": Doc(dict[str, Any]),
    "metrics": Doc(media="text/plain"),
    "metrics_targets": Doc(list[v.MetricsTarget]),
    "list_jobs": Doc(list[v.JobRow], query=(Query("namespace", "string", "Only this one."),)),
    "register_job": Doc(v.Registered, v.JobSubmission, (CHECK_INDEX,), yaml_body=True),
    # The same body as a submission; check_index is read (and must be well-formed) but only
    # a submission acts on it.
    "validate_job": Doc(v.Validated, v.JobSubmission, (CHECK_INDEX,), yaml_body=True),
    "plan_job": Doc(v.Plan, v.JobSubmission, (CHECK_INDEX,), yaml_body=True),
    "get_job": Doc(v.JobSummary, query=(NAMESPACE,)),
    "stop_job": Doc(
        v.Stopped, query=(NAMESPACE, Query("purge", "boolean", "Remove it and its history."))
    ),
    "dispatch_job": Doc(v.Launched, v.Dispatch, (NAMESPACE,)),
    "force_periodic": Doc(v.Launched, query=(NAMESPACE,)),
    "job_logs": Doc(
        media="application/x-ndjson",
        query=(
            NAMESPACE,
            Query("group", "string", "Only this group's copies."),
            Query("alloc", "string", "Only this copy (an id or its prefix)."),
            Query("task", "string", "Only this task's lines."),
            Query("type", "string", "stdout (default), stderr or both."),
            Query("grep", "string", "Only lines matching this RE2 pattern."),
            Query("since", "string", "Only lines from this long ago on.", "10m"),
            Query("follow", "boolean", "Go on with new lines as they come."),
        ),
    ),
    "job_versions": Doc(list[v.JobVersion], query=(NAMESPACE,)),
    "job_version": Doc(Job, query=(NAMESPACE,)),
    "revert_job": Doc(v.Registered, v.Revert, (NAMESPACE,)),
    "scale_job": Doc(v.Registered, v.Scale, (NAMESPACE,)),
    "list_deployments": Doc(
        list[Deployment], query=(Query("namespace", "string", "Only this one."), JOB)
    ),
    "get_deployment": Doc(v.DeploymentView, query=(NAMESPACE,)),
    "promote_deployment": Doc(v.DeploymentView, v.Promote, (NAMESPACE,)),
    "fail_deployment": Doc(v.DeploymentView, query=(NAMESPACE,)),
    "pause_deployment": Doc(v.DeploymentView, query=(NAMESPACE,)),
    "resume_deployment": Doc(v.DeploymentView, query=(NAMESPACE,)),
    "list_allocs": Doc(
        list[v.AllocRow], query=(NAMESPACE, JOB, Query("node", "string", "Only this node's."))
    ),
    "get_alloc": Doc(Allocation, query=(NAMESPACE,)),
    "stop_alloc": Doc(Allocation, query=(NAMESPACE,)),
    "restart_alloc": Doc(Allocation, query=(NAMESPACE,)),
    "alloc_stats": Doc(AllocUsage, query=(MAX_AGE,)),
    "cluster_usage": Doc(
        v.Usage,
        query=(
            Query("namespace", "string", "Only this one's jobs and allocs."),
            JOB,
            Query("node", "string", "Only this node (id, name or prefix)."),
            MAX_AGE,
        ),
    ),
    "list_nodes": Doc(list[v.NodeRow]),
    "register_node": Doc(v.NodeRegistered, Node),
    "get_node": Doc(v.NodeRow),
    "heartbeat": Doc(v.HeartbeatAck),
    "node_eligibility": Doc(v.NodeRow, v.Eligibility),
    "node_drain": Doc(v.NodeRow, v.Drain),
    "purge_node": Doc(
        v.NodePurged,
        query=(Query("force", "boolean", "Purge even a node that is ready."),),
    ),
    "node_allocs": Doc(v.NodeAllocs, query=(INDEX, WAIT)),
    "node_alloc_updates": Doc(v.ReportsApplied, list[AllocUpdate]),
    "events": Doc(
        list[Event],
        query=(
            Query("topic", "string", "Only these topics (comma-separated)."),
            Query("key", "string", "Only this job, alloc (id or prefix) or node (id or name)."),
            Query("namespace", "string", "Only this namespace's."),
            Query("index", "integer", "Only events after this store index (or Last-Event-ID)."),
            Query("since", "string", "Only events from this long ago on.", "10m"),
            Query("limit", "integer", "At most this many, the newest (default 100; 0: all)."),
            Query("follow", "boolean", "Stream events as they happen (text/event-stream)."),
            Query("heartbeat", "string", "With follow: a comment line this often.", "10s"),
            JOB,
            Query("alloc", "string", "Only this alloc's (an id or its prefix)."),
            Query("node", "string", "Only this node's."),
        ),
    ),
    "snapshot_save": Doc(media="application/octet-stream"),
    "snapshot_restore": Doc(
        v.Restored,
        query=(Query("force", "boolean", "Restore over a store that holds data."),),
        raw_body="application/octet-stream",
    ),
    "list_services": Doc(
        v.Services, query=(INDEX, WAIT, Query("namespace", "string", "Only this one."))
    ),
    "get_service": Doc(v.Service, query=(NAMESPACE, INDEX, WAIT, TAG)),
    "job_scaling": Doc(ScalingStatus, query=(NAMESPACE,)),
    "wake_service": Doc(v.Woken, query=(NAMESPACE,)),
    **{f"list_{kind}s": Doc(list[v.DataVersion], query=(ONLY_NS, PREFIX)) for kind in KINDS},
    "get_config": Doc(v.DataVersion, query=(NAMESPACE, VERSION)),
    "get_secret": Doc(v.DataVersion, query=(NAMESPACE, VERSION)),
    "secret_values": Doc(v.DataVersion, query=(NAMESPACE, VERSION)),
    "put_config": Doc(v.ConfigPut, v.DataPut, (NAMESPACE,)),
    "put_secret": Doc(v.SecretPut, v.DataPut, (NAMESPACE,)),
    **{f"delete_{kind}": Doc(v.DataDeleted, query=(NAMESPACE, FORCE)) for kind in KINDS},
    **{f"{kind}_history": Doc(list[v.DataVersion], query=(NAMESPACE,)) for kind in KINDS},
    "keyring_status": Doc(v.KeyringStatus),
    "keyring_rotate": Doc(v.Rotated, v.Rotate),
    "alloc_template_data": Doc(
        v.TemplateData,
        query=(
            Query(
                "version", "integer", "The job version whose pins to use (default: the alloc's)."
            ),
        ),
    ),
    "alloc_logs": Doc(
        media="application/octet-stream",
        query=(
            Query("task", "string", "The task (default: the first)."),
            Query("type", "string", "stdout (default) or stderr."),
            Query("tail", "integer", "Bytes from the end to start with."),
            Query("lines", "integer", "Lines from the end to start with (over tail)."),
            Query("follow", "boolean", "Go on with new output as it comes."),
        ),
    ),
    # A WebSocket: binary frames carry stdin up, and stdout/stderr down (a first byte of
    # 1 or 2, then the bytes); text frames carry {"resize": [rows, cols]} and
    # {"eof": true} up, and {"exit_code": N} down, last.
    "alloc_exec": Doc(
        media="application/octet-stream",
        query=(
            Query("cmd", "string", "The command, one argument per cmd= (repeated)."),
            Query("task", "string", "The task (default: the first)."),
            Query("tty", "boolean", "Give the command a terminal."),
        ),
    ),
    "tls_ca": Doc(media="application/x-pem-file"),
    "tls_join": Doc(v.TlsIssued, v.TlsJoin),
    "tls_renew": Doc(v.TlsIssued, v.TlsRenew),
    "tls_join_token": Doc(v.JoinToken, v.JoinTokenAsk),
    "tls_status": Doc(v.TlsStatus),
    "tls_rotate": Doc(v.TlsRotated),
    "ui_login": Doc(v.UiLink),
    "ui_session_open": Doc(v.UiSession, v.UiLogin),
    "ui_session_close": Doc(v.UiLoggedOut),
    "acl_bootstrap": Doc(v.AclTokenMade),
    "acl_token_list": Doc(list[v.AclTokenView]),
    "acl_token_create": Doc(v.AclTokenMade, v.AclTokenCreate),
    "acl_token_self": Doc(v.AclTokenView),
    "acl_token_info": Doc(v.AclTokenView),
    "acl_token_delete": Doc(v.AclTokenView),
    "acl_policy_list": Doc(list[v.AclPolicyRow]),
    "acl_policy_info": Doc(v.AclPolicyView),
    "acl_policy_apply": Doc(v.AclPolicyRow, v.AclPolicyApply),
    "acl_policy_delete": Doc(v.Deleted),
    "list_namespaces": Doc(list[v.NamespaceRow]),
    "create_namespace": Doc(v.NamespaceRow, v.NamespaceCreate),
    "get_namespace": Doc(v.NamespaceStatus),
    "set_namespace_quota": Doc(v.NamespaceStatus, v.QuotaFigures),
    "delete_namespace": Doc(v.Deleted),
}

_ERRORS = {
    "400": "Invalid input: `problems` names each field and what was expected",
    "401": "No credentials: a client certificate (or a web UI session) is needed",
    "403": "Credentials that do not allow this (see x-podium-requires)",
    "404": "Not found",
    "409": "Revision conflict: read again and retry",
    "413": "Request body too large",
    "503": "The store or the leader is unavailable: retry",
}


def openapi_document(routes: list[tuple[str, str, str, str, str]]) -> dict[str, Any]:
    docs = [DOCS.get(name, Doc()) for _, _, name, _, _ in routes]
    types = [v.Error] + [t for d in docs for t in (d.response, d.body) if t is not None]
    schemas, components = msgspec.json.schema_components(types, ref_template=REF)
    schema_of = iter(schemas)
    error = next(schema_of)
    paths: dict[str, dict[str, Any]] = {}
    seen: dict[str, int] = {}  # a handler served at several paths: one operation id each
    for (method, path, name, requires, summary), doc in zip(routes, docs, strict=True):
        seen[name] = seen.get(name, 0) + 1
        op_id = name if seen[name] == 1 else f"{name}_{seen[name]}"
        response = next(schema_of) if doc.response is not None else None
        body = next(schema_of) if doc.body is not None else None
        clean = re.sub(r"\{(\w+):\w+\}", r"{\1}", path)
        params: list[dict[str, Any]] = [
            {
                "name": p,
                "in": "path",
                "required": True,
                "schema": {"type": "integer" if kind == "int" else "string"},
            }
            for p, kind in re.findall(r"\{(\w+)(?::(\w+))?\}", path)
        ]
        params += [_query(q) for q in doc.query]
        ok: dict[str, Any] = {"description": "OK"}
        if response is not None:
            ok["content"] = {doc.media: {"schema": response}}
        elif doc.media != JSON:
            ok["content"] = {doc.media: {"schema": {"type": "string"}}}
        errors = {
            code: {"description": what, "content": {JSON: {"schema": error}}}
            for code, what in _ERRORS.items()
        }
        op: dict[str, Any] = {
            "operationId": op_id,
            "summary": summary + (" (WebSocket upgrade)" if method == "WS" else ""),
            "x-podium-requires": requires,
            "parameters": params,
            "responses": {"200": ok, **errors},
        }
        if body is not None:
            content: dict[str, Any] = {JSON: {"schema": body}}
            if doc.yaml_body:
                content["application/yaml"] = {"schema": {"type": "string"}}
            op["requestBody"] = {"required": True, "content": content}
        elif doc.raw_body:
            op["requestBody"] = {
                "required": True,
                "content": {doc.raw_body: {"schema": {"type": "string"}}},
            }
        verb = "get" if method == "WS" else method.lower()
        paths.setdefault(clean, {})[verb] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "podium", "version": __version__},
        "paths": paths,
        "components": {"schemas": components},
    }


def _query(q: Query) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": q.name,
        "in": "query",
        "required": False,
        "description": q.description,
        "schema": {"type": q.type},
    }
    if q.example:
        out["example"] = q.example
    return out
