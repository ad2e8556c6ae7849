"""The server side of autoscaling on the in-memory store: counts kept across versions,
waking a sleeping group, rollouts told from scalings, the controller's looks (events with
numbers, the quota hook, bounded work per look), and the figures' arithmetic."""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest

from podium.errors import NotFound, ValidationError
from podium.model import spec
from podium.model.types import Allocation, Deployment, Job, Node, ServiceTraffic, TaskState
from podium.proxy.metrics import BUCKETS
from podium.runtime.clock import FakeClock
from podium.server import jobs
from podium.server import scaling as records
from podium.server.catalog import Catalog
from podium.server.controllers.autoscaler import Autoscaler, AutoscalerSettings
from podium.server.scaling_figures import TrafficMeter, parse_query_answer, quantile
from podium.server.state import ClusterState, encode
from podium.server.usage import NodeUsage, UsageGatherer
from podium.store import keys
from support.builders import make_node
from support.state import memory_state

T0 = 1_700_000_000.0


def scaled_doc(name: str = "web", *, count: int | None = 2, **scaling: Any) -> dict[str, Any]:
    group: dict[str, Any] = {
        "name": "g",
        "network": {"ports": {"http": {}}},
        "services": [{"name": name, "port": "http"}],
        "scaling": {
            "min": 1,
            "max": 6,
            "interval": 10,
            "scale_down_window": 60,
            "policies": [{"metric": "rps", "target": 10}],
        }
        | scaling,
        "tasks": [{"name": "t", "config": {"command": "sleep", "args": ["9"]}}],
    }
    if count is not None:
        group["count"] = count
    return {"name": name, "groups": [group]}


def job_of(doc: dict[str, Any]) -> Job:
    return spec.validate(spec.canonicalize(doc))


@pytest.fixture
async def state() -> AsyncIterator[ClusterState]:
    async with memory_state() as st:
        yield st


# ---------------------------------------------------------------- job writes


async def test_a_new_version_keeps_the_autoscaled_count(state: ClusterState) -> None:
    await jobs.register(state, job_of(scaled_doc()), now=T0)
    await jobs.scale(state, "default", "web", "g", 5, now=T0 + 1)
    same, changed = await jobs.register(state, job_of(scaled_doc()), now=T0 + 2)
    assert not changed and same.groups[0].count == 5  # the file's count 2 is where it began
    narrower, changed = await jobs.register(state, job_of(scaled_doc(max=3)), now=T0 + 3)
    assert changed and narrower.groups[0].count == 3  # within the new max
    plain = scaled_doc()
    del plain["groups"][0]["scaling"]
    fixed, _ = await jobs.register(state, job_of(plain), now=T0 + 4)
    assert fixed.groups[0].count == 2  # no longer autoscaled: the file says


async def test_scaling_by_hand_stays_within_min_and_max(state: ClusterState) -> None:
    await jobs.register(state, job_of(scaled_doc()), now=T0)
    with pytest.raises(ValidationError, match="between 1 and 6"):
        await jobs.scale(state, "default", "web", "g", 7, now=T0 + 1)
    job, _ = await jobs.scale(state, "default", "web", "g", 6, now=T0 + 1)
    assert job.groups[0].count == 6


def test_count_starts_at_min() -> None:
    assert job_of(scaled_doc(count=None, min=3)).groups[0].count == 3
    assert job_of(scaled_doc(count=None, min=0)).groups[0].count == 1


# ---------------------------------------------------------------------- wake


async def test_wake_starts_one_copy_once_with_its_record_and_event(state: ClusterState) -> None:
    catalog = Catalog(state)
    await jobs.register(state, job_of(scaled_doc(count=0, min=0)), now=T0)
    assert catalog.wake("default", "web") == {"timeout": 30.0, "queue": 1000, "groups": ["web.g"]}
    got = await records.wake(state, catalog, "default", "web", now=T0 + 5)
    assert got == [{"job": "web", "group": "g", "count": 1, "woken": True}]
    job = state.jobs["default/web"]
    assert job.groups[0].count == 1 and job.submitted_by == "autoscaler"
    record, _ = await records.read(state, "default", "web")
    assert record.groups["g"].woken_at == T0 + 5
    assert record.groups["g"].decisions[-1].reason == "a request to service web woke it"
    again = await records.wake(state, catalog, "default", "web", now=T0 + 6)
    assert again == [{"job": "web", "group": "g", "count": 1, "woken": False}]
    assert state.jobs["default/web"].version == job.version  # woken once
    kvs, _ = await state.store.list(keys.EVENTS)
    wakes = [msgspec.json.decode(kv.value) for kv in kvs if b"scaling.wake" in kv.value]
    assert [(e["service"], e["message"]) for e in wakes] == [
        ("web", "group g: 0 → 1: a request to service web woke it")
    ]


async def test_wake_refuses_a_service_that_never_sleeps(state: ClusterState) -> None:
    catalog = Catalog(state)
    await jobs.register(state, job_of(scaled_doc()), now=T0)
    assert catalog.wake("default", "web") is None
    with pytest.raises(NotFound, match="does not sleep"):
        await records.wake(state, catalog, "default", "web", now=T0)


async def test_the_listing_keeps_a_sleeping_services_ingress(state: ClusterState) -> None:
    catalog = Catalog(state)
    doc = scaled_doc(count=0, min=0)
    doc["groups"][0]["services"][0]["ingress"] = {"host": "web.test"}
    await jobs.register(state, job_of(doc), now=T0)
    (row,) = catalog.listing()
    assert row["healthy"] == 0 and row["ingress"] == [{"host": "web.test", "path": "/"}]
    assert row["wake"] == {"timeout": 30.0, "queue": 1000, "groups": ["web.g"]}
    index = row["index"]
    await jobs.stop(state, "default", "web", purge=False, now=T0 + 1)
    assert catalog.listing() == [] and catalog.last_index > index  # proxies hear of it


# ------------------------------------------------------------- the controller


class Figures(UsageGatherer):
    """The usage seam: figures set by the test instead of gathered from agents."""

    def __init__(self, state: ClusterState) -> None:
        super().__init__(state)
        self.counters: dict[str, int] = {}
        self.t = 0.0

    def serve(self, service: str, requests: int, seconds: float) -> None:
        self.t += seconds
        self.counters[service] = self.counters.get(service, 0) + requests

    async def refresh(self, *, max_age: float = 2.0) -> None:
        self.nodes = {
            "n1": NodeUsage(
                node_id="n1",
                services_time=self.t,
                services={
                    k: ServiceTraffic(requests=v, buckets=[0] * (len(BUCKETS) + 1))
                    for k, v in self.counters.items()
                },
            )
        }


async def controller(
    state: ClusterState, clock: FakeClock, **kw: Any
) -> tuple[Autoscaler, Figures, httpx.AsyncClient]:
    figures = Figures(state)
    auto = Autoscaler(state, clock, figures, Catalog(state), **kw)
    auto.running = True
    return auto, figures, httpx.AsyncClient()


async def look(auto: Autoscaler, client: httpx.AsyncClient, clock: FakeClock) -> None:
    await auto.look(client)
    clock.advance(10)


async def test_a_look_scales_with_an_event_that_has_the_numbers(state: ClusterState) -> None:
    clock = FakeClock(T0)
    await jobs.register(state, job_of(scaled_doc()), now=T0)
    auto, figures, client = await controller(state, clock)
    async with client:
        figures.serve("web", 0, 1)
        await look(auto, client, clock)  # a first reading: no rate yet
        figures.serve("web", 420, 10)  # 42 requests/s
        await look(auto, client, clock)
    job = state.jobs["default/web"]
    assert job.groups[0].count == 5 and job.submitted_by == "autoscaler"
    kvs, _ = await state.store.list(keys.EVENTS)
    ups = [msgspec.json.decode(kv.value)["message"] for kv in kvs if b"scaling.up" in kv.value]
    assert ups == ["group g: 2 → 5: rps 42.0 vs target 10 per copy over 2 copies → 5"]
    status = await auto.status(job)
    (g,) = status.groups
    assert g.live and g.count == 5 and g.decisions[0].after == 5
    assert g.figures[0].text == "rps 42.0 vs target 10 per copy over 2 copies → 5"


async def test_the_quota_hook_holds_a_scale_up_and_says_why(state: ClusterState) -> None:
    clock = FakeClock(T0)
    await jobs.register(state, job_of(scaled_doc()), now=T0)

    def quota(state: ClusterState, job: Job, group: Any) -> tuple[int | None, str]:
        return 3, "namespace default may run 3 copies"

    auto, figures, client = await controller(state, clock, quota=quota)
    async with client:
        figures.serve("web", 0, 1)
        await look(auto, client, clock)
        figures.serve("web", 420, 10)
        await look(auto, client, clock)
    assert state.jobs["default/web"].groups[0].count == 3
    (g,) = (await auto.status(state.jobs["default/web"])).groups
    assert (
        g.wanted == 5 and g.held == "quota: at most 3 copies (namespace default may run 3 copies)"
    )


async def test_each_look_handles_a_bounded_number_of_groups(state: ClusterState) -> None:
    clock = FakeClock(T0)
    for i in range(5):
        await jobs.register(state, job_of(scaled_doc(f"web{i}")), now=T0)
    auto, _, client = await controller(state, clock, settings=AutoscalerSettings(max_groups=2))
    async with client:
        await auto.look(client)
        looked = [k for k, g in auto._groups.items() if g.status is not None]
        assert len(looked) == 2
        await auto.look(client)  # the others, oldest due first
        assert len([g for g in auto._groups.values() if g.status is not None]) == 4


async def test_a_version_that_only_scales_is_no_rollout(state: ClusterState) -> None:
    clock = FakeClock(T0)
    await jobs.register(state, job_of(scaled_doc()), now=T0)
    await jobs.scale(state, "default", "web", "g", 3, now=T0 + 1)  # version 1: counts only
    auto, _, _ = await controller(state, clock)

    async def deploying(version: int) -> str:
        dep = Deployment(id=f"dep-{version}", namespace="default", job="web", job_version=version)
        rev = await state.store.put(keys.deployment("default", "web", version), encode(dep))
        await state.wait_for(rev)
        return await auto._rollout(state.jobs["default/web"])

    assert await deploying(1) == ""
    changed = scaled_doc()
    changed["groups"][0]["tasks"][0]["env"] = {"V": "2"}
    await jobs.register(state, job_of(changed), now=T0 + 2)  # version 2: a new spec
    assert await deploying(2) == "deployment dep-2 of version 2 is rolling out"


async def test_copies_count_for_cpu_only_after_their_warmup(state: ClusterState) -> None:
    from podium.model.types import AllocUsage, Resources
    from podium.server.scaling_figures import copy_utilization

    node = make_node("n1", attributes={"cpu.frequency": "2000"})
    usage = UsageGatherer(state)
    copies = [
        Allocation(id=f"a{i}", namespace="default", job="web", job_version=0, group="g",
                   index=i, node_id="n1", resources=Resources(cpu=500, memory=100),
                   client_status="running",
                   task_states={"t": TaskState(state="running", started_at=T0 - age)})
        for i, age in enumerate((60, 2))
    ]  # fmt: skip
    usage._allocs = {
        a.id: AllocUsage(id=a.id, cpu_percent=20.0, memory_bytes=50 * 1024 * 1024) for a in copies
    }
    nodes: dict[str, Node] = {"n1": node}
    cpu = copy_utilization("cpu", copies, usage, nodes, now=T0, warmup=5)
    assert cpu == (80.0, None)  # 0.2 of a core of 0.25 reserved; the new one warms up
    memory = copy_utilization("memory", copies, usage, nodes, now=T0, warmup=0)
    assert memory == (50.0, 50.0)


# -------------------------------------------------------------------- figures


def test_traffic_meter_rates_span_the_nodes_and_survive_a_restart() -> None:
    def node(node_id: str, t: float, requests: int, latency: float) -> NodeUsage:
        buckets = [0] * (len(BUCKETS) + 1)
        buckets[5] = requests
        return NodeUsage(node_id=node_id, services_time=t, services={
            "web": ServiceTraffic(requests=requests, latency_sum=latency, buckets=buckets)})  # fmt: skip

    meter = TrafficMeter()
    meter.observe([node("a", 10, 100, 5.0), node("b", 10, 0, 0)], now=10)
    assert meter.service("web") is None
    meter.observe([node("a", 20, 300, 15.0), node("b", 20, 50, 1.0)], now=20)
    t = meter.service("web")
    assert t is not None and t.rps == 25.0 and t.requests == 250
    assert t.concurrency == pytest.approx(1.1)  # (10 + 1) seconds in requests per second
    assert t.p95() is not None and BUCKETS[4] < t.p95() <= BUCKETS[5]  # type: ignore[operator]
    meter.observe([node("a", 30, 20, 1.0)], now=30)  # node a's proxy restarted
    assert meter.service("web") is not None  # b's last span still counts; a starts over


def test_quantile_interpolates_within_a_bucket() -> None:
    counts = [0] * (len(BUCKETS) + 1)
    counts[2] = 100  # all between 1 ms and 2.5 ms
    assert quantile(counts, 0.5) == pytest.approx(0.00175)
    assert quantile([0] * len(counts), 0.95) is None
    counts[-1] = 1000  # mostly beyond the last bound
    assert quantile(counts, 0.95) == BUCKETS[-1]


def test_prometheus_answers_give_one_number_or_a_reason() -> None:
    def answer(data: Any, status: str = "success") -> bytes:
        return msgspec.json.encode({"status": status, "data": data, "error": "bad_data: parse"})

    vector = {"resultType": "vector", "result": [{"metric": {}, "value": [1, "17.5"]}]}
    assert parse_query_answer(200, answer(vector)) == (17.5, "")
    assert parse_query_answer(200, answer({"resultType": "scalar", "result": [1, "3"]})) == (3, "")
    two = {"resultType": "vector", "result": [vector["result"][0]] * 2}
    assert parse_query_answer(200, answer(two)) == (
        None, "the query gave 2 series; wrap it in sum()")  # fmt: skip
    assert parse_query_answer(200, answer({"resultType": "vector", "result": []}))[1] == (
        "the query gave no series"
    )
    assert parse_query_answer(400, answer({}, "error"))[1] == "the query failed: bad_data: parse"
    assert parse_query_answer(502, b"<html>")[1] == "Prometheus answered HTTP 502 without JSON"
    nan = {"resultType": "scalar", "result": [1, "NaN"]}
    assert parse_query_answer(200, answer(nan)) == (None, f"the query gave {math.nan}")


async def test_a_predictive_policy_scales_ahead_and_shows_its_forecast(
    state: ClusterState,
) -> None:
    """A one-minute season: 5 requests/s, then 40/s from second 40 to 50. In the second
    season the group grows ahead of the rise (lead 10s) while the reactive figure still
    asks for 1, the forecast is in the status, and the history is stored for a new term."""
    clock = FakeClock(T0)
    doc = scaled_doc(count=1, interval=1, scale_down_window=5, policies=[
        {"metric": "rps", "target": 10},
        {"predictive": {"metric": "rps", "season": "1m", "lead": "10s"}},
    ])  # fmt: skip
    await jobs.register(state, job_of(doc), now=T0)
    auto, figures, client = await controller(state, clock)

    def rate(t: float) -> int:
        return 40 if 40 <= t % 60 < 50 else 5

    async with client:
        ahead = None
        for t in range(0, 100):
            figures.serve("web", rate(t), 1)
            await auto.look(client)
            g = (await auto.status(state.jobs["default/web"])).groups[0]
            if t < 60:
                assert g.forecast is not None and g.forecast.value is None  # learning
            elif ahead is None and 60 + 30 <= t < 60 + 40 and g.count >= 4:
                ahead = (t, g)
            clock.advance(1)
    assert ahead is not None, "no scale-up ahead of the second rise"
    t, g = ahead
    print(t, g.count, g.forecast and g.forecast.text, g.figures[0].text)
    rps_figure = g.figures[0]
    assert rps_figure.count == 1  # the reactive policy sees 5/s: one copy
    assert g.forecast is not None and g.forecast.count is not None and g.forecast.count >= 4
    # The demand now plus the rise a season ago (its curve averaged over a lead's span,
    # so the 10 s burst of 40/s shows a little lower).
    assert re.fullmatch(
        r"forecast rps [0-9.]+ within 10s \(now 5\.0 \+ a rise of [0-9.]+ a season ago; "
        r"target 10\.0 per copy\) → 4",
        g.forecast.text,
    ), g.forecast.text
    assert g.forecast.level == 5.0 and g.forecast.rise is not None and g.forecast.rise > 25
    record, _ = await records.read(state, "default", "web")
    history = record.groups["g"].history
    assert history is not None and history.seconds() >= 60  # stored for the next leader


async def test_two_jobs_sleeping_behind_one_service(state: ClusterState) -> None:
    catalog = Catalog(state)
    for name in ("a", "b"):
        doc = scaled_doc("web", count=0, min=0)
        doc["name"] = name
        await jobs.register(state, job_of(doc), now=T0)
    assert sorted(s.job for s in catalog.sleepers("default", "web")) == ["a", "b"]
    await jobs.stop(state, "default", "a", purge=True, now=T0 + 1)
    assert [s.job for s in catalog.sleepers("default", "web")] == ["b"]
    assert catalog.known("default", "web")
    await jobs.stop(state, "default", "b", purge=False, now=T0 + 2)
    assert catalog.sleepers("default", "web") == [] and not catalog.known("default", "web")


def test_cpu_rates_span_a_window_and_start_after_the_warmup() -> None:
    from podium.model.types import AllocUsage
    from podium.server.scaling_figures import CpuRates

    rates = CpuRates(window=5)
    used = 0.0
    for t in range(0, 12):
        used += 0.9 if t % 2 else 0.1  # a noisy copy: 90 % and 10 % of a core in turn
        rates.observe([AllocUsage(id="a", time=T0 + t, cpu_seconds=used)])
        if t == 2:
            assert rates.percent("a", since=T0 + 3) is None  # nothing after the warmup yet
    # Over 5 s or more the noise averages out, instead of the last second's 10 % or 90 %.
    got = rates.percent("a", since=0)
    assert got is not None and 40 <= got <= 60, got
    assert rates.percent("a", since=T0 + 10) == pytest.approx(90.0)  # only 10 -> 11 since
    rates.observe([AllocUsage(id="a", time=T0 + 12, cpu_seconds=0.2)])  # restarted
    assert rates.percent("a", since=0) is None
    rates.observe([])
    assert rates.percent("a", since=0) is None and not rates._samples  # gone copies forgotten
