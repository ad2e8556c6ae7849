"""A tiny local image for docker tests: a static busybox in an empty rootfs, via `docker import`.

No registry is reachable in CI, so tests never pull. `busybox httpd -f -p PORT` serves HTTP,
`busybox sh` runs scripts. Built once per engine; later calls find it present.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile

import pytest

IMAGE = "podium-test-busybox:1"
BUSYBOX_PATHS = ("/bin/busybox", "/usr/bin/busybox")
APPLETS = ("sh", "httpd", "sleep", "echo", "cat", "ls", "env", "id", "kill", "wget", "true")


def engine_problem() -> str | None:
    """Why docker tests cannot run here, or None when the engine answers."""
    if shutil.which("docker") is None:
        return "no docker CLI (scripts/ensure-docker.sh installs docker.io as root)"
    try:
        r = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "`docker info` timed out"
    if r.returncode != 0:
        return f"`docker info` failed: {(r.stderr or r.stdout).strip()[:300]}"
    return None


def require_docker() -> None:
    """Skip (with the reason) where no engine could be installed; fail where one must run.

    scripts/test.sh sets PODIUM_REQUIRE_DOCKER=1 once scripts/ensure-docker.sh got an engine
    answering: from then on a docker problem is a test failure, not a skip.
    """
    problem = engine_problem()
    if problem is None:
        return
    if os.environ.get("PODIUM_REQUIRE_DOCKER") == "1":
        pytest.fail(f"docker is required here but: {problem}")
    pytest.skip(f"docker tests skipped: {problem}")


def _static_busybox() -> str:
    for path in BUSYBOX_PATHS:
        try:
            with open(path, "rb") as f:
                head = f.read(4096)
        except OSError:
            continue
        if head.startswith(b"\x7fELF") and b"ld-linux" not in head:
            return path
    raise RuntimeError(
        "no static busybox found (apt-get install -y busybox-static; scripts/ensure-docker.sh does)"
    )


def rootfs_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "tmp", "www", "etc"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        tar.add(_static_busybox(), arcname="bin/busybox")
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        for name, text in (
            ("www/index.html", b"hello from podium\n"),
            ("etc/passwd", b"root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n"),
            ("etc/group", b"root:x:0:\nnogroup:x:65534:\n"),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(text), 0o644
            tar.addfile(info, io.BytesIO(text))
    return buf.getvalue()


def ensure_image(image: str = IMAGE) -> str:
    if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0:
        return image
    subprocess.run(
        ["docker", "import", "-c", "ENV PATH=/bin", "-c", 'CMD ["/bin/sh"]', "-", image],
        input=rootfs_tar(),
        capture_output=True,
        check=True,
        timeout=120,
    )
    return image


def remove_containers(label: str) -> None:
    """Force-remove every container carrying `label` (KEY or KEY=VALUE)."""
    ids = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={label}"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-fv", *ids], capture_output=True, timeout=60)


def docker_ok(why: str = "these tests") -> bool:
    """Whether containers can join a test: an engine answers (then the image is there);
    where the test command requires docker, its absence fails the test instead."""
    problem = engine_problem()
    if problem is None:
        ensure_image()
        return True
    if os.environ.get("PODIUM_REQUIRE_DOCKER") == "1":
        pytest.fail(f"docker is required here but: {problem}")
    print(f"{why} run without containers: {problem}", file=sys.stderr)
    return False
