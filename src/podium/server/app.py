"""The HTTP API under /v1: thin routes that validate at the edge and call the write modules.

    request -> parse + validate (model.spec, msgspec) -> jobs/nodes/allocs writes -> store
            <- JSON (msgspec)  <- ClusterState reads

One place maps the error hierarchy (errors.py) to status codes: `_error_response`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Any

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST as METRICS_CONTENT_TYPE
from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute

from podium import __version__
from podium.errors import (
    Forbidden,
    NotFound,
    PodiumError,
    Problem,
    Unauthorized,
    ValidationError,
)
from podium.model import data as datamodel
from podium.model import spec as jobspec
from podium.model.diff import diff
from podium.model.pattern import PatternError, compile_pattern
from podium.model.types import Allocation, AllocUpdate, Job, Node
from podium.runtime.bodies import json_body as _json_body
from podium.runtime.bodies import read_body as _body
from podium.runtime.merge import Merge
from podium.runtime.slices import Slicer
from podium.scheduler import group_hash, reconcile, schedule
from podium.server import access, audit, config_rollout, namespace_quota, template_plan
from podium.server import allocs as alloc_ops
from podium.server import deployments as dep_ops
from podium.server import dispatch as dispatch_ops
from podium.server import jobs as job_ops
from podium.server import nodes as node_ops
from podium.server import scaling as scaling_ops
from podium.server.acl_api import CHECKED
from podium.server.agents import alloc_lines as agent_lines
from podium.server.catalog import Catalog
from podium.server.controllers import periodic as periodic_ops
from podium.server.controllers.placement import cluster_snapshot, victims
from podium.server.data_api import DATA_ROUTES, DataRoutes
from podium.server.events import TOPICS, EventFilter, readable_event
from podium.server.forward import ForwardRoutes
from podium.server.idempotency import Idempotency
from podium.server.metrics import ServerMetrics
from podium.server.openapi import openapi_document
from podium.server.runtime import ServerContext
from podium.server.trust_api import TrustRoutes
from podium.server.usage import UsageGatherer
from podium.store import keys
from podium.store import snapshot as store_snapshot
from podium.templates.jobs import check_with as check_templates
from podium.templates.jobs import sites as template_sites

log = logging.getLogger(__name__)


class _JobName(Convertor[str]):
    """A job name in a path: a DNS label, or a run of one, e.g. web/periodic-1700000000."""

    regex = "[a-z0-9-]{1,63}(?:/(?:periodic|dispatch)-[a-z0-9-]{1,48})?"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return str(value)


register_url_convertor("job", _JobName())
Handler = Callable[[Request], Awaitable[Response]]


def json_response(data: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(data), status_code=status, media_type="application/json")


def _error_response(exc: Exception) -> Response:
    if isinstance(exc, PodiumError):
        body: dict[str, Any] = {"error": str(exc)}
        if isinstance(exc, ValidationError):
            body["problems"] = [{"path": p.path, "message": p.message} for p in exc.problems]
        return json_response(body, exc.status_code)
    if isinstance(exc, HTTPException):
        return json_response({"error": exc.detail}, exc.status_code)
    log.exception("unexpected error in API handler", exc_info=exc)
    return json_response({"error": f"internal error: {type(exc).__name__}"}, 500)


def _namespace(req: Request) -> str:
    return req.query_params.get("namespace", "default") or "default"


def _listing_namespace(req: Request) -> str:
    """A listing's namespace: one, or "" (every namespace the caller may read; also `*`)."""
    ns = req.query_params.get("namespace", "")
    return "" if ns == "*" else ns


def _int_param(req: Request, name: str, default: int) -> int:
    raw = req.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValidationError([Problem(name, f"expected an integer, got {raw!r}")]) from None


def _float_param(req: Request, name: str, default: float) -> float:
    raw = req.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(jobspec.parse_duration(raw))
    except (ValueError, ValidationError):
        raise ValidationError(
            [Problem(name, f"expected a duration such as 30s, got {raw!r}")]
        ) from None


def _decode_as(kind: type[Any], data: Any, what: str) -> Any:
    try:
        return msgspec.convert(data, type=kind)
    except msgspec.ValidationError as e:
        # msgspec says e.g. "Expected `int`, got `str` - at `$.resources.cpu`"
        msg = str(e)
        path = ""
        if " - at `$" in msg:
            msg, _, at = msg.partition(" - at `$")
            path = at.rstrip("`").lstrip(".")
        raise ValidationError([Problem(f"{what}.{path}".rstrip("."), msg)]) from None


def _user(req: Request) -> str:
    """Who the client says is asking (recorded, not authenticated)."""
    return req.headers.get("x-podium-user", "")[:128]


def _body_int(body: Any, name: str, *, minimum: int = 0, maximum: int = 2**63 - 1) -> int:
    value = body.get(name) if isinstance(body, dict) else None
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
        raise ValidationError(
            [Problem(name, f"expected an integer from {minimum} to {maximum}, got {value!r}")]
        )
    return value


async def _job_from_request(req: Request) -> tuple[Job, int | None]:
    """Accept {"job": {...}, "check_index": N}, a bare job object, or YAML text."""
    ctype = req.headers.get("content-type", "")
    check_index: int | None = None
    if "yaml" in ctype:
        text = (await _body(req)).decode("utf-8", errors="replace")
        raw: Any = jobspec.parse_job_text(text)
    else:
        data = await _json_body(req)
        if isinstance(data, dict) and "job" in data and isinstance(data.get("job"), dict | str):
            raw = data["job"]
            ci = data.get("check_index")
            if ci is not None:
                if not isinstance(ci, int) or isinstance(ci, bool) or ci < 0:
                    raise ValidationError(
                        [Problem("check_index", f"expected a non-negative integer, got {ci!r}")]
                    )
                check_index = ci
            if isinstance(raw, str):
                raw = jobspec.parse_job_text(raw)
        else:
            raw = data
    if not isinstance(raw, dict):
        raise ValidationError([Problem("", f"expected a job object, got {type(raw).__name__}")])
    q_index = req.query_params.get("check_index")
    if q_index:
        check_index = _int_param(req, "check_index", 0)
    return jobspec.validate(jobspec.canonicalize(raw)), check_index


class Api(DataRoutes, TrustRoutes, ForwardRoutes):
    """The route handlers; everything they touch comes through the ServerContext."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.state = ctx.state
        self.rows = job_ops.RowCache()  # job statuses' alloc rows, encoded

    def now(self) -> float:
        return self.ctx.clock.now()

    # ---------------------------------------------------------------- meta

    async def status(self, req: Request) -> Response:
        lead = self.ctx.leadership
        return json_response(
            {
                "version": __version__,
                "leader": lead.is_leader if lead else True,
                "leader_address": lead.leader.address if lead and lead.leader else None,
                "revision": self.state.revision,
                "nodes": len(self.state.nodes),
                "jobs": len(self.state.jobs),
                "allocations": len(self.state.allocs),
                "store": self.ctx.store_url,
                # Stored values that do not decode (skipped: see the store.bad_value events).
                "bad_values": len(self.state.bad_values),
                # Rounds each leader controller completed here (none on a follower).
                "controller_rounds": dict(self.state.rounds),
            }
        )

    async def ui_page(self, req: Request) -> Response:
        return _ui_file("index.html")

    async def ui_asset(self, req: Request) -> Response:
        return _ui_file(req.path_params["file"])

    async def metrics(self, req: Request) -> Response:
        return Response(self.ctx.metrics.exposition(), media_type=METRICS_CONTENT_TYPE)

    async def metrics_targets(self, req: Request) -> Response:
        """Every agent's metrics endpoint in Prometheus' HTTP service discovery format."""
        return json_response(
            [
                {
                    "targets": [n.http_addr],
                    "labels": {"node": n.name, "node_id": n.id, "datacenter": n.datacenter},
                }
                for n in sorted(self.state.nodes.values(), key=lambda n: n.name)
                if n.http_addr
            ]
        )

    async def openapi(self, req: Request) -> Response:
        return json_response(openapi_document(ROUTES))

    async def members(self, req: Request) -> Response:
        lead = self.ctx.leadership
        return json_response(await lead.members() if lead else [])

    # ---------------------------------------------------------------- jobs

    async def list_jobs(self, req: Request) -> Response:
        ns = req.query_params.get("namespace")
        listed = self.readable_in(req, "list-jobs")
        rows = []
        for job in sorted(self.state.jobs.values(), key=lambda j: j.key):
            if ns and ns != "*" and job.namespace != ns:
                continue
            if not listed(job.namespace):
                continue
            allocs = self.state.allocs_of_job(job.namespace, job.name)
            rows.append(
                {
                    "name": job.name,
                    "namespace": job.namespace,
                    "type": job.type,
                    "version": job.version,
                    "priority": job.priority,
                    "status": job_ops.status_of(job, allocs, now=self.now()),
                    "parent": job.parent,
                    "index": job.revision,
                    "submit_time": job.submit_time,
                }
            )
        return json_response(rows)

    async def _with_data(self, job: Job) -> Job:
        """The job with each template's reads (parsed in the worker: bounded) and the
        current version of every config and secret it reads pinned."""
        # The worker is asked only for a job with templates.
        job, problems = await check_templates(
            job, lambda path, text: self.template_worker.parse(path, text)
        )
        if problems:
            raise ValidationError(problems)
        return await config_rollout.resolve(self.state, job)

    async def register_job(self, req: Request) -> Response:
        job, check_index = await _job_from_request(req)
        await self._submittable(req, job)
        job = await self._with_data(job)
        stored, changed = await job_ops.register(
            self.state, job, now=self.now(), check_index=check_index, submitted_by=_user(req)
        )
        return self._registered(stored, changed)

    async def _submittable(self, req: Request, job: Job) -> None:
        """The job's own namespace (not the request's) must allow submit-job, and exist;
        a service it reaches in another namespace needs read-job there."""
        self.permit(req, "submit-job", job.namespace)
        for g in job.groups:
            for t in g.tasks:
                for u in t.upstreams:
                    if u.namespace and u.namespace != job.namespace:
                        self.permit(req, "read-job", u.namespace)
        assert self.ctx.namespaces is not None
        await self.ctx.namespaces.require(job.namespace, field="job.namespace")

    def _registered(self, stored: Job, changed: bool) -> Response:
        dep = self.state.latest_deployment(stored.namespace, stored.name)
        return json_response(
            {
                "name": stored.name,
                "namespace": stored.namespace,
                "version": stored.version,
                "index": stored.revision,
                "changed": changed,
                "deployment_id": dep.id if dep and dep.job_version == stored.version else "",
            }
        )

    async def revert_job(self, req: Request) -> Response:
        body = await _json_body(req)
        version = _body_int(body, "version", minimum=0)
        check = body.get("check_index") if isinstance(body, dict) else None
        stored, changed = await job_ops.revert(
            self.state,
            _namespace(req),
            req.path_params["name"],
            version,
            now=self.now(),
            submitted_by=_user(req),
            check_index=_body_int(body, "check_index", minimum=0) if check is not None else None,
        )
        return self._registered(stored, changed)

    async def scale_job(self, req: Request) -> Response:
        body = await _json_body(req)
        group = body.get("group") if isinstance(body, dict) else None
        if not isinstance(group, str) or not group:
            raise ValidationError([Problem("group", f"expected a group name, got {group!r}")])
        count = _body_int(body, "count", minimum=0, maximum=10_000)
        stored, changed = await job_ops.scale(
            self.state,
            _namespace(req),
            req.path_params["name"],
            group,
            count,
            now=self.now(),
            submitted_by=_user(req),
        )
        return self._registered(stored, changed)

    async def job_scaling(self, req: Request) -> Response:
        """The autoscaled groups of a job: figures, forecast, last decisions, what holds a
        change back and when the next may come. The leader measures the figures; another
        server shows what the store keeps."""
        job = self._job(req)
        if not any(g.scaling is not None for g in job.groups):
            raise NotFound(f"job {job.name!r} has no group that scales itself (no `scaling`)")
        auto = self.ctx.autoscaler
        if auto is not None and auto.running:
            return json_response(await auto.status(job))
        lead = self.ctx.leadership
        leader = lead.leader.address if lead is not None and lead.leader is not None else ""
        record, _ = await scaling_ops.read(self.state, job.namespace, job.name)
        return json_response(scaling_ops.stored_status(job, record, leader=leader))

    async def wake_service(self, req: Request) -> Response:
        """A proxy holds a request for a service whose group sleeps (scaled to 0): start
        one copy of each such group behind it (at once; many calls wake it once)."""
        ns, name = _namespace(req), req.path_params["name"]
        if not jobspec.is_name(name):
            raise ValidationError([Problem("name", f"expected a service name, got {name!r}")])
        woken = await scaling_ops.wake(self.state, self._catalog(), ns, name, now=self.now())
        return json_response({"service": name, "namespace": ns, "groups": woken})

    # ---------------------------------------------------------- deployments

    async def list_deployments(self, req: Request) -> Response:
        ns = req.query_params.get("namespace") or None
        job = req.query_params.get("job", "")
        readable = self.readable_in(req, "read-job")
        out = [
            d
            for d in dep_ops.listing(self.state, None if ns == "*" else ns)
            if (not job or d.job == job) and readable(d.namespace)
        ]
        return json_response(msgspec.to_builtins(out))

    async def get_deployment(self, req: Request) -> Response:
        d = dep_ops.find(self.state, _namespace(req), req.path_params["id"])
        return json_response(self._deployment_view(d))

    def _deployment_view(self, d: Any) -> dict[str, Any]:
        allocs = [
            job_ops.alloc_row(a) | {"canary": a.canary, "deployment_healthy": a.deployment_healthy}
            for a in self.state.allocs_of_job(d.namespace, d.job)
            if a.deployment_id == d.id
        ]
        return {"deployment": msgspec.to_builtins(d), "allocations": allocs}

    async def promote_deployment(self, req: Request) -> Response:
        body = await _json_body(req) if await _body(req) else {}
        groups = body.get("groups") if isinstance(body, dict) else None
        if groups is not None and not (
            isinstance(groups, list) and all(isinstance(g, str) for g in groups)
        ):
            raise ValidationError(
                [Problem("groups", f"expected a list of group names, got {groups!r}")]
            )
        d = await dep_ops.promote(
            self.state, _namespace(req), req.path_params["id"], groups=groups, now=self.now()
        )
        return json_response(self._deployment_view(d))

    async def fail_deployment(self, req: Request) -> Response:
        d = await dep_ops.set_status(
            self.state, _namespace(req), req.path_params["id"], "failed",
            why=f"failed by {_user(req) or 'an operator'}", now=self.now(),
        )  # fmt: skip
        return json_response(self._deployment_view(d))

    async def pause_deployment(self, req: Request) -> Response:
        d = await dep_ops.set_status(
            self.state, _namespace(req), req.path_params["id"], "paused",
            why=f"paused by {_user(req) or 'an operator'}", now=self.now(),
        )  # fmt: skip
        return json_response(self._deployment_view(d))

    async def resume_deployment(self, req: Request) -> Response:
        d = await dep_ops.set_status(
            self.state, _namespace(req), req.path_params["id"], "running",
            why=f"resumed by {_user(req) or 'an operator'}", now=self.now(),
        )  # fmt: skip
        return json_response(self._deployment_view(d))

    async def validate_job(self, req: Request) -> Response:
        job, _ = await _job_from_request(req)
        self.permit(req, "submit-job", job.namespace)
        job = await self._with_data(job)
        return json_response({"valid": True, "job": msgspec.to_builtins(job)})

    async def plan_job(self, req: Request) -> Response:
        """Dry run: what would change and what the scheduler would do. Writes nothing."""
        job, _ = await _job_from_request(req)
        await self._submittable(req, job)
        job = await self._with_data(job)
        current = self.state.jobs.get(job.key)
        job = job_ops.keep_scaled_counts(current, job)  # as a submit would store it
        changed = (
            current is None
            or current.stop
            or job_ops.spec_of(current) != job_ops.spec_of(job)
            or current.config_versions != job.config_versions
        )
        candidate = msgspec.structs.replace(
            job,
            version=(
                current.version + 1 if current and changed else (current.version if current else 0)
            ),
            submit_time=self.now(),
        )
        allocs = self.state.allocs_of_job(job.namespace, job.name)
        # Read a slice at a time: a user's request on the loop the leader's work shares.
        snapshot = await cluster_snapshot(self.state, Slicer())
        rec = reconcile(
            candidate,
            allocs,
            self.state.nodes,
            now=self.now(),
            deployment=self.state.latest_deployment(job.namespace, job.name),
        )
        plan = schedule(
            snapshot,
            candidate,
            rec,
            eval_id=f"plan:{job.key}",
            now=self.now(),
            preempt=lambda node_id: victims(self.state, node_id),
        )
        if template_sites(candidate):
            await template_plan.render_check(
                self.state, self.keyring, self.template_worker, candidate, plan, self._catalog()
            )
        old = job_ops.spec_of(current) if current else {}
        replaced = {p.previous_alloc for p in plan.placements if p.previous_alloc}
        preempted = {p.alloc_id for p in plan.preemptions}
        stops = {s.alloc_id for s in plan.stops} - preempted
        in_place = {a.id for a in rec.in_place}
        # Old copies a rolling deployment replaces in later batches (or after promotion).
        held = [
            a
            for a in allocs
            if a.live
            and a.id not in stops
            and a.id not in in_place
            and a.job_version != candidate.version
            and (g := candidate.group(a.group)) is not None
            and a.group_hash != group_hash(candidate, g)
        ]
        moved = in_place | {a.id for a in held}
        return json_response(
            {
                "index": current.revision if current else 0,
                "changed": changed,
                "diff": msgspec.to_builtins(diff(old, job_ops.spec_of(job))),
                "create": sum(1 for p in plan.placements if not p.previous_alloc),
                "replace": len(replaced),
                "stop": len(stops - replaced),
                "in_place": len(rec.in_place),
                "canaries": sum(1 for p in rec.place if p.canary),
                "deployment": rec.deployment is not None,
                "replace_later": len(held),
                "unchanged": sum(
                    1 for a in allocs if a.live and a.id not in stops and a.id not in moved
                ),
                "placements": [
                    {
                        "group": p.group,
                        "index": p.index,
                        "node": p.node_name,
                        "replaces": p.previous_alloc,
                    }
                    for p in plan.placements
                ],
                "failures": msgspec.to_builtins(plan.failures),
                "preemptions": msgspec.to_builtins(plan.preemptions),
                "config": template_plan.config_changes(current, candidate, allocs, rec),
            }
        )

    def _job(self, req: Request) -> Job:
        ns, name = _namespace(req), req.path_params["name"]
        job = self.state.jobs.get(f"{ns}/{name}")
        if job is None:
            raise NotFound(f"no job {name!r} in namespace {ns!r}")
        return job

    async def get_job(self, req: Request) -> Response:
        job = self._job(req)
        if not job.config_versions:
            return json_response(job_ops.summary(self.state, job, now=self.now(), rows=self.rows))
        out = job_ops.summary(self.state, job, now=self.now())
        # Which config and secret versions each copy runs with: its job version's pins.
        pins = {job.version: job.config_versions}
        for row in out["allocations"]:
            v = row["job_version"]
            if v not in pins:
                kv = await self.state.store.get(keys.job_version(job.namespace, job.name, v))
                pins[v] = msgspec.json.decode(kv.value, type=Job).config_versions if kv else {}
            row["config_versions"] = pins[v]
        return json_response(out)

    async def dispatch_job(self, req: Request) -> Response:
        body = await _json_body(req) if await _body(req) else {}
        if not isinstance(body, dict):
            raise ValidationError([Problem("", "expected a JSON object: {meta, payload}")])
        meta = body.get("meta") or {}
        if not isinstance(meta, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
        ):
            raise ValidationError([Problem("meta", "expected a mapping of strings to strings")])
        parent = self._job(req)
        # A dispatched run is one more job of the same shape: held to the quota as one.
        await namespace_quota.admit(self.state, msgspec.structs.replace(parent, name="-"))
        child = await dispatch_ops.dispatch(
            self.state,
            _namespace(req),
            req.path_params["name"],
            meta=meta,
            payload=dispatch_ops.decode_payload(body.get("payload")),
            now=self.now(),
        )
        return json_response({"name": child.name, "index": child.revision, "parent": child.parent})

    async def force_periodic(self, req: Request) -> Response:
        child = await periodic_ops.force(
            self.state, _namespace(req), req.path_params["name"], now=self.now()
        )
        return json_response({"name": child.name, "index": child.revision, "parent": child.parent})

    async def stop_job(self, req: Request) -> Response:
        purge = req.query_params.get("purge", "") in ("1", "true", "yes")
        rev = await job_ops.stop(
            self.state, _namespace(req), req.path_params["name"], purge=purge, now=self.now()
        )
        return json_response({"index": rev, "purged": purge})

    async def job_logs(self, req: Request) -> Response:
        """The log lines of every copy of a job (group, alloc narrow it) as NDJSON, each
        {time, alloc, node, task, stream, line}: past lines in time order, then, with
        follow, new lines as they come, from new copies too (a rollout, a reschedule)."""
        job = self._job(req)
        q = req.query_params
        group, alloc = q.get("group", ""), q.get("alloc", "")
        if group and job.group(group) is None:
            raise NotFound(f"job {job.name!r} has no group {group!r}")
        grep = q.get("grep", "")
        if grep:
            try:
                compile_pattern(grep)
            except PatternError as e:
                raise ValidationError([Problem("grep", f"not a valid RE2 pattern: {e}")]) from None
        kind = q.get("type", "stdout")
        if kind not in ("stdout", "stderr", "both"):
            raise ValidationError(
                [Problem("type", f"expected stdout, stderr or both, got {kind!r}")]
            )
        back = _float_param(req, "since", 0.0)
        follow = q.get("follow", "") in ("1", "true", "yes")
        params = {"type": kind, "grep": grep, "task": q.get("task", "")}
        if back > 0:
            params["since"] = str(self.now() - back)
        state = self.state

        def copies() -> list[Any]:
            return [
                a
                for a in state.allocs_of_job(job.namespace, job.name)
                if (not group or a.group == group)
                and (not alloc or a.id.startswith(alloc))
                and (a.live or not follow)
            ]

        async def lines(a: Any, p: dict[str, str]) -> AsyncIterator[dict[str, Any]]:
            """One copy's lines, tagged; ends with (or holds) a {"live"} marker once its
            past is sent, even when its agent does not answer."""
            node = state.nodes.get(a.node_id)
            marked = False
            if node is not None:
                async for obj in agent_lines(self.ctx.agent_link, node, a.id, p):
                    marked = marked or "live" in obj
                    yield {"alloc": a.id, "node": a.node_name, **obj}
            if not marked:
                yield {"alloc": a.id, "live": True}

        async def stream() -> AsyncIterator[bytes]:
            # Each copy is asked once for its past and then (with follow) what comes: the
            # agent marks where its past ends. Past lines of every copy are held until all
            # are in, then sent in time order; after that lines pass as they come.
            ask = {**params, "follow": "true"} if follow else params
            seen: set[str] = set()

            def add_new(merged: Merge[dict[str, Any]]) -> int:
                fresh = [
                    a
                    for a in copies()
                    if a.id not in seen and not (follow and a.client_status == "pending")
                ]
                for a in fresh:
                    seen.add(a.id)
                    merged.add(lines(a, ask))
                return len(fresh)

            async with Merge[dict[str, Any]]() as merged:
                waiting = add_new(merged)  # copies whose past is still coming
                past: list[dict[str, Any]] = []
                retention: dict[str, Any] | None = None
                while waiting:
                    item = await merged.get()
                    if item is None:
                        break
                    if "live" in item:
                        waiting -= 1
                    elif "retention" in item:
                        retention = retention or {"retention": item["retention"]}
                    else:
                        past.append(item)
                if retention is not None:  # what each task keeps: said once, first
                    yield msgspec.json.encode(retention) + b"\n"
                past.sort(key=lambda o: o["time"])
                for o in past:
                    yield msgspec.json.encode(o) + b"\n"
                while follow:
                    add_new(merged)  # copies that started since: their whole log, then live
                    if not merged.running:
                        await asyncio.sleep(0.5)  # no copy runs yet: look again soon
                        continue
                    item = await merged.get(timeout=0.5)
                    if item is not None and "live" not in item and "retention" not in item:
                        yield msgspec.json.encode(item) + b"\n"

        return StreamingResponse(stream(), media_type="application/x-ndjson")

    async def job_versions(self, req: Request) -> Response:
        versions = await job_ops.versions(self.state, _namespace(req), req.path_params["name"])
        out = []
        for i, v in enumerate(versions):
            prev = versions[i + 1] if i + 1 < len(versions) else None
            changes = diff(job_ops.spec_of(prev), job_ops.spec_of(v)) if prev else []
            out.append(
                {
                    "version": v.version,
                    "submit_time": v.submit_time,
                    "diff": msgspec.to_builtins(changes),
                    "job": msgspec.to_builtins(v),
                }
            )
        return json_response(out)

    async def job_version(self, req: Request) -> Response:
        ns, name = _namespace(req), req.path_params["name"]
        version = req.path_params["version"]
        who = self.who(req)
        if who.role == "agent" and not any(
            a.namespace == ns and a.job == name and a.job_version == version
            for a in self.state.allocs_of_node(who.node_id)
        ):
            raise Forbidden(f"{who.describe()} runs no allocation of {name} version {version}")
        kv = await self.state.store.get(keys.job_version(ns, name, version))
        if kv is None:
            raise NotFound(f"no version {version} of job {name!r}")
        return Response(kv.value, media_type="application/json")

    # -------------------------------------------------------------- allocs

    async def list_allocs(self, req: Request) -> Response:
        """job=NAME (in namespace, default "default"); node=ID; namespace alone filters."""
        job, node = req.query_params.get("job"), req.query_params.get("node")
        ns = req.query_params.get("namespace") or None
        ns = None if ns == "*" else ns
        if job:
            allocs = self.state.allocs_of_job(ns or "default", job)
        elif node:
            allocs = self.state.allocs_of_node(node)
        else:
            allocs = list(self.state.allocs.values())
        if ns:
            allocs = [a for a in allocs if a.namespace == ns]
        readable = self.readable_in(req, "read-job")
        allocs = [a for a in allocs if readable(a.namespace)]
        return json_response([job_ops.alloc_row(a) for a in allocs])

    def _alloc(self, req: Request) -> Allocation:
        """The alloc an id or prefix names (only in `namespace` when one is given)."""
        ns = req.query_params.get("namespace") or None
        return alloc_ops.resolve(self.state, req.path_params["id"], namespace=ns)

    async def get_alloc(self, req: Request) -> Response:
        return json_response(self._alloc(req))

    async def alloc_stats(self, req: Request) -> Response:
        """An alloc's CPU and memory, per task, as its agent measured them (at `time`)."""
        a = alloc_ops.resolve(self.state, req.path_params["id"])
        usage = self._usage()
        await usage.refresh(max_age=min(_float_param(req, "max_age", 1.0), 60.0))
        found = usage.alloc(a.id)
        if found is None:
            raise NotFound(f"no usage for allocation {a.id[:8]}: it is not running, or its node "
                           "did not answer")  # fmt: skip
        return json_response(found)

    def _usage(self) -> UsageGatherer:
        assert self.ctx.usage is not None
        return self.ctx.usage

    async def cluster_usage(self, req: Request) -> Response:
        """Nodes (offered, reserved, used), jobs and allocs with their CPU and memory use;
        `job`, `node` and `namespace` narrow it; `max_age` bounds how old figures may be."""
        usage = self._usage()
        await usage.refresh(max_age=min(max(_float_param(req, "max_age", 2.0), 0.5), 60.0))
        ns, job = _listing_namespace(req), req.query_params.get("job", "")
        node = req.query_params.get("node", "")
        node_ids = {n.id for n in self.state.find_node(node)} if node else set()

        def want(namespace: str, name: str, node_id: str) -> bool:
            return (
                (not ns or namespace == ns)
                and (not job or name == job)
                and (not node or node_id in node_ids)
            )

        allocs = []
        for u in usage.allocs():
            a = self.state.allocs.get(u.id)
            if a is None or not want(u.namespace, u.job, a.node_id):
                continue
            reserved = {"cpu": a.resources.cpu, "memory": a.resources.memory}
            allocs.append(
                msgspec.to_builtins(u)
                | {"name": a.name, "node_name": a.node_name, "resources": reserved}
            )
        nodes = []
        for n in sorted(self.state.nodes.values(), key=lambda n: n.name):
            if node and n.id not in node_ids:
                continue
            held = self.state.usage.get(n.id)
            got = usage.node(n.id)
            nodes.append(
                {
                    "id": n.id,
                    "name": n.name,
                    "status": n.status,
                    "offered": {"cpu": n.resources.cpu, "memory": n.resources.memory},
                    "reserved": {
                        "cpu": held.cpu if held else 0,
                        "memory": held.memory if held else 0,
                    },
                    "cpu_percent": got.cpu_percent if got else None,
                    "memory_bytes": got.memory_bytes if got else None,
                    "time": got.time if got else None,
                }
            )
        jobs = [
            j for j in usage.jobs() if (not ns or j.namespace == ns) and (not job or j.job == job)
        ]
        return json_response(
            {"time": usage.gathered_at, "nodes": nodes, "jobs": jobs, "allocations": allocs}
        )

    async def stop_alloc(self, req: Request) -> Response:
        a = self._alloc(req)
        new = await alloc_ops.modify(
            self.state,
            a.id,
            lambda x: msgspec.structs.replace(
                x, desired_status="stop", desired_reason="stopped by user"
            ),
            event=("alloc.stop_requested", "stop requested by user"),
            now=self.now(),
        )
        return json_response(new)

    async def restart_alloc(self, req: Request) -> Response:
        a = self._alloc(req)
        new = await alloc_ops.modify(
            self.state,
            a.id,
            lambda x: msgspec.structs.replace(x, restart_seq=x.restart_seq + 1),
            event=("alloc.restart_requested", "restart requested by user"),
            now=self.now(),
        )
        return json_response(new)

    # --------------------------------------------------------------- nodes

    async def list_nodes(self, req: Request) -> Response:
        return json_response(
            [self._node_row(n) for n in sorted(self.state.nodes.values(), key=lambda n: n.name)]
        )

    def _node_row(self, n: Node) -> dict[str, Any]:
        live = [a for a in self.state.allocs_of_node(n.id) if a.live]
        return {
            **msgspec.to_builtins(n),
            "used": {
                "cpu": sum(a.resources.cpu for a in live),
                "memory": sum(a.resources.memory for a in live),
            },
            "allocations": len(live),
        }

    def _node(self, req: Request) -> Node:
        found = self.state.find_node(req.path_params["id"])
        if not found:
            raise NotFound(f"no node matches {req.path_params['id']!r}")
        if len(found) > 1:
            raise ValidationError(
                [Problem("node", f"{len(found)} nodes match; give more of the id")]
            )
        return found[0]

    async def get_node(self, req: Request) -> Response:
        return json_response(self._node_row(self._node(req)))

    async def register_node(self, req: Request) -> Response:
        node = jobspec.validate_node(await _json_body(req))
        if not PATH_ID.fullmatch(node.id):
            raise ValidationError([Problem("node.id", f"expected [a-z0-9-], got {node.id!r}")])
        secret = await self.check_registration(req, node.id)
        node = msgspec.structs.replace(node, heartbeat_ttl=self.ctx.heartbeat_ttl)
        stored = await node_ops.register(self.state, self.ctx.heartbeats, node, now=self.now())
        ttl, next_in = await self.ctx.heartbeats.record(node.id)
        out: dict[str, Any] = {"node": stored, "heartbeat_ttl": ttl, "heartbeat_in": next_in}
        out["tls_epoch"] = self.ctx.authority.epoch if self.ctx.authority else 0
        if secret:
            out["node_secret"] = secret  # once: only its hash is kept
        return json_response(out)

    async def heartbeat(self, req: Request) -> Response:
        node_id = req.path_params["id"]
        node = self.state.nodes.get(node_id)
        if node is None:
            # The server lost it (purged, or a fresh store): tell the agent to register again.
            raise NotFound(f"node {node_id} is not registered")
        ttl, next_in = await self.ctx.heartbeats.record(node_id)
        self.ctx.metrics.heartbeats.inc()
        if node.status == "down":
            await node_ops.set_status(
                self.state, node_id, "ready", "heartbeat resumed", now=self.now()
            )
        # heartbeat_in: when to beat next (spread over the cluster's cycle: nodes.py).
        epoch = self.ctx.authority.epoch if self.ctx.authority else 0
        return json_response(
            {"heartbeat_ttl": ttl, "heartbeat_in": next_in, "status": "ok", "tls_epoch": epoch}
        )

    async def node_eligibility(self, req: Request) -> Response:
        data = await _json_body(req)
        if not isinstance(data, dict) or not isinstance(data.get("eligible"), bool):
            raise ValidationError([Problem("eligible", "expected true or false")])
        node = await node_ops.set_eligibility(
            self.state, self._node(req).id, data["eligible"], now=self.now()
        )
        return json_response(self._node_row(node))

    async def purge_node(self, req: Request) -> Response:
        """Forget a node that is down (force=true: even a ready one); returns what it was."""
        force = req.query_params.get("force", "") in ("1", "true", "yes")
        node = await node_ops.purge(
            self.state, self.ctx.heartbeats, self._node(req).id, force=force, now=self.now()
        )
        return json_response(msgspec.to_builtins(node) | {"purged": True})

    async def node_drain(self, req: Request) -> Response:
        """{"enable": bool, "deadline": seconds | "1m" | null}; progress: GET the node."""
        data = await _json_body(req)
        if not isinstance(data, dict) or not isinstance(data.get("enable"), bool):
            raise ValidationError([Problem("enable", "expected true or false")])
        raw = data.get("deadline")
        deadline: float | None = None
        if raw is not None:
            try:
                deadline = float(jobspec.parse_duration(raw))
            except (ValueError, ValidationError):
                raise ValidationError(
                    [Problem("deadline", f"expected a duration such as 5m, got {raw!r}")]
                ) from None
            if deadline <= 0:
                raise ValidationError([Problem("deadline", "expected a positive duration")])
        node = await node_ops.set_drain(
            self.state, self._node(req).id, enable=data["enable"], deadline=deadline, now=self.now()
        )
        return json_response(self._node_row(node))

    async def node_allocs(self, req: Request) -> Response:
        """Blocking query: returns when the node's allocs change past `index`, or after `wait`."""
        node_id = req.path_params["id"]
        index = _int_param(req, "index", 0)
        wait = min(_float_param(req, "wait", 0.0), 300.0)
        if wait > 0:
            with self.ctx.metrics.subscribe("node_allocations"):
                await self.state.wait_node(node_id, index, timeout=wait)
        node = self.state.nodes.get(node_id)
        return json_response(
            {
                "index": self.state.node_index[node_id],
                "allocations": self.state.allocs_of_node(node_id),
                # While it is down the server has not decided about its lost copies
                # (reconnect.py): the agent heartbeats first and acts after.
                "node_status": node.status if node is not None else "unknown",
            }
        )

    async def node_alloc_updates(self, req: Request) -> Response:
        node_id = req.path_params["id"]
        updates = _decode_as(list[AllocUpdate], await _json_body(req), "updates")
        n, rejected = await alloc_ops.apply_updates(self.state, node_id, updates, now=self.now())
        return json_response({"applied": n, "rejected": rejected})

    # ------------------------------------------------------------ services

    def _catalog(self) -> Catalog:
        assert self.ctx.catalog is not None
        return self.ctx.catalog

    async def list_services(self, req: Request) -> Response:
        """Services with healthy/total counts, tags and ingress; a blocking query on any change."""
        catalog = self._catalog()
        index = _int_param(req, "index", 0)
        wait = min(_float_param(req, "wait", 0.0), 300.0)
        if wait > 0:
            with self.ctx.metrics.subscribe("services"):
                await catalog.wait_service(None, index, timeout=wait)
        ns = req.query_params.get("namespace") or None
        rows = catalog.listing(None if ns == "*" else ns)
        readable = self.readable_in(req, "read-job")  # agents (no ACL caller): every one
        rows = [r for r in rows if readable(str(r["namespace"]))]
        return json_response({"index": catalog.last_index, "services": rows})

    async def get_service(self, req: Request) -> Response:
        """A service's healthy endpoints; a blocking query until they change past `index`."""
        catalog = self._catalog()
        ns, name = _namespace(req), req.path_params["name"]
        if not jobspec.is_name(name):
            raise ValidationError([Problem("name", f"expected a service name, got {name!r}")])
        index = _int_param(req, "index", 0)
        wait = min(_float_param(req, "wait", 0.0), 300.0)
        if wait > 0:
            with self.ctx.metrics.subscribe("service"):
                await catalog.wait_service((ns, name), index, timeout=wait)
        return json_response(
            {
                "name": name,
                "namespace": ns,
                "index": catalog.index.get((ns, name), 0),
                "known": catalog.known(ns, name),
                "endpoints": catalog.endpoints(ns, name, tag=req.query_params.get("tag", "")),
                # a group behind it may sleep: how long proxies hold a request meanwhile
                "wake": catalog.wake(ns, name),
            }
        )

    # -------------------------------------------------------------- events

    def _event_filter(self, req: Request) -> EventFilter:
        """topic (comma-separated), key (job name, alloc id or prefix, node id or name),
        namespace, index (after this store index; or the SSE Last-Event-ID), since (a
        duration back from now); job, alloc, node narrow further."""
        raw_topics = req.query_params.get("topic", "")
        topics = frozenset(t.strip() for t in raw_topics.split(",") if t.strip())
        unknown = sorted(topics - set(TOPICS))
        if unknown:
            raise ValidationError(
                [Problem("topic", f"unknown topic {unknown[0]!r}; expected one of {list(TOPICS)}")]
            )
        key = req.query_params.get("key", "")
        if len(key) > 256:
            raise ValidationError([Problem("key", "expected at most 256 characters")])
        node_ids = frozenset(n.id for n in self.state.find_node(key)) if key else frozenset()
        index = _int_param(req, "index", 0)
        last = req.headers.get("last-event-id", "")
        if last.isdigit():
            index = max(index, int(last))
        back = _float_param(req, "since", 0.0)
        return EventFilter(
            topics=topics,
            key=key,
            node_ids=node_ids,
            namespace=_listing_namespace(req),
            index=index,
            since=self.now() - back if back > 0 else 0.0,
        )

    async def events(self, req: Request) -> Response:
        """Events, oldest first: the last `limit` that match; follow=true streams them (SSE,
        `id:` is the store index, a `: heartbeat` comment every `heartbeat` seconds)."""
        flt = self._event_filter(req)
        limit = _int_param(req, "limit", 100)
        follow = req.query_params.get("follow", "") in ("1", "true", "yes")
        heartbeat = min(max(_float_param(req, "heartbeat", 10.0), 0.05), 300.0)
        job, alloc, node = (req.query_params.get(k) for k in ("job", "alloc", "node"))
        acl = self.readable_acl(req)

        def readable(ev: Any) -> bool:
            """A namespace's events for its readers; the cluster's for operators; the audit
            trail for management."""
            if acl is None:
                return True
            if ev.type.startswith("audit."):
                return acl.management
            if ev.namespace:
                return acl.allows("read-job", ev.namespace)
            return acl.allows_area("operator", "read")

        def wanted(ev: Any) -> bool:
            return (
                readable(ev)
                and flt.wants(ev)
                and (not job or ev.job == job)
                and (not alloc or ev.alloc.startswith(alloc))
                and (not node or ev.node == node)
            )

        async def history() -> tuple[list[Any], int]:
            kvs, rev = await self.state.store.list(keys.EVENTS)
            evs = [e for e in map(readable_event, kvs) if e and wanted(e)]
            evs.sort(key=lambda e: e.seq)
            return (evs[-limit:] if limit > 0 else evs), rev

        if not follow:
            return json_response((await history())[0])

        def sse(e: Any) -> bytes:
            return b"id: %d\ndata: %s\n\n" % (e.seq, msgspec.json.encode(e))

        async def stream() -> AsyncIterator[bytes]:
            # Follow first, then read the history: nothing written in between is missed,
            # and what both hold is sent once (the feed's copies at or below `rev`).
            with self.ctx.metrics.subscribe("events"), self.state.events.follow() as feed:
                evs, rev = await history()
                yield b": following\n\n"
                for e in evs:
                    yield sse(e)
                while True:
                    try:
                        async with asyncio.timeout(heartbeat):
                            e = await feed.get()
                    except TimeoutError:
                        yield b": heartbeat\n\n"
                        continue
                    if e is None:
                        yield b"event: lagged\ndata: {}\n\n"
                        return
                    if e.seq > rev and wanted(e):
                        yield sse(e)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    # ---------------------------------------------------------------- operator

    async def snapshot_save(self, req: Request) -> Response:
        data, _ = await store_snapshot.dump(self.state.store)
        return Response(data, media_type=store_snapshot.MEDIA_TYPE)

    async def snapshot_restore(self, req: Request) -> Response:
        force = req.query_params.get("force", "") in ("1", "true")
        done = await store_snapshot.restore(self.state.store, await req.body(), force=force)
        return json_response(done)


ROUTES: list[tuple[str, str, str, str, str]] = [
    # (method, path, handler name, requires, summary): the source of the OpenAPI document
    # and of access control; `requires` is a word of server/access.py (a test checks each
    # route has one). WS is a WebSocket (GET upgrade).
    ("GET", "/ui", "ui_page", "public", "The web UI (it logs in with a link from `podium ui`)"),
    ("GET", "/ui/", "ui_page", "public", "The web UI (it logs in with a link from `podium ui`)"),
    ("GET", "/ui/{file}", "ui_asset", "public", "The web UI's scripts and styles"),
    ("GET", "/v1/status", "status", "any", "Server status"),
    (
        "GET",
        "/v1/status/members",
        "members",
        "agent:read",
        "Servers: which one leads, since when",
    ),
    ("GET", "/v1/openapi.json", "openapi", "any", "This document"),
    ("GET", "/v1/metrics", "metrics", "operator:read", "Prometheus metrics of this server"),
    (
        "GET",
        "/v1/metrics/targets",
        "metrics_targets",
        "agent:read",
        "Agents' metrics endpoints (Prometheus http_sd)",
    ),
    ("GET", "/v1/jobs", "list_jobs", "ns:list-jobs@each", "List jobs"),
    (
        "POST",
        "/v1/jobs",
        "register_job",
        "ns:submit-job@body",
        "Submit a job (new version if it changed)",
    ),
    ("POST", "/v1/jobs/validate", "validate_job", "ns:submit-job@body", "Validate a job spec"),
    (
        "POST",
        "/v1/jobs/plan",
        "plan_job",
        "ns:submit-job@body",
        "Dry-run a job: diff and scheduler plan",
    ),
    (
        "GET",
        "/v1/job/{name:job}",
        "get_job",
        "ns:read-job@query",
        "Job status summary with allocations",
    ),
    (
        "DELETE",
        "/v1/job/{name:job}",
        "stop_job",
        "ns:submit-job@query",
        "Stop a job (purge=true removes it)",
    ),
    (
        "GET",
        "/v1/job/{name:job}/versions",
        "job_versions",
        "ns:read-job@query",
        "Job versions with diffs",
    ),
    (
        "GET",
        "/v1/job/{name:job}/logs",
        "job_logs",
        "ns:read-logs@query",
        "Log lines of every copy (NDJSON; follow, since, grep, group, task, alloc, type)",
    ),
    (
        "GET",
        "/v1/job/{name:job}/version/{version:int}",
        "job_version",
        "agent|ns:read-job@query",
        "One job version (an agent: only of an alloc on its node)",
    ),
    (
        "POST",
        "/v1/job/{name:job}/revert",
        "revert_job",
        "ns:submit-job@query",
        "Submit an earlier version again",
    ),
    (
        "POST",
        "/v1/job/{name:job}/scale",
        "scale_job",
        "ns:scale-job@query",
        "Change one group's count (in place)",
    ),
    (
        "GET",
        "/v1/job/{name:job}/scaling",
        "job_scaling",
        "ns:read-job@query",
        "Autoscaled groups: figures, forecast, decisions, next allowed change",
    ),
    (
        "POST",
        "/v1/job/{name:job}/dispatch",
        "dispatch_job",
        "ns:dispatch-job@query",
        "Run a parameterized job once",
    ),
    (
        "POST",
        "/v1/job/{name:job}/periodic/force",
        "force_periodic",
        "ns:submit-job@query",
        "Run a cron job now",
    ),
    (
        "GET",
        "/v1/deployments",
        "list_deployments",
        "ns:read-job@each",
        "List deployments (job=NAME filters)",
    ),
    (
        "GET",
        "/v1/deployment/{id}",
        "get_deployment",
        "ns:read-job@deployment",
        "A deployment (id, prefix or job name)",
    ),
    (
        "POST",
        "/v1/deployment/{id}/promote",
        "promote_deployment",
        "ns:submit-job@deployment",
        "Promote canaries",
    ),
    (
        "POST",
        "/v1/deployment/{id}/fail",
        "fail_deployment",
        "ns:submit-job@deployment",
        "Fail (and maybe roll back)",
    ),
    (
        "POST",
        "/v1/deployment/{id}/pause",
        "pause_deployment",
        "ns:submit-job@deployment",
        "Pause a rollout",
    ),
    (
        "POST",
        "/v1/deployment/{id}/resume",
        "resume_deployment",
        "ns:submit-job@deployment",
        "Resume a paused rollout",
    ),
    ("GET", "/v1/allocations", "list_allocs", "ns:read-job@each", "List allocations"),
    (
        "GET",
        "/v1/allocation/{id}",
        "get_alloc",
        "ns:read-job@alloc",
        "One allocation (id or unique prefix)",
    ),
    (
        "GET",
        "/v1/allocation/{id}/stats",
        "alloc_stats",
        "ns:read-job@alloc",
        "An allocation's CPU and memory use",
    ),
    (
        "GET",
        "/v1/usage",
        "cluster_usage",
        "operator:read",
        "CPU and memory use of nodes, jobs and allocations",
    ),
    (
        "POST",
        "/v1/allocation/{id}/stop",
        "stop_alloc",
        "ns:alloc-lifecycle@alloc",
        "Stop an allocation (it is replaced)",
    ),
    (
        "POST",
        "/v1/allocation/{id}/restart",
        "restart_alloc",
        "ns:alloc-lifecycle@alloc",
        "Restart an allocation's tasks in place",
    ),
    (
        "GET",
        "/v1/allocation/{id}/logs",
        "alloc_logs",
        "ns:read-logs@alloc",
        "A task's stdout/stderr, read from its node through the server (follow=true streams)",
    ),
    (
        "WS",
        "/v1/allocation/{id}/exec",
        "alloc_exec",
        "ns:alloc-exec@alloc",
        "Run a command in a task (WebSocket: stdin, tty, resize, exit code)",
    ),
    ("GET", "/v1/nodes", "list_nodes", "node:read", "List nodes with resources used"),
    ("POST", "/v1/nodes/register", "register_node", "node-register", "Register a node (agents)"),
    ("GET", "/v1/node/{id}", "get_node", "node:read", "One node"),
    (
        "DELETE",
        "/v1/node/{id}",
        "purge_node",
        "node:write",
        "Forget a down node (force=true: any node); its certificate is revoked",
    ),
    ("POST", "/v1/node/{id}/heartbeat", "heartbeat", "agent", "Heartbeat (agents)"),
    ("POST", "/v1/node/{id}/eligibility", "node_eligibility", "node:write", "Placement on/off"),
    (
        "POST",
        "/v1/node/{id}/drain",
        "node_drain",
        "node:write",
        "Start or cancel a drain (progress: GET node)",
    ),
    ("GET", "/v1/node/{id}/allocations", "node_allocs", "agent", "A node's allocs (blocking)"),
    (
        "POST",
        "/v1/node/{id}/allocations/status",
        "node_alloc_updates",
        "agent",
        "Alloc status reports (agents)",
    ),
    ("GET", "/v1/events", "events", "ns:read-job@each", "Events; follow=true streams them (SSE)"),
    ("GET", "/v1/operator/snapshot", "snapshot_save", "management", "The whole store"),
    ("PUT", "/v1/operator/snapshot", "snapshot_restore", "management", "Restore a snapshot"),
    (
        "GET",
        "/v1/services",
        "list_services",
        "agent|ns:read-job@each",
        "Services (blocking query: index, wait)",
    ),
    (
        "GET",
        "/v1/service/{name}",
        "get_service",
        "agent|ns:read-job@query",
        "A service's healthy endpoints (blocking query: index, wait; tag filters)",
    ),
    (
        "POST",
        "/v1/service/{name}/wake",
        "wake_service",
        "agent|ns:scale-job@query",
        "Start a copy of a sleeping (scaled to 0) service's group (proxies)",
    ),
    ("GET", "/v1/tls/ca", "tls_ca", "public", "The cluster's trusted CA certificates (PEM)"),
    ("POST", "/v1/tls/join", "tls_join", "public", "Join with a token and a CSR: a certificate"),
    ("POST", "/v1/tls/renew", "tls_renew", "any", "A fresh certificate for the caller (CSR)"),
    ("POST", "/v1/tls/join-token", "tls_join_token", "management", "A one-use join token"),
    ("GET", "/v1/tls/status", "tls_status", "operator:read", "CA epoch, rotation, nodes pending"),
    ("POST", "/v1/tls/rotate", "tls_rotate", "management", "Rotate the CA (cross-signed)"),
    ("POST", "/v1/ui/login", "ui_login", "any", "A one-use login link for the web UI"),
    (
        "POST",
        "/v1/ui/session",
        "ui_session_open",
        "public",
        "Log a browser in with a login link's token (sets its session cookie)",
    ),
    ("DELETE", "/v1/ui/session", "ui_session_close", "any", "Log the browser out"),
    ("POST", "/v1/acl/bootstrap", "acl_bootstrap", "public", "The first management token (once)"),
    ("GET", "/v1/acl/tokens", "acl_token_list", "management", "ACL tokens (never their secrets)"),
    ("POST", "/v1/acl/tokens", "acl_token_create", "management", "Create a token (secret once)"),
    ("GET", "/v1/acl/token/self", "acl_token_self", "any", "The token this request carries"),
    ("GET", "/v1/acl/token/{id}", "acl_token_info", "management", "One token (accessor)"),
    ("DELETE", "/v1/acl/token/{id}", "acl_token_delete", "management", "Revoke a token"),
    ("GET", "/v1/acl/policies", "acl_policy_list", "management", "ACL policies"),
    ("GET", "/v1/acl/policy/{name}", "acl_policy_info", "management", "One policy and its rules"),
    ("PUT", "/v1/acl/policy/{name}", "acl_policy_apply", "management", "Create or replace"),
    ("DELETE", "/v1/acl/policy/{name}", "acl_policy_delete", "management", "Delete a policy"),
    ("GET", "/v1/namespaces", "list_namespaces", "any", "Namespaces the caller may read"),
    ("POST", "/v1/namespaces", "create_namespace", "operator:write", "Create a namespace"),
    (
        "GET",
        "/v1/namespace/{name}",
        "get_namespace",
        "ns:read-job@path",
        "A namespace: jobs, allocations, quota",
    ),
    (
        "PUT",
        "/v1/namespace/{name}/quota",
        "set_namespace_quota",
        "operator:write",
        "Set a namespace's quota (cpu, memory, allocs, jobs; 0: no limit)",
    ),
    (
        "DELETE",
        "/v1/namespace/{name}",
        "delete_namespace",
        "operator:write",
        "Delete a namespace (refused while it holds jobs, configs or secrets)",
    ),
]
ROUTES += DATA_ROUTES  # configs, secrets, the keyring, an agent's template data


UI_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
}


def _ui_file(name: str) -> Response:
    """One of the web UI's files, shipped in the package (server/ui/); nothing else."""
    media = UI_FILES.get(name)
    if media is None:
        raise NotFound(f"no UI file {name!r}")
    data = resources.files("podium.server").joinpath("ui", name).read_bytes()
    return Response(data, media_type=media, headers={"cache-control": "no-cache"})


PATH_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,127}")


_RUN_NAME = re.compile(_JobName.regex)  # a job's runs: web/periodic-1700000000


def _error_of(resp: Response) -> str:
    """The error an answer carries (what the audit line says), or ""."""
    if resp.status_code < 400 or not isinstance(resp.body, bytes):
        return ""
    try:
        body = msgspec.json.decode(resp.body)
    except msgspec.DecodeError:
        return ""
    return str(body.get("error", "")) if isinstance(body, dict) else ""


def _path_problems(req: Request) -> list[Problem]:
    """Ids and names in a path are [a-z0-9-] (a job's runs: NAME/periodic-... or
    NAME/dispatch-...): none can reach outside what it names. A config's or a secret's
    `path` is segments of its own rule (no "..", no empty one). The UI's `file` is one of
    UI_FILES, checked by its handler."""
    problems: list[Problem] = []
    for k, v in req.path_params.items():
        if not isinstance(v, str) or (k == "file" and v in UI_FILES):
            continue
        if k == "path":  # a config's or a secret's: db/settings (model/data.py)
            problem = datamodel.path_problem(v)
            if problem is not None:
                problems.append(problem)
        elif not PATH_ID.fullmatch(v) and not _RUN_NAME.fullmatch(v):
            problems.append(Problem(k, f"expected lowercase letters, digits and dashes, got {v!r}"))
    return problems


def _wrap(
    api: Api, fn: Handler, requires: str, metrics: ServerMetrics, method: str, path: str, name: str
) -> Handler:
    # Lists, streams and bodies are checked object by object by their handlers: one
    # that never asked (a bug) answers nothing rather than everything.
    self_checked = access.requirement(requires).scope in ("each", "body")
    recorded = audit.audited(method, name)

    async def answer(req: Request) -> Response:
        try:
            await api.authorize(req, requires)
            problems = _path_problems(req)
            if problems:
                raise ValidationError(problems)
            resp = await fn(req)
            if self_checked and api.caller(req) and not req.scope["state"].get(CHECKED):
                log.error("%s %s answered without checking the caller's ACL", method, path)
                return json_response({"error": "internal error: unchecked route"}, 500)
            return resp
        except asyncio.CancelledError:
            raise
        except (Unauthorized, Forbidden) as e:
            await api.denied(req, e)
            return _error_response(e)
        except Exception as e:
            return _error_response(e)

    async def handler(req: Request) -> Response:
        resp = await answer(req)
        if recorded:  # writes, logs, snapshots: the audit trail
            await api.audit(req, name, resp.status_code, _error_of(resp))
        return resp

    if not metrics.on:
        return handler
    by_code: dict[int, Any] = {}  # label children made on first use: no series for idle routes

    async def counted(req: Request) -> Response:
        t0 = time.perf_counter()
        resp = await handler(req)
        metrics.http_latency.labels(path, method).observe(time.perf_counter() - t0)
        code = resp.status_code
        counter = by_code.get(code)
        if counter is None:
            counter = by_code[code] = metrics.http_requests.labels(path, method, str(code))
        counter.inc()
        return resp

    return counted


_JOB_ROUTE = "/v1/job/"


def _impossible_job(path: str) -> str | None:
    """The job name of a request that missed every route because no job can have it."""
    if not path.startswith(_JOB_ROUTE):
        return None
    rest = path[len(_JOB_ROUTE) :]
    if re.match(f"(?:{_JobName.regex})(?:/|$)", rest):
        return None
    return rest.split("/", 1)[0]


def _behind_a_path(path: str) -> bool:
    """Whether a request missed every route because its client's address had a path."""
    inner = path.find("/v1/", 1)
    return inner > 0 and (not path.startswith("/v1/") or path.startswith("/v1/v1/"))


def create_app(ctx: ServerContext) -> Starlette:
    api = Api(ctx)
    # A write sent with an Idempotency-Key is applied once, however often it is retried.
    once = Idempotency(ctx.state.store)
    routes: list[BaseRoute] = []
    for method, path, name, requires, _ in ROUTES:
        fn = getattr(api, name)
        if method == "WS":
            routes.append(WebSocketRoute(path, api.guard_ws(fn, requires, name)))
            continue
        # Trust routes are never replayed (a recorded answer would keep a certificate, a
        # token or a session cookie in the store).
        plain = method == "GET" or path.startswith(("/v1/tls/", "/v1/ui/"))
        handler = _wrap(
            api, fn if plain else once.wrap(fn), requires, ctx.metrics, method, path, name
        )
        routes.append(Route(path, handler, methods=[method]))

    async def not_found(req: Request, exc: Exception) -> Response:
        code = getattr(exc, "status_code", 404)
        error = f"{req.method} {req.url.path}: {getattr(exc, 'detail', 'not found')}"
        name = _impossible_job(req.url.path) if code == 404 else None
        if name is not None:
            error = f"no job {name!r}: job names are made {jobspec.NAME_RULE}"
        elif _behind_a_path(req.url.path):
            # A client given an address with a path (the web UI's, say) puts it before /v1/.
            root = f"{req.url.scheme}://{req.url.netloc}/v1/"
            error += (
                f"; the API is at {root}: give the server's address without a path "
                "(--addr or PODIUM_ADDR)"
            )
        return json_response({"error": error}, code)

    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
