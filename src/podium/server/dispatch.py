"""Dispatch: run a parameterized job once, with its own meta and payload.

POST /v1/job/NAME/dispatch {meta, payload (base64)}
  -> checked against the job's `parameterized` rules (payload optional | required |
     forbidden, at most 16 KiB; meta keys required or optional, no others)
  -> a child batch job NAME/dispatch-<unix time>-<id>, created once (jobs.launch_ops);
     its tasks find the payload in the file PODIUM_PAYLOAD_FILE names (task dir) and
     each meta key as PODIUM_META_<KEY>
"""

from __future__ import annotations

import base64
import binascii
import uuid

from podium.errors import Conflict, NotFound, Problem, ValidationError
from podium.model.types import Job
from podium.server import jobs as job_ops
from podium.server.state import ClusterState

MAX_PAYLOAD = 16 * 1024  # bytes, as Nomad's


def check(job: Job, meta: dict[str, str], payload: bytes) -> list[Problem]:
    """Every problem with a dispatch of `job`, each naming its field."""
    params = job.parameterized
    if params is None:
        return [Problem("name", f"job {job.name!r} is not parameterized: run it, not dispatch it")]
    problems = []
    if params.payload == "required" and not payload:
        problems.append(Problem("payload", "this job requires a payload"))
    if params.payload == "forbidden" and payload:
        problems.append(Problem("payload", "this job takes no payload"))
    if len(payload) > MAX_PAYLOAD:
        problems.append(
            Problem("payload", f"expected at most {MAX_PAYLOAD} bytes, got {len(payload)}")
        )
    allowed = set(params.meta_required) | set(params.meta_optional)
    for key in params.meta_required:
        if key not in meta:
            problems.append(Problem(f"meta.{key}", "required by the job's meta_required"))
    for key in sorted(meta):
        if key not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            problems.append(
                Problem(f"meta.{key}", f"not a meta key of this job (it takes: {known})")
            )
    return problems


def decode_payload(text: object) -> bytes:
    if text is None or text == "":
        return b""
    if not isinstance(text, str) or len(text) > 2 * MAX_PAYLOAD:
        raise ValidationError([Problem("payload", "expected base64 text of at most 16 KiB")])
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError([Problem("payload", "expected base64 text")]) from None


async def dispatch(
    state: ClusterState,
    namespace: str,
    name: str,
    *,
    meta: dict[str, str],
    payload: bytes,
    now: float,
) -> Job:
    job = state.jobs.get(f"{namespace}/{name}")
    if job is None or job.stop:
        raise NotFound(f"no running job {name!r} in namespace {namespace!r}")
    problems = check(job, meta, payload)
    if problems:
        raise ValidationError(problems)
    child_name = f"{job.name}/dispatch-{int(now)}-{uuid.uuid4().hex[:8]}"
    encoded = base64.b64encode(payload).decode() if payload else ""
    child = job_ops.child_job(job, child_name, now=now, meta=meta, payload=encoded)
    what = f" with a {len(payload)}-byte payload" if payload else ""
    guards, ops = job_ops.launch_ops(child, f"{child_name} dispatched{what}", now=now)
    res = await state.store.txn(guards, ops)
    if not res.succeeded:
        raise Conflict(f"{child_name} exists already; dispatch again")
    await state.wait_for(res.revision)
    return state.jobs.get(child.key, child)
