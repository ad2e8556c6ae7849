"""The API of configs, secrets and the keyring (a mixin of server.app.Api).

    PUT /v1/config/db/settings {data, cas?, merge?} ─► configs.put ─► config_rollout.roll_out
    GET /v1/secret-values/db/password                ─► values: the one route that reveals them
    GET /v1/node/N/allocation/A/template-data        ─► the pinned configs and secrets of one
                                                        alloc, to the agent of its node only

DATA_ROUTES lists each route with the capability it requires, a word of server/access.py:
ns:read-config, ns:write-config, ns:read-secret (names, keys, versions), ns:write-secret,
checked (with ACL on) in the namespace the request names, as a job's routes are; a list
holds only the namespaces the caller may read; a secret's values (cert|): a certificate,
never a web UI session nor an agent; agent: the calling node's own allocs; management:
the keyring. Secret values appear in no listing, history, event or error: only in
`secret-values` answers and the agent's template data.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from podium.errors import NotFound, Problem, Unavailable, ValidationError
from podium.model import data as datamodel
from podium.model.types import Job, Secret
from podium.runtime.bodies import json_body
from podium.server import config_rollout, configs
from podium.server.keyring import Keyring
from podium.server.runtime import ServerContext
from podium.server.state import ClusterState
from podium.store import keys
from podium.templates.worker import TemplateWorker

# (method, path, handler, requires, summary): joined to server.app.ROUTES
DATA_ROUTES: list[tuple[str, str, str, str, str]] = [
    ("GET", "/v1/configs", "list_configs", "ns:read-config@each", "Configs (prefix= filters)"),
    ("GET", "/v1/config/{path:path}", "get_config", "ns:read-config@query", "A config (version=N)"),
    (
        "PUT",
        "/v1/config/{path:path}",
        "put_config",
        "ns:write-config@query",
        "A new config version",
    ),
    (
        "DELETE",
        "/v1/config/{path:path}",
        "delete_config",
        "ns:write-config@query",
        "Delete a config",
    ),
    (
        "GET",
        "/v1/config-versions/{path:path}",
        "config_history",
        "ns:read-config@query",
        "Every kept version of a config, newest first",
    ),
    (
        "GET",
        "/v1/secrets",
        "list_secrets",
        "ns:read-secret@each",
        "Secrets: names and keys, no values",
    ),
    (
        "GET",
        "/v1/secret/{path:path}",
        "get_secret",
        "ns:read-secret@query",
        "A secret's metadata (version=N): its keys, never its values",
    ),
    (
        "GET",
        "/v1/secret-values/{path:path}",
        "secret_values",
        "cert|ns:read-secret@query",
        "A secret's values (version=N), with its metadata",
    ),
    (
        "PUT",
        "/v1/secret/{path:path}",
        "put_secret",
        "ns:write-secret@query",
        "A new secret version",
    ),
    (
        "DELETE",
        "/v1/secret/{path:path}",
        "delete_secret",
        "ns:write-secret@query",
        "Delete a secret",
    ),
    (
        "GET",
        "/v1/secret-versions/{path:path}",
        "secret_history",
        "ns:read-secret@query",
        "Every kept version of a secret (no values)",
    ),
    ("GET", "/v1/operator/keyring", "keyring_status", "management", "Keyring keys, rotation"),
    (
        "POST",
        "/v1/operator/keyring/rotate",
        "keyring_rotate",
        "management",
        "A new active key; full=true re-encrypts every secret (progress: GET keyring)",
    ),
    (
        "GET",
        "/v1/node/{id}/allocation/{alloc}/template-data",
        "alloc_template_data",
        "agent",
        "The configs and secrets one of the node's allocs reads, at its pinned versions",
    ),
]


def _json(data: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(data), status_code=status, media_type="application/json")


def _ns(req: Request) -> str:
    return req.query_params.get("namespace", "") or "default"


def _path(req: Request) -> str:
    path: str = req.path_params["path"]
    configs.check_path(path)
    return path


def _version(req: Request, *, lowest: int = 1) -> int | None:
    raw = req.query_params.get("version")
    if raw in (None, ""):
        return None
    if not raw.isdigit() or len(raw) > 18 or int(raw) < lowest:
        raise ValidationError(
            [Problem("version", f"expected a version number ({lowest} or more), got {raw!r}")]
        )
    return int(raw)


class DataRoutes:
    """Route handlers for configs, secrets and the keyring."""

    ctx: ServerContext
    state: ClusterState

    def now(self) -> float:
        return self.ctx.clock.now()

    @property
    def keyring(self) -> Keyring:
        if self.ctx.keyring is None:
            raise Unavailable("this server has no keyring: it keeps no configs or secrets")
        return self.ctx.keyring

    @property
    def template_worker(self) -> TemplateWorker:
        if self.ctx.templates is None:
            raise Unavailable("this server has no template worker: it renders no templates")
        return self.ctx.templates

    # ------------------------------------------------------------ configs

    async def list_configs(self, req: Request) -> Response:
        return await self._list(req, "config")

    async def get_config(self, req: Request) -> Response:
        record = await configs.get(self.state, "config", _ns(req), _path(req), _version(req))
        return _json(configs.metadata(record))

    async def put_config(self, req: Request) -> Response:
        return await self._put(req, "config")

    async def delete_config(self, req: Request) -> Response:
        return await self._delete(req, "config")

    async def config_history(self, req: Request) -> Response:
        return await self._history(req, "config")

    # ------------------------------------------------------------ secrets

    async def list_secrets(self, req: Request) -> Response:
        return await self._list(req, "secret")

    async def get_secret(self, req: Request) -> Response:
        record = await configs.get(self.state, "secret", _ns(req), _path(req), _version(req))
        return _json(configs.metadata(record))

    async def secret_values(self, req: Request) -> Response:
        record = await configs.get(self.state, "secret", _ns(req), _path(req), _version(req))
        assert isinstance(record, Secret)
        out = configs.metadata(record)
        out["data"] = await configs.reveal(self.keyring, record)
        return _json(out)

    async def put_secret(self, req: Request) -> Response:
        return await self._put(req, "secret")

    async def delete_secret(self, req: Request) -> Response:
        return await self._delete(req, "secret")

    async def secret_history(self, req: Request) -> Response:
        return await self._history(req, "secret")

    # ------------------------------------------------------------- common

    async def _list(self, req: Request, kind: datamodel.Kind) -> Response:
        ns = req.query_params.get("namespace") or None
        prefix = req.query_params.get("prefix", "")
        readable = self.readable_in(req, f"read-{kind}")  # type: ignore[attr-defined]
        rows = []
        for record in await configs.listing(self.state, kind, None if ns == "*" else ns, prefix):
            if not readable(record.namespace):
                continue
            row = configs.metadata(record)
            row.pop("data", None)
            row["used_by"] = [
                j.name for j in configs.users(self.state, kind, record.namespace, record.path)
            ]
            rows.append(row)
        return _json(rows)

    async def _history(self, req: Request, kind: datamodel.Kind) -> Response:
        records = await configs.history(self.state, kind, _ns(req), _path(req))
        return _json([configs.metadata(r) for r in records])

    async def _put(self, req: Request, kind: datamodel.Kind) -> Response:
        from podium.server.app import _user

        ns, path = _ns(req), _path(req)
        if self.ctx.namespaces is not None:
            await self.ctx.namespaces.require(ns)
        body = await json_body(req)
        if not isinstance(body, dict):
            raise ValidationError([Problem("", 'expected {"data": {KEY: TEXT, ...}}')])
        unknown = sorted(set(body) - {"data", "cas", "merge"})
        if unknown:
            raise ValidationError(
                [Problem(unknown[0], "unknown field (expected data, cas, merge)")]
            )
        cas = body.get("cas")
        if cas is not None and (not isinstance(cas, int) or isinstance(cas, bool) or cas < 0):
            raise ValidationError(
                [Problem("cas", "expected a version number (0: must not exist yet)")]
            )
        merge = body.get("merge", False)
        if not isinstance(merge, bool):
            raise ValidationError([Problem("merge", "expected true or false")])
        record, changed = await configs.put(
            self.state, self.keyring, kind, ns, path, body.get("data"),
            now=self.now(), by=_user(req), cas=cas, merge=merge,
        )  # fmt: skip
        moved = (
            await config_rollout.roll_out(self.state, kind, ns, path, now=self.now())
            if changed
            else []
        )
        out = configs.metadata(record)
        out.pop("data", None)
        return _json({kind: out, "changed": changed, "jobs": moved})

    async def _delete(self, req: Request, kind: datamodel.Kind) -> Response:
        rev = await configs.delete(
            self.state,
            kind,
            _ns(req),
            _path(req),
            force=req.query_params.get("force", "") in ("1", "true", "yes"),
            now=self.now(),
        )
        return _json({"index": rev})

    # ------------------------------------------------------------ keyring

    async def keyring_status(self, req: Request) -> Response:
        active = await self.keyring.active_id()
        rotation, _ = await self.keyring.rotation()
        by_key: dict[str, int] = {}
        for record in await configs.listing(self.state, "secret", None):
            if isinstance(record, Secret) and record.sealed is not None:
                by_key[record.sealed.key_id] = by_key.get(record.sealed.key_id, 0) + 1
        return _json(
            {
                "active": active,
                "root_key": self.keyring.source,
                "keys": [
                    {
                        "id": k.id,
                        "create_time": k.create_time,
                        "active": k.id == active,
                        "secrets": by_key.get(k.id, 0),
                    }
                    for k in sorted(await self.keyring.key_ids(), key=lambda k: k.create_time)
                ],
                "rotation": msgspec.to_builtins(rotation) if rotation else None,
            }
        )

    async def keyring_rotate(self, req: Request) -> Response:
        body = await json_body(req)
        full = body.get("full", False) if isinstance(body, dict) else None
        if not isinstance(full, bool):
            raise ValidationError([Problem("full", "expected true or false")])
        key_id = await self.keyring.rotate(full=full, now=self.now())
        return _json({"active": key_id, "full": full})

    # ----------------------------------------------------- agent-facing

    async def alloc_template_data(self, req: Request) -> Response:
        """Only an alloc on the calling node, only what its job version pins."""
        node_id, alloc_id = req.path_params["id"], req.path_params["alloc"]
        alloc = self.state.allocs.get(alloc_id)
        if alloc is None or alloc.node_id != node_id:
            raise NotFound(f"node {node_id} has no allocation {alloc_id}")
        version = _version(req, lowest=0)  # job versions count from 0
        if version is None:
            version = alloc.job_version
        kv = await self.state.store.get(keys.job_version(alloc.namespace, alloc.job, version))
        if kv is None:
            raise NotFound(f"job {alloc.job} has no version {version}")
        job = msgspec.json.decode(kv.value, type=Job)
        group = job.group(alloc.group)
        reads = {r for t in group.tasks for r in datamodel.task_refs(t)} if group else set()
        # Only what this alloc's own group reads: not the secrets of the job's other groups.
        pinned = {r: v for r, v in job.config_versions.items() if r in reads}
        config_data, secret_data = await configs.pinned_data(
            self.state, self.keyring, alloc.namespace, pinned, secrets=True
        )
        return _json({"configs": config_data, "secrets": secret_data, "versions": pinned})
