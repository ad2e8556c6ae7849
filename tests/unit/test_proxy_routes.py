"""Ingress route matching, HTTP framing helpers, config validation, metrics text."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from podium.proxy.config import Route, UpstreamConfig
from podium.proxy.http import ChunkScanner, ProtocolError, error_response
from podium.proxy.metrics import NoServiceMetrics, ServiceMetrics, render
from podium.proxy.routes import Router, route_problems


@pytest.fixture
def router() -> Router:
    return Router(
        [
            Route("web"),
            Route("api", path_prefix="/api"),
            Route("api-v2", path_prefix="/api/v2/"),
            Route("admin", host="Admin.Example.com"),
            Route("admin-api", host="admin.example.com", path_prefix="/api"),
        ]
    )


@pytest.mark.parametrize(
    ("host", "target", "service"),
    [
        (b"example.com", b"/", "web"),
        (b"example.com", b"/index.html", "web"),
        (b"example.com", b"/api", "api"),
        (b"example.com", b"/api/users?x=1", "api"),
        (b"example.com", b"/api?x=1", "api"),
        (b"example.com", b"/apix", "web"),  # prefixes match whole segments
        (b"example.com", b"/api/v2/items", "api-v2"),
        (b"ADMIN.example.com:8080", b"/", "admin"),
        (b"admin.example.com", b"/api/x", "admin-api"),
        (b"example.com", b"http://admin.example.com/api/x", "admin-api"),
    ],
)
def test_router_matches_host_then_longest_prefix(
    router: Router, host: bytes, target: bytes, service: str
) -> None:
    assert router.match(host, target) == service


def test_router_without_catch_all_returns_none() -> None:
    r = Router([Route("api", host="api.local", path_prefix="/v1")])
    assert r.match(b"api.local", b"/v2") is None
    assert r.match(b"other", b"/v1") is None
    assert r.match(b"api.local:80", b"/v1/x") == "api"


def test_route_and_config_problems_name_the_field() -> None:
    problems = route_problems([Route(""), Route("x", path_prefix="api"), Route("y", host="a/b")])
    assert [p.path for p in problems] == [
        "routes[0].service",
        "routes[1].path_prefix",
        "routes[2].host",
    ]
    bad = UpstreamConfig(mode="udp", policy="random", retries=-1, retry_budget=2.0)  # type: ignore[arg-type]
    assert {p.path for p in bad.problems()} == {"mode", "policy", "retries", "retry_budget"}
    assert UpstreamConfig().problems() == []


def test_chunk_scanner_finds_the_end_across_reads() -> None:
    body = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nTrailer: x\r\n\r\nNEXT"
    assert ChunkScanner().feed(body, 0) == len(body) - 4
    for split in range(1, len(body) - 4):
        s = ChunkScanner()
        first = s.feed(body[:split], 0)
        if first >= 0:
            assert first == len(body) - 4
            continue
        assert s.feed(body[split:], 0) == len(body) - 4 - split
    with pytest.raises(ProtocolError):
        ChunkScanner().feed(b"zz\r\n", 0)


def test_error_response_is_framed() -> None:
    raw = error_response(503, "no healthy endpoint", close=True)
    head, body = raw.split(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable")
    assert b"content-length: %d" % len(body) in head and b"connection: close" in head


def test_metrics_text_is_prometheus_exposition() -> None:
    m = ServiceMetrics('we"b')
    m.observe(0.0003, False)
    m.observe(0.2, True)
    m.retries = 3
    text = render([m], {'we"b': 2})
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    svc = ("service", 'we"b')
    assert samples[("podium_proxy_requests_total", (svc,))] == 2
    assert samples[("podium_proxy_errors_total", (svc,))] == 1
    assert samples[("podium_proxy_retries_total", (svc,))] == 3
    assert samples[("podium_proxy_endpoints", (svc,))] == 2
    bucket = "podium_proxy_request_duration_seconds_bucket"
    assert samples[(bucket, (("le", "0.0005"), svc))] == 1
    assert samples[(bucket, (("le", "+Inf"), svc))] == 2
    assert samples[("podium_proxy_request_duration_seconds_count", (svc,))] == 2
    assert text.endswith("\n")


def test_metrics_off_counts_nothing() -> None:
    m = NoServiceMetrics("web")
    m.observe(0.2, True)
    assert m.requests == 0 and m.errors == 0 and sum(m.buckets) == 0
