"""What each driver's `config` block takes: the one description of it.

    PROCESS, DOCKER, MOCK  (model.config_schema.ConfigSchema)
        the driver's validate_config at start · job validation before anything is stored
        · docs/job-spec.md

Pure data and pure checks (no I/O, no driver imported), so the model may read it: the
job validator knows every driver's config without repeating any of it. A new driver
adds its schema here and to SCHEMAS.
"""

from __future__ import annotations

import posixpath

from podium.drivers.docker_volumes import parse as parse_volume
from podium.model.config_schema import ConfigField, ConfigSchema

LABEL_PREFIX = "podium."  # container labels podium sets itself


def _volume(volume: str) -> str:
    parsed = parse_volume(volume)
    if isinstance(parsed, str):
        return parsed
    source = parsed[0]
    if not source.startswith("/") and posixpath.normpath(source).split("/")[0] == "..":
        return f"{source!r} escapes the alloc dir (relative sources must stay inside it)"
    return ""  # absolute sources are checked on the node, against its host volumes


def _labels(labels: dict[str, str]) -> str:
    if any(k.startswith(LABEL_PREFIX) for k in labels):
        return f'keys starting with "{LABEL_PREFIX}" are podium\'s own'
    return ""


PROCESS = ConfigSchema(
    driver="process",
    summary="Runs a command on the node in its own session (process group), with the task's "
    "env, limited by a cgroup (memory, cpu quota, pids) where the node has them. Without "
    "cgroups only memory is limited, by an rlimit that binds each process on its own: a task "
    "of N processes may use N times its memory, and cpu and pids are not limited. Stopping it "
    "signals the whole session, so nothing it started outlives it.",
    fields=(
        ConfigField(
            "command",
            "string",
            "The program to run: a path, or a name looked up in PATH. `${...}` is "
            "interpolated (e.g. `${PODIUM_PORT_HTTP}`).",
            "python3",
            required=True,
            nonempty=True,
            exec_safe=True,
        ),
        ConfigField(
            "args",
            "strings",
            "Its arguments, each one string (no shell splitting); `${...}` is interpolated.",
            ["-m", "http.server", "${PODIUM_PORT_HTTP}"],
            default="none",
            exec_safe=True,
        ),
        ConfigField(
            "work_dir",
            "string",
            "The directory it starts in, relative to the task's own dir.",
            "www",
            default="the task dir",
            nonempty=True,
            exec_safe=True,
        ),
    ),
    example={"command": "python3", "args": ["-m", "http.server", "${PODIUM_PORT_HTTP}"]},
)

DOCKER = ConfigSchema(
    driver="docker",
    summary="Runs a container through the node's Docker Engine, named "
    "`podium-<task>-<alloc id>`. The image must be on the node or given as "
    "`image_archive`. The alloc's shared dir is mounted at /alloc and the task dir at /local.",
    fields=(
        ConfigField(
            "image",
            "string",
            "The image to run (present on the node, or loaded from `image_archive`).",
            "redis:7",
            required=True,
            nonempty=True,
        ),
        ConfigField(
            "image_archive",
            "string",
            "A `docker save` tarball on the node, loaded when the engine lacks the image.",
            "/var/lib/images/redis-7.tar",
            default="none",
            nonempty=True,
            exec_safe=True,
        ),
        ConfigField(
            "command",
            "string",
            "Overrides the image's command (its first word; the rest goes in `args`).",
            "redis-server",
            default="the image's",
            nonempty=True,
            exec_safe=True,
        ),
        ConfigField(
            "args",
            "strings",
            "Arguments after the command.",
            ["--port", "${PODIUM_PORT_DB}"],
            default="none",
            exec_safe=True,
        ),
        ConfigField(
            "entrypoint",
            "strings",
            "Overrides the image's entrypoint.",
            ["/bin/sh", "-c"],
            default="the image's",
            exec_safe=True,
        ),
        ConfigField(
            "labels",
            "string_map",
            'Container labels, beside the ones podium sets (keys starting with "podium." are '
            "podium's own).",
            {"team": "web"},
            default="none",
            check=_labels,
        ),
        ConfigField(
            "ports",
            "ports",
            "Port labels of the group to publish on the node's address, each with the same "
            "number inside the container (the task reads it from `PODIUM_PORT_<LABEL>`).",
            ["db"],
            default="none",
            nonempty=True,
        ),
        ConfigField(
            "volumes",
            "strings",
            '"SOURCE:TARGET[:ro]". A relative SOURCE lives in the task dir and may not leave '
            "the alloc dir; an absolute one must lie in a host volume the node declares "
            "(PODIUM_HOST_VOLUMES).",
            ["data:/data", "/srv/shared:/shared:ro"],
            default="none",
            exec_safe=True,
            check=_volume,
        ),
        ConfigField(
            "user",
            "string",
            "The user (name or uid[:gid]) the container runs as.",
            "1000:1000",
            default="the image's",
            nonempty=True,
            exec_safe=True,
        ),
        ConfigField(
            "work_dir",
            "string",
            "The working directory inside the container.",
            "/data",
            default="the image's",
            nonempty=True,
            exec_safe=True,
        ),
        ConfigField(
            "init",
            "bool",
            "Run an init process as PID 1 that reaps zombies and forwards signals.",
            True,
            default="false",
        ),
        ConfigField(
            "network_mode",
            "choice",
            "`bridge`: its own network, ports published; `host`: the node's network (binds "
            "`PODIUM_ADDR_<LABEL>` itself); `none`: no network.",
            "host",
            default="bridge",
            choices=("bridge", "host", "none"),
        ),
    ),
    example={"image": "redis:7", "args": ["--port", "${PODIUM_PORT_DB}"], "ports": ["db"]},
)

MOCK = ConfigSchema(
    driver="mock",
    summary="Tasks that live only in the agent's memory, for tests and demos; offered only by "
    "agents started with PODIUM_ENABLE_MOCK_DRIVER=1.",
    fields=(
        ConfigField(
            "run_for",
            "number",
            "Seconds until the task exits by itself.",
            2.5,
            default="runs until stopped",
            minimum=0,
        ),
        ConfigField("exit_code", "integer", "The exit code it ends with.", 1, default="0"),
        ConfigField(
            "start_error",
            "string",
            "Fail the start with this message.",
            "no such image",
            default='""',
        ),
        ConfigField("fail_stop", "bool", "Make stopping it fail.", True, default="false"),
        ConfigField(
            "stdout", "string", "A line written to its stdout at start.", "hello", default='""'
        ),
    ),
    example={"run_for": 30, "stdout": "hello"},
)

SCHEMAS: dict[str, ConfigSchema] = {s.driver: s for s in (PROCESS, DOCKER, MOCK)}
