"""Routes of ACL and namespaces, and the capability check every request passes (ACL on).

Mixed into `server.app.Api`. `authorize` (trust_api.py) first checks the connection's
certificate against the route's transport word (Trust I), then, with ACL on, calls
`acl_authorize`: the token (or the anonymous policy) must hold the route's capability in
the namespace of the OBJECT the request names (an alloc's, a deployment's, the job's),
never only the namespace the request says. Lists and streams (`@each`) and job bodies
(`@body`) are checked by their handlers through `may` / `permit`; the wrapper refuses to
answer if such a handler never asked (a route that forgot cannot leak).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import msgspec
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from podium.acl.policy import MANAGEMENT, NAME, Acl
from podium.errors import (
    Conflict,
    Forbidden,
    NotFound,
    PodiumError,
    Problem,
    Unauthorized,
    ValidationError,
)
from podium.model import spec as jobspec
from podium.model.tenancy import Namespace, Quota
from podium.server import access, namespace_quota
from podium.server.acl import AclStore, Caller, token_of
from podium.server.namespaces import Namespaces
from podium.server.runtime import ServerContext
from podium.server.state import ClusterState
from podium.tls.identity import Identity

CHECKED = "acl_checked"  # scope["state"] flag: an @each/@body handler asked
AUDIT_NS = "audit_namespaces"  # scope["state"]: the namespaces the request acted in


def _json(data: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(data), status_code=status, media_type="application/json")


class AclRoutes:
    ctx: ServerContext
    state: ClusterState

    now: Callable[[], float]  # Api's

    # -------------------------------------------------------------- checking

    def _acls(self) -> AclStore:
        if self.ctx.acl is None:
            raise Conflict("ACL is off on this server (start it with --acl)")
        return self.ctx.acl

    def caller(self, conn: HTTPConnection) -> Caller | None:
        """The request's ACL caller (None: ACL off, or an agent acting for its node)."""
        found: Caller | None = conn.scope.get("state", {}).get("caller")
        return found

    async def acl_authorize(
        self, conn: HTTPConnection, who: Identity, need: access.Requirement
    ) -> None:
        """With ACL on: may this request's token do what the route needs, where it acts?"""
        acls = self.ctx.acl
        if acls is None or need.role in ("public", "agent", "node-register"):
            return
        if who.role in ("agent", "server"):
            return  # the transport check let it through: its own node's objects only
        secret = token_of(conn.headers)
        if who.role == "management" and not secret:
            caller = Caller(MANAGEMENT)  # the server's own certificate (0600 on its disk)
        else:
            caller = await acls.caller(secret, now=self.ctx.clock.now())
        conn.scope.setdefault("state", {})["caller"] = caller
        cap = need.capability
        if not cap:
            return  # any authenticated caller (the token, if given, is valid)
        acl = caller.acl
        if cap == "management":
            ok, where = acl.management, "(it needs a management token)"
        elif ":" in cap:
            area, level = cap.split(":")
            ok, where = acl.allows_area(area, level), f"(it needs {area} {level})"
        else:
            spaces = self._object_namespaces(conn, need)
            conn.scope.setdefault("state", {})[AUDIT_NS] = spaces
            refused = sorted(ns for ns in spaces if not acl.allows(cap, ns))
            if not spaces:
                ok, where = acl.anywhere(cap), f"(it needs {cap} in some namespace)"
            else:
                ok = not refused
                where = f"in namespace {refused[0] if refused else ''!r} (it needs {cap})"
        if not ok:
            raise self._denial(caller, secret, where)

    def _denial(self, caller: Caller, secret: str, where: str) -> PodiumError:
        if not secret:
            return Unauthorized(f"anonymous requests may not do this {where}: send an ACL "
                                "token (X-Podium-Token, or PODIUM_TOKEN for the CLI)")  # fmt: skip
        return Forbidden(f"token {caller.accessor[:8]} may not do this {where}")

    def _object_namespaces(self, conn: HTTPConnection, need: access.Requirement) -> set[str]:
        """The namespaces of what the request may act on: every object its path could name
        (an id prefix may name several), whatever namespace the request says. Empty: a
        list, a body, or nothing found (then the capability must be held somewhere, and
        the handler answers: it can only find objects counted here)."""
        if need.scope == "query":
            return {conn.query_params.get("namespace") or "default"}
        if need.scope == "path":
            return {str(conn.path_params.get("name", ""))}
        ref = str(conn.path_params.get("id", ""))
        if need.scope == "alloc":
            return {a.namespace for a in self.state.find_alloc(ref)}
        if need.scope == "deployment":
            q_ns = conn.query_params.get("namespace") or "default"
            latest = self.state.latest_deployment(q_ns, ref)  # as dep_ops.find reads a ref
            if latest is not None:
                return {latest.namespace}
            return {d.namespace for d in self.state.deployments.values() if d.id.startswith(ref)}
        return set()  # body, each: the handler checks each object

    def may(self, conn: HTTPConnection, capability: str, namespace: str) -> bool:
        """For @each/@body handlers: may the caller do `capability` in `namespace`?"""
        conn.scope.setdefault("state", {})[CHECKED] = True
        caller = self.caller(conn)
        return caller is None or caller.acl.allows(capability, namespace)

    def permit(self, conn: HTTPConnection, capability: str, namespace: str) -> None:
        conn.scope.setdefault("state", {}).setdefault(AUDIT_NS, set()).add(namespace)
        if not self.may(conn, capability, namespace):
            caller = self.caller(conn)
            assert caller is not None
            raise self._denial(
                caller,
                token_of(conn.headers),
                f"in namespace {namespace!r} (it needs {capability})",
            )

    def readable_in(self, conn: HTTPConnection, capability: str) -> Callable[[str], bool]:
        """For @each handlers: which namespaces' objects the list may hold (asked once,
        even when the list is empty)."""
        acl = self.readable_acl(conn)
        if acl is None:
            return lambda namespace: True
        return lambda namespace: acl.allows(capability, namespace)

    def readable_acl(self, conn: HTTPConnection) -> Acl | None:
        """The caller's Acl for filters of their own (None: ACL off: everything)."""
        conn.scope.setdefault("state", {})[CHECKED] = True
        caller = self.caller(conn)
        return caller.acl if caller else None

    # -------------------------------------------------------------- audit

    async def audit(self, conn: HTTPConnection, route: str, status: int, error: str) -> None:
        """One line of the audit trail for this request (server/audit.py)."""
        trail = self.ctx.audit
        if trail is None:
            return
        st = conn.scope.get("state", {})
        caller, who = st.get("caller"), st.get("who") or st.get("peer")
        if caller is not None and caller.token is not None:
            identity = f"token {caller.accessor}"
        elif who is not None:
            identity = who.describe()
        else:
            identity = "anonymous"
        spaces = st.get(AUDIT_NS) or set()
        if not spaces:
            spaces = {conn.query_params.get("namespace") or ""}
        await trail.record(
            who=identity,
            method=conn.scope.get("method", "WS"),
            path=conn.url.path,
            route=route,
            namespace=",".join(sorted(spaces)),
            objects={k: str(v) for k, v in conn.path_params.items()},
            status=status,
            error=error,
        )

    # -------------------------------------------------------------- ACL routes

    async def acl_bootstrap(self, req: Request) -> Response:
        token, secret = await self._acls().bootstrap(now=self.now())
        return _json(token.public() | {"secret": secret})

    async def acl_token_create(self, req: Request) -> Response:
        body = await _small_json(req)
        name = body.get("name", "")
        type_ = body.get("type", "client")
        policies = body.get("policies", [])
        if not isinstance(name, str) or len(name) > 256:
            raise ValidationError([Problem("name", "expected a string of at most 256")])
        if not isinstance(policies, list) or not all(
            isinstance(p, str) and NAME.fullmatch(p) for p in policies
        ):
            raise ValidationError([Problem("policies", "expected a list of policy names")])
        raw_ttl = body.get("ttl") or 0
        try:
            ttl = float(jobspec.parse_duration(raw_ttl)) if raw_ttl else 0.0
        except (ValueError, ValidationError):
            raise ValidationError(
                [Problem("ttl", f"expected a duration such as 1h, got {raw_ttl!r}")]
            ) from None
        token, secret = await self._acls().create_token(
            name, str(type_), policies, ttl=ttl, now=self.now()
        )
        return _json(token.public() | {"secret": secret})

    async def acl_token_list(self, req: Request) -> Response:
        tokens = sorted(await self._acls().tokens(), key=lambda t: t.create_time)
        return _json([t.public() for t in tokens])

    async def acl_token_info(self, req: Request) -> Response:
        return _json((await self._acls().find_token(req.path_params["id"])).public())

    async def acl_token_delete(self, req: Request) -> Response:
        return _json((await self._acls().delete_token(req.path_params["id"])).public())

    async def acl_token_self(self, req: Request) -> Response:
        self._acls()
        caller = self.caller(req)
        if caller is None or caller.token is None:
            raise NotFound("this request carries no ACL token")
        return _json(caller.token.public())

    async def acl_policy_apply(self, req: Request) -> Response:
        name = req.path_params["name"]
        if not NAME.fullmatch(name):
            raise ValidationError([Problem("name", f"expected a policy name, got {name!r}")])
        body = await _small_json(req)
        rules, description = body.get("rules"), body.get("description", "")
        if not isinstance(rules, str) or not isinstance(description, str):
            raise ValidationError([Problem("rules", "expected the policy's text")])
        pol = await self._acls().apply_policy(name, rules, description[:1024])
        return _json({"name": pol.name, "description": pol.description})

    async def acl_policy_list(self, req: Request) -> Response:
        pols = await self._acls().policies()
        return _json([{"name": p.name, "description": p.description} for p in pols])

    async def acl_policy_info(self, req: Request) -> Response:
        pol = await self._acls().policy(req.path_params["name"])
        if pol is None:
            raise NotFound(f"no ACL policy {req.path_params['name']!r}")
        return _json({"name": pol.name, "description": pol.description, "rules": pol.rules})

    async def acl_policy_delete(self, req: Request) -> Response:
        await self._acls().delete_policy(req.path_params["name"])
        return _json({"deleted": req.path_params["name"]})

    # -------------------------------------------------------------- namespaces

    def _namespaces(self) -> Namespaces:
        assert self.ctx.namespaces is not None
        return self.ctx.namespaces

    async def list_namespaces(self, req: Request) -> Response:
        acl = self.readable_acl(req)
        rows = []
        for ns in sorted((await self._namespaces().all()).values(), key=lambda n: n.name):
            if acl is not None and not acl.readable(ns.name):
                continue
            rows.append(self._namespace_row(ns.name, ns.description))
        return _json(rows)

    def _namespace_row(self, name: str, description: str) -> dict[str, Any]:
        jobs = [j for j in self.state.jobs.values() if j.namespace == name]
        live = [a for a in self.state.allocs.values() if a.namespace == name and a.live]
        return {
            "name": name,
            "description": description,
            "jobs": len(jobs),
            "allocations": len(live),
        }

    async def get_namespace(self, req: Request) -> Response:
        ns = await self._namespaces().get(req.path_params["name"])
        return _json(self._namespace_status(ns))

    def _namespace_status(self, ns: Namespace) -> dict[str, Any]:
        used = namespace_quota.usage(self.state, ns.name)
        return self._namespace_row(ns.name, ns.description) | {
            "quota": ns.quota,
            "used": dataclasses.asdict(used),
        }

    async def set_namespace_quota(self, req: Request) -> Response:
        """{cpu, memory, allocs, jobs}: each the most the namespace may hold (0: no limit);
        every figure 0 removes the quota. What runs already is never stopped by it."""
        body = await _small_json(req)
        problems, figures = [], {}
        for field in ("cpu", "memory", "allocs", "jobs"):
            v = body.get(field, 0)
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 10**9:
                problems.append(Problem(field, f"expected an integer from 0, got {v!r}"))
            figures[field] = v
        unknown = sorted(set(body) - set(figures))
        if unknown:
            problems.append(
                Problem(unknown[0], "unknown field; expected cpu, memory, allocs, jobs")
            )
        if problems:
            raise ValidationError(problems)
        spaces = self._namespaces()
        ns = await spaces.get(req.path_params["name"])
        if ns.name == "default" and ns.revision == 0:
            ns = await spaces.create_default(now=self.now())
        quota = Quota(**figures) if any(figures.values()) else None
        said = ", ".join(f"{k} {v}" for k, v in figures.items() if v) or "none"
        ns = await spaces.save(
            msgspec.structs.replace(ns, quota=quota), f"namespace {ns.name} quota: {said}",
            now=self.now(),
        )  # fmt: skip
        return _json(self._namespace_status(ns))

    async def create_namespace(self, req: Request) -> Response:
        body = await _small_json(req)
        name, description = body.get("name"), body.get("description", "")
        if not isinstance(name, str):
            raise ValidationError([Problem("name", "expected a namespace name")])
        if not isinstance(description, str):
            raise ValidationError([Problem("description", "expected a string")])
        ns = await self._namespaces().create(name, description, now=self.now())
        return _json(self._namespace_row(ns.name, ns.description))

    async def delete_namespace(self, req: Request) -> Response:
        await self._namespaces().delete(req.path_params["name"], now=self.now())
        return _json({"deleted": req.path_params["name"]})


async def _small_json(req: Request) -> dict[str, Any]:
    from podium.server.trust_api import _small_json as read

    return await read(req)
