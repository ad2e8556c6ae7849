from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.cluster import DevCluster


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
