"""One error hierarchy for podium; `server.app` maps it to HTTP status codes.

PodiumError
├── ValidationError      bad input (400); carries every problem with its path
│   └── TooLarge         a request body over the limit (413), refused while it is read
├── Unauthorized         no credentials, or ones that prove nothing (401)
├── Forbidden            credentials that do not allow this (403)
├── NotFound             no such object (404)
├── Conflict             a revision guard failed or the object exists (409)
├── PlacementError       the scheduler could not place work (422 from `job run`)
├── StoreError           the store failed (503); retryable
│   ├── Compacted        a watch asked for history the store no longer keeps: re-list
│   └── StoreUnavailable the store cannot be reached in time (etcd down, no leader)
├── Unavailable          a dependency is down (503); retryable
│   └── NotLeader        a leader-only write from a server that no longer leads (fenced)
└── DriverError          a driver could not start/stop a task
    └── TaskNotFound     the task's process or container is gone
"""

from __future__ import annotations

from dataclasses import dataclass


class PodiumError(Exception):
    """Base of every error podium raises on purpose."""

    status_code = 500
    retryable = False


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input, at a path such as `groups[0].tasks[1].resources.memory`."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ValidationError(PodiumError):
    status_code = 400

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems) or "invalid input")


class TooLarge(ValidationError):
    status_code = 413


class Unauthorized(PodiumError):
    status_code = 401


class Forbidden(PodiumError):
    status_code = 403


class NotFound(PodiumError):
    status_code = 404


class Conflict(PodiumError):
    status_code = 409


class PlacementError(PodiumError):
    status_code = 422


class StoreError(PodiumError):
    status_code = 503
    retryable = True


class Compacted(StoreError):
    """The requested watch revision is older than the oldest kept change."""

    def __init__(self, requested: int, oldest: int) -> None:
        self.requested = requested
        self.oldest = oldest
        super().__init__(f"revision {requested} is compacted (oldest kept is {oldest}); re-list")


class StoreUnavailable(StoreError):
    """The store did not answer in time. For a write the outcome is unknown: re-read
    (or retry a guarded write) rather than assume it failed."""


class Unavailable(PodiumError):
    status_code = 503
    retryable = True


class NotLeader(Unavailable):
    """This server lost (or never had) the leadership its write was fenced by."""


class DriverError(PodiumError):
    pass


class TaskNotFound(DriverError):
    pass
