"""A tiny HTTP service for service-discovery tests, run as a podium task.

    python3 svc_server.py NAME      listens on 127.0.0.1:$PODIUM_PORT_HTTP

GET /health answers 200, or 500 while the file $PODIUM_ALLOC_DIR/sick exists (to make a
check fail on purpose); any other GET answers "NAME ALLOC_ID PATH" with 200.
"""

from __future__ import annotations

import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME = sys.argv[1] if len(sys.argv) > 1 else "svc"
ALLOC = os.environ.get("PODIUM_ALLOC_ID", "")
SICK = os.path.join(os.environ.get("PODIUM_ALLOC_DIR", "."), "sick")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real service would

    def do_GET(self) -> None:
        if self.path == "/health":
            code, body = (500, b"sick\n") if os.path.exists(SICK) else (200, b"ok\n")
        else:
            code, body = 200, f"{NAME} {ALLOC} {self.path}\n".encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    address = (os.environ.get("PODIUM_IP", "127.0.0.1"), int(os.environ["PODIUM_PORT_HTTP"]))
    server = ThreadingHTTPServer(address, Handler)
    server.daemon_threads = True
    server.serve_forever()
