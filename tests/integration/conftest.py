from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.cluster import DevCluster

# Modules that need the machine to themselves, and why. `make test` (scripts/test.sh) runs
# every other test two at a time, then these one at a time with nothing beside them. A new
# module that drives containers, an etcd cluster, iptables, a browser or Prometheus, runs a
# load generator, measures CPU, or asserts a timing across several processes belongs here.
ALONE = {
    "test_agent_recovery": "containers; kill -9 and restarts raced against the heartbeat TTL",
    "test_autoscale": "a load generator and CPU figures decide the count",
    "test_autoscale_prometheus": "a real Prometheus scraping on an interval",
    "test_cert_rotation": "6 s certificates renewed under a 100 ms poller that may not miss",
    "test_clustering": "several agents; heal and stop times asserted in seconds",
    "test_control_plane": "3 etcd members, 3 servers with a 2 s lease, fencing by pausing",
    "test_cron_failover": "server and leader kills on a seconds schedule, on etcd",
    "test_docker_driver": "the Docker Engine",
    "test_docker_templates": "the Docker Engine",
    "test_drivers_contract": "the Docker Engine (the contract runs on every driver)",
    "test_etcd_store": "etcd's own lease clock and a 3-member etcd cluster",
    "test_leader_barrier": "leader elections on etcd",
    "test_leader_kills": "leader kills on etcd, 3 servers",
    "test_metrics_prometheus": "a real Prometheus scraping two agents",
    "test_node_return": "containers; agent kills raced against the heartbeat TTL",
    "test_partition": "iptables rules on loopback",
    "test_process_driver": "CPU quota and OOM figures from cgroups",
    "test_reconnect_spread": "200 simulated agents; the spread of their retries in time",
    "test_service_discovery": "the proxy under load while copies are killed",
    "test_service_rollout_load": "a rolling update under load",
    "test_task_logs": "a task writing 1 GB/s",
    "test_usage": "CPU figures of running copies",
    "test_web_ui": "a browser; the agent's memory measured",
}
_missing = [name for name in ALONE if not (Path(__file__).parent / f"{name}.py").exists()]
assert not _missing, f"ALONE names modules that do not exist: {_missing}"


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.stem in ALONE:
            item.add_marker(pytest.mark.alone)


@pytest.fixture
def dev_cluster(tmp_path: Path) -> Iterator[DevCluster]:
    c = DevCluster(tmp_path / "dev").start()
    try:
        yield c
    finally:
        c.stop()
        c.kill_leftovers()


@pytest.fixture(scope="module")
def module_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    """One podium dev shared by a test module whose tests do not disturb each other."""
    c = DevCluster(tmp_path_factory.mktemp("module") / "dev").start()
    try:
        yield c
    finally:
        c.stop()
        c.kill_leftovers()
