"""Routes of trust: who is asking (and refusing), joining, renewing, tokens, CA rotation.

Mixed into `server.app.Api`; `authorize` runs before every handler with the route's
`requires` word (server/access.py). Every refusal is answered 401/403 and recorded as a
`security.denied` event (rate-limited), naming the caller and the route, never a secret.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from podium.errors import Conflict, Forbidden, PodiumError, Problem, Unauthorized, ValidationError
from podium.model import spec as jobspec
from podium.runtime.bodies import json_body
from podium.server import access
from podium.server.acl_api import AclRoutes
from podium.server.events import event_put
from podium.server.runtime import ServerContext
from podium.server.state import ClusterState
from podium.server.ui_login import COOKIE, CSRF_HEADER, LOGIN_TTL, SESSION_TTL, UiSessions
from podium.server.ui_login import identity as ui_identity
from podium.store import keys
from podium.store.base import Compare, Put
from podium.tls.identity import ANONYMOUS, Identity

log = logging.getLogger(__name__)

_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,127}")


def _json(data: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(data), status_code=status, media_type="application/json")


class TrustRoutes(AclRoutes):
    ctx: ServerContext
    state: ClusterState

    # ------------------------------------------------------------- identity

    def peer(self, conn: HTTPConnection) -> Identity:
        who: Identity = conn.scope.get("state", {}).get("peer", ANONYMOUS)
        return who

    def who(self, conn: HTTPConnection) -> Identity:
        """The identity the request acts with (set by `authorize`)."""
        found: Identity = conn.scope["state"].get("who", ANONYMOUS)
        return found

    async def authorize(self, conn: HTTPConnection, requires: str) -> Identity:
        peer = self.peer(conn)
        browser = COOKIE in conn.cookies and self.ctx.ui is not None and requires != "public"
        if browser and not peer.authenticated:
            peer = await self._browser(conn)
        node_id = conn.headers.get(access.NODE_ID_HEADER, "")
        secret = conn.headers.get(access.NODE_SECRET_HEADER, "")
        stored = None
        if self.ctx.insecure and secret and _ID.fullmatch(node_id):
            stored = await self._stored_secret(node_id)
        who = access.resolve(
            peer, insecure=self.ctx.insecure, node_id=node_id, secret=secret, stored_hash=stored
        )
        if (
            who.role == "agent"
            and self.ctx.authority is not None
            and who.node_id in self.ctx.authority.revoked
        ):
            raise Unauthorized(f"node {who.node_id}'s certificate is revoked")
        need = access.requirement(requires)
        node_in_path = conn.path_params.get("id") if need.role == "agent" else None
        # With ACL a management token counts, over any user's certificate: the transport
        # need only be a user's, and the ACL step asks for management.
        role = "operator" if self.ctx.acl is not None and need.role == "management" else need.role
        access.check(who, role, node_in_path=node_in_path, browser=need.browser)
        conn.scope.setdefault("state", {})["who"] = who
        await self.acl_authorize(conn, who, need)  # ACL on: the token's capabilities
        return who

    async def _browser(self, conn: HTTPConnection) -> Identity:
        """A web UI session's identity (its cookie); writes need the x-podium-ui header, and
        a WebSocket never takes a cookie (cross-site WebSockets are not held by CORS)."""
        assert self.ctx.ui is not None
        record = await self.ctx.ui.lookup(conn.cookies[COOKIE])
        if record is None:
            raise Unauthorized("the web UI session ended: run `podium ui` to log in again")
        method = conn.scope.get("method")
        if method is None:
            raise Forbidden("a web UI session cannot open WebSockets")
        if method not in ("GET", "HEAD") and conn.headers.get(CSRF_HEADER) != "1":
            raise Forbidden(f"a web UI session writes only with the {CSRF_HEADER}: 1 header")
        return ui_identity(record)

    async def denied(self, conn: HTTPConnection, err: PodiumError) -> None:
        method = conn.scope.get("method", "WS")
        what = f"{method} {conn.url.path}"
        who = self.peer(conn)
        log.warning("refused %s on %s: %s", who.describe(), what, err)
        self.ctx.metrics.denied.labels(str(err.status_code)).inc()
        if not self.ctx.denials.allow():
            return
        node = who.node_id or str(conn.path_params.get("id", ""))
        node = node if _ID.fullmatch(node) else ""  # what the caller put in a path: only ids
        try:
            await self.state.store.txn(
                [],
                [
                    event_put(
                        "security.denied",
                        f"refused {who.describe()} on {what}: {err}",
                        node=node,
                        now=self.ctx.clock.now(),
                    )
                ],
            )
        except PodiumError as e:
            log.warning("could not record the refusal as an event: %s", e)

    def guard_ws(
        self, fn: Callable[[WebSocket], Awaitable[None]], requires: str, name: str
    ) -> Callable[[WebSocket], Awaitable[None]]:
        async def handler(ws: WebSocket) -> None:
            try:
                await self.authorize(ws, requires)
            except (Unauthorized, Forbidden) as e:
                await self.denied(ws, e)
                await self.audit(ws, name, e.status_code, str(e))
                await ws.send_denial_response(_json({"error": str(e)}, e.status_code))
                return
            await self.audit(ws, name, 101, "")
            await fn(ws)

        return handler

    # ----------------------------------------------------------- node secrets

    async def _stored_secret(self, node_id: str) -> str | None:
        """The hash of a node's secret (--insecure): cached, else from the store (another
        server, or this one before a restart, issued it)."""
        found = self.ctx.node_secrets.get(node_id)
        if found is None:
            kv = await self.state.store.get(keys.node_secret(node_id))
            if kv is not None:
                found = self.ctx.node_secrets[node_id] = kv.value.decode()
        return found

    async def node_secret_for(self, node_id: str) -> str:
        """--insecure: a new node gets a secret once (only its hash is kept); "" if it has
        one already (then the caller proved it, or `register` refused it)."""
        if node_id in self.ctx.node_secrets:
            return ""
        kv = await self.state.store.get(keys.node_secret(node_id))
        if kv is not None:
            self.ctx.node_secrets[node_id] = kv.value.decode()
            return ""
        secret = secrets.token_hex(24)
        digest = access.secret_hash(secret)
        res = await self.state.store.txn(
            [Compare(keys.node_secret(node_id), "create_rev", "=", 0)],
            [Put(keys.node_secret(node_id), digest.encode())],
        )
        if not res.succeeded:
            raise Forbidden(f"node {node_id} registered with another secret just now")
        self.ctx.node_secrets[node_id] = digest
        return secret

    async def check_registration(self, conn: HTTPConnection, node_id: str) -> str:
        """Who may register `node_id`: its own certificate, or (--insecure) the holder of its
        secret, or anyone for a node never seen. Returns a new node secret, if one is issued."""
        who = self.who(conn)
        if who.role == "agent":
            if who.node_id != node_id:
                raise Forbidden(f"{who.describe()} may not register node {node_id}")
            return ""
        # --insecure and no secret presented
        if await self.state.store.get(keys.node_secret(node_id)) is not None:
            raise Forbidden(f"node {node_id} is registered: present its node secret")
        if node_id in self.state.nodes:
            raise Forbidden(f"node {node_id} is registered to another agent")
        return await self.node_secret_for(node_id)

    # -------------------------------------------------------------- TLS routes

    def _authority(self) -> Any:
        if self.ctx.authority is None:
            raise Conflict(
                "this server issues no certificates (--insecure, or certificates from your "
                "own PKI via --tls-cert)"
            )
        return self.ctx.authority

    async def tls_ca(self, req: Request) -> Response:
        if self.ctx.authority is not None:
            pem = self.ctx.authority.ca_pem
        elif self.ctx.tls is not None:
            pem = self.ctx.tls.ca_pem
        else:
            raise Conflict("this server runs without TLS (--insecure)")
        return Response(pem, media_type="application/x-pem-file")

    async def tls_join(self, req: Request) -> Response:
        body = await _small_json(req)
        token, csr = body.get("token"), body.get("csr")
        node_id = body.get("node_id") or ""
        if not isinstance(token, str) or not isinstance(csr, str) or not isinstance(node_id, str):
            raise ValidationError([Problem("", "expected {token, csr, node_id} strings")])
        auth = self._authority()
        out = await auth.join(
            token,
            csr,
            proposed_id=node_id,
            taken=lambda i: i in self.state.nodes,
            hosts=body.get("hosts"),
        )
        await self.state.store.txn(
            [],
            [
                event_put(
                    "tls.joined",
                    f"{out['role']} {out['name']} joined with a token",
                    node=out["name"] if out["role"] == "agent" else "",
                    now=self.ctx.clock.now(),
                )
            ],
        )
        return _json(out)

    async def tls_renew(self, req: Request) -> Response:
        body = await _small_json(req)
        csr = body.get("csr")
        if not isinstance(csr, str):
            raise ValidationError([Problem("csr", "expected a PEM certificate request")])
        return _json(await self._authority().renew(self.who(req), csr, hosts=body.get("hosts")))

    async def tls_join_token(self, req: Request) -> Response:
        body = await _small_json(req)
        role = body.get("role", "agent")
        raw_ttl = body.get("ttl", "1h")
        try:
            ttl = float(jobspec.parse_duration(raw_ttl))
        except (ValueError, ValidationError):
            raise ValidationError(
                [Problem("ttl", f"expected a duration such as 1h, got {raw_ttl!r}")]
            ) from None
        token = await self._authority().new_token(str(role), ttl)
        return _json({"token": token, "role": role, "ttl": ttl})

    async def tls_status(self, req: Request) -> Response:
        auth = self._authority()
        assert auth.state is not None
        ready = [n.id for n in self.state.nodes.values() if n.status == "ready"]
        pending = await auth.pending_nodes(ready) if auth.state.rotating else []
        return _json(
            {
                "epoch": auth.epoch,
                "rotating": auth.state.rotating,
                "roots": len(auth.state.roots),
                "root_digest": auth.root_digest(),
                "pending_nodes": pending,
                "nodes": len(ready),
            }
        )

    async def tls_rotate(self, req: Request) -> Response:
        auth = self._authority()
        state = await auth.rotate()
        await self.state.store.txn(
            [],
            [event_put("tls.rotate", "CA rotation started", now=self.ctx.clock.now())],
        )
        return _json({"epoch": state.epoch, "rotating": state.rotating})

    # ------------------------------------------------------------ web UI login

    def _ui(self) -> UiSessions:
        if self.ctx.ui is None:
            raise Conflict("this server runs without TLS (--insecure): the web UI needs no login")
        return self.ctx.ui

    async def ui_login(self, req: Request) -> Response:
        """A one-use link that logs a browser into the web UI (as an operator)."""
        token = await self._ui().new_login(self.who(req))
        base = str(req.base_url).rstrip("/")
        return _json({"url": f"{base}/ui/#login={token}", "expires_in": LOGIN_TTL})

    async def ui_session_open(self, req: Request) -> Response:
        body = await _small_json(req)
        token = body.get("token")
        if not isinstance(token, str) or not token:
            raise ValidationError([Problem("token", "expected the token of a login link")])
        secret, record = await self._ui().open(token)
        resp = _json({"name": record.name, "expires": record.expires})
        resp.set_cookie(
            COOKIE,
            secret,
            max_age=int(SESSION_TTL),
            path="/",
            secure=True,
            httponly=True,
            samesite="strict",
        )
        return resp

    async def ui_session_close(self, req: Request) -> Response:
        secret = req.cookies.get(COOKIE)
        if secret and self.ctx.ui is not None:
            await self.ctx.ui.close(secret)
        resp = _json({"closed": bool(secret)})
        resp.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")
        return resp


async def _small_json(req: Request) -> dict[str, Any]:
    """The body as a JSON object, read with the API's limits (size while reading, nesting)."""
    data = await json_body(req) if int(req.headers.get("content-length") or 1) else {}
    if not isinstance(data, dict):
        raise ValidationError([Problem("", "expected a JSON object")])
    return data
