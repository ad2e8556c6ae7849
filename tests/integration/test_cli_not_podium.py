"""What cannot work, said in one clear line: PODIUM_ADDR at a web server that is not podium
(not its HTML), or with a path (the web UI's); a job name that no job can have."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from integration.cluster import DevCluster
from support.cli import no_traceback, run_cli

pytestmark = pytest.mark.integration

PAGE = b"<!doctype html><html><body><h1>Welcome to some other server</h1></body></html>"


class _Html(http.server.BaseHTTPRequestHandler):
    def _page(self) -> None:
        # Any path under /v1/job/ is "missing" (404), everything else a page (200): both
        # kinds of answer a user meets when the address is wrong.
        code = 404 if self.path.startswith("/v1/job/") else 200
        self.send_response(code)
        self.send_header("content-type", "text/html; charset=utf-8")
        self.send_header("content-length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    do_GET = do_POST = do_DELETE = _page

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def html_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Html)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    "args",
    [("job", "status"), ("job", "status", "web"), ("node", "status"), ("alloc", "status", "abc")],
)
def test_a_server_that_is_not_podium_is_named_as_such(html_server: str, args: tuple[str]) -> None:
    result = run_cli(*args, env={"PODIUM_ADDR": html_server})
    no_traceback(result, " ".join(args))
    assert result.exit_code == 1
    assert "this is not a podium server (got text/html" in result.output, result.output
    assert html_server in result.output
    assert "<html" not in result.output and "Welcome" not in result.output


@pytest.mark.parametrize("path", ["/ui/", "/ui", "/v1"])
def test_an_address_with_a_path_says_to_drop_it(module_cluster: DevCluster, path: str) -> None:
    """`podium dev` prints the web UI's address (…/ui/); given as PODIUM_ADDR, every
    command said only "GET /ui/v1/jobs: Not Found"."""
    dev_addr = module_cluster.addr
    env = {"PODIUM_ADDR": dev_addr + path, **module_cluster.tls_env()}
    result = run_cli("job", "list", env=env)
    no_traceback(result, "job list")
    assert result.exit_code == 1
    assert f"the API is at {dev_addr}/v1/" in result.output, result.output
    assert "without a path" in result.output, result.output


@pytest.mark.parametrize(
    "args",
    [
        ("job", "status", "Web"),
        ("job", "stop", "my job"),
        ("logs", "Web"),
        ("job", "history", "Web"),
    ],
)
def test_a_job_name_that_cannot_be_says_so(module_cluster: DevCluster, args: tuple[str]) -> None:
    """`job status Web` said "GET /v1/job/Web: Not Found" (no route takes such a name),
    where `job status web` says "no job 'web' in namespace 'default'"."""
    result = run_cli(*args, env={"PODIUM_ADDR": module_cluster.addr, **module_cluster.tls_env()})
    no_traceback(result, " ".join(args))
    assert result.exit_code == 1
    assert f"no job {args[-1]!r}: job names are made of 1-63" in result.output, result.output
    assert "lowercase letters" in result.output, result.output
