"""The agent's local state file: saved behind the caller, coalesced, never torn."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from podium.agent.local_state import LocalState
from podium.drivers.base import TaskHandle


def handle(alloc: str, n: int) -> dict[str, TaskHandle]:
    return {"t": TaskHandle(driver="process", alloc_id=alloc, task="t", state={"pid": n})}


def on_disk(path: Path) -> dict[str, int]:
    data = json.loads(path.read_text())
    return {a: tasks["t"]["state"]["pid"] for a, tasks in data["allocs"].items()}


def test_without_an_event_loop_a_change_is_on_disk_at_once(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    st = LocalState(str(path))
    st.set_alloc("a", handle("a", 1))
    assert on_disk(path) == {"a": 1}
    st.set_alloc("a", {})
    assert on_disk(path) == {}


def test_a_burst_of_changes_is_saved_in_a_few_writes_ending_with_the_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    st = LocalState(str(path))
    writes: list[str] = []
    real_write = st._write

    def counting(text: str) -> None:
        writes.append(text)
        real_write(text)

    monkeypatch.setattr(st, "_write", counting)

    async def burst() -> None:
        for i in range(50):
            st.set_alloc(f"a{i}", handle(f"a{i}", i))
            if i % 10 == 0:
                await asyncio.sleep(0)  # the writer may start mid-burst
        st.set_alloc("a0", {})
        await st.flush()

    asyncio.run(burst())
    assert on_disk(path) == {f"a{i}": i for i in range(1, 50)}
    assert 1 <= len(writes) < 10, f"{len(writes)} writes for 51 changes"
    reloaded = LocalState(str(path))
    reloaded.load()
    assert set(reloaded.allocs) == {f"a{i}" for i in range(1, 50)}
    assert reloaded.allocs["a7"]["t"].state == {"pid": 7}


def test_a_torn_file_is_kept_aside_and_the_agent_starts_empty(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"allocs": {"a": ')
    st = LocalState(str(path))
    st.load()
    assert st.allocs == {}
    assert (tmp_path / "state.json.corrupt").exists()


def test_a_failed_write_is_retried_and_the_change_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    st = LocalState(str(path))
    monkeypatch.setattr("podium.agent.local_state._RETRY", 0.01)
    real_write = st._write
    fails = [OSError(28, "No space left on device")]

    def flaky(text: str) -> None:
        if fails:
            raise fails.pop()
        real_write(text)

    monkeypatch.setattr(st, "_write", flaky)

    async def change() -> None:
        st.set_alloc("a", handle("a", 9))
        await st.flush()

    asyncio.run(change())
    assert not fails, "the failing write was attempted"
    assert on_disk(path) == {"a": 9}
