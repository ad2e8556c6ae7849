"""A job file as the CLI reads it: bytes from a path or stdin (`-`) to a validated job.

    FILE ──read (size limit)──> bytes ──UTF-8──> text ──parse──> raw ──namespace──> raw
         ──canonicalize + validate (model.spec)──> Job ──wire()──> the body the server gets

Every step fails with an `InvalidJobFile` naming the file and where (byte offset, line,
field path), so `job validate`, `plan` and `run` refuse the same files the same way, and
nothing invalid is ever sent.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import Any

from podium.errors import Problem, ValidationError
from podium.model import spec as jobspec
from podium.model.show import show
from podium.model.types import Job
from podium.templates import jobs as templates

STDIN = "-"


class InvalidJobFile(ValidationError):
    """A job file that cannot be used, with every problem; `source` names the file."""

    def __init__(self, source: str, problems: list[Problem], *, raw: object = None) -> None:
        self.source = source
        self.raw = raw  # the job as written, when it parsed: says which driver a config is
        super().__init__(problems)

    def lines(self) -> list[str]:
        """Each problem, and where docs/job-spec.md explains the field."""
        from podium.model.spec_doc import doc_link

        return [
            f"{p} (see {doc_link(p.path, self.raw)})" if p.path else str(p) for p in self.problems
        ]


@dataclass(frozen=True)
class JobFile:
    source: str  # the path, or "stdin"
    job: Job

    def wire(self) -> dict[str, Any]:
        """The job as the server receives it: canonical, the user's fields only."""
        return jobspec.user_spec(self.job)


def load(path: str, *, namespace: str | None = None, namespace_given: bool = False) -> JobFile:
    """Read, parse and validate a job file; `namespace` applies when the file names none.

    A file that names a namespace keeps it, unless `namespace_given` (an explicit
    `-n`) names another: that contradiction is an error, not a guess.
    """
    source = "stdin" if path == STDIN else path
    text = _text(source, _read(path, source))
    name = path if path != STDIN else ("stdin.json" if text.lstrip().startswith("{") else "stdin")
    try:
        raw = jobspec.parse_job_text(text, filename=name)
    except ValidationError as e:
        # parse_job_text names the file itself ("FILE: invalid YAML at line ...").
        raise InvalidJobFile(source, e.problems) from None
    written = raw.get("namespace")
    if written is None and namespace:
        raw["namespace"] = namespace
    elif namespace_given and namespace and written != namespace:
        raise InvalidJobFile(
            source,
            [
                Problem(
                    "namespace",
                    f"the file says {show(written)} but --namespace says "
                    f"{show(namespace)}; change one of them",
                )
            ],
            raw=raw,
        )
    base = os.path.dirname(os.path.abspath(path)) if path != STDIN else os.getcwd()
    problems = _read_sources(raw, base)
    try:
        job = jobspec.validate(jobspec.canonicalize(raw))
    except ValidationError as e:
        raise InvalidJobFile(source, problems + e.problems, raw=raw) from None
    job, template_problems = templates.check(job)
    if problems or template_problems:
        raise InvalidJobFile(source, problems + template_problems, raw=raw)
    loaded = JobFile(source, job)
    size = len(json.dumps({"job": loaded.wire()}).encode())
    if size > jobspec.MAX_JOB_BYTES:
        raise InvalidJobFile(source, [Problem("", _too_large(size))])
    return loaded


def _read_sources(raw: dict[str, Any], base: str) -> list[Problem]:
    """Each template's `source` file (beside the job file) read into its `data`."""
    problems: list[Problem] = []
    for gi, group in enumerate(_items(raw.get("groups"))):
        for ti, task in enumerate(_items(group.get("tasks"))):
            for xi, template in enumerate(_items(task.get("templates"))):
                source = template.get("source")
                if not isinstance(source, str) or not source or template.get("data"):
                    continue
                where = f"groups[{gi}].tasks[{ti}].templates[{xi}].source"
                full = os.path.join(base, source)
                try:
                    with open(full, "rb") as f:
                        data = f.read(jobspec.MAX_TEMPLATE_BYTES + 1)
                except OSError as e:
                    problems.append(Problem(where, f"cannot read {full}: {e.strerror}"))
                    continue
                if len(data) > jobspec.MAX_TEMPLATE_BYTES:
                    problems.append(
                        Problem(where, f"{full} is larger than {jobspec.MAX_TEMPLATE_BYTES} bytes")
                    )
                    continue
                try:
                    template["data"] = data.decode("utf-8")
                except UnicodeDecodeError as e:
                    problems.append(Problem(where, f"{full}: not UTF-8 text at offset {e.start}"))
    return problems


def _items(value: object) -> list[dict[str, Any]]:
    return [x for x in value if isinstance(x, dict)] if isinstance(value, list) else []


def _too_large(size: int) -> str:
    return (
        f"{size:,} bytes is more than the {jobspec.MAX_JOB_BYTES // (1024 * 1024)} MiB "
        "a podium server accepts in one request"
    )


def _read(path: str, source: str) -> bytes:
    limit = jobspec.MAX_JOB_BYTES
    try:
        if path == STDIN:
            data = sys.stdin.buffer.read(limit + 1)
        else:
            with open(path, "rb") as f:
                data = f.read(limit + 1)
    except OSError as e:
        raise InvalidJobFile(source, [Problem("", f"cannot read {source}: {e.strerror}")]) from None
    if len(data) > limit:
        raise InvalidJobFile(
            source,
            [
                Problem(
                    "",
                    f"{source} is larger than {limit // (1024 * 1024)} MiB, the most a podium "
                    "server accepts in one request",
                )
            ],
        )
    return data


def _text(source: str, data: bytes) -> str:
    """UTF-8 text (a leading byte order mark dropped), or where the first bad byte is."""
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        at = e.start
        line = data.count(b"\n", 0, at) + 1
        column = at - (data.rfind(b"\n", 0, at) + 1) + 1
        raise InvalidJobFile(
            source,
            [
                Problem(
                    "",
                    f"{source}: not UTF-8 text: byte 0x{data[at]:02x} at offset {at} "
                    f"(line {line}, column {column}); save the file as UTF-8",
                )
            ],
        ) from None
