"""Pure balancing: endpoint state, policies, circuit breaker, outlier ejection, retry budget.

No I/O here; every decision takes `now` (seconds, monotonic) so tests run in no wall time.
The hot path is `Balancer.pick` on endpoints whose `ok` flag is set (breaker closed, not
ejected): a few attribute reads per request.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from podium.proxy.config import Endpoint, UpstreamConfig, WakeConfig
from podium.proxy.metrics import NoServiceMetrics, ServiceMetrics

WAKE_AGAIN = 1.0  # seconds between two wake calls while requests are held


class Held(Protocol):
    """A downstream waiting for a sleeping service's first endpoint."""

    closed: bool
    held_at: float  # when it was queued (monotonic)

    def release(self, now: float) -> None: ...

    def expire(self, now: float) -> None: ...


CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class EndpointState:
    """One endpoint as the proxy sees it: load, breaker, ejection, idle pooled connections."""

    __slots__ = (
        "active",
        "breaker",
        "current_weight",
        "ejected_until",
        "ejections",
        "endpoint",
        "failures",
        "fivexx",
        "idle",
        "ok",
        "open_until",
        "probing",
        "removed",
    )

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.active = 0  # requests (http) or connections (tcp) in flight
        self.ok = True  # breaker closed and not ejected: the fast path
        self.breaker = CLOSED
        self.failures = 0  # consecutive transport failures
        self.open_until = 0.0
        self.probing = False
        self.fivexx = 0  # consecutive 5xx responses
        self.ejected_until = 0.0
        self.ejections = 0
        self.current_weight = 0  # smooth weighted round robin
        self.idle: list[Any] = []  # pooled upstream connections (http)
        self.removed = False

    @property
    def id(self) -> str:
        return self.endpoint.id

    def admit(self, now: float) -> bool:
        """May a request go here now? Turns an expired open breaker into one half-open probe."""
        if self.ejected_until:
            if now < self.ejected_until:
                return False
            self.ejected_until = 0.0
        if self.breaker == OPEN:
            if now < self.open_until:
                return False
            self.breaker = HALF_OPEN
            self.probing = False
        if self.breaker == HALF_OPEN:
            if self.probing:
                return False
            self.probing = True  # this request is the probe
            return True
        self.ok = True
        return True

    def snapshot(self, now: float) -> dict[str, Any]:
        e = self.endpoint
        return {
            "id": e.id,
            "address": f"{e.host}:{e.port}",
            "weight": e.weight,
            "active": self.active,
            "breaker": self.breaker,
            "consecutive_failures": self.failures,
            "ejected": bool(self.ejected_until and now < self.ejected_until),
            "ejections": self.ejections,
            "idle_connections": len(self.idle),
        }


class Service:
    """A named endpoint set, shared by every listener that reaches it."""

    def __init__(
        self,
        name: str,
        *,
        metrics: bool = True,
        on_wake: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self.states: list[EndpointState] = []
        self.metrics = ServiceMetrics(name) if metrics else NoServiceMetrics(name)
        self.wake: WakeConfig | None = None  # set: it may sleep, requests wait for it
        self.held: deque[Held] = deque()
        self.on_wake = on_wake
        self.woken = -1e18  # when on_wake was last called (monotonic)

    # -- sleeping services (autoscaled to 0) --------------------------------------

    def hold(self, d: Held, now: float) -> bool:
        """Queue a request that found no endpoint; False when the queue is full."""
        assert self.wake is not None
        if len(self.held) >= self.wake.max_held:
            self.metrics.hold_refused += 1
            return False
        self.held.append(d)
        self.metrics.held += 1
        self.call_wake(now)
        return True

    def call_wake(self, now: float) -> None:
        if self.on_wake is not None and now - self.woken >= WAKE_AGAIN:
            self.woken = now
            self.on_wake(self.name)

    def unhold(self, d: Held) -> None:
        try:
            self.held.remove(d)
        except ValueError:
            pass

    def release(self, now: float) -> None:
        """Endpoints arrived: every held request goes on, oldest first."""
        held, self.held = self.held, deque()
        for d in held:
            if not d.closed:
                d.release(now)

    def sweep_held(self, now: float) -> None:
        """Answer the requests held past the timeout; ask again to wake for the rest."""
        if not self.held or self.wake is None:
            return
        deadline = now - self.wake.timeout
        while self.held and self.held[0].held_at <= deadline:
            d = self.held.popleft()
            if not d.closed:
                self.metrics.hold_expired += 1
                d.expire(now)
        if self.held:
            self.call_wake(now)

    def set_endpoints(self, endpoints: Sequence[Endpoint]) -> list[EndpointState]:
        """Replace the set; an endpoint whose id stays keeps its state. Returns the removed."""
        old = {s.id: s for s in self.states}
        states: list[EndpointState] = []
        for e in endpoints:
            s = old.pop(e.id, None)
            if s is None or s.endpoint.host != e.host or s.endpoint.port != e.port:
                if s is not None:
                    s.removed = True
                    old[e.id + "\0moved"] = s
                s = EndpointState(e)
            elif s.endpoint != e:
                s.endpoint = e  # weight changed: keep breaker and pool
            states.append(s)
        for s in old.values():
            s.removed = True
        self.states = states
        return list(old.values())

    def ejected_count(self, now: float) -> int:
        return sum(1 for s in self.states if s.ejected_until and now < s.ejected_until)


class Balancer:
    """Picks an endpoint of one service by one listener's policy; records outcomes."""

    def __init__(self, service: Service, config: UpstreamConfig) -> None:
        self.service = service
        self.config = config
        self.cursor = -1
        self.policy = config.policy
        self.budget = RetryBudget(config.retry_budget)

    def pick(self, now: float, exclude: Sequence[EndpointState] = ()) -> EndpointState | None:
        states = self.service.states
        n = len(states)
        if n == 0:
            return None
        if self.policy == "round_robin":
            i = self.cursor
            for _ in range(n):
                i += 1
                if i >= n:
                    i = 0
                s = states[i]
                if (not exclude or s not in exclude) and (s.ok or s.admit(now)):
                    self.cursor = i
                    return s
            return self._fallback(states, exclude, now)
        if self.policy == "least_conn":
            return self._least_conn(states, n, now, exclude)
        return self._weighted(states, now, exclude)

    def _least_conn(
        self, states: list[EndpointState], n: int, now: float, exclude: Sequence[EndpointState]
    ) -> EndpointState | None:
        # start after the last pick so ties rotate instead of piling onto the first
        start = self.cursor + 1
        best: EndpointState | None = None
        best_i = -1
        for k in range(n):
            i = (start + k) % n
            s = states[i]
            if exclude and s in exclude:
                continue
            if not s.ok and not _admissible(s, now):
                continue
            if best is None or s.active < best.active:
                best, best_i = s, i
        if best is None:
            return self._fallback(states, exclude, now)
        if not best.ok:
            best.admit(now)
        self.cursor = best_i
        return best

    def _weighted(
        self, states: list[EndpointState], now: float, exclude: Sequence[EndpointState]
    ) -> EndpointState | None:
        # nginx's smooth weighted round robin: even spread, exact shares
        total = 0
        best: EndpointState | None = None
        for s in states:
            if exclude and s in exclude:
                continue
            if not s.ok and not _admissible(s, now):
                continue
            w = s.endpoint.weight
            s.current_weight += w
            total += w
            if best is None or s.current_weight > best.current_weight:
                best = s
        if best is None:
            return self._fallback(states, exclude, now)
        if not best.ok:
            best.admit(now)
        best.current_weight -= total
        return best

    def _fallback(
        self, states: list[EndpointState], exclude: Sequence[EndpointState], now: float
    ) -> EndpointState | None:
        # every admissible endpoint was already tried: a retry may go back to one of them
        if exclude:
            for s in states:
                if s.ok or s.admit(now):
                    return s
        return None

    # -- outcomes --------------------------------------------------------------

    def success(self, s: EndpointState) -> None:
        if s.failures:
            s.failures = 0
        if s.breaker != CLOSED:
            s.breaker = CLOSED
            s.probing = False
            s.ok = not s.ejected_until

    def failure(self, s: EndpointState, now: float) -> None:
        """A transport failure (connect refused or timed out, reset, response timeout)."""
        s.failures += 1
        if s.breaker == HALF_OPEN or (
            s.breaker == CLOSED and s.failures >= self.config.breaker_failures
        ):
            s.breaker = OPEN
            s.ok = False
            s.probing = False
            s.open_until = now + self.config.breaker_open_for
            self.service.metrics.breaker_opens += 1

    def response(self, s: EndpointState, status: int, now: float) -> None:
        """An HTTP response arrived: consecutive 5xx may eject the endpoint as an outlier."""
        self.success(s)
        if status < 500:
            if s.fivexx:
                s.fivexx = 0
            return
        s.fivexx += 1
        if s.fivexx < self.config.outlier_failures:
            return
        svc = self.service
        n = len(svc.states)
        ejected = svc.ejected_count(now)
        if ejected + 1 >= n or ejected + 1 > self.config.outlier_max_ejected * n:
            return  # never eject all, nor more than the allowed share
        s.fivexx = 0
        s.ejections += 1
        factor = min(2 ** (s.ejections - 1), 10)
        s.ejected_until = now + self.config.outlier_eject_for * factor
        s.ok = False
        svc.metrics.ejections += 1


def _admissible(s: EndpointState, now: float) -> bool:
    """`admit` without taking the half-open probe slot."""
    if s.ejected_until and now < s.ejected_until:
        return False
    if s.breaker == OPEN:
        return now >= s.open_until
    if s.breaker == HALF_OPEN:
        return not s.probing
    return True


class RetryBudget:
    """Retries may add at most `ratio` of the requests, plus `floor_per_sec` (so a quiet
    service can still retry); tokens are capped so a calm past cannot fund a storm.

    The hot path only counts (`requests += 1`); tokens are settled when a retry asks.
    """

    __slots__ = ("_cap", "_last", "_seen", "_tokens", "floor_per_sec", "ratio", "requests")

    def __init__(self, ratio: float, *, floor_per_sec: float = 2.0, cap: float = 10.0) -> None:
        self.ratio = ratio
        self.floor_per_sec = floor_per_sec
        self.requests = 0
        self._seen = 0
        self._cap = cap
        self._tokens = cap
        self._last = -1.0

    def on_request(self) -> None:
        self.requests += 1

    def try_spend(self, now: float) -> bool:
        earned = (self.requests - self._seen) * self.ratio
        self._seen = self.requests
        if self._last >= 0:
            earned += (now - self._last) * self.floor_per_sec
        self._last = now
        self._tokens = min(self._cap, self._tokens + earned)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
