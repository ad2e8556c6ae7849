"""The agent's own small HTTP API: task logs (tail and follow) and exec, for the CLI.

Logs stay on the node that produced them; the CLI asks the server which node runs
an alloc, then reads the logs here.
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
from starlette.routing import Route

from podium.drivers.base import ExecDriver
from podium.errors import DriverError, TaskNotFound, ValidationError
from podium.model.pattern import PatternError, compile_pattern
from podium.runtime import http
from podium.runtime.bodies import json_body
from podium.runtime.logfiles import follow, read_tail, tail_bytes
from podium.runtime.merge import Merge

if TYPE_CHECKING:
    from podium.agent.agent import Agent

log = logging.getLogger(__name__)


EXEC_BODY_LIMIT = 256 * 1024  # an exec request is a command line and a timeout
MAX_EXEC_TIMEOUT = 3600.0  # seconds


def _json(data: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(data), status_code=status, media_type="application/json")


def _error(e: ValidationError) -> Response:
    problems = [{"path": p.path, "message": p.message} for p in e.problems]
    return _json({"error": str(e), "problems": problems}, e.status_code)


def create_agent_app(agent: Agent) -> Starlette:
    def find_runner(req: Request) -> Any:
        """The one runner the path's alloc id (or prefix) names, or a 404 response."""
        alloc_id = req.path_params["id"]
        matches = [r for i, r in agent.runners.items() if i.startswith(alloc_id)]
        if len(matches) != 1:
            msg = "no allocation" if not matches else f"{len(matches)} allocations"
            return _json({"error": f"{msg} matching {alloc_id!r} on this node"}, 404)
        return matches[0]

    def runner_task(req: Request) -> tuple[Any, Any] | Response:
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

    async def exec_(req: Request) -> Response:
        try:
            body = await json_body(req, limit=EXEC_BODY_LIMIT)
        except ValidationError as e:
            return _error(e)
        found = runner_task(req)
        if isinstance(found, Response):
            return found
        _, task = found
        cmd = body.get("command") if isinstance(body, dict) else None
        if not isinstance(cmd, list) or not cmd or not all(isinstance(c, str) for c in cmd):
            return _json({"error": "command: expected a non-empty list of strings"}, 400)
        timeout = body.get("timeout", 30.0)
        # (type(), not isinstance: true is no number of seconds; NaN fails the comparison)
        if type(timeout) not in (int, float) or not 0 < timeout <= MAX_EXEC_TIMEOUT:
            return _json(
                {
                    "error": f"timeout: expected seconds, more than 0 and at most "
                    f"{MAX_EXEC_TIMEOUT:g}, got {str(timeout)[:40]}"
                },
                400,
            )
        if task.handle is None or not isinstance(task.driver, ExecDriver):
            return _json(
                {"error": f"task {task.name} is not running or its driver cannot exec"}, 409
            )
        try:
            code, out = await task.driver.exec(task.handle, cmd, timeout=float(timeout))
        except TaskNotFound as e:
            return _json({"error": str(e)}, 409)
        except DriverError as e:
            # The command could not run in the task, or did not finish in time: about
            # the request, not this agent.
            return _json({"error": str(e)}, 422)
        except OSError as e:
            return _json({"error": str(e)}, 500)
        return _json({"exit_code": code, "output": out.decode("utf-8", "replace")})

    async def health(req: Request) -> Response:
        return _json(
            {
                "node": agent.node.id if agent.node else "",
                "allocs": len(agent.runners),
                "syncs": agent.syncs,  # what the agent did with the server's word, so far
            }
        )

    async def metrics(req: Request) -> Response:
        # Prometheus text: tasks, usage, checks, logs, and the proxy's services.
        return Response(await agent.metrics.exposition(agent), media_type=METRICS_CONTENT_TYPE)

    async def usage(req: Request) -> Response:
        """This node's allocs' resource use (`max_age`, seconds, bounds how old it may be),
        and what its proxy counted per service (the autoscaler's requests and latency)."""
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
            Route("/v1/agent/alloc/{id}/exec", exec_, methods=["POST"]),
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


async def serve_agent_http(agent: Agent, host: str, port: int, ready: asyncio.Future[str]) -> None:
    sock = http.bind(host, port)
    server = http.server(create_agent_app(agent))
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
