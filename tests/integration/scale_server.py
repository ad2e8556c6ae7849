"""An HTTP service for the autoscaling tests and benchmark, run as a podium task.

    python3 scale_server.py      listens on $PODIUM_IP:$PODIUM_PORT_HTTP

GET /health             200 "ok"
GET /burn?ms=N          burns N ms of CPU (under the copy's CFS quota), then 200: CPU in
                        proportion to requests
GET /wait?ms=N          holds the request N ms without CPU; at most $SLOTS (default 4) at
                        once, more wait their turn: a copy's capacity is SLOTS / N per ms
GET /                   200 "ALLOC_ID"
"""

from __future__ import annotations

import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

ALLOC = os.environ.get("PODIUM_ALLOC_ID", "")
SLOTS = threading.BoundedSemaphore(int(os.environ.get("SLOTS", "4")))


def burn(ms: float) -> None:
    """Use `ms` of CPU time (not wall time: a throttled copy takes longer)."""
    end = time.thread_time() + ms / 1000
    x = 0
    while time.thread_time() < end:
        for i in range(2000):
            x += i * i


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        ms = float(parse_qs(url.query).get("ms", ["0"])[0])
        if url.path == "/burn":
            burn(ms)
        elif url.path == "/wait":
            with SLOTS:
                time.sleep(ms / 1000)
        body = b"ok\n" if url.path == "/health" else f"{ALLOC}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the listen backlog (socketserver's default is 5): a burst of
    # held requests released at once must not find SYNs dropped


if __name__ == "__main__":
    address = (os.environ.get("PODIUM_IP", "127.0.0.1"), int(os.environ["PODIUM_PORT_HTTP"]))
    Server(address, Handler).serve_forever()
