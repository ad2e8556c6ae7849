"""Health checks run by the agent: http (2xx/3xx passes), tcp (connects), command (exit 0).

Each check is a loop that records its latest result in a CheckStatus and calls
`on_change` when the status flips, so the alloc's health is reported promptly.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from podium.model.types import Check, CheckStatus


async def run_check(
    check: Check,
    *,
    address: str,
    port: int,
    env: dict[str, str],
    cwd: str,
    timeout: float | None = None,
) -> tuple[str, str]:
    """One probe: (status, output)."""
    timeout = timeout or check.timeout
    try:
        async with asyncio.timeout(timeout):
            if check.type == "tcp":
                _, writer = await asyncio.open_connection(address, port)
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
                return "passing", f"connected to {address}:{port}"
            if check.type == "http":
                return await _http(check, address, port)
            return await _command(check, env, cwd)
    except TimeoutError:
        return "critical", f"timed out after {timeout:g}s"
    except OSError as e:
        return "critical", f"{type(e).__name__}: {e.strerror or e}"


async def _http(check: Check, address: str, port: int) -> tuple[str, str]:
    # A raw HTTP/1.0 request: no client library state to leak between probes.
    reader, writer = await asyncio.open_connection(address, port)
    try:
        req = (
            f"{check.method} {check.path} HTTP/1.0\r\nHost: {address}:{port}\r\n"
            "User-Agent: podium-health\r\n\r\n"
        )
        writer.write(req.encode())
        await writer.drain()
        line = await reader.readline()
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    parts = line.decode("latin-1").split()
    if len(parts) < 2 or not parts[1].isdigit():
        return "critical", f"not an HTTP response: {line[:80]!r}"
    code = int(parts[1])
    status = "passing" if 200 <= code < 400 else "warning" if code == 429 else "critical"
    return status, f"HTTP {code}"


async def _command(check: Check, env: dict[str, str], cwd: str) -> tuple[str, str]:
    proc = await asyncio.create_subprocess_exec(
        *check.command,
        env=env,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = await proc.communicate()
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    code = proc.returncode
    status = "passing" if code == 0 else "warning" if code == 1 else "critical"
    return status, out.decode("utf-8", "replace")[-512:]


class CheckRunner:
    def __init__(
        self,
        check: Check,
        *,
        address: str,
        port: int,
        env: dict[str, str],
        cwd: str,
        on_change: Callable[[], None],
        observe: Callable[[str, float], None] | None = None,
    ) -> None:
        self.check = check
        self.observe = observe  # (status, seconds) of every probe, for metrics
        self.address, self.port, self.env, self.cwd = address, port, env, cwd
        self.status = CheckStatus(name=check.name)
        self.on_change = on_change

    async def run(self) -> None:
        while True:
            t0 = time.perf_counter()
            status, output = await run_check(
                self.check, address=self.address, port=self.port, env=self.env, cwd=self.cwd
            )
            if self.observe is not None:
                self.observe(status, time.perf_counter() - t0)
            flipped = status != self.status.status
            self.status = CheckStatus(
                name=self.check.name,
                status=status,  # type: ignore[arg-type]
                output=output,
                checked_at=time.time(),
            )
            if flipped:
                self.on_change()
            await asyncio.sleep(self.check.interval)
