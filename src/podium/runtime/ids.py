"""Identifiers: random ids for new objects, short prefixes for people."""

from __future__ import annotations

import uuid


def new_id() -> str:
    return str(uuid.uuid4())


def short(id_: str) -> str:
    return id_[:8]
