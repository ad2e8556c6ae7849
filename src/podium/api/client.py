"""The typed HTTP client that the CLI (sync) and the agent (async) use.

Both share `_check`, which turns an error response back into the error hierarchy,
so callers catch `NotFound`, `Conflict`, `ValidationError` … as on the server.
Several server addresses may be given; a connection failure moves to the next.
"""

from __future__ import annotations

import base64
import getpass
import os
import ssl
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec

from podium.errors import (
    Conflict,
    Forbidden,
    NotFound,
    PlacementError,
    PodiumError,
    Problem,
    Unauthorized,
    Unavailable,
    ValidationError,
)
from podium.model.types import Allocation, Node
from podium.runtime.backoff import Backoff
from podium.tls import pki
from podium.tls.client import CliConfig, discover
from podium.tls.context import NamedTransport, SyncNamedTransport, client_context

DEFAULT_ADDR = "http://127.0.0.1:4646"
TOKEN_HEADER = "x-podium-token"  # an ACL token's secret (server/acl.py)


def default_addresses(addr: str | None = None) -> list[str]:
    raw = addr or os.environ.get("PODIUM_ADDR") or DEFAULT_ADDR
    out = []
    for a in raw.split(","):
        a = a.strip().rstrip("/")
        if a:
            out.append(a if "://" in a else f"http://{a}")
    return out or [DEFAULT_ADDR]


def _check(resp: httpx.Response, *, raw: bool = False) -> Any:
    """The JSON body of a podium answer, or the error it stands for.

    podium answers JSON, errors included; `raw` allows other bodies on success (a
    snapshot file). Anything else came from some other server at that address.
    """
    is_json = resp.headers.get("content-type", "").startswith("application/json")
    if resp.status_code < 400:
        if is_json:
            return _json(resp)
        if raw:
            return resp.content
        raise _not_podium(resp)
    if not is_json:
        raise _not_podium(resp)
    body = _json(resp)
    msg = body.get("error", resp.text) if isinstance(body, dict) else resp.text
    if not isinstance(body, dict):
        body = {}
    code = resp.status_code
    if code == 401:
        raise Unauthorized(msg)
    if code == 403:
        raise Forbidden(msg)
    if code == 400:
        problems = [
            Problem(p.get("path", ""), p.get("message", ""))
            for p in body.get("problems", [])
            if isinstance(p, dict)
        ]
        raise ValidationError(problems or [Problem("", msg)])
    if code == 404:
        raise NotFound(msg)
    if code == 409:
        raise Conflict(msg)
    if code == 422:
        raise PlacementError(msg)
    if code == 503:
        raise Unavailable(msg)
    raise PodiumError(f"server error {code}: {msg}")


def _json(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        raise _not_podium(resp, "a body that is not JSON") from None


def _not_podium(resp: httpx.Response, what: str = "") -> PodiumError:
    """What a user hears when PODIUM_ADDR reaches a web server that is not podium."""
    got = what or resp.headers.get("content-type", "").split(";")[0].strip() or "no content type"
    return PodiumError(
        f"this is not a podium server (got {got}, HTTP {resp.status_code}, from {resp.url}); "
        "check --addr or PODIUM_ADDR"
    )


FAILOVER_ROUNDS = 2  # the CLI tries every server this many times before giving up
FAILOVER_PAUSE = 0.5  # mean seconds between rounds (a leader change, a store blip), jittered


def _unavailable(addresses: list[str], last: Exception | None) -> Unavailable:
    if isinstance(last, Unavailable):  # every server answered 503: say why
        return Unavailable(f"{last} (tried {', '.join(addresses)})")
    hint = ""
    if isinstance(last, httpx.RemoteProtocolError) and any(
        a.startswith("http://") for a in addresses
    ):
        hint = "; if the server uses TLS (podium dev does), use https:// and its credentials"
    if isinstance(last, httpx.ConnectError) and "CERTIFICATE" in str(last).upper():
        hint = "; the server's certificate is not from the CA given (PODIUM_CACERT)"
    return Unavailable(f"no podium server answers at {', '.join(addresses)} ({last}){hint}")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (e.g. in a container)
        return f"uid:{os.getuid()}"


class Client:
    """Synchronous client for the CLI and tests.

    Address and credentials come from podium.tls.client (flags, PODIUM_* variables, the
    CLI config file). With https the server must present a server certificate of the
    cluster's CA; credentials renewed on disk are picked up at the next request.
    """

    def __init__(
        self,
        addr: str | None = None,
        *,
        namespace: str | None = None,
        timeout: float = 30.0,
        config: CliConfig | None = None,
    ) -> None:
        self.config = config or discover()
        self.addresses = default_addresses(addr or self.config.addr or None)
        # One object's namespace when none is named (None: "default"); listings show only
        # this namespace when it is set, every namespace when it is not.
        self.namespace = namespace
        self._i = 0
        self._timeout = timeout
        self.creds = self.config.credentials()
        self._loaded = -1.0
        self.ssl: ssl.SSLContext | None = None
        self._http = self._client()

    def _client(self) -> httpx.Client:
        headers = {"x-podium-user": _user()}
        if self.config.token:
            headers[TOKEN_HEADER] = self.config.token
        if self.creds is None:
            if any(a.startswith("https://") for a in self.addresses):
                raise ValidationError(
                    [
                        Problem(
                            "PODIUM_CACERT",
                            "an https address needs the cluster's CA certificate: set "
                            "PODIUM_CACERT (and PODIUM_CLIENT_CERT, PODIUM_CLIENT_KEY), "
                            "source <data-dir>/env, or run where .podium/dev/cli.json is",
                        )
                    ]
                )
            return httpx.Client(timeout=self._timeout, headers=headers)
        self._loaded = self.creds.mtime()
        try:
            self.ssl = client_context(self.creds if self.creds.cert else None, ca=self.creds.ca)
        except (OSError, ssl.SSLError) as e:
            raise ValidationError(
                [Problem("PODIUM_CACERT", f"cannot load TLS files {self.creds}: {e}")]
            ) from None
        inner = SyncNamedTransport(httpx.HTTPTransport(verify=self.ssl), pki.SERVER_NAME)
        return httpx.Client(timeout=self._timeout, headers=headers, transport=inner)

    def _fresh(self) -> None:
        """Renewed files on disk (a long-running program): use them from now on. Files caught
        half-written (a new key beside the old certificate) are tried again next time."""
        if self.creds is not None and self.creds.mtime() != self._loaded:
            try:
                new = self._client()
            except ValidationError:
                return
            old, self._http = self._http, new
            old.close()

    @property
    def address(self) -> str:
        return self.addresses[self._i]

    def close(self) -> None:
        self._http.close()

    def ns(self, namespace: str | None = None) -> str:
        """The namespace of one object: the one given, else the client's, else "default"."""
        return namespace or self.namespace or "default"

    def _listing(self, namespace: str | None = None) -> dict[str, str]:
        ns = namespace or self.namespace
        return {"namespace": ns} if ns else {}

    def request(self, method: str, path: str, *, raw: bool = False, **kw: Any) -> Any:
        """Send to the current server; on no answer or a 503 try the next ones (two rounds).

        A write carries one Idempotency-Key across its retries: if a server applied it
        but died before answering, the retry gets that first answer, not a second write.
        `raw`: the answer may be other than JSON (a snapshot file).
        """
        if method != "GET":
            kw["headers"] = {"Idempotency-Key": uuid.uuid4().hex, **(kw.get("headers") or {})}
        last: Exception | None = None
        pause = Backoff(base=2 * FAILOVER_PAUSE, cap=4 * FAILOVER_PAUSE)
        for attempt in range(FAILOVER_ROUNDS * len(self.addresses)):
            if attempt and attempt % len(self.addresses) == 0:
                time.sleep(pause.next())
            self._fresh()
            try:
                return _check(self._http.request(method, self.address + path, **kw), raw=raw)
            except (httpx.TransportError, Unavailable) as e:
                last = e
                self._i = (self._i + 1) % len(self.addresses)
        raise _unavailable(self.addresses, last)

    def stream_lines(self, path: str, **kw: Any) -> Iterator[str]:
        with self._http.stream("GET", self.address + path, timeout=None, **kw) as resp:
            if resp.status_code >= 400:
                resp.read()
                _check(resp)
            yield from resp.iter_lines()

    def stream_bytes(self, path: str, **kw: Any) -> Iterator[bytes]:
        with self._http.stream(
            "GET", self.address + path, timeout=httpx.Timeout(30.0, read=None), **kw
        ) as resp:
            if resp.status_code >= 400:
                resp.read()
                _check(resp)
            yield from resp.iter_raw()

    # jobs
    def jobs(self, namespace: str | None = None) -> Any:
        return self.request("GET", "/v1/jobs", params=self._listing(namespace))

    def register_job(self, job: dict[str, Any], *, check_index: int | None = None) -> Any:
        return self.request("POST", "/v1/jobs", json={"job": job, "check_index": check_index})

    def plan_job(self, job: dict[str, Any]) -> Any:
        return self.request("POST", "/v1/jobs/plan", json={"job": job})

    def validate_job(self, job: dict[str, Any]) -> Any:
        return self.request("POST", "/v1/jobs/validate", json={"job": job})

    def job(self, name: str, namespace: str | None = None) -> Any:
        return self.request("GET", f"/v1/job/{name}", params={"namespace": self.ns(namespace)})

    def stop_job(self, name: str, *, purge: bool = False, namespace: str | None = None) -> Any:
        return self.request(
            "DELETE",
            f"/v1/job/{name}",
            params={"namespace": self.ns(namespace), "purge": str(purge).lower()},
        )

    def job_versions(self, name: str, namespace: str | None = None) -> Any:
        return self.request(
            "GET", f"/v1/job/{name}/versions", params={"namespace": self.ns(namespace)}
        )

    def job_version(self, name: str, version: int, namespace: str | None = None) -> Any:
        return self.request(
            "GET", f"/v1/job/{name}/version/{version}", params={"namespace": self.ns(namespace)}
        )

    def revert_job(self, name: str, version: int, namespace: str | None = None) -> Any:
        return self.request(
            "POST", f"/v1/job/{name}/revert", params={"namespace": self.ns(namespace)},
            json={"version": version},
        )  # fmt: skip

    def scale_job(self, name: str, group: str, count: int, namespace: str | None = None) -> Any:
        return self.request(
            "POST", f"/v1/job/{name}/scale", params={"namespace": self.ns(namespace)},
            json={"group": group, "count": count},
        )  # fmt: skip

    def job_scaling(self, name: str, namespace: str | None = None) -> Any:
        return self.request(
            "GET", f"/v1/job/{name}/scaling", params={"namespace": self.ns(namespace)}
        )

    def dispatch_job(
        self,
        name: str,
        *,
        meta: dict[str, str] | None = None,
        payload: bytes = b"",
        namespace: str | None = None,
    ) -> Any:
        body = {"meta": meta or {}, "payload": base64.b64encode(payload).decode()}
        return self.request(
            "POST", f"/v1/job/{name}/dispatch", params={"namespace": self.ns(namespace)}, json=body
        )

    def force_periodic(self, name: str, namespace: str | None = None) -> Any:
        return self.request(
            "POST", f"/v1/job/{name}/periodic/force", params={"namespace": self.ns(namespace)}
        )

    # deployments
    def deployments(self, *, job: str = "", namespace: str | None = None) -> Any:
        """Every deployment (of the namespace, if set); of one job: in its namespace."""
        one_job = {"job": job, "namespace": self.ns(namespace)}
        return self.request(
            "GET", "/v1/deployments", params=one_job if job else self._listing(namespace)
        )

    def deployment(self, ref: str, namespace: str | None = None) -> Any:
        return self.request(
            "GET", f"/v1/deployment/{ref}", params={"namespace": self.ns(namespace)}
        )

    def deployment_action(
        self,
        ref: str,
        action: str,
        *,
        groups: list[str] | None = None,
        namespace: str | None = None,
    ) -> Any:
        body = {"groups": groups} if groups else None
        return self.request(
            "POST",
            f"/v1/deployment/{ref}/{action}",
            params={"namespace": self.ns(namespace)},
            json=body,
        )

    # allocs
    def allocs(
        self, *, job: str | None = None, node: str | None = None, namespace: str | None = None
    ) -> Any:
        params = {k: v for k, v in (("job", job), ("node", node)) if v}
        if job:
            params["namespace"] = self.ns(namespace)
        else:
            params |= self._listing(namespace)
        return self.request("GET", "/v1/allocations", params=params)

    def alloc(self, alloc_id: str) -> Allocation:
        data = self.request("GET", f"/v1/allocation/{alloc_id}", params=self._listing())
        return msgspec.convert(data, Allocation)

    def stop_alloc(self, alloc_id: str) -> Any:
        return self.request("POST", f"/v1/allocation/{alloc_id}/stop", params=self._listing())

    def restart_alloc(self, alloc_id: str) -> Any:
        return self.request("POST", f"/v1/allocation/{alloc_id}/restart", params=self._listing())

    # nodes
    def nodes(self) -> Any:
        return self.request("GET", "/v1/nodes")

    def node(self, node_id: str) -> Any:
        return self.request("GET", f"/v1/node/{node_id}")

    def drain_node(self, node_id: str, *, enable: bool = True, deadline: str | None = None) -> Any:
        body: dict[str, Any] = {"enable": enable}
        if deadline is not None:
            body["deadline"] = deadline
        return self.request("POST", f"/v1/node/{node_id}/drain", json=body)

    def events(self, **params: Any) -> Any:
        return self.request("GET", "/v1/events", params=params)

    # services
    def services(self, *, namespace: str | None = None) -> Any:
        return self.request("GET", "/v1/services", params=self._listing(namespace))

    def service(self, name: str, *, namespace: str | None = None, tag: str = "") -> Any:
        params = {"namespace": self.ns(namespace), **({"tag": tag} if tag else {})}
        return self.request("GET", f"/v1/service/{name}", params=params)

    def status(self) -> Any:
        return self.request("GET", "/v1/status")

    # resource use (gathered from the agents by the server)
    def usage(self, *, job: str = "", namespace: str | None = None, node: str = "") -> Any:
        params = {**self._listing(namespace), **({"job": job} if job else {})}
        if node:
            params["node"] = node
        return self.request("GET", "/v1/usage", params=params)

    def alloc_stats(self, alloc_id: str) -> Any:
        return self.request("GET", f"/v1/allocation/{alloc_id}/stats")

    # configs and secrets (kind: "config" | "secret")
    def data_list(self, kind: str, *, prefix: str = "", namespace: str | None = None) -> Any:
        params = {**self._listing(namespace), **({"prefix": prefix} if prefix else {})}
        return self.request("GET", f"/v1/{kind}s", params=params)

    def data_get(
        self,
        kind: str,
        path: str,
        *,
        version: int | None = None,
        reveal: bool = False,
        namespace: str | None = None,
    ) -> Any:
        params: dict[str, Any] = {"namespace": self.ns(namespace)}
        if version is not None:
            params["version"] = version
        # A secret's values have a route of their own (it requires more than its metadata).
        where = "secret-values" if reveal and kind == "secret" else kind
        return self.request("GET", f"/v1/{where}/{path}", params=params)

    def data_put(
        self,
        kind: str,
        path: str,
        data: dict[str, str],
        *,
        cas: int | None = None,
        merge: bool = False,
        namespace: str | None = None,
    ) -> Any:
        return self.request(
            "PUT",
            f"/v1/{kind}/{path}",
            params={"namespace": self.ns(namespace)},
            json={"data": data, "cas": cas, "merge": merge},
        )

    def data_delete(
        self, kind: str, path: str, *, force: bool = False, namespace: str | None = None
    ) -> Any:
        params = {"namespace": self.ns(namespace), "force": str(force).lower()}
        return self.request("DELETE", f"/v1/{kind}/{path}", params=params)

    def data_history(self, kind: str, path: str, namespace: str | None = None) -> Any:
        return self.request(
            "GET", f"/v1/{kind}-versions/{path}", params={"namespace": self.ns(namespace)}
        )

    def keyring(self) -> Any:
        return self.request("GET", "/v1/operator/keyring")

    def keyring_rotate(self, *, full: bool = False) -> Any:
        return self.request("POST", "/v1/operator/keyring/rotate", json={"full": full})


class AsyncClient:
    """Asynchronous client for the agent: registration, heartbeats, alloc watch and reports.

    With `tls`, every address is https and the server must present a *server* certificate
    (checked by name, podium.tls.context); `set_tls` swaps in a new context for new
    connections (the old client is closed once its requests are long done).
    """

    def __init__(
        self,
        addr: str | list[str],
        *,
        timeout: float = 10.0,
        local_address: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.addresses = default_addresses(addr if isinstance(addr, str) else ",".join(addr))
        if tls is not None:
            self.addresses = ["https://" + a.split("://", 1)[-1] for a in self.addresses]
        self._i = 0
        self._timeout = timeout
        # local_address: the source address connections leave from (None: the kernel picks)
        self._local = local_address
        self.headers: dict[str, str] = {}
        self._retired: list[httpx.AsyncClient] = []
        self._http = self._client(tls)

    def _client(self, tls: ssl.SSLContext | None) -> httpx.AsyncClient:
        inner: httpx.AsyncBaseTransport = httpx.AsyncHTTPTransport(
            local_address=self._local, verify=tls if tls is not None else True
        )
        if tls is not None:
            inner = NamedTransport(inner, pki.SERVER_NAME)
        return httpx.AsyncClient(timeout=self._timeout, transport=inner)

    def set_tls(self, tls: ssl.SSLContext) -> None:
        """From now on: https, this context (a fresh connection pool)."""
        self.addresses = ["https://" + a.split("://", 1)[-1] for a in self.addresses]
        self._retired.append(self._http)
        self._http = self._client(tls)

    @property
    def address(self) -> str:
        return self.addresses[self._i]

    async def close(self) -> None:
        for c in [*self._retired, self._http]:
            await c.aclose()

    async def request(self, method: str, path: str, **kw: Any) -> Any:
        last: Exception | None = None
        for _ in range(len(self.addresses)):
            if self.headers:
                kw["headers"] = {**self.headers, **(kw.get("headers") or {})}
            try:
                return _check(await self._http.request(method, self.address + path, **kw))
            except (httpx.TransportError, Unavailable) as e:
                # Refused, reset, silent past the timeout (a partition, a stopped server)
                # or 503 (its store is down): all mean "try the next server", never a
                # crash of the caller. The agent's own loops retry after a full round.
                last = e
                self._i = (self._i + 1) % len(self.addresses)
        raise _unavailable(self.addresses, last)

    async def register_node(self, node: Node) -> Any:
        return await self.request(
            "POST",
            "/v1/nodes/register",
            content=msgspec.json.encode(node),
            headers={"content-type": "application/json"},
        )

    async def heartbeat(self, node_id: str, *, timeout: float | None = None) -> Any:
        kw: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        return await self.request("POST", f"/v1/node/{node_id}/heartbeat", **kw)

    async def node_allocs(
        self, node_id: str, *, index: int, wait: float
    ) -> tuple[int, list[Allocation], str]:
        """(index, the node's allocs, the node's status as the server sees it)."""
        data = await self.request(
            "GET",
            f"/v1/node/{node_id}/allocations",
            params={"index": index, "wait": f"{wait}s"},
            timeout=wait + 10,
        )
        allocs = msgspec.convert(data["allocations"], list[Allocation])
        return data["index"], allocs, str(data.get("node_status", "ready"))

    async def alloc_updates(self, node_id: str, updates: list[Any]) -> Any:
        """{"applied": N, "rejected": [{"id", "reason", "retry"}]}: what was not applied."""
        return await self.request(
            "POST",
            f"/v1/node/{node_id}/allocations/status",
            content=msgspec.json.encode(updates),
            headers={"content-type": "application/json"},
        )

    async def services(self, *, index: int, wait: float) -> Any:
        """Blocking query on the service listing: {"index", "services": [...]}."""
        return await self.request(
            "GET", "/v1/services", params={"index": index, "wait": f"{wait}s"}, timeout=wait + 10
        )

    async def service(self, namespace: str, name: str, *, index: int, wait: float) -> Any:
        """Blocking query on one service: {"index", "endpoints": [...]}."""
        return await self.request(
            "GET",
            f"/v1/service/{name}",
            params={"namespace": namespace, "index": index, "wait": f"{wait}s"},
            timeout=wait + 10,
        )

    async def wake_service(self, namespace: str, name: str) -> Any:
        """A request waits for this sleeping service: ask the servers to start a copy."""
        return await self.request(
            "POST", f"/v1/service/{name}/wake", params={"namespace": namespace}, json={}
        )

    async def template_data(self, node_id: str, alloc_id: str, version: int) -> Any:
        """The configs and secrets (opened) an alloc of this node reads at a job version."""
        return await self.request(
            "GET",
            f"/v1/node/{node_id}/allocation/{alloc_id}/template-data",
            params={"version": version},
        )

    async def job_version(self, namespace: str, name: str, version: int) -> Any:
        return await self.request(
            "GET",
            f"/v1/job/{name}/version/{version}",
            params={"namespace": namespace},
        )
