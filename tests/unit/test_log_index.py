"""The log time index: where `--since` starts reading, across rotations, and line times."""

from __future__ import annotations

from pathlib import Path

from podium.agent.log_index import LogIndex, read_lines
from podium.runtime.logfiles import LogLimits, RotatingFile


def test_since_reads_from_the_checkpoint_before_it_across_rotations(tmp_path: Path) -> None:
    path = tmp_path / "t.stdout"
    out = RotatingFile(str(path), LogLimits(max_file_size=20, max_files=3))
    idx = LogIndex()
    for t, text in ((100.0, b"a1\na2\n"), (101.0, b"b1\n"), (102.0, b"c1\nc2\n")):
        out.write(text * 3)  # 18, 9 and 18 bytes: two rotations, lines split across files
        idx.note(t, out.written)
    out.close()
    idx.note(103.0, out.written)  # nothing new: no checkpoint
    assert len(idx.times) == 3 and (tmp_path / "t.stdout.2").exists()

    def read(since: float) -> list[tuple[float, str]]:
        lines = read_lines(
            str(path), max_files=2, written=out.written, index=idx, since=since, now=200.0
        )
        return [(ln.time, ln.text) for ln in lines]

    everything = read(0)
    assert [x for _, x in everything] == ["a1", "a2"] * 3 + ["b1"] * 3 + ["c1", "c2"] * 3
    assert [t for t, _ in everything] == [100.0] * 6 + [101.0] * 3 + [102.0] * 6
    assert read(101.5) == [(102.0, x) for x in ["c1", "c2"] * 3]
    assert read(100.5)[0] == (101.0, "b1")
    assert read(500) == []
    grep = read_lines(
        str(path), max_files=2, written=out.written, index=idx, match=lambda s: s == "c2", now=1
    )
    assert [ln.text for ln in grep] == ["c2"] * 3
