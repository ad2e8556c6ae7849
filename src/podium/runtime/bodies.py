"""Request bodies as every podium HTTP API reads them (the server's and the agent's):
within a size limit while they are read, and JSON within a nesting limit.

    body = await read_body(req, limit=MAX_BODY)   # TooLarge (413) past the limit
    data = await json_body(req)                   # ValidationError (400) naming what is wrong
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request

from podium.errors import Problem, TooLarge, ValidationError
from podium.model import spec as jobspec

MAX_BODY = jobspec.MAX_JOB_BYTES  # what the CLI checks a job file against, too
# Deeper than any document the API takes (a job may nest 64 levels inside its wrapper),
# far below the interpreter's recursion limit, which the JSON decoder would meet first.
MAX_JSON_DEPTH = 100


async def read_body(req: Request, *, limit: int = MAX_BODY) -> bytes:
    """The request body, up to `limit` bytes: a larger one is refused (413) as soon as its
    Content-Length says so or its bytes pass the limit, never read whole first."""
    cached: bytes | None = getattr(req, "_body", None)
    if cached is not None:
        return cached
    declared = req.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit() or len(declared) > 19:
            raise ValidationError([Problem("", f"bad Content-Length {declared[:40]!r}")])
        if int(declared) > limit:
            raise TooLarge([Problem("", f"request body is larger than {limit} bytes")])
    chunks: list[bytes] = []
    size = 0
    async for chunk in req.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge([Problem("", f"request body is larger than {limit} bytes")])
        chunks.append(chunk)
    body = b"".join(chunks)
    req._body = body  # where Starlette keeps a body it read: later reads get this one
    return body


async def json_body(req: Request, *, limit: int = MAX_BODY) -> Any:
    """The request body decoded as JSON, nested at most MAX_JSON_DEPTH levels."""
    body = await read_body(req, limit=limit)
    if not body.strip():
        raise ValidationError([Problem("", "expected a JSON body")])
    too_deep = ValidationError(
        [Problem("", f"invalid JSON: nested more than {MAX_JSON_DEPTH} levels deep")]
    )
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError as e:
        raise ValidationError([Problem("", f"invalid JSON: {e}")]) from None
    except RecursionError:  # deeper than the decoder goes (about the recursion limit)
        raise too_deep from None
    # Only a body with more containers than the limit can nest past it: most are small.
    if body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH and _deeper_than(data, MAX_JSON_DEPTH):
        raise too_deep
    return data


def _deeper_than(data: Any, limit: int) -> bool:
    """Whether decoded JSON nests containers more than `limit` levels (no recursion)."""
    if type(data) is not dict and type(data) is not list:
        return False
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        children = value.values() if type(value) is dict else value
        for child in children:
            if type(child) is dict or type(child) is list:
                stack.append((child, depth + 1))
    return False
