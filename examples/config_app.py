"""The web app of examples/config.yaml: it serves what its config file says.

It reads app.conf (rendered from the Config web/settings) and secrets/hmac.key (rendered
from the Secret web/hmac) at start, and again on SIGHUP. GET / answers the greeting, the
worker count, and an HMAC of a fixed string under the key, which proves it read the secret
without showing it; GET /health fails (503) when the config is not usable.
"""

import hashlib
import hmac
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

state = {}


def load(*_):
    conf = {}
    with open("app.conf", encoding="utf-8") as f:
        for line in f:
            key, sep, value = line.strip().partition("=")
            if sep:
                conf[key.strip()] = value.strip()
    with open(os.path.join("secrets", "hmac.key"), "rb") as f:
        key = f.read()
    state["conf"] = conf
    state["proof"] = hmac.new(key, b"podium", hashlib.sha256).hexdigest()[:16]


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        conf = state["conf"]
        if self.path == "/health":
            workers = conf.get("workers", "")
            ok = workers.isdigit() and int(workers) > 0
            body = "ok" if ok else "bad config: workers must be a positive integer"
            self.reply(200 if ok else 503, body)
            return
        self.reply(
            200,
            f"greeting={conf.get('greeting', '')} workers={conf.get('workers', '')} "
            f"hmac={state['proof']} pid={os.getpid()}",
        )

    def reply(self, code, body):
        data = (body + "\n").encode()
        self.send_response(code)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


load()
signal.signal(signal.SIGHUP, load)
ThreadingHTTPServer.daemon_threads = True
server = ThreadingHTTPServer((os.environ["PODIUM_IP"], int(os.environ["PODIUM_PORT_HTTP"])), Handler)
print("serving on", server.server_address, flush=True)
sys.exit(server.serve_forever())
