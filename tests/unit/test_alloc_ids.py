"""Alloc ids as people see them: copies of a group differ in the first four characters
shown, a short prefix names one alloc, and the stored ids keep their B-tree locality."""

from __future__ import annotations

from podium.runtime.ids import alloc_matches, short_alloc
from podium.scheduler import ClusterSnapshot, reconcile, schedule
from support.builders import make_job, make_node


def placed_ids(count: int, eval_id: str = "e1") -> list[str]:
    job = make_job(count=count)
    nodes = [make_node(f"n{i}", cpu=100_000, memory=100_000) for i in range(4)]
    rec = reconcile(job, [], {n.id: n for n in nodes}, now=0.0)
    plan = schedule(ClusterSnapshot.build(nodes, []), job, rec, eval_id=eval_id, now=0.0)
    return [a.id for a in plan.placements]


def test_copies_of_a_group_differ_in_the_first_four_characters_shown() -> None:
    ids = placed_ids(500)
    assert len(ids) == 500
    assert len({short_alloc(i)[:4] for i in ids}) == 500


def test_a_four_character_prefix_of_the_short_form_names_one_copy() -> None:
    ids = placed_ids(50)
    for alloc_id in ids:
        prefix = short_alloc(alloc_id)[:4]
        assert [i for i in ids if alloc_matches(i, prefix)] == [alloc_id]
        assert alloc_matches(alloc_id, alloc_id)  # the full id
        assert alloc_matches(alloc_id, alloc_id[:13])  # a prefix of the full id


def test_stored_ids_stay_neighbours() -> None:
    """The full ids of a batch still share their leading characters (B-tree locality)."""
    ids = sorted(placed_ids(200))
    assert len({i[:4] for i in ids}) <= 2  # a 32-bit counter may carry once
