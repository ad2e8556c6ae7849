"""The CLI's side of `alloc exec`: a WebSocket to the server, this terminal at the other end.

stdin (a thread) ──binary frames──► server ──► agent ──► the command's stdin / pty
stdout/stderr    ◄── 0x01/0x02 + bytes ──       {"exit_code": N} last
-t: the local terminal goes raw; SIGWINCH sends {"resize": [rows, cols]}
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import threading
from typing import Any
from urllib.parse import urlencode

import httpx
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from podium.api.client import TOKEN_HEADER, Client, _check
from podium.errors import PodiumError, Unavailable
from podium.tls import pki


def _url(c: Client, alloc_id: str, command: list[str], *, task: str | None, tty: bool) -> str:
    query: list[tuple[str, str]] = [("cmd", x) for x in command]
    if task:
        query.append(("task", task))
    if tty:
        query.append(("tty", "1"))
    base = c.address.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    return f"{base}/v1/allocation/{alloc_id}/exec?{urlencode(query)}"


def _open(c: Client, url: str) -> ClientConnection:
    kw: dict[str, Any] = {"max_size": 4 * 1024 * 1024, "open_timeout": 15}
    if c.config.token:
        kw["additional_headers"] = {TOKEN_HEADER: c.config.token}
    if url.startswith("wss://"):
        kw |= {"ssl": c.ssl, "server_hostname": pki.SERVER_NAME}
    try:
        conn: ClientConnection = connect(url, **kw)
        return conn
    except InvalidStatus as e:
        r = e.response
        resp = httpx.Response(
            r.status_code,
            content=bytes(r.body or b""),
            headers={"content-type": "application/json"},
        )
        resp.read()
        _check(resp)
        raise PodiumError(f"exec refused: {r.status_code}") from None
    except OSError as e:
        raise Unavailable(f"no podium server answers at {c.address} ({e})") from None


def _terminal_size() -> tuple[int, int]:
    size = shutil.get_terminal_size()
    return size.lines, size.columns


def run_exec(
    c: Client, alloc_id: str, command: list[str], *, task: str | None, tty: bool, stdin: bool
) -> int:
    """Run it; the command's exit code (or 1 with the error printed)."""
    ws = _open(c, _url(c, alloc_id, command, task=task, tty=tty))
    fd = sys.stdin.fileno() if stdin else -1
    restore: Any = None
    if tty and fd >= 0 and os.isatty(fd):
        import termios
        import tty as ttymod

        saved = termios.tcgetattr(fd)
        ttymod.setraw(fd, termios.TCSANOW)  # what was typed ahead is kept, not flushed

        def restore() -> None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)

    if tty:
        with contextlib.suppress(ConnectionClosed):
            ws.send(json.dumps({"resize": list(_terminal_size())}))
        if threading.current_thread() is threading.main_thread():
            signal.signal(
                signal.SIGWINCH,
                lambda *_: ws.send(json.dumps({"resize": list(_terminal_size())})),
            )
    if stdin:
        threading.Thread(target=_pump_stdin, args=(ws, fd), daemon=True).start()
    else:
        with contextlib.suppress(ConnectionClosed):
            ws.send(json.dumps({"eof": True}))
    out, err = sys.stdout.buffer, sys.stderr.buffer
    code = 1
    try:
        for msg in ws:
            if isinstance(msg, bytes):
                (err if msg[:1] == b"\x02" else out).write(msg[1:])
                (err if msg[:1] == b"\x02" else out).flush()
                continue
            data = json.loads(msg)
            if "exit_code" in data:
                code = int(data["exit_code"])
            elif "error" in data:
                if restore:
                    restore()
                    restore = None
                raise PodiumError(str(data["error"]))
    except ConnectionClosed:
        pass
    finally:
        if restore:
            restore()
        ws.close()
    return code


def _pump_stdin(ws: ClientConnection, fd: int) -> None:
    try:
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                ws.send(json.dumps({"eof": True}))
                return
            ws.send(chunk)
    except (OSError, ConnectionClosed):
        return
