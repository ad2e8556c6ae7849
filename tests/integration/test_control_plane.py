"""Several servers on etcd: leader failover, fencing of a paused leader, etcd member loss.

One real control plane for the module (control_plane.py): 3 etcd members, 3 podium
servers (lease TTL 2 s), 3 agents; a `steady` service whose tasks must never restart
while the control plane fails around it. The tests run in order on the same cluster
and leave it whole for the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration.cluster import wait_rounds, wait_until
from integration.control_plane import ControlPlane, Writer, job, running, stored_marks
from podium.errors import NotLeader
from podium.runtime.clock import SystemClock
from podium.server.leader import Leadership, LeadershipConfig
from podium.server.state import ClusterState
from podium.store import keys
from podium.store.etcd import EtcdStore
from support.etcd import EtcdCluster, etcd_server

__all__ = ["etcd_server"]  # the session's etcd, a fixture

pytestmark = pytest.mark.integration

LEADER_TTL = 2.0


def wait_running(cp: ControlPlane, name: str, n: int, *, timeout: float = 30) -> None:
    wait_until(lambda: len(running(cp, name)) == n, timeout=timeout, what=f"{n} running {name}")


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    c = ControlPlane(Path(tmp_path_factory.mktemp("cp")), leader_ttl=LEADER_TTL)
    try:
        c.start(etcd_members=3, servers=3, agents=3)
        c.api("POST", "/v1/jobs", json={"job": job("steady", count=3)})
        wait_running(c, "steady", 3)
        yield c
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop()


def test_leader_kill9_under_load_loses_no_acknowledged_write(cp: ControlPlane) -> None:
    before = running(cp, "steady")
    old = cp.leader()
    assert old is not None
    with Writer(cp) as w:
        time.sleep(1.5)
        old.kill9()
        new, took = cp.wait_new_leader(old, timeout=15)
        time.sleep(2.0)  # keep writing under the new leader
    print(f"new leader after {took:.2f}s; {sum(map(len, w.acked.values()))} writes acked")
    # The killed leader's member key went with its lease; the CLI skips the dead address.
    members = cp.cli_json("server", "members")
    assert [(m["address"], m["leader"]) for m in members if m["leader"]] == [(new.addr, True)]
    assert old.addr not in {m["address"] for m in members}
    assert took <= 5.0, f"new leader took {took:.1f}s"
    assert sum(map(len, w.acked.values())) >= 20
    assert not w.failed, w.failed[:5]
    for name, marks in w.acked.items():
        stored = stored_marks(cp, name)
        assert marks <= set(stored), f"{name}: acknowledged but lost: {marks - set(stored)}"
        assert len(stored) == len(set(stored)), f"{name}: a write was applied twice"
        assert len(stored) <= w.tried[name]
    # Scheduling resumes under the new leader, and nothing that ran was restarted.
    cp.api("POST", "/v1/jobs", json={"job": job("after-kill", count=2)})
    wait_running(cp, "after-kill", 2)
    assert running(cp, "steady") == before
    old.start()  # back as a follower for the next tests
    wait_until(lambda: old.status() is not None, timeout=20, what="the old leader back")
    assert cp.leader() is new


def test_paused_leader_is_fenced_and_steps_down(cp: ControlPlane) -> None:
    before = running(cp, "steady")
    old = cp.leader()
    assert old is not None
    old.pause()
    try:
        new, took = cp.wait_new_leader(old, timeout=15)
        # Work for the new leader while the old one sleeps, and would act on when it wakes.
        cp.api("POST", "/v1/jobs", json={"job": job("during-pause", count=2)})
        time.sleep(max(0.0, 2 * LEADER_TTL - took))
    finally:
        old.resume()
    wait_until(lambda: old.status() is not None, timeout=10, what="the old leader to answer")
    wait_until(lambda: not old.is_leader(), timeout=5, what="the old leader to step down")
    assert cp.leader() is new
    wait_running(cp, "during-pause", 2)
    # Two more placement rounds of the new leader: a stale placement would show by then.
    wait_rounds(cp, "placement", addr=new.addr)
    allocs = cp.api("GET", "/v1/job/during-pause")["allocations"]
    assert len(allocs) == 2, f"placed twice: {allocs}"
    assert "stepped down" in old.logs()
    assert running(cp, "steady") == before


def test_a_write_retried_on_another_server_is_applied_once(cp: ControlPlane) -> None:
    """A restart request is not idempotent by itself (each one restarts the tasks again);
    the Idempotency-Key makes the retry, sent to another server, return the first answer."""
    cp.api("POST", "/v1/jobs", json={"job": job("restart-me", count=1)})
    wait_running(cp, "restart-me", 1)
    (alloc_id,) = running(cp, "restart-me")
    first, second = [s for s in cp.servers if s.alive][:2]
    key = {"Idempotency-Key": "retry-test-0001"}
    with cp.http() as http:
        r1 = http.post(f"{first.addr}/v1/allocation/{alloc_id}/restart", headers=key)
        r2 = http.post(f"{second.addr}/v1/allocation/{alloc_id}/restart", headers=key)
    assert r1.status_code == r2.status_code == 200
    assert r1.json() == r2.json()
    assert cp.api("GET", f"/v1/allocation/{alloc_id}")["restart_seq"] == 1
    with cp.http() as http:
        r3 = http.post(f"{second.addr}/v1/allocation/{alloc_id}/restart")
    assert r3.json()["restart_seq"] == 2  # no key: a new request


def test_every_server_tells_why_a_job_cannot_be_placed(cp: ControlPlane) -> None:
    """The leader's placement failures reach the followers, and go when the job fits."""
    spec = job("too-big", count=1)
    spec["groups"][0]["tasks"][0]["resources"]["memory"] = 10_000_000
    cp.api("POST", "/v1/jobs", json={"job": spec})

    def failures(s: Any) -> list[Any]:
        with cp.http() as http:
            return list(http.get(f"{s.addr}/v1/job/too-big").json()["placement_failures"])

    live = [s for s in cp.servers if s.alive]
    wait_until(lambda: all(failures(s) for s in live), timeout=10, what="failures everywhere")
    assert all(failures(s)[0]["nodes_exhausted"] for s in live)
    spec["groups"][0]["tasks"][0]["resources"]["memory"] = 16
    cp.api("POST", "/v1/jobs", json={"job": spec})
    wait_until(lambda: not any(failures(s) for s in live), timeout=10, what="failures cleared")
    wait_running(cp, "too-big", 1)


def test_etcd_member_loss(cp: ControlPlane) -> None:
    assert cp.etcd is not None
    before = running(cp, "steady")
    cp.etcd.kill(0)
    # One member down: the cluster works as before.
    cp.api("POST", "/v1/jobs", json={"job": job("one-down", count=1)})
    wait_running(cp, "one-down", 1)
    cp.etcd.kill(1)
    # Two down, no quorum: a write fails fast with a clear 503 on every server.
    server = next(s for s in cp.servers if s.alive)
    t0 = time.monotonic()
    with cp.http(timeout=30) as http:
        r = http.post(server.addr + "/v1/jobs", json={"job": job("no-quorum", count=1)})
    took = time.monotonic() - t0
    assert r.status_code == 503, r.text
    assert took < 10.0, f"the write took {took:.1f}s to fail"
    assert "error" in r.json()
    time.sleep(3 * cp.heartbeat_ttl)  # the outage lasts 3 TTLs (the scenario, not a wait)
    for a in cp.agents:
        assert a.alive
    pids = {pid for pid, _ in before.values()}
    alive = {p.pid for a in cp.agents for p in a.task_processes()}
    assert pids <= alive, "a task stopped while the store was down"
    cp.etcd.restart(0)
    cp.etcd.restart(1)
    # Everything resumes by itself: a leader, writes, scheduling, the same tasks.
    wait_until(lambda: cp.leader() is not None, timeout=30, what="a leader after etcd is back")
    wait_until(lambda: _try_post(cp, job("after-etcd", count=2)), timeout=30, what="writes to work")
    wait_running(cp, "after-etcd", 2)
    wait_until(lambda: cp.ready_nodes() == 3, timeout=20, what="3 ready nodes")
    assert running(cp, "steady") == before


def _try_post(cp: ControlPlane, spec: dict[str, Any]) -> bool:
    try:
        cp.api("POST", "/v1/jobs", json={"job": spec})
        return True
    except AssertionError:
        return False


async def test_fencing_on_etcd_rejects_a_deposed_leaders_writes(etcd_server: EtcdCluster) -> None:
    """The fence on a real etcd: once another server holds /leader, nothing of ours lands."""
    store = EtcdStore(etcd_server.endpoints, prefix="/fencing-test")
    await store.start()
    state = ClusterState(store)
    lead = Leadership(store, state, LeadershipConfig("a", "http://a", ttl=2.0), clock=SystemClock())
    views: list[ClusterState] = []

    async def work(view: ClusterState) -> None:
        views.append(view)
        await asyncio.Event().wait()

    feed = asyncio.get_running_loop().create_task(state.run())  # as on a server
    task = asyncio.get_running_loop().create_task(lead.run(work))
    try:
        async with asyncio.timeout(10):
            while not views:
                await asyncio.sleep(0.02)
        view = views[0]
        await view.store.put("/jobs/ours", b"1")
        # Deposed: our lease is revoked behind our back and another server takes the key.
        kv = await store.get(keys.LEADER)
        assert kv is not None
        await store.lease_revoke(kv.lease)
        other = await store.lease_grant(30)
        await store.put(keys.LEADER, b'{"id":"b","address":"http://b","since":0}', lease=other)
        with pytest.raises(NotLeader):
            await view.store.put("/jobs/ours", b"stale")
        with pytest.raises(NotLeader):
            await view.store.txn_many([([], [])])
        got = await store.get("/jobs/ours")
        assert got is not None and got.value == b"1"
        async with asyncio.timeout(5):  # it steps down and follows b
            while lead.is_leader or lead.leader is None or lead.leader.id != "b":
                await asyncio.sleep(0.02)
        await store.lease_revoke(other)
    finally:
        for t in (task, feed):
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await store.close()
