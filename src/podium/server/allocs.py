"""Alloc writes: status reports from agents, stop and restart requests from users.

The server owns `desired_*`; the agent owns `client_*`, task states and checks.
Each side re-reads and retries on a revision conflict, so neither overwrites
the other's half.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from podium.errors import Conflict, NotFound
from podium.model.types import Allocation, AllocUpdate
from podium.server.events import event_put
from podium.server.state import ClusterState, encode
from podium.store import keys
from podium.store.base import Compare, Op, Put


async def apply_updates(
    state: ClusterState, node_id: str, updates: list[AllocUpdate], *, now: float
) -> int:
    """Merge agent reports into their allocs; all in one batch, retrying lost races."""
    pending = {u.id: u for u in updates}
    applied = 0
    for _ in range(5):
        batch: list[tuple[list[Compare], list[Op]]] = []
        order: list[str] = []
        for u in pending.values():
            a = state.allocs.get(u.id)
            if a is None or a.node_id != node_id:
                continue  # gone, or not this node's: nothing to merge into
            new = msgspec.structs.replace(
                a,
                client_status=u.client_status,
                client_description=u.client_description,
                task_states=u.task_states,
                checks=u.checks,
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
                (ev.type, f"{ev.task}: {ev.message}" if ev.task else ev.message, "")
                for ev in u.events
            ]
            for type_, msg, service in [*_changes(state, a, new), *reported]:
                ops.append(
                    event_put(
                        type_,
                        msg,
                        namespace=a.namespace,
                        job=a.job,
                        alloc=a.id,
                        node=node_id,
                        service=service,
                        now=now,
                    )
                )
            batch.append(([Compare(keys.alloc(a.id), "mod_rev", "=", a.revision)], ops))
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
    return applied


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
