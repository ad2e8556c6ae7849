"""Alloc writes: status reports from agents, stop and restart requests from users.

The server owns `desired_*`; the agent owns `client_*`, task states and checks.
Each side re-reads and retries on a revision conflict, so neither overwrites
the other's half. A report the server could not apply is answered as such (why, and
whether to send it again); the agent keeps those until they are applied or their
alloc is gone.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from podium.errors import Conflict, NotFound
from podium.model.types import Allocation, AllocUpdate, ReportRejected
from podium.server.events import event_put
from podium.server.state import ClusterState, encode
from podium.store import keys
from podium.store.base import Compare, Op, Put

ROUNDS = 5  # tries within one request for a report whose alloc other writers keep changing


async def apply_updates(
    state: ClusterState, node_id: str, updates: list[AllocUpdate], *, now: float
) -> tuple[int, list[ReportRejected]]:
    """Merge agent reports into their allocs, all in one batch, retrying lost races a few
    times. Returns how many were applied and, for each report that was not, why and
    whether to send it again: the agent keeps those, so no report is dropped silently."""
    pending = {u.id: u for u in updates}  # one per alloc: the last in the list is the newest
    applied = 0
    rejected: list[ReportRejected] = []
    for _ in range(ROUNDS):
        batch: list[tuple[list[Compare], list[Op]]] = []
        order: list[str] = []
        for u in list(pending.values()):
            a = state.allocs.get(u.id)
            if a is None:
                continue  # judged against the store below
            if a.node_id != node_id:
                why = f"the allocation belongs to node {a.node_id}, not {node_id}"
                rejected.append(ReportRejected(id=u.id, reason=why, retry=False))
                pending.pop(u.id)
                continue
            if a.client_status == "lost" and _node_down(state, node_id):
                # Whether it runs on is decided when the node is back (reconnect.py).
                why = "the node is down; send it again once the node is back"
                rejected.append(ReportRejected(id=u.id, reason=why, retry=True))
                pending.pop(u.id)
                continue
            batch.append(
                ([Compare(keys.alloc(a.id), "mod_rev", "=", a.revision)], _merge(state, a, u, now))
            )
            order.append(u.id)
        if not batch:
            break
        results = await state.store.txn_many(batch)
        await state.wait_for(max(r.revision for r in results))
        for id_, r in zip(order, results, strict=True):
            if r.succeeded:
                applied += 1
                pending.pop(id_)
        if not pending:
            break
    for alloc_id in pending:
        rejected.append(await _why_not(state, alloc_id))
    return applied, rejected


def _node_down(state: ClusterState, node_id: str) -> bool:
    node = state.nodes.get(node_id)
    return node is not None and node.status == "down"


async def _why_not(state: ClusterState, alloc_id: str) -> ReportRejected:
    if alloc_id in state.allocs:
        why = f"other writes to the allocation won {ROUNDS} times in a row"
        return ReportRejected(id=alloc_id, reason=why, retry=True)
    # Not in this server's cache: gone, or not seen here yet (the agent learned of it
    # from a server whose cache is ahead of this one). The store knows which.
    if await state.store.get(keys.alloc(alloc_id)) is None:
        return ReportRejected(id=alloc_id, reason="the server has no such allocation", retry=False)
    why = "this server has not seen the allocation yet"
    return ReportRejected(id=alloc_id, reason=why, retry=True)


def _merge(state: ClusterState, a: Allocation, u: AllocUpdate, now: float) -> list[Op]:
    """The writes that merge report `u` into alloc `a`: the alloc, the events of what the
    report changed, and the events the agent reported."""
    new = msgspec.structs.replace(
        a,
        client_status=u.client_status,
        client_description=u.client_description,
        task_states=u.task_states,
        checks=tuple(u.checks),
        healthy=u.healthy,
        healthy_since=u.healthy_since,
        # A deployment verdict, once given, stays (an agent restart forgets it).
        deployment_healthy=(
            a.deployment_healthy if u.deployment_healthy is None else u.deployment_healthy
        ),
        deployment_health_time=u.deployment_health_time or a.deployment_health_time,
        deployment_health_description=(
            a.deployment_health_description
            if u.deployment_healthy is None
            else u.deployment_health_description
        ),
        modify_time=now,
        revision=0,
    )
    ops: list[Op] = [Put(keys.alloc(a.id), encode(new))]
    reported = [
        (ev.type, f"{ev.task}: {ev.message}" if ev.task else ev.message, "") for ev in u.events
    ]
    for type_, msg, service in [*_changes(state, a, new), *reported]:
        ops.append(
            event_put(
                type_,
                msg,
                namespace=a.namespace,
                job=a.job,
                alloc=a.id,
                node=a.node_id,
                service=service,
                now=now,
            )
        )
    return ops


def _changes(state: ClusterState, old: Allocation, new: Allocation) -> list[tuple[str, str, str]]:
    """Events (type, message, service) for what an agent report changed: the alloc's
    status, its health, and so whether it is an endpoint of its group's services."""
    out = []
    if new.client_status != old.client_status:
        desc = new.client_description or new.client_status
        out.append((f"alloc.{new.client_status}", desc, ""))
    if new.healthy is not None and new.healthy != old.healthy:
        if new.healthy:
            out.append(("alloc.healthy", "every task running and every check passing", ""))
        else:
            failing = [f"{c.name} {c.status}" for c in new.checks if c.status != "passing"]
            out.append(("alloc.unhealthy", ", ".join(failing) or new.client_description, ""))
        job = state.jobs.get(f"{new.namespace}/{new.job}")
        group = job.group(new.group) if job is not None else None
        for svc in group.services if group is not None else []:
            port = new.ports.get(svc.port, 0)
            where = f"{new.node_name}:{port}" if port else new.node_name
            word = "healthy" if new.healthy else "unhealthy"
            msg = f"{svc.name}: endpoint {new.job}.{new.group}[{new.index}] at {where} {word}"
            out.append((f"service.endpoint_{word}", msg, svc.name))
    return out


async def modify(
    state: ClusterState,
    alloc_id: str,
    change: Callable[[Allocation], Allocation],
    *,
    event: tuple[str, str],
    now: float,
) -> Allocation:
    """Apply a server-side change to one alloc, guarded by the revision it was read at."""
    for _ in range(5):
        a = state.allocs.get(alloc_id)
        if a is None:
            raise NotFound(f"no allocation {alloc_id!r}")
        new = msgspec.structs.replace(change(a), modify_time=now, revision=0)
        res = await state.store.txn(
            [Compare(keys.alloc(a.id), "mod_rev", "=", a.revision)],
            [
                Put(keys.alloc(a.id), encode(new)),
                event_put(
                    event[0],
                    event[1],
                    namespace=a.namespace,
                    job=a.job,
                    alloc=a.id,
                    node=a.node_id,
                    now=now,
                ),
            ],
        )
        await state.wait_for(res.revision)
        if res.succeeded:
            return state.allocs[alloc_id]
    raise Conflict(f"allocation {alloc_id} changed too often to update; retry")


def resolve(state: ClusterState, id_or_prefix: str, *, namespace: str | None = None) -> Allocation:
    """The one alloc an id or id prefix names (in `namespace`, when one is given)."""
    found = state.find_alloc(id_or_prefix)
    if namespace is not None:
        found = [a for a in found if a.namespace == namespace]
    if not found:
        where = f" in namespace {namespace!r}" if namespace is not None else ""
        raise NotFound(f"no allocation matches {id_or_prefix!r}{where}")
    if len(found) > 1:
        raise Conflict(f"{len(found)} allocations match {id_or_prefix!r}; give more of the id")
    return found[0]
