"""Build the server image, online or with no registry at all (``--offline``).

Three steps, each usable alone:

1. :func:`build_wheelhouse` - on the host, wheels of openenv-gym, its dependencies and any
   environment packages, for the image's Python (containers do not share the host's package
   index configuration, and the image build runs with the network off);
2. :func:`build_offline_base` - a Debian base image from ``debootstrap`` + ``docker import``,
   for machines that cannot pull ``python:3.11-slim`` from a registry;
3. :func:`build_server_image` - ``docker build`` of ``Dockerfile`` with the network off.

The Docker SDK (``pip install openenv-gym[docker]``) is imported only when needed.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from openenv_gym.errors import ImageBuildError

__all__ = [
    "DEFAULT_IMAGE",
    "OFFLINE_BASE_IMAGE",
    "build_image",
    "build_offline_base",
    "build_server_image",
    "build_wheelhouse",
]

DEFAULT_IMAGE = "openenv-gym:latest"
OFFLINE_BASE_IMAGE = "openenv-gym-base:bookworm"
IMAGE_PYTHON = "3.11"
"""Python of both bases (python:3.11-slim and Debian bookworm's python3)."""

DOCKERFILE = Path(__file__).resolve().parent.parent / "image" / "Dockerfile"
"""The image's Dockerfile (``server/Dockerfile`` links to it), shipped in the wheel."""
PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent

Progress = Callable[[str], None]


def _run(args: Sequence[str], progress: Progress, what: str) -> None:
    progress(f"$ {' '.join(args)}")
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
        raise ImageBuildError(f"{what} failed (exit {result.returncode}):\n{tail}")


def _platform_args() -> list[str]:
    """``--platform`` options for every manylinux tag bookworm's glibc (2.36) can run."""
    machine = platform.machine().lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(36, 16, -1)]
    tags += [f"manylinux2014_{machine}", f"linux_{machine}"]
    return [arg for tag in tags for arg in ("--platform", tag)]


def build_wheelhouse(
    dest: Path,
    *,
    requirements: Path | None = None,
    progress: Progress = print,
) -> Path:
    """Put wheels of openenv-gym and everything it (and ``requirements``) needs in ``dest``.

    Wheels are chosen for the image's Python and Linux, whatever the host runs. Also writes
    ``dest/requirements-extra.txt`` (the environment packages to install in the image).

    Raises:
        ImageBuildError: no source tree to build openenv-gym from, or pip failed (e.g. a
            requirement with no wheel for the image's platform).

    """
    if not (PROJECT_ROOT / "setup.cfg").exists():
        raise ImageBuildError(
            f"building the image needs openenv-gym's source tree; none at {PROJECT_ROOT}"
        )
    dest.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _run(
        [*pip, "wheel", "--quiet", "--no-deps", "--wheel-dir", str(dest), str(PROJECT_ROOT)],
        progress,
        "building the openenv-gym wheel",
    )
    wheels = sorted(dest.glob("openenv_gym-*.whl"))
    extra = requirements.read_text() if requirements is not None else ""
    (dest / "requirements-extra.txt").write_text(extra)
    target = [
        "--only-binary=:all:",
        "--python-version",
        IMAGE_PYTHON,
        "--implementation",
        "cp",
        *_platform_args(),
        "--dest",
        str(dest),
    ]
    _run(
        [
            *pip,
            "download",
            "--quiet",
            *target,
            # The image serves MCP too (`openenv-gym mcp ENV`, stdio) and GET /metrics.
            f"{wheels[-1]}[mcp,metrics]",
            "-r",
            str(dest / "requirements-extra.txt"),
        ],
        progress,
        "downloading wheels of the dependencies",
    )
    return dest


def build_offline_base(
    tag: str = OFFLINE_BASE_IMAGE,
    *,
    mirror: str = "http://deb.debian.org/debian",
    progress: Progress = print,
    client: Any = None,
) -> str:
    """Build a Debian bookworm base image with Python, with no registry: debootstrap + import.

    Needs root and ``debootstrap`` (Debian package); takes about a minute.

    Raises:
        ImageBuildError: debootstrap is missing or fails, or the import fails.

    """
    if shutil.which("debootstrap") is None:
        raise ImageBuildError("debootstrap not found: apt-get install -y debootstrap")
    client = client or _docker_client()
    with tempfile.TemporaryDirectory(prefix="openenv-gym-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-venv",
                "bookworm",
                str(rootfs),
                mirror,
            ],
            progress,
            "debootstrap",
        )
        tarball = Path(tmp) / "rootfs.tar"
        _run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], progress, "packing the rootfs")
        repository, _, version = tag.partition(":")
        progress(f"importing {tarball} as {tag}")
        client.api.import_image(src=str(tarball), repository=repository, tag=version or "latest")
    return tag


def build_server_image(
    wheelhouse: Path,
    *,
    tag: str = DEFAULT_IMAGE,
    base_image: str = "python:3.11-slim",
    progress: Progress = print,
    client: Any = None,
) -> str:
    """``docker build`` the server image from ``wheelhouse``, with the network off.

    Raises:
        ImageBuildError: the build failed; the text holds the build's last lines.

    """
    client = client or _docker_client()
    with tempfile.TemporaryDirectory(prefix="openenv-gym-build-") as context:
        shutil.copy(DOCKERFILE, Path(context) / "Dockerfile")
        shutil.copytree(wheelhouse, Path(context) / "wheelhouse")
        lines: list[str] = []
        for chunk in client.api.build(
            path=context,
            tag=tag,
            buildargs={"BASE_IMAGE": base_image},
            network_mode="none",
            rm=True,
            forcerm=True,
            decode=True,
        ):
            text = str(chunk.get("stream") or chunk.get("status") or "").rstrip()
            if text:
                lines.append(text)
                progress(text)
            if "error" in chunk:
                tail = "\n".join(lines[-15:])
                raise ImageBuildError(f"docker build of {tag} failed: {chunk['error']}\n{tail}")
    return tag


def build_image(
    *,
    tag: str = DEFAULT_IMAGE,
    offline: bool = False,
    base_image: str | None = None,
    requirements: Path | None = None,
    rebuild_base: bool = False,
    progress: Progress = print,
) -> str:
    """Build the server image: wheelhouse, then (``offline``) the local base, then the image.

    With ``offline`` and no ``base_image``, the debootstrap base is built once and reused.

    Raises:
        ImageBuildError: a step failed.

    """
    client = _docker_client()
    if base_image is None:
        base_image = OFFLINE_BASE_IMAGE if offline else "python:3.11-slim"
        if offline and (rebuild_base or not _image_exists(client, base_image)):
            build_offline_base(base_image, progress=progress, client=client)
    with _temporary_dir() as wheelhouse:
        build_wheelhouse(wheelhouse, requirements=requirements, progress=progress)
        return build_server_image(
            wheelhouse, tag=tag, base_image=base_image, progress=progress, client=client
        )


@contextlib.contextmanager
def _temporary_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="openenv-gym-wheels-") as path:
        yield Path(path)


def _image_exists(client: Any, tag: str) -> bool:
    import docker.errors

    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def _docker_client() -> Any:
    """Return a Docker SDK client for the local engine.

    Raises:
        ImageBuildError: the SDK is not installed or no engine answers.

    """
    try:
        import docker
    except ImportError as exc:
        raise ImageBuildError(
            "the Docker SDK is missing: pip install 'openenv-gym[docker]'"
        ) from exc
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise ImageBuildError(f"no Docker engine answers at {host}: {exc}") from exc
    return client
