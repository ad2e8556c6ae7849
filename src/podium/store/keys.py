"""Where each kind lives in the store. The only module that spells key paths."""

from __future__ import annotations

JOBS = "/jobs/"
JOB_VERSIONS = "/jobversions/"
ALLOCS = "/allocs/"
NODES = "/nodes/"
EVENTS = "/events/"
META = "/meta/"


def job(namespace: str, name: str) -> str:
    return f"{JOBS}{namespace}/{name}"


def job_version(namespace: str, name: str, version: int) -> str:
    return f"{JOB_VERSIONS}{namespace}/{name}/{version:010d}"


def job_versions(namespace: str, name: str) -> str:
    return f"{JOB_VERSIONS}{namespace}/{name}/"


def alloc(alloc_id: str) -> str:
    return f"{ALLOCS}{alloc_id}"


def node(node_id: str) -> str:
    return f"{NODES}{node_id}"


def event(seq: int) -> str:
    return f"{EVENTS}{seq:020d}"
