"""Identifiers: random ids for new objects, and the short forms people see and type.

Alloc ids are made by the scheduler (scheduler/schedule.py `_Ids`): UUID-shaped, with a
first field that counts up over a group's copies from a hashed start, so the copies of a
batch are neighbours in the store's B-tree. Their short form puts that field's low half
(the part that counts) first: "a1b2c3d4-…" shows as "c3d4a1b2", so copies of a group
differ within the first four characters they show, and any prefix of what is shown (or of
the full id) names an alloc.
"""

from __future__ import annotations

import uuid


def new_id() -> str:
    return str(uuid.uuid4())


def short(id_: str) -> str:
    """Nodes, deployments: the first 8 characters."""
    return id_[:8]


def short_alloc(alloc_id: str) -> str:
    """An alloc id as shown: the counting half of its first field first."""
    if len(alloc_id) < 8:
        return alloc_id
    return alloc_id[4:8] + alloc_id[:4]


def alloc_matches(alloc_id: str, prefix: str) -> bool:
    """Whether `prefix` names `alloc_id`: a prefix of the full id or of its short form."""
    return alloc_id.startswith(prefix) or (
        len(prefix) <= 8 and short_alloc(alloc_id).startswith(prefix)
    )
