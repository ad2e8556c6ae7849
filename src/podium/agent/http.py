"""The agent's own small HTTP API: task logs (tail and follow) and exec, for the servers.

Logs stay on the node that produced them; users ask a server, which checks them and
asks here (server/forward.py). With TLS this API takes only mutual-TLS connections, and
logs and exec only from *server* certificates.

Exec is a WebSocket: `?task=T&tty=1&cmd=ARG&cmd=ARG...`; binary frames from the client
are stdin, text frames are {"resize": [rows, cols]} or {"eof": true}; binary frames to
the client are 0x01+stdout or 0x02+stderr; the last frame is {"exit_code": N}. A command
that does not exist is refused before the upgrade: 400, naming it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST as METRICS_CONTENT_TYPE
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from podium.drivers.base import ExecDriver
from podium.drivers.exec_session import ExecSession, SessionExecDriver
from podium.errors import DriverError, PodiumError, TaskNotFound
from podium.model.pattern import PatternError, compile_pattern
from podium.runtime import http
from podium.runtime.logfiles import follow, read_tail, tail_bytes
from podium.runtime.merge import Merge
from podium.tls.context import ServerTLS
from podium.tls.identity import ANONYMOUS, Identity

if TYPE_CHECKING:
    from podium.agent.agent import Agent

log = logging.getLogger(__name__)


EXEC_BODY_LIMIT = 256 * 1024  # an exec request is a command line and a timeout
MAX_EXEC_TIMEOUT = 3600.0  # seconds


def _json(data: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(data), status_code=status, media_type="application/json")


# route -> roles allowed (TLS on); without TLS (--insecure) anyone who reaches it
REQUIRES = {"logs": ("server",), "lines": ("server",), "exec": ("server",),
            "usage": ("server",), "metrics": ("server", "operator", "management"),
            "health": ("server", "operator", "management", "agent")}  # fmt: skip


def _refusal(conn: Request | WebSocket, what: str, *, tls: bool) -> Response | None:
    if not tls:
        return None
    peer: Identity = conn.scope.get("state", {}).get("peer", ANONYMOUS)
    if peer.role in REQUIRES[what]:
        return None
    log.warning("refused %s on %s", peer.describe(), conn.url.path)
    code = 401 if not peer.authenticated else 403
    return _json({"error": f"{peer.describe()} may not use the agent's {what}"}, code)


def create_agent_app(agent: Agent, *, tls: bool = False) -> Starlette:
    def find_runner(req: Request | WebSocket) -> Any:
        """The one runner the path's alloc id (or prefix) names, or a 404 response."""
        alloc_id = req.path_params["id"]
        matches = [r for i, r in agent.runners.items() if i.startswith(alloc_id)]
        if len(matches) != 1:
            msg = "no allocation" if not matches else f"{len(matches)} allocations"
            return _json({"error": f"{msg} matching {alloc_id!r} on this node"}, 404)
        return matches[0]

    def runner_task(req: Request | WebSocket) -> tuple[Any, Any] | Response:
        runner = find_runner(req)
        if isinstance(runner, Response):
            return runner
        name = req.query_params.get("task") or next(iter(runner.tasks))
        task = runner.tasks.get(name)
        if task is None:
            return _json(
                {"error": f"task: no task {name!r}; tasks are {sorted(runner.tasks)}"}, 400
            )
        return runner, task

    async def logs(req: Request) -> Response:
        refused = _refusal(req, "logs", tls=tls)
        if refused is not None:
            return refused
        found = runner_task(req)
        if isinstance(found, Response):
            return found
        _, task = found
        kind = req.query_params.get("type", "stdout")
        if kind not in ("stdout", "stderr"):
            return _json({"error": f"type: expected stdout or stderr, got {kind!r}"}, 400)
        path = task.cfg.stdout_path if kind == "stdout" else task.cfg.stderr_path
        try:
            tail = int(req.query_params.get("tail", "65536"))
            lines = req.query_params.get("lines")
            if lines is not None:  # the last N lines: as many bytes as they take
                tail = tail_bytes(path, int(lines))
        except ValueError:
            return _json({"error": "tail, lines: expected a number (of bytes, of lines)"}, 400)
        if req.query_params.get("follow", "") not in ("1", "true", "yes"):
            try:
                data = read_tail(path, tail)
            except FileNotFoundError:
                data = b""
            return Response(data, media_type="application/octet-stream")

        async def stream() -> AsyncIterator[bytes]:
            async for chunk in follow(path, from_end_bytes=tail):
                yield chunk

        return StreamingResponse(stream(), media_type="application/octet-stream")

    async def lines(req: Request) -> Response:
        """An alloc's log lines as NDJSON {time, task, stream, line}, oldest first: `since`
        (wall time) picks the start through the time index, `grep` (RE2) filters, `follow`
        goes on until the alloc's tasks are done. The first object is {"retention": ...};
        with follow, {"live": true} marks where the past ends."""
        refused = _refusal(req, "lines", tls=tls)
        if refused is not None:
            return refused
        runner = find_runner(req)
        if isinstance(runner, Response):
            return runner
        q = req.query_params
        tasks = [q["task"]] if q.get("task") else list(runner.tasks)
        unknown = [t for t in tasks if t not in runner.tasks]
        if unknown:
            return _json(
                {"error": f"task: no task {unknown[0]!r}; tasks are {sorted(runner.tasks)}"}, 400
            )
        kinds = {"stdout": ["stdout"], "stderr": ["stderr"], "both": ["stdout", "stderr"]}
        streams = kinds.get(q.get("type", "stdout"))
        if streams is None:
            return _json({"error": "type: expected stdout, stderr or both"}, 400)
        try:
            since = float(q.get("since", "0") or 0)
        except ValueError:
            return _json({"error": "since: expected a wall time in seconds"}, 400)
        try:
            match = compile_pattern(q["grep"]).search if q.get("grep") else None
        except PatternError as e:
            return _json({"error": f"grep: {e}"}, 400)
        follow_ = q.get("follow", "") in ("1", "true", "yes")
        paths = [
            (t, kind, getattr(runner.tasks[t].cfg, f"{kind}_path"))
            for t in tasks
            for kind in streams
        ]

        def obj(t: str, kind: str, at: float, text: str) -> bytes:
            return (
                msgspec.json.encode({"time": at, "task": t, "stream": kind, "line": text}) + b"\n"
            )

        async def stream() -> AsyncIterator[bytes]:
            yield msgspec.json.encode({"retention": agent.log_index.retention()}) + b"\n"
            old = [
                (ln.time, t, kind, ln.text)
                for t, kind, path in paths
                for ln in agent.log_index.lines(path, since=since, match=match)
            ]
            for at, t, kind, text in sorted(old, key=lambda x: x[0]):
                yield obj(t, kind, at, text)
            if not follow_:
                return
            yield b'{"live": true}\n'  # the past ends here; what follows is new
            async with Merge[bytes]() as merged:
                for t, kind, path in paths:
                    merged.add(_follow_lines(path, t, kind, match, runner.finished, obj))
                while (item := await merged.get()) is not None:
                    yield item

        return StreamingResponse(stream(), media_type="application/x-ndjson")

    async def exec_(ws: WebSocket) -> None:
        refused = _refusal(ws, "exec", tls=tls)
        if refused is not None:
            await ws.send_denial_response(refused)
            return
        found = runner_task(ws)
        if isinstance(found, Response):
            await ws.send_denial_response(found)
            return
        _, task = found
        cmd = ws.query_params.getlist("cmd")
        if not cmd or not all(cmd):
            await ws.send_denial_response(
                _json({"error": "cmd: expected a command (cmd=ARG, repeated)"}, 400)
            )
            return
        tty = ws.query_params.get("tty", "") in ("1", "true")
        if task.handle is None:
            await ws.send_denial_response(_json({"error": f"task {task.name} is not running"}, 409))
            return
        if not isinstance(task.driver, SessionExecDriver):
            await _exec_once(ws, task, cmd)
            return
        try:
            session = await task.driver.exec_session(task.handle, cmd, tty=tty)
        except TaskNotFound as e:
            await ws.send_denial_response(_json({"error": str(e)}, 409))
            return
        except DriverError as e:
            # The command could not run in the task (not found: 400; else 422): about the
            # request, not this agent.
            code = e.status_code if 400 <= e.status_code < 500 else 422
            await ws.send_denial_response(_json({"error": str(e)}, code))
            return
        except PodiumError as e:
            code = e.status_code if 400 <= e.status_code < 500 else 500
            await ws.send_denial_response(_json({"error": str(e)}, code))
            return
        await ws.accept()
        try:
            await _run_session(ws, session)
        finally:
            await session.kill()

    async def health(req: Request) -> Response:
        refused = _refusal(req, "health", tls=tls)
        if refused is not None:
            return refused
        mesh = agent.mesh
        return _json(
            {
                "node": agent.node.id if agent.node else "",
                "allocs": len(agent.runners),
                "syncs": agent.syncs,  # what the agent did with the server's word, so far
                "mesh": {
                    "connections": mesh.connections if mesh else 0,
                    "refused": mesh.refused if mesh else 0,
                },
            }
        )

    async def metrics(req: Request) -> Response:
        refused = _refusal(req, "metrics", tls=tls)
        if refused is not None:
            return refused
        # Prometheus text: tasks, usage, checks, logs, and the proxy's services.
        return Response(await agent.metrics.exposition(agent), media_type=METRICS_CONTENT_TYPE)

    async def usage(req: Request) -> Response:
        """This node's allocs' resource use (`max_age`, seconds, bounds how old it may be),
        and what its proxy counted per service (the autoscaler's requests and latency)."""
        refused = _refusal(req, "usage", tls=tls)
        if refused is not None:
            return refused
        try:
            max_age = min(max(float(req.query_params.get("max_age", "1")), 0.0), 60.0)
        except ValueError:
            return _json({"error": "max_age: expected a number of seconds"}, 400)
        allocs = await agent.usage.sample(max_age=max_age)
        return _json(
            {
                "node_id": agent.node.id if agent.node else "",
                "time": agent.usage.sampled_at,
                "allocs": list(allocs.values()),
                "services": agent.proxies.proxy.traffic(),
                "services_time": time.time(),
            }
        )

    return Starlette(
        routes=[
            Route("/v1/metrics", metrics),
            Route("/v1/agent/health", health),
            Route("/v1/agent/usage", usage),
            Route("/v1/agent/alloc/{id}/logs", logs),
            Route("/v1/agent/alloc/{id}/lines", lines),
            WebSocketRoute("/v1/agent/alloc/{id}/exec", exec_),
        ]
    )


async def _follow_lines(
    path: str,
    task: str,
    kind: str,
    match: Callable[[str], Any] | None,
    finished: asyncio.Event,
    encode: Callable[[str, str, float, str], bytes],
) -> AsyncIterator[bytes]:
    """New complete lines of `path` from its end, stamped when read, until `finished`."""
    partial = b""
    chunks = follow(path, from_end_bytes=0).__aiter__()
    while True:
        try:
            async with asyncio.timeout(0.5):
                chunk = await anext(chunks)
        except TimeoutError:
            if finished.is_set():
                await chunks.aclose()  # type: ignore[attr-defined]
                return
            continue
        *done, partial = (partial + chunk).split(b"\n")
        now = time.time()
        for raw in done:
            text = raw.decode("utf-8", "replace")
            if match is None or match(text):
                yield encode(task, kind, now, text)


async def _exec_once(ws: WebSocket, task: Any, cmd: list[str]) -> None:
    """A driver without sessions (no stdin, no TTY): run once, send the output and the code."""
    if not isinstance(task.driver, ExecDriver):
        await ws.send_denial_response(_json({"error": f"{task.driver.name} cannot exec"}, 409))
        return
    await ws.accept()
    try:
        code, out = await task.driver.exec(task.handle, cmd, timeout=3600.0)
    except (DriverError, OSError) as e:
        await ws.send_text(msgspec.json.encode({"error": str(e)}).decode())
        await ws.close()
        return
    await ws.send_bytes(b"\x01" + out)
    await ws.send_text(msgspec.json.encode({"exit_code": code}).decode())
    await ws.close()


async def _run_session(ws: WebSocket, session: ExecSession) -> None:
    """Pump stdin in and output out until the command exits, then send its exit code."""

    async def output(stream: int, reader: asyncio.StreamReader) -> None:
        tag = bytes([stream])
        while True:
            try:
                chunk = await reader.read(65536)
            except OSError:
                return
            if not chunk:
                return
            await ws.send_bytes(tag + chunk)

    async def stdin() -> None:
        try:
            while True:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    await session.kill()  # the user went away: nothing may keep running
                    return
                if msg.get("bytes") is not None:
                    await session.write(msg["bytes"])
                elif msg.get("text"):
                    ctl = msgspec.json.decode(msg["text"])
                    if isinstance(ctl, dict) and ctl.get("eof"):
                        await session.close_stdin()
                    elif isinstance(ctl, dict) and isinstance(ctl.get("resize"), list):
                        rows, cols = (int(x) for x in ctl["resize"][:2])
                        await session.resize(rows, cols)
        except (WebSocketDisconnect, msgspec.DecodeError, ValueError, TypeError):
            await session.kill()

    feeder = asyncio.ensure_future(stdin())
    try:
        async with asyncio.TaskGroup() as tg:
            for work in session.background():
                tg.create_task(work)
            for stream, reader in session.streams:
                tg.create_task(output(stream, reader))
        code = await session.wait()
    finally:
        feeder.cancel()
        await asyncio.gather(feeder, return_exceptions=True)
    await ws.send_text(msgspec.json.encode({"exit_code": code}).decode())
    await ws.close()


async def serve_agent_http(
    agent: Agent,
    host: str,
    port: int,
    ready: asyncio.Future[str],
    *,
    tls: ServerTLS | None = None,
) -> None:
    sock = http.bind(host, port)
    server = http.server(create_agent_app(agent, tls=tls is not None), tls=tls)
    addr = "{}:{}".format(*sock.getsockname()[:2])
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.01)
        ready.set_result(addr)
        await serving
    finally:
        server.should_exit = True
        if not serving.done():
            await serving
