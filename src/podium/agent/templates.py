"""A group's templates and config/secret env on this node: rendered, written, kept current.

    render(job)  ─ the pinned configs and secrets of that job version (the server gives
                   them to this node only, for its own allocs) + the services they read
                 ─ each template rendered in the agent's TemplateWorker (bounded, off the
                   event loop) ─► text, or TemplateError(destination, line, reason)
                 ─ env: `env: true` templates' KEY=value lines, and env read from configs
                   and secrets
    write(out)   ─ TASK_DIR/DEST (0644), or under TASK_DIR/secrets/ on a tmpfs (0400);
                   written whole (temp file + rename) only when the text changed
                 ─► what changed, per task, for the caller's change_mode
    cleanup()    ─ secrets/ emptied and unmounted when the alloc ends

Rendered text and env values stay in memory and in those files: never in the agent's state
file, a log line, an event or a report.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from podium.api.client import AsyncClient
from podium.model import data as datamodel
from podium.model.types import Allocation, EnvRef, Group, Job, Node, Task, Template
from podium.templates import sandbox
from podium.templates.jobs import endpoint_view, node_view
from podium.templates.worker import TemplateWorker

log = logging.getLogger(__name__)

SECRETS_DIR = "secrets"
SECRETS_SIZE = "4m"  # the tmpfs under each task's secrets/
MAX_ENV_LINES = 1000


class DataSource(Protocol):
    """What the hook needs from the rest of the agent (a seam for tests)."""

    async def pinned(self, alloc: Allocation, version: int) -> dict[str, Any]:
        """{"configs": {path: data}, "secrets": {path: data}, "versions": {ref: version}}."""
        ...

    async def endpoints(self, namespace: str, service: str) -> list[dict[str, Any]]: ...

    async def render(self, name: str, text: str, inputs: sandbox.Inputs) -> str: ...


@dataclass
class TaskOutput:
    files: dict[str, str] = field(default_factory=dict)  # destination -> text
    env: dict[str, str] = field(default_factory=dict)  # added to the task's environment


@dataclass
class Change:
    """One template of a task whose file changed."""

    template: Template
    env: bool  # the task's environment changes with it


def needs_templates(group: Group) -> bool:
    return any(t.templates or datamodel.env_refs(t) for t in group.tasks)


def parse_env(name: str, text: str) -> dict[str, str]:
    """KEY=value lines (blank lines and # comments skipped); TemplateError on anything else."""
    out: dict[str, str] = {}
    lines = text.splitlines()
    if len(lines) > MAX_ENV_LINES:
        raise sandbox.TemplateError(name, 0, f"more than {MAX_ENV_LINES} lines of env")
    for i, line in enumerate(lines, 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = stripped.partition("=")
        key = key.strip().removeprefix("export ").strip()
        if not sep or not key.isidentifier() or "\x00" in value:
            # The line itself is not shown: it may carry a secret.
            raise sandbox.TemplateError(name, i, "an env template's lines must be KEY=value")
        out[key] = value
    return out


class TemplateHook:
    """One alloc's templates; the AllocRunner calls it before tasks start and on changes."""

    def __init__(
        self,
        alloc: Allocation,
        group: Group,
        node: Node,
        source: DataSource,
        task_dirs: Mapping[str, str],
        base_env: Mapping[str, dict[str, str]],
    ) -> None:
        self.alloc = alloc
        self.group = group
        self.node = node
        self.source = source
        self.task_dirs = dict(task_dirs)
        self.base_env = {k: dict(v) for k, v in base_env.items()}
        self.versions: dict[str, int] = {}  # what was last rendered
        self._written: dict[tuple[str, str], str] = {}  # (task, destination) -> sha256
        self._env: dict[str, dict[str, str]] = {}  # task -> env last rendered

    def services(self) -> list[str]:
        return sorted(
            {s for t in self.group.tasks for x in t.templates for s in datamodel.service_reads(x)}
        )

    async def render(self, job: Job) -> dict[str, TaskOutput]:
        """Every task's files and env at `job`'s pinned versions (nothing written)."""
        data: dict[str, Any] = {"configs": {}, "secrets": {}, "versions": {}}
        if job.config_versions:
            data = await self.source.pinned(self.alloc, job.version)
        services = {
            name: [
                endpoint_view(e) for e in await self.source.endpoints(self.alloc.namespace, name)
            ]
            for name in self.services()
        }
        out: dict[str, TaskOutput] = {}
        for task in self.group.tasks:
            out[task.name] = await self._render_task(task, data, services)
        self.versions = dict(data.get("versions", {}))
        return out

    async def _render_task(
        self, task: Task, data: dict[str, Any], services: dict[str, list[dict[str, Any]]]
    ) -> TaskOutput:
        configs: dict[str, dict[str, str]] = data.get("configs", {})
        secrets: dict[str, dict[str, str]] = data.get("secrets", {})
        inputs = sandbox.Inputs(
            configs=configs,
            secrets=secrets,
            services=services,
            env=self.base_env.get(task.name, {}),
            node=node_view(self.node),
            versions=data.get("versions", {}),
        )
        out = TaskOutput()
        for template in task.templates:
            text = await self.source.render(template.destination, template.data, inputs)
            out.files[template.destination] = text
            if template.env:
                out.env.update(parse_env(template.destination, text))
        for name, value in task.env.items():
            if isinstance(value, EnvRef):
                out.env[name] = _env_value(name, value, configs, secrets)
        return out

    async def write(self, outputs: dict[str, TaskOutput]) -> dict[str, list[Change]]:
        """Write what changed; per task, the templates whose text changed since last time
        (on the first write after an agent restart: since what is on disk)."""
        changes: dict[str, list[Change]] = {}
        for task in self.group.tasks:
            output = outputs.get(task.name)
            if output is None:
                continue
            task_dir = self.task_dirs[task.name]
            for template in task.templates:
                text = output.files[template.destination]
                digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
                key = (task.name, template.destination)
                path = os.path.join(task_dir, template.destination)
                before = self._written.get(key)
                if before is None:
                    before = await asyncio.to_thread(_digest_of, path)
                if before != digest:
                    await self._write_file(task_dir, template, text)
                    if key in self._written or before is not None:
                        changes.setdefault(task.name, []).append(Change(template, template.env))
                self._written[key] = digest
            old_env = self._env.get(task.name)
            if old_env is not None and old_env != output.env:
                refs = [c for c in changes.get(task.name, []) if c.env]
                if not refs:  # env read from a config or secret changed
                    changes.setdefault(task.name, []).append(
                        Change(Template(destination="env", change_mode="restart", splay=0.0), True)
                    )
            self._env[task.name] = dict(output.env)
        return changes

    def env_of(self, task: str) -> dict[str, str]:
        return dict(self._env.get(task, {}))

    async def _write_file(self, task_dir: str, template: Template, text: str) -> None:
        secret = template.destination.split("/")[0] == SECRETS_DIR
        if secret:
            await ensure_secrets_dir(os.path.join(task_dir, SECRETS_DIR))
        perms = int(template.perms, 8) if template.perms else (0o400 if secret else 0o644)
        await asyncio.to_thread(
            _write_atomic, os.path.join(task_dir, template.destination), text, perms
        )

    async def cleanup(self) -> None:
        """The alloc ended: its secrets go (files removed, tmpfs unmounted)."""
        for task_dir in self.task_dirs.values():
            await remove_secrets_dir(os.path.join(task_dir, SECRETS_DIR))


def _env_value(
    name: str,
    ref: EnvRef,
    configs: dict[str, dict[str, str]],
    secrets: dict[str, dict[str, str]],
) -> str:
    kind, path = ("secret", ref.secret) if ref.secret else ("config", ref.config)
    found = (secrets if ref.secret else configs).get(path)
    if found is None:
        raise sandbox.TemplateError(f"env.{name}", 0, f"{kind} {path!r} is not available")
    if ref.key not in found:
        keys = ", ".join(sorted(found)) or "none"
        raise sandbox.TemplateError(
            f"env.{name}", 0, f"{kind} {path!r} has no key {ref.key!r} (it has: {keys})"
        )
    return found[ref.key]


def _digest_of(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def _write_atomic(path: str, text: str, perms: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.podium-tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, perms)
    with os.fdopen(fd, "w", encoding="utf-8", errors="surrogatepass") as f:
        f.write(text)
    os.chmod(tmp, perms)  # the umask may have taken bits away
    os.replace(tmp, path)


async def ensure_secrets_dir(path: str) -> None:
    """A tmpfs at `path` (0700) where the machine allows; else a plain 0700 directory."""
    if await asyncio.to_thread(_make_dir, path):
        return
    proc = await asyncio.create_subprocess_exec(
        "mount", "-t", "tmpfs", "-o", f"size={SECRETS_SIZE},mode=0700,nosuid,nodev,noexec",
        "tmpfs", path,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    if proc.returncode != 0:
        log.warning(
            "secrets of %s are on disk: cannot mount a tmpfs (%s)",
            path,
            err.decode(errors="replace").strip() or f"mount exited {proc.returncode}",
        )


def _make_dir(path: str) -> bool:
    """Make `path` (0700); whether a filesystem is mounted there already."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return os.path.ismount(path)


async def remove_secrets_dir(path: str) -> None:
    mounted = await asyncio.to_thread(_empty, path)
    if mounted:
        proc = await asyncio.create_subprocess_exec(
            "umount", path, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        await proc.wait()
    with contextlib.suppress(OSError):
        await asyncio.to_thread(os.rmdir, path)


async def remove_alloc_secrets(alloc_dir: str) -> None:
    """Every task's secrets/ of an alloc that ended while no runner had it (agent restart)."""
    tasks = await asyncio.to_thread(_task_dirs, alloc_dir)
    for task_dir in tasks:
        await remove_secrets_dir(os.path.join(task_dir, SECRETS_DIR))


def _task_dirs(alloc_dir: str) -> list[str]:
    try:
        return [e.path for e in os.scandir(alloc_dir) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def _empty(path: str) -> bool:
    """Remove what is in `path`; whether a filesystem is mounted there."""
    if not os.path.isdir(path):
        return False
    for entry in os.listdir(path):
        full = os.path.join(path, entry)
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(full)
    return os.path.ismount(path)


class ServerData:
    """The agent's DataSource: the server's API for data, the agent's worker for renders."""

    def __init__(self, client: AsyncClient, worker: TemplateWorker, node_id: str) -> None:
        self.client = client
        self.worker = worker
        self.node_id = node_id

    async def pinned(self, alloc: Allocation, version: int) -> dict[str, Any]:
        data: dict[str, Any] = await self.client.template_data(self.node_id, alloc.id, version)
        return data

    async def endpoints(self, namespace: str, service: str) -> list[dict[str, Any]]:
        data = await self.client.service(namespace, service, index=0, wait=0.0)
        return list(data.get("endpoints", []))

    async def render(self, name: str, text: str, inputs: sandbox.Inputs) -> str:
        return await self.worker.render(name, text, inputs)
