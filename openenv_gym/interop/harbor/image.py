"""A Harbor task's image: built offline, cached by content.

A task's ``environment/Dockerfile`` is built with the network off (``docker build --network
none``; a ``FROM`` image must already be on the engine: nothing is pulled), tagged
``openenv-gym-harbor/<task>:<hash>`` where the hash covers every file of ``environment/`` and
the ids of the images its ``FROM`` lines name, so an unchanged task is built once and a changed
base rebuilds it. A task that names a ``docker_image`` uses it if the engine has it (as Harbor
does without ``--force-build``), else builds its Dockerfile. Builds of one image by several
servers of this host wait for each other (a lock file).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from openenv_gym.errors import ImageBuildError
from openenv_gym.interop.harbor.task import HarborTask
from openenv_gym.providers.docker import LABEL
from openenv_gym.providers.docker_image import _docker_client

__all__ = ["IMAGE_REPOSITORY", "TASK_LABEL", "image_for"]

TASK_LABEL = "io.openenv-gym.harbor-task"
"""Every task image and container has this label; its value is the task's name."""
IMAGE_REPOSITORY = "openenv-gym-harbor"
_FROM = re.compile(r"^\s*FROM\s+(?:--platform=\S+\s+)?(\S+)", re.IGNORECASE | re.MULTILINE)

_digests: dict[tuple[str, tuple[tuple[str, int, int, int], ...]], bytes] = {}


def _tree_digest(root: Path) -> hashlib._Hash:
    """Hash ``root``'s files (names, modes, bytes); an unchanged tree is not read again."""
    paths = sorted(root.rglob("*"))
    stats = []
    for path in paths:
        stat = path.lstat()
        stats.append((path.as_posix(), stat.st_size, stat.st_mtime_ns, stat.st_mode))
    key = (str(root), tuple(stats))
    if key not in _digests:
        if len(_digests) > 1024:  # bound the cache: many task versions in one process
            _digests.clear()
        _digests[key] = _read_digest(root, paths).digest()
    digest = hashlib.sha256()
    digest.update(_digests[key])
    return digest


def _read_digest(root: Path, paths: list[Path]) -> hashlib._Hash:
    digest = hashlib.sha256()
    for path in paths:
        relative = path.relative_to(root).as_posix()
        if path.is_symlink():
            digest.update(f"L {relative} {os.readlink(path)}\0".encode())
        elif path.is_file():
            digest.update(f"F {relative} {path.stat().st_mode & 0o777:o}\0".encode())
            digest.update(path.read_bytes())
    return digest


def _repository_name(task: str) -> str:
    name = re.sub(r"[^a-z0-9._-]+", "-", task.lower()).strip("._-") or "task"
    return f"{IMAGE_REPOSITORY}/{name[:100]}"


@contextlib.contextmanager
def _build_lock(key: str) -> Iterator[None]:
    """Hold a host-wide lock for building image ``key`` (servers in other processes too)."""
    path = Path(tempfile.gettempdir()) / f"openenv-gym-harbor-build-{key}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def image_for(
    task: HarborTask, *, client: Any = None, progress: Callable[[str], None] | None = None
) -> str:
    """Return the image ``task``'s containers run, building it offline if needed.

    Raises:
        ImageBuildError: the build failed or outlived ``build_timeout_sec``, a ``FROM`` image
            is not on the engine, or a ``docker_image`` task's image is missing (nothing is
            pulled); the text names the task and holds the build's last lines.

    """
    import docker.errors

    client = client or _docker_client()
    if task.docker_image is not None:  # Harbor prefers a named image to its Dockerfile
        try:
            client.images.get(task.docker_image)
            return task.docker_image
        except docker.errors.ImageNotFound as exc:
            if task.dockerfile is None:
                raise ImageBuildError(
                    f"task {task.name!r}: image {task.docker_image!r} is not on this engine "
                    "(nothing is pulled: build or load it first)"
                ) from exc
    assert task.dockerfile is not None  # load_task checked
    digest = _tree_digest(task.environment_dir)
    for base in _FROM.findall(task.dockerfile.read_text(errors="replace")):
        with contextlib.suppress(docker.errors.ImageNotFound, docker.errors.APIError):
            digest.update(f"FROM {base} {client.images.get(base).id}\0".encode())
    key = digest.hexdigest()[:16]
    tag = f"{_repository_name(task.name)}:{key}"
    with _build_lock(key):
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.get(tag)
            return tag
        _build(client, task, tag, progress)
    return tag


def _build(client: Any, task: HarborTask, tag: str, progress: Callable[[str], None] | None) -> None:
    deadline = time.monotonic() + task.build_timeout
    lines: list[str] = []
    try:
        for chunk in client.api.build(
            path=str(task.environment_dir),
            tag=tag,
            network_mode="none",
            pull=False,
            rm=True,
            forcerm=True,
            decode=True,
            timeout=task.build_timeout,
            labels={LABEL: "1", TASK_LABEL: task.name},
        ):
            text = str(chunk.get("stream") or chunk.get("status") or "").rstrip()
            if text:
                lines.append(text)
                del lines[:-30]
                if progress is not None:
                    progress(text)
            if "error" in chunk:
                raise ImageBuildError(
                    f"task {task.name!r}: docker build failed: {chunk['error']}\n"
                    + "\n".join(lines[-15:])
                )
            if time.monotonic() > deadline:
                raise ImageBuildError(
                    f"task {task.name!r}: the build outlived build_timeout_sec="
                    f"{task.build_timeout:g}"
                )
    except ImageBuildError:
        raise
    except Exception as exc:  # the SDK's APIError, a read timeout
        raise ImageBuildError(f"task {task.name!r}: docker build failed: {exc}") from exc
