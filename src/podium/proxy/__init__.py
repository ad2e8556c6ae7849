"""The proxy on every agent: upstream listeners, ingress, balancing, breaking, metrics.

It owns the data plane only; the agent tells it what to listen on and which
endpoints are healthy (`set_endpoints`), and it never calls back.

    client ─► listener (tcp: tcp.py relay  | http: http.py framing)
                 │ pick ◄── Balancer (balancer.py: policy, breaker, ejection)
                 ▼
              endpoint (pooled kept-alive connections in http mode)
    ingress: the http listener first matches a Route (routes.py) to a service.
    every exchange lands in ServiceMetrics (metrics.py) -> metrics_text().
    a sleeping service (WakeConfig, autoscaled to 0): a request that finds no endpoint
    is held in the service's bounded queue, the agent is asked to wake the group
    (`on_wake`), and the request goes on when endpoints arrive (or 503 + Retry-After).

`python -m podium.proxy` runs one listener as a standalone process (benchmarks).
"""

from podium.proxy.config import Endpoint, Route, UpstreamConfig, WakeConfig, service_key
from podium.proxy.core import Proxy

__all__ = ["Endpoint", "Proxy", "Route", "UpstreamConfig", "WakeConfig", "service_key"]
