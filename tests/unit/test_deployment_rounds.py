"""The deployment controller's rounds: a change judges only the deployment of the job it
touched, and a deadline that comes with nothing changed is still judged on time."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from podium.model.types import Deployment, DeploymentGroup, UpdateStrategy
from podium.runtime.clock import FakeClock
from podium.server.controllers import deployments
from podium.server.controllers.deployments import DeploymentController
from podium.server.state import ClusterState, encode
from podium.store import keys
from podium.store.base import Put
from support.builders import make_alloc, make_job
from support.state import memory_state

NOW = 1000.0


async def put(state: ClusterState, key: str, value: bytes) -> None:
    res = await state.store.txn([], [Put(key, value)])
    await state.wait_for(res.revision)


async def rollout(state: ClusterState, name: str, *, healthy_deadline: float = 300.0) -> None:
    """A job of 2 copies whose deployment runs: the copies are placed, not yet judged."""
    job = make_job(name, count=2, update=UpdateStrategy(healthy_deadline=healthy_deadline))
    await put(state, keys.job(job.namespace, job.name), encode(job))
    dep = Deployment(
        id=f"dep-{name}",
        namespace=job.namespace,
        job=job.name,
        job_version=job.version,
        groups={"web": DeploymentGroup(desired_total=2, auto_revert=False)},
    )
    await put(state, keys.deployment(job.namespace, job.name, job.version), encode(dep))
    for i in range(2):
        a = make_alloc(job, index=i, id=f"{name}-{i}", client="pending")
        a = msgspec.structs.replace(a, deployment_id=dep.id, create_time=NOW)
        await put(state, keys.alloc(a.id), encode(a))


async def test_a_change_judges_only_its_jobs_deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    judged: list[str] = []
    real = deployments.judge

    def counting(d: Deployment, *a: Any, **kw: Any) -> Any:
        judged.append(d.job)
        return real(d, *a, **kw)

    monkeypatch.setattr(deployments, "judge", counting)
    async with memory_state() as state:
        controller = DeploymentController(state, FakeClock(NOW))
        for name in ("a", "b", "c"):
            await rollout(state, name)
        await controller.evaluate(everything=False)
        assert sorted(judged) == ["a", "b", "c"], "each changed since the controller started"
        await controller.evaluate(everything=False)  # its own writes (counts placed) changed them
        judged.clear()
        b1 = state.allocs["b-1"]
        await put(state, keys.alloc(b1.id), encode(msgspec.structs.replace(b1, healthy=True)))
        await controller.evaluate(everything=False)
        assert judged == ["b"], "one alloc changed: only its job's deployment is judged"
        judged.clear()
        await controller.evaluate(everything=False)
        assert judged == [], "nothing changed, no deadline came"
        await controller.evaluate()  # the sweep
        assert sorted(judged) == ["a", "b", "c"]


async def test_a_deadline_is_judged_when_it_comes_with_nothing_changed() -> None:
    async with memory_state() as state:
        clock = FakeClock(NOW)
        controller = DeploymentController(state, clock)
        await rollout(state, "web", healthy_deadline=30.0)
        await controller.evaluate(everything=False)
        assert state.deployments_of_job("default", "web")[0].status == "running"
        clock.advance(30.0 + controller.settings.agent_grace + 0.5)
        await controller.evaluate(everything=False)
        [dep] = state.deployments_of_job("default", "web")
        assert dep.status == "failed", dep.status_description
        assert "healthy_deadline 30s" in dep.status_description
