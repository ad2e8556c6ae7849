"""The catalog's rules (which copies are endpoints) and the DNS answers built from it.

The catalog runs on a real ClusterState over the in-memory store; changes come in
through the state's own listener path (`absorb`), as the store watch would bring them.
"""

from __future__ import annotations

import asyncio
import struct

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import msgspec
import pytest

from podium.model.types import (
    Allocation,
    Check,
    CheckStatus,
    Ingress,
    Job,
    ServiceSpec,
    TaskState,
)
from podium.server.catalog import Catalog
from podium.server.dns import DnsConfig, DnsServer
from podium.server.state import ClusterState, encode
from podium.store import keys
from podium.store.memory import MemoryStore
from support.builders import make_alloc, make_group, make_job, make_node

CHECK = Check(name="web-http-0", type="http", port="http")


def web_job(*, version: int = 0, checks: bool = True) -> Job:
    services = [
        ServiceSpec(
            name="web",
            port="http",
            tags=["blue"],
            checks=[CHECK] if checks else [],
            meta={"weight": "3"},
            ingress=Ingress(host="web.test"),
        ),
        ServiceSpec(name="portless"),
    ]
    job: Job = make_job("site", version=version, groups=[make_group("g", services=services)])
    return job


def healthy(job: Job, port: int, *, node: str = "n1", **kw: object) -> Allocation:
    fields: dict[str, object] = {
        "task_states": {"main": TaskState(state="running")},
        "checks": [CheckStatus(name=CHECK.name, status="passing")],
    }
    fields.update(kw)
    alloc: Allocation = make_alloc(job, group="g", node=node, ports={"http": port}, **fields)
    return alloc


@pytest.fixture
def state() -> ClusterState:
    s = ClusterState(MemoryStore())
    for node in (make_node("n1", address="127.0.0.1"), make_node("n2", address="127.0.0.2")):
        s.nodes[node.id] = node
    job = web_job()
    s.jobs[job.key] = job
    return s


def add(state: ClusterState, *allocs: Allocation) -> None:
    state.absorb(list(allocs), state.revision + 1)
    state.revision += 1


def test_only_running_passing_copies_are_endpoints(state: ClusterState) -> None:
    catalog = Catalog(state)
    job = state.jobs["default/site"]
    good = healthy(job, 20001)
    critical = healthy(job, 20002, checks=[CheckStatus(name=CHECK.name, status="critical")])
    pending = healthy(job, 20003, checks=[])
    starting = healthy(job, 20004, task_states={"main": TaskState(state="pending")})
    stopping = healthy(job, 20005, desired="stop")
    add(state, good, critical, pending, starting, stopping)
    assert [e.port for e in catalog.endpoints("default", "web")] == [20001]
    endpoint = catalog.endpoints("default", "web")[0]
    assert (endpoint.address, endpoint.weight, endpoint.tags) == ("127.0.0.1", 3, ["blue"])
    # A service without checks counts once tasks run; one without a port has port 0.
    assert sorted(e.port for e in catalog.endpoints("default", "portless")) == [0, 0, 0]
    (row,) = [r for r in catalog.listing() if r["name"] == "web"]
    assert (row["healthy"], row["total"]) == (1, 4)  # the stopping copy declares nothing
    assert row["ingress"] == [{"host": "web.test", "path": "/"}]
    assert catalog.endpoints("default", "web", tag="green") == []


def test_a_down_node_takes_its_endpoints_out(state: ClusterState) -> None:
    catalog = Catalog(state)
    job = state.jobs["default/site"]
    add(state, healthy(job, 20001, node="n1"), healthy(job, 20002, node="n2"))
    assert len(catalog.endpoints("default", "web")) == 2
    down = msgspec.structs.replace(state.nodes["n2"], status="down")
    old, state.nodes["n2"] = state.nodes["n2"], down
    state._notify(keys.NODES, old, down)
    assert [e.address for e in catalog.endpoints("default", "web")] == ["127.0.0.1"]


async def test_blocking_query_wakes_on_change_and_times_out_otherwise(state: ClusterState) -> None:
    catalog = Catalog(state)
    job = state.jobs["default/site"]
    first = healthy(job, 20001)
    add(state, first)
    index = catalog.index[("default", "web")]
    t0 = asyncio.get_running_loop().time()
    assert await catalog.wait_service(("default", "web"), index, timeout=0.2) == index
    assert asyncio.get_running_loop().time() - t0 >= 0.19
    waiter = asyncio.create_task(catalog.wait_service(("default", "web"), index, timeout=5))
    any_waiter = asyncio.create_task(catalog.wait_service(None, catalog.last_index, timeout=5))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    failing = msgspec.structs.replace(
        first, checks=[CheckStatus(name=CHECK.name, status="critical")]
    )
    add(state, failing)
    assert await asyncio.wait_for(waiter, 1) > index
    assert await asyncio.wait_for(any_waiter, 1) > index
    assert catalog.endpoints("default", "web") == []
    # An index from another server (ahead of this one) is answered at once.
    assert await catalog.wait_service(("default", "web"), 10**9, timeout=5) > index


async def test_copies_of_an_older_version_use_that_versions_spec(state: ClusterState) -> None:
    old = web_job(version=0)
    await state.store.put(keys.job_version("default", "site", 0), encode(old))
    state.jobs["default/site"] = web_job(version=1, checks=False)
    catalog = Catalog(state)
    runner = asyncio.create_task(catalog.run())
    try:
        add(state, healthy(old, 20001, checks=[]))  # v0 has a check, not yet passing
        add(state, healthy(state.jobs["default/site"], 20002, checks=[]))
        await asyncio.sleep(0.05)
        assert [e.port for e in catalog.endpoints("default", "web")] == [20002]
    finally:
        runner.cancel()


# ---------------------------------------------------------------------- DNS


def ask(server: DnsServer, name: str, rdtype: str, *, limit: int = 512) -> dns.message.Message:
    wire = server.answer(dns.message.make_query(name, rdtype).to_wire(), limit=limit)
    assert wire is not None
    return dns.message.from_wire(wire)


@pytest.fixture
def dns_server(state: ClusterState) -> DnsServer:
    job = state.jobs["default/site"]
    add(state, healthy(job, 20001, node="n1"), healthy(job, 20002, node="n2"))
    return DnsServer(Catalog(state), DnsConfig(port=0, ttl=1))


def test_srv_lists_ports_with_targets_resolved(dns_server: DnsServer) -> None:
    reply = ask(dns_server, "WEB.Service.Podium.", "SRV")
    assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA
    (srv,) = reply.answer
    assert srv.ttl == 1
    assert sorted((r.port, r.weight, r.target.to_text()) for r in srv) == [
        (20001, 3, "7f000001.addr.podium."),
        (20002, 3, "7f000002.addr.podium."),
    ]
    additional = {rr.name.to_text().lower(): [r.address for r in rr] for rr in reply.additional}
    assert additional == {
        "7f000001.addr.podium.": ["127.0.0.1"],
        "7f000002.addr.podium.": ["127.0.0.2"],
    }
    a = ask(dns_server, "blue.web.service.podium.", "A")
    assert sorted(r.address for rr in a.answer for r in rr) == ["127.0.0.1", "127.0.0.2"]
    target = ask(dns_server, "7f000002.addr.podium.", "A")
    assert [r.address for rr in target.answer for r in rr] == ["127.0.0.2"]


def test_unknown_foreign_and_malformed_queries(dns_server: DnsServer) -> None:
    for name in ("nope.service.podium.", "green.web.service.podium.", "a.b.c.service.podium."):
        reply = ask(dns_server, name, "A")
        assert reply.rcode() == dns.rcode.NXDOMAIN, name
        assert reply.authority[0].rdtype == dns.rdatatype.SOA
    foreign = ask(dns_server, "example.com.", "A")
    assert foreign.rcode() == dns.rcode.REFUSED and not foreign.answer
    assert not foreign.flags & dns.flags.RA
    garbage = b"\x12\x34" + b"\x00" * 10 + b"\xff\xff"
    reply_wire = dns_server.answer(garbage)
    assert reply_wire is not None
    qid, flags = struct.unpack("!HH", reply_wire[:4])
    assert qid == 0x1234 and flags & 0xF == dns.rcode.FORMERR
    assert dns_server.answer(b"\x00") is None


def test_large_answers_truncate_over_udp_not_tcp(state: ClusterState) -> None:
    job = state.jobs["default/site"]
    add(state, *(healthy(job, 21000 + i) for i in range(60)))
    server = DnsServer(Catalog(state), DnsConfig(port=0))
    udp = ask(server, "web.service.podium.", "SRV")
    assert udp.flags & dns.flags.TC and not udp.answer
    tcp = ask(server, "web.service.podium.", "SRV", limit=65535)
    assert not tcp.flags & dns.flags.TC and len(tcp.answer[0]) == 60


def test_ttl_is_bounded(state: ClusterState) -> None:
    with pytest.raises(ValueError, match="ttl"):
        DnsServer(Catalog(state), DnsConfig(ttl=30))


async def test_serves_udp_and_tcp_on_one_port(dns_server: DnsServer) -> None:
    import dns.asyncquery

    task = asyncio.create_task(dns_server.run())
    try:
        await asyncio.wait_for(dns_server.started.wait(), 5)
        query = dns.message.make_query("web.service.podium.", "SRV")
        for send in (dns.asyncquery.udp, dns.asyncquery.tcp):
            reply = await send(query, "127.0.0.1", port=dns_server.port, timeout=2)
            assert len(reply.answer[0]) == 2
    finally:
        task.cancel()


def test_namespaces_have_their_own_names(state: ClusterState) -> None:
    """NAME.service.podium is the default namespace's; NAME.NS.service.podium another's."""
    job = state.jobs["default/site"]
    add(state, healthy(job, 20001, node="n1"))
    team = msgspec.structs.replace(web_job(), namespace="team")
    state.jobs[team.key] = team
    add(state, healthy(team, 20009, node="n2"))
    server = DnsServer(Catalog(state), DnsConfig(port=0, ttl=1))

    def addresses(name: str) -> list[str]:
        reply = ask(server, name, "A")
        assert reply.rcode() == dns.rcode.NOERROR, name
        return sorted(r.address for rr in reply.answer for r in rr)

    assert addresses("web.service.podium.") == ["127.0.0.1"]
    assert addresses("web.team.service.podium.") == ["127.0.0.2"]
    assert addresses("blue.web.team.service.podium.") == ["127.0.0.2"]
    assert addresses("blue.web.service.podium.") == ["127.0.0.1"]  # a tag, in default
    (srv,) = ask(server, "web.team.service.podium.", "SRV").answer
    assert [r.port for r in srv] == [20009]
    for name in ("web.other.service.podium.", "green.web.team.service.podium."):
        assert ask(server, name, "A").rcode() == dns.rcode.NXDOMAIN, name
