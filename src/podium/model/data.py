"""Configs and secrets as data: their paths, keys and size, checked the same everywhere.

    "db/settings" --check_path--> ok | Problem      {"host": "db1"} --check_data--> problems

Rules a user meets:
- A path is 1-256 characters: segments of letters, digits, '_', '-' or '.', separated
  by '/', none empty and none starting with '.' (so no '..'); e.g. `db/settings`.
- A key is 1-128 letters, digits, '_', '-' or '.'; a value is text (UTF-8).
- One version holds at most 1,000 keys and 1 MiB of keys and values together.
- A reference names its kind: "config:db/settings", "secret:db/password" (the keys of a
  job's `config_versions`).
"""

from __future__ import annotations

import re
from typing import Literal

from podium.errors import Problem
from podium.model.show import show
from podium.model.types import EnvRef, Group, Job, Task, Template

Kind = Literal["config", "secret"]
KINDS: tuple[Kind, ...] = ("config", "secret")
MAX_BYTES = 1024 * 1024  # per version: keys and values together
MAX_KEYS = 1000
MAX_PATH = 256
MAX_HISTORY = 100  # versions kept per object; older ones are pruned on put

_SEGMENT = r"[A-Za-z0-9_-][A-Za-z0-9_.-]*"
PATH = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT})*")
KEY = re.compile(r"[A-Za-z0-9_.-]{1,128}")
PATH_RULE = (
    "a path such as db/settings: segments of letters, digits, '_', '-' or '.', separated by "
    "'/', none empty or starting with '.', at most 256 characters"
)


def is_path(value: object) -> bool:
    return isinstance(value, str) and len(value) <= MAX_PATH and PATH.fullmatch(value) is not None


def path_problem(value: object, where: str = "path") -> Problem | None:
    if is_path(value):
        return None
    return Problem(where, f"expected {PATH_RULE}, got {show(value)}")


def ref(kind: Kind, path: str) -> str:
    """The name of a reference: "config:db/settings"."""
    return f"{kind}:{path}"


def parse_ref(text: str) -> tuple[Kind, str]:
    kind, _, path = text.partition(":")
    if kind not in KINDS or not is_path(path):
        raise ValueError(f"expected config:PATH or secret:PATH, got {text!r}")
    return kind, path


def check_read(text: str) -> None:
    """A template's read: config:PATH, secret:PATH or service:NAME (ValueError otherwise)."""
    kind, _, name = text.partition(":")
    if kind == "service":
        if not re.fullmatch(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", name):
            raise ValueError(f"expected service:NAME, got {text!r}")
        return
    parse_ref(text)


def check_data(data: object, where: str = "data") -> list[Problem]:
    """Every problem with one version's map of keys to text (empty list: fine)."""
    if not isinstance(data, dict):
        return [Problem(where, f"expected a mapping of keys to text, got a {type(data).__name__}")]
    if not data:
        return [Problem(where, "expected at least one key")]
    if len(data) > MAX_KEYS:
        return [Problem(where, f"expected at most {MAX_KEYS} keys, got {len(data)}")]
    problems: list[Problem] = []
    size = 0
    for key, value in data.items():
        if not (isinstance(key, str) and KEY.fullmatch(key)):
            problems.append(
                Problem(
                    where,
                    f"expected keys of 1-128 letters, digits, '_', '-' or '.', got {show(key)}",
                )
            )
            continue
        if not isinstance(value, str):
            # Named by type only: the value may be a secret.
            problems.append(
                Problem(f"{where}.{key}", f"expected text, got a {type(value).__name__} value")
            )
            continue
        try:
            size += len(key) + len(value.encode("utf-8"))
        except UnicodeEncodeError:
            problems.append(
                Problem(f"{where}.{key}", "contains invalid unicode (a lone surrogate)")
            )
    if size > MAX_BYTES:
        problems.append(
            Problem(
                where,
                f"is {size:,} bytes; a config or secret holds at most {MAX_BYTES:,} bytes "
                "(1 MiB) of keys and values",
            )
        )
    return problems


# ------------------------------------------------------------ what a job reads


def env_refs(task: Task) -> dict[str, str]:
    """The task's env variables that read a config or secret: name -> "secret:PATH"."""
    out: dict[str, str] = {}
    for name, value in task.env.items():
        if isinstance(value, EnvRef):
            out[name] = ref("secret", value.secret) if value.secret else ref("config", value.config)
    return out


def is_data_ref(text: str) -> bool:
    """A read of a config or a secret (a template's reads also name services: service:NAME)."""
    return text.startswith(("config:", "secret:"))


def service_reads(template: Template) -> list[str]:
    return [r.partition(":")[2] for r in template.reads if r.startswith("service:")]


def task_refs(task: Task) -> set[str]:
    reads = {r for t in task.templates for r in t.reads if is_data_ref(r)}
    return reads | set(env_refs(task).values())


def job_refs(job: Job) -> set[str]:
    """Every config and secret the job's tasks read (templates and env)."""
    return {r for g in job.groups for t in g.tasks for r in task_refs(t)}


def rolling_refs(job_type: str, group: Group) -> list[str]:
    """What the group's copies are replaced for when it changes (a deployment, for a
    service): reads of `rolling` templates, and env reads in a service job."""
    out: set[str] = set()
    for task in group.tasks:
        for template in task.templates:
            if template.change_mode == "rolling":
                out.update(r for r in template.reads if is_data_ref(r))
        if job_type == "service":
            out.update(env_refs(task).values())
    return sorted(out)
