"""A service with a version, run as a podium task in the deployment tests.

    python3 versioned_server.py    listens on 127.0.0.1:$PODIUM_PORT_HTTP

GET /health answers 200, or 500 when $HEALTHY is "0" (a version whose check fails), or
500 with the text of the file $HEALTH_FILE names, read at each request (a check that fails
saying something new); any other GET answers "$VERSION" with 200.
"""

from __future__ import annotations

import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = os.environ.get("VERSION", "?").encode()
HEALTHY = os.environ.get("HEALTHY", "1") == "1"
HEALTH_FILE = os.environ.get("HEALTH_FILE", "")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/health" and HEALTH_FILE:
            with open(HEALTH_FILE, "rb") as f:
                code, body = 500, f.read()
        elif self.path == "/health":
            code, body = (200, b"ok") if HEALTHY else (500, b"broken")
        else:
            code, body = 200, VERSION
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    port = int(os.environ["PODIUM_PORT_HTTP"])
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
