"""Pure balancing: policies, breaker, outlier ejection, retry budget (no sockets, no clock)."""

from __future__ import annotations

from collections import Counter

from podium.proxy.balancer import CLOSED, HALF_OPEN, OPEN, Balancer, RetryBudget, Service
from podium.proxy.config import Endpoint, UpstreamConfig


def make_balancer(*weights: int, **config: object) -> Balancer:
    svc = Service("api")
    svc.set_endpoints([Endpoint(f"e{i}", "127.0.0.1", 9000 + i, w) for i, w in enumerate(weights)])
    return Balancer(svc, UpstreamConfig(mode="http", **config))  # type: ignore[arg-type]


def picks(b: Balancer, n: int, now: float = 0.0) -> list[str]:
    out = []
    for _ in range(n):
        s = b.pick(now)
        assert s is not None
        out.append(s.id)
    return out


def test_round_robin_cycles_through_every_endpoint() -> None:
    b = make_balancer(1, 1, 1)
    assert picks(b, 6) == ["e0", "e1", "e2", "e0", "e1", "e2"]


def test_weighted_gives_exact_shares_spread_evenly() -> None:
    b = make_balancer(5, 1, 1, policy="weighted")
    seq = picks(b, 70)
    assert Counter(seq) == {"e0": 50, "e1": 10, "e2": 10}
    # smooth: every window of 7 picks holds the exact shares (no long bursts)
    for i in range(0, 70, 7):
        assert Counter(seq[i : i + 7]) == {"e0": 5, "e1": 1, "e2": 1}
    assert seq[:7] == ["e0", "e0", "e1", "e0", "e2", "e0", "e0"]


def test_least_conn_prefers_the_least_loaded_and_rotates_ties() -> None:
    b = make_balancer(1, 1, 1, policy="least_conn")
    states = b.service.states
    states[0].active, states[1].active, states[2].active = 3, 1, 2
    assert picks(b, 1) == ["e1"]
    for s in states:
        s.active = 0
    assert sorted(picks(b, 3)) == ["e0", "e1", "e2"]


def test_pick_skips_excluded_then_falls_back_when_all_tried() -> None:
    b = make_balancer(1, 1)
    e0, e1 = b.service.states
    assert b.pick(0.0, [e0]) is e1
    assert b.pick(0.0, [e0, e1]) in (e0, e1)
    assert make_balancer().pick(0.0) is None


def test_breaker_opens_after_consecutive_failures_and_half_open_probe_closes_it() -> None:
    b = make_balancer(1, 1, breaker_failures=3, breaker_open_for=5.0)
    e0 = b.service.states[0]
    for _ in range(2):
        b.failure(e0, 10.0)
    b.success(e0)  # a success resets the count: failures must be consecutive
    for _ in range(3):
        b.failure(e0, 10.0)
    assert e0.breaker == OPEN
    assert b.service.metrics.breaker_opens == 1
    assert set(picks(b, 4, now=11.0)) == {"e1"}
    # after open_for, exactly one request probes it
    got = picks(b, 4, now=15.5)
    assert got.count("e0") == 1
    assert e0.breaker == HALF_OPEN
    b.success(e0)
    assert e0.breaker == CLOSED
    assert picks(b, 4, now=15.6).count("e0") == 2


def test_failed_probe_reopens_the_breaker() -> None:
    b = make_balancer(1, 1, breaker_failures=1, breaker_open_for=1.0)
    e0, _ = b.service.states
    b.failure(e0, 0.0)
    assert e0.breaker == OPEN
    assert "e0" in picks(b, 2, now=1.5)
    b.failure(e0, 1.5)
    assert e0.breaker == OPEN and e0.open_until == 2.5
    assert "e0" not in picks(b, 4, now=2.0)


def test_all_breakers_open_means_no_endpoint() -> None:
    b = make_balancer(1, breaker_failures=1)
    b.failure(b.service.states[0], 0.0)
    assert b.pick(0.5) is None


def test_outlier_ejection_caps_the_share_and_never_ejects_all() -> None:
    b = make_balancer(1, 1, 1, 1, outlier_failures=2, outlier_max_ejected=0.5)
    states = b.service.states
    for s in states:
        for _ in range(2):
            b.response(s, 503, 0.0)
    ejected = [s.id for s in states if not s.ok]
    assert len(ejected) == 2  # half of 4, never more
    assert b.service.metrics.ejections == 2
    assert set(picks(b, 4, now=1.0)) == {s.id for s in states if s.ok}
    # after the ejection time they come back
    assert len(set(picks(b, 8, now=100.0))) == 4


def test_outlier_ejection_never_ejects_the_last_endpoint() -> None:
    b = make_balancer(1, outlier_failures=1, outlier_max_ejected=0.9)
    for _ in range(5):
        b.response(b.service.states[0], 500, 0.0)
    assert b.service.states[0].ok
    assert b.service.metrics.ejections == 0


def test_a_good_response_resets_the_outlier_count() -> None:
    b = make_balancer(1, 1, outlier_failures=2)
    e0 = b.service.states[0]
    b.response(e0, 503, 0.0)
    b.response(e0, 200, 0.0)
    b.response(e0, 503, 0.0)
    assert e0.ok


def test_set_endpoints_keeps_state_by_id_and_reports_removed() -> None:
    b = make_balancer(1, 1, breaker_failures=1)
    svc = b.service
    e0, e1 = svc.states
    b.failure(e0, 0.0)
    removed = svc.set_endpoints(
        [Endpoint("e0", "127.0.0.1", 9000, 3), Endpoint("e2", "127.0.0.1", 9002)]
    )
    assert removed == [e1] and e1.removed
    assert svc.states[0] is e0 and e0.breaker == OPEN and e0.endpoint.weight == 3
    # same id at a new address is a new endpoint
    removed = svc.set_endpoints([Endpoint("e0", "127.0.0.1", 9100)])
    assert e0 in removed and svc.states[0] is not e0


def test_retry_budget_caps_retries_to_a_share_of_requests() -> None:
    budget = RetryBudget(0.2, floor_per_sec=0.0, cap=10.0)
    spent = 0
    for _ in range(1000):
        budget.on_request()
        if budget.try_spend(0.0):
            spent += 1
    assert spent <= 0.2 * 1000 + 10
    assert spent >= 0.2 * 1000 - 1


def test_retry_budget_floor_refills_with_time() -> None:
    budget = RetryBudget(0.0, floor_per_sec=2.0, cap=2.0)
    assert budget.try_spend(0.0) and budget.try_spend(0.0)
    assert not budget.try_spend(0.0)
    assert budget.try_spend(0.6)  # 1.2 tokens refilled
    assert not budget.try_spend(0.6)
