"""Health checks run by the agent: http (2xx/3xx passes; redirects are not followed),
tcp (connects), command (exit 0; run inside the task, through its driver's exec, so in
the task's cgroup and container, never the agent's).

    CheckRunner.run(): probe -> latest result (CheckStatus) + failures in a row -> on_result
    reset(started, grace): a task (re)started; older results say nothing about it, and
                           failures within `grace` of the start are not counted

A check never probes the node's own services (the agent and server API, the proxy and
ingress listeners), and an http or tcp check that passes counts only once the port is
found to be the task's (where the driver can tell: the process driver's tasks listen on
the host themselves): a task that failed to bind a port some other process holds must
not look healthy because that process answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Mapping

import httpx

from podium.errors import DriverError
from podium.model.spec import check_path_problem
from podium.model.types import Check, CheckStatus

# Runs a command inside the task: (command, timeout) -> (exit code, output).
TaskExec = Callable[[list[str], float], Awaitable[tuple[int, bytes]]]
# Whether the alloc's tasks listen on a port: True, False (another process does), None
# (cannot tell, e.g. a container's port published through the engine).
PortOwner = Callable[[int], Awaitable[bool | None]]
OUTPUT_LIMIT = 512  # bytes of a command's output, characters of an HTTP body, kept


def http_client() -> httpx.AsyncClient:
    """One per check: a fresh connection for every probe (no keep-alive: that a new
    connection is accepted is part of the health), no redirects, no proxy from the
    agent's environment. Plain http only, so no CA bundle is loaded."""
    return httpx.AsyncClient(
        follow_redirects=False,
        trust_env=False,
        verify=False,
        limits=httpx.Limits(max_keepalive_connections=0),
        headers={"User-Agent": "podium-health"},
    )


async def run_check(
    check: Check,
    *,
    address: str,
    port: int,
    client: httpx.AsyncClient | None = None,
    run_in_task: TaskExec | None = None,
    own_ports: Mapping[int, str] | None = None,
    timeout: float | None = None,
) -> tuple[str, str]:
    """One probe: (status, output)."""
    timeout = timeout or check.timeout
    if check.type != "command":
        owner = (own_ports or {}).get(port)
        if owner:
            return "critical", (
                f"port {port} is {owner} on this node: a check probes the task, never podium"
            )
    try:
        async with asyncio.timeout(timeout):
            if check.type == "tcp":
                _, writer = await asyncio.open_connection(address, port)
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
                return "passing", f"connected to {address}:{port}"
            if check.type == "http":
                if client is None:
                    async with http_client() as own:
                        return await _http(own, check, address, port, timeout)
                return await _http(client, check, address, port, timeout)
            return await _command(check, run_in_task, timeout)
    except (TimeoutError, httpx.TimeoutException):
        return "critical", f"timed out after {timeout:g}s"
    except (httpx.HTTPError, OSError) as e:
        return "critical", _describe(e)


def _describe(e: BaseException) -> str:
    """The root cause, e.g. "ConnectionRefusedError: Connection refused" (httpx wraps it)."""
    x: BaseException | None = e
    for _ in range(8):
        if x is None:
            break
        if isinstance(x, OSError) and x.errno:
            return f"{type(x).__name__}: {os.strerror(x.errno)}"
        x = x.__cause__ or x.__context__
    return f"{type(e).__name__}: {e}"


async def _http(
    client: httpx.AsyncClient, check: Check, address: str, port: int, timeout: float
) -> tuple[str, str]:
    problem = check_path_problem(check.path)
    if problem:  # a spec stored before the rule: refuse rather than send it
        return "critical", f"path refused: expected {problem}"
    host = f"[{address}]" if ":" in address else address
    url = f"http://{host}:{port}{check.path}"
    async with client.stream(check.method, url, timeout=timeout) as resp:
        body = bytearray()
        async for chunk in resp.aiter_bytes():
            body += chunk
            if len(body) >= OUTPUT_LIMIT:
                break
    code = resp.status_code
    if 200 <= code < 400:
        return "passing", f"HTTP {code}"
    text = " ".join(body[:OUTPUT_LIMIT].decode("utf-8", "replace").split())
    return "warning" if code == 429 else "critical", f"HTTP {code}" + (f": {text}" if text else "")


async def _command(check: Check, run_in_task: TaskExec | None, timeout: float) -> tuple[str, str]:
    if run_in_task is None:
        return "critical", "the task's driver cannot run commands: use an http or tcp check"
    try:
        code, out = await run_in_task(list(check.command), timeout)
    except DriverError as e:
        return "critical", str(e)
    status = "passing" if code == 0 else "warning" if code == 1 else "critical"
    return status, out.decode("utf-8", "replace")[-OUTPUT_LIMIT:]


class CheckRunner:
    def __init__(
        self,
        check: Check,
        *,
        address: str,
        port: int,
        on_result: Callable[[CheckRunner, bool], None],
        run_in_task: TaskExec | None = None,
        own_ports: Callable[[], Mapping[int, str]] = dict,
        owner: PortOwner | None = None,
        observe: Callable[[str, float], None] | None = None,
    ) -> None:
        self.check = check
        self.observe = observe  # (status, seconds) of every probe, for metrics
        self.address, self.port = address, port
        self.run_in_task = run_in_task
        self.own_ports = own_ports
        self.owner = owner
        self._owned = False  # the port was found to be the task's since its latest start
        self.status = CheckStatus(name=check.name)
        self.failures = 0  # critical results in a row, counted from `count_from`
        self.count_from = 0.0
        self.on_result = on_result  # (runner, status flipped)
        self._epoch = 0.0  # results of probes begun before this are dropped

    def reset(self, started: float, grace: float) -> None:
        """A task (re)started at `started`: what was seen before says nothing about it."""
        self._epoch = started
        self.count_from = started + grace
        self.status = CheckStatus(name=self.check.name)
        self.failures = 0
        self._owned = False

    async def run(self) -> None:
        async with http_client() as client:
            while True:
                began, t0 = time.time(), time.perf_counter()
                status, output = await run_check(
                    self.check,
                    address=self.address,
                    port=self.port,
                    client=client,
                    run_in_task=self.run_in_task,
                    own_ports=self.own_ports(),
                )
                if status == "passing" and self.check.type != "command":
                    status, output = await self._whose(status, output)
                if self.observe is not None:
                    self.observe(status, time.perf_counter() - t0)
                if began >= self._epoch:
                    self._record(began, status, output)
                await asyncio.sleep(self.check.interval)

    async def _whose(self, status: str, output: str) -> tuple[str, str]:
        """A passing probe counts once the port is the task's (asked once per task start)."""
        if self._owned or self.owner is None:
            return status, output
        owned = await self.owner(self.port)
        if owned is False:
            return "critical", (
                f"port {self.port} answers, but no process of this alloc listens on it: "
                "another process holds the port"
            )
        self._owned = owned is True
        return status, output

    def _record(self, began: float, status: str, output: str) -> None:
        flipped = status != self.status.status
        if status == "critical" and began >= self.count_from:
            self.failures += 1
        elif status == "passing":
            self.failures = 0
        self.status = CheckStatus(
            name=self.check.name,
            status=status,  # type: ignore[arg-type]
            output=output,
            checked_at=time.time(),
        )
        self.on_result(self, flipped)
