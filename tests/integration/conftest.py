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
