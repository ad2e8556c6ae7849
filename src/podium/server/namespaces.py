"""Namespaces: created and deleted by operators, `default` always there; every namespaced
kind (jobs, allocs, deployments, services, events, configs, secrets) names one, and a job,
config or secret may only be written to a namespace that exists.

    POST /v1/namespaces --create--> /namespaces/<name>      (operator:write)
    DELETE /v1/namespace/<name>     refused while it holds jobs, configs or secrets
    reads: a cache of every namespace, emptied by the state's watch on /namespaces/
"""

from __future__ import annotations

import msgspec

from podium.errors import Conflict, NotFound, Problem, ValidationError
from podium.model import spec as jobspec
from podium.model.tenancy import Namespace
from podium.server import configs
from podium.server.events import event_put
from podium.server.state import ClusterState
from podium.store import keys
from podium.store.base import Compare, Delete, Put

DEFAULT = "default"


class Namespaces:
    """Every namespace, read through a cache the state's watch empties."""

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self._cache: dict[str, Namespace] | None = None
        self._gen = 0
        state.add_key_listener(keys.NAMESPACES, self.changed)

    def changed(self) -> None:
        self._gen += 1
        self._cache = None

    async def all(self) -> dict[str, Namespace]:
        if self._cache is not None:
            return self._cache
        gen = self._gen
        kvs, _ = await self.state.store.list(keys.NAMESPACES)
        found = {DEFAULT: Namespace(name=DEFAULT, description="The default namespace")}
        for kv in kvs:
            try:
                ns = msgspec.json.decode(kv.value, type=Namespace)
            except msgspec.DecodeError:
                continue  # a bad value: ClusterState's checks do not cover it; skip it
            ns.revision = kv.mod_rev
            found[ns.name] = ns
        if gen == self._gen:
            self._cache = found
        return found

    async def get(self, name: str) -> Namespace:
        found = (await self.all()).get(name)
        if found is None:
            raise NotFound(f"no namespace {name!r} (`podium namespace create {name}`)")
        return found

    async def require(self, name: str, *, field: str = "namespace") -> None:
        """Refuse work in a namespace that does not exist (named, with how to make it)."""
        if name not in await self.all():
            raise ValidationError(
                [
                    Problem(
                        field,
                        f"namespace {name!r} does not exist: "
                        f"`podium namespace create {name}` first",
                    )
                ]
            )

    async def create(self, name: str, description: str, *, now: float) -> Namespace:
        if not jobspec.is_name(name):
            raise ValidationError(
                [Problem("name", f"expected lowercase letters, digits and '-', got {name!r}")]
            )
        if len(description) > 1024:
            raise ValidationError([Problem("description", "expected at most 1024 characters")])
        if name == DEFAULT:
            raise Conflict("namespace 'default' always exists")
        ns = Namespace(name=name, description=description, create_time=now)
        res = await self.state.store.txn(
            [Compare(keys.namespace(name), "create_rev", "=", 0)],
            [
                Put(keys.namespace(name), msgspec.json.encode(ns)),
                event_put(
                    "namespace.created", f"namespace {name} created", namespace=name, now=now
                ),
            ],
        )
        if not res.succeeded:
            raise Conflict(f"namespace {name!r} exists already")
        self.changed()
        return ns

    async def create_default(self, *, now: float) -> Namespace:
        """`default` stored, the first time something is kept on it (its quota)."""
        ns = Namespace(name=DEFAULT, description="The default namespace", create_time=now)
        res = await self.state.store.txn(
            [Compare(keys.namespace(DEFAULT), "create_rev", "=", 0)],
            [Put(keys.namespace(DEFAULT), msgspec.json.encode(ns))],
        )
        self.changed()
        if not res.succeeded:
            return await self.get(DEFAULT)
        ns.revision = res.revision
        return ns

    async def save(self, ns: Namespace, message: str, *, now: float) -> Namespace:
        """Write a changed namespace (its quota), guarded by the revision it was read at."""
        stored = msgspec.structs.replace(ns, revision=0)
        res = await self.state.store.txn(
            [Compare(keys.namespace(ns.name), "mod_rev", "=", ns.revision)],
            [
                Put(keys.namespace(ns.name), msgspec.json.encode(stored)),
                event_put("namespace.updated", message, namespace=ns.name, now=now),
            ],
        )
        if not res.succeeded:
            raise Conflict(f"namespace {ns.name!r} changed concurrently; retry")
        self.changed()
        return ns

    async def delete(self, name: str, *, now: float) -> None:
        if name == DEFAULT:
            raise Conflict("namespace 'default' cannot be deleted")
        ns = await self.get(name)
        jobs = sorted(j.name for j in self.state.jobs.values() if j.namespace == name)
        if jobs:
            shown = ", ".join(jobs[:5]) + (" ..." if len(jobs) > 5 else "")
            raise Conflict(
                f"namespace {name!r} holds {len(jobs)} job(s) ({shown}): "
                "purge them first (`podium job stop --purge`)"
            )
        # Left behind, a config or secret would be readable by whoever made a namespace of
        # the same name next.
        for kind in ("config", "secret"):
            paths = sorted(r.path for r in await configs.listing(self.state, kind, name))
            if paths:
                shown = ", ".join(paths[:5]) + (" ..." if len(paths) > 5 else "")
                raise Conflict(
                    f"namespace {name!r} holds {len(paths)} {kind}(s) ({shown}): delete them "
                    f"first (`podium {kind} delete -n {name} PATH`)"
                )
        res = await self.state.store.txn(
            [Compare(keys.namespace(name), "mod_rev", "=", ns.revision)],
            [
                Delete(keys.namespace(name)),
                event_put(
                    "namespace.deleted", f"namespace {name} deleted", namespace=name, now=now
                ),
            ],
        )
        if not res.succeeded:
            raise Conflict(f"namespace {name!r} changed concurrently; retry")
        self.changed()
