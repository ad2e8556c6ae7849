"""Templates parsed and rendered in a child process, so no template can hold its caller.

    TemplateWorker.render(name, text, inputs) ──JSON line──► python -m podium.templates.worker
                      ◄── text | error (name, line, reason) ──┘   (memory-limited, niced)
    past the deadline: the child is killed (and started again on the next call), and the
    template fails with "did not finish within Ns"

The server parses (job submit) and renders (`job plan`) through one of these, the agent
renders through its own: a template's loop or a huge power never runs on an event loop.
Values cross only the pipe (never argv, never a file); the child writes no logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from typing import Any

import msgspec

from podium.templates import sandbox

TIMEOUT = 5.0  # seconds one template may take to parse or render
MEMORY_LIMIT = 1024 * 1024 * 1024  # bytes of address space for the child
_LINE_LIMIT = 32 * 1024 * 1024  # the longest answer line (a 1 MiB file, escaped)


class _Request(msgspec.Struct):
    op: str  # parse | render
    name: str
    text: str
    inputs: dict[str, Any] = msgspec.field(default_factory=dict)


class _Answer(msgspec.Struct):
    text: str = ""
    line: int = 0
    error: str = ""  # "" when it worked
    reads: list[str] = msgspec.field(default_factory=list)
    services: list[str] = msgspec.field(default_factory=list)
    problems: list[tuple[int, str]] = msgspec.field(default_factory=list)


class TemplateWorker:
    """A child process that parses and renders one template at a time, each by a deadline."""

    def __init__(self, *, timeout: float = TIMEOUT) -> None:
        self.timeout = timeout
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    async def parse(self, name: str, text: str) -> sandbox.Parsed:
        ans = await self._call(_Request("parse", name, text))
        if ans.error:
            return sandbox.Parsed(problems=[sandbox.TemplateError(name, ans.line, ans.error)])
        return sandbox.Parsed(
            reads=ans.reads,
            services=ans.services,
            problems=[sandbox.TemplateError(name, line, why) for line, why in ans.problems],
        )

    async def render(self, name: str, text: str, inputs: sandbox.Inputs) -> str:
        """The rendered text; TemplateError when it fails or takes too long."""
        ans = await self._call(_Request("render", name, text, msgspec.to_builtins(inputs)))
        if ans.error:
            raise sandbox.TemplateError(name, ans.line, ans.error)
        return ans.text

    async def _call(self, req: _Request) -> _Answer:
        async with self._lock:
            proc = await self._ensure()
            assert proc.stdin is not None and proc.stdout is not None
            try:
                async with asyncio.timeout(self.timeout):
                    proc.stdin.write(msgspec.json.encode(req) + b"\n")
                    await proc.stdin.drain()
                    line = await proc.stdout.readline()
            except (TimeoutError, OSError, ValueError, asyncio.LimitOverrunError) as e:
                await self._kill()
                why = (
                    f"did not finish within {self.timeout:g}s"
                    if isinstance(e, TimeoutError)
                    else "the template worker failed"
                )
                return _Answer(error=why)
            if not line:
                await self._kill()
                return _Answer(error="the template worker stopped (out of memory?)")
            try:
                return msgspec.json.decode(line, type=_Answer)
            except msgspec.DecodeError:
                await self._kill()
                return _Answer(error="the template worker answered nonsense")

    async def _ensure(self) -> asyncio.subprocess.Process:
        if self._proc is not None and self._proc.returncode is None:
            return self._proc
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "podium.templates.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            limit=_LINE_LIMIT,
        )
        return self._proc

    async def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await proc.wait()

    async def close(self) -> None:
        async with self._lock:
            proc, self._proc = self._proc, None
            if proc is None or proc.returncode is not None:
                return
            assert proc.stdin is not None
            proc.stdin.close()  # the child ends at end of input
            try:
                async with asyncio.timeout(2.0):
                    await proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()


# --------------------------------------------------------------------- the child


def _answer(req: _Request) -> _Answer:
    if req.op == "parse":
        parsed = sandbox.parse(req.name, req.text)
        return _Answer(
            reads=parsed.reads,
            services=parsed.services,
            problems=[(p.line, p.reason) for p in parsed.problems],
        )
    inputs = msgspec.convert(req.inputs, sandbox.Inputs)
    try:
        return _Answer(text=sandbox.render(req.name, req.text, inputs))
    except sandbox.TemplateError as e:
        return _Answer(error=e.reason, line=e.line)


def main() -> None:
    import resource

    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    with contextlib.suppress(OSError):
        os.nice(5)
    decode = msgspec.json.Decoder(_Request).decode
    encode = msgspec.json.Encoder().encode
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        try:
            ans = _answer(decode(line))
        except MemoryError:
            ans = _Answer(error="needs too much memory")
        except Exception as e:  # never a traceback (it could carry a value)
            ans = _Answer(error=f"cannot render: {type(e).__name__}")
        out.write(encode(ans) + b"\n")
        out.flush()


if __name__ == "__main__":
    main()
