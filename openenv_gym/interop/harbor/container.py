"""A Harbor task's environment: one confined container per episode, and its commands.

Images: :mod:`~openenv_gym.interop.harbor.image` (re-exported here).

Containers: one per episode, kept alive by ``sleep infinity`` under ``docker-init``, with
Harbor's ``/logs/{agent,verifier,artifacts}`` made. They are confined as the terminal sandbox
and the server containers are: no network (``network_mode="none"`` unless the operator names
one), every capability dropped but :data:`TASK_CAPS`, ``no-new-privileges``, a pids limit, CPU
and memory limits (the task's ``cpus``/``memory_mb``, capped by the operator's maxima), and the
rlimits of :class:`~openenv_gym.envs.sandbox.SandboxLimits` as ulimits. They carry the server
containers' labels (owner ``host:pid``), so ``openenv-gym docker prune`` removes what a killed
server left behind, and are removed by :meth:`TaskContainer.close`, by a finalizer and at exit.

Commands run as Harbor runs them, ``bash -c COMMAND`` through ``docker exec`` (``sh`` where the
image has no bash), under ``timeout(1)`` (its process group is killed at the deadline) and a
host-side deadline on the output stream; output beyond the capture limit is read and dropped.
An agent's commands (:meth:`TaskContainer.run`) go through the episode's long-lived shell
(:mod:`~openenv_gym.interop.harbor.shell`) instead, with the same semantics and fewer round
trips.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import logging
import os
import select
import shlex
import socket
import tarfile
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from openenv_gym.envs.sandbox import (
    CAPTURE_LIMIT,
    TIMEOUT_EXIT_CODE,
    CommandResult,
    SandboxLimits,
)
from openenv_gym.errors import ServerStartError
from openenv_gym.interop.harbor.image import TASK_LABEL, image_for
from openenv_gym.interop.harbor.shell import CommandShell
from openenv_gym.interop.harbor.task import HarborTask
from openenv_gym.providers.docker import LABEL, OWNER_LABEL
from openenv_gym.providers.docker_image import _docker_client

__all__ = [
    "TASK_CAPS",
    "TASK_LABEL",
    "ContainerLimits",
    "TaskContainer",
    "image_for",
    "live_task_containers",
]

logger = logging.getLogger("openenv_gym.interop.harbor")

TASK_CAPS = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID")
"""Kept of root's capabilities in a task container: what test scripts and package setups need
as root (own files, read others', switch user), none of raw network, mount or device access."""
_MAX_FRAME = 16 << 20
_HOST_GRACE = 3.0  # seconds after timeout(1)'s deadline before the host stops reading

_live: weakref.WeakSet[TaskContainer] = weakref.WeakSet()


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class ContainerLimits:
    """The operator's limits for task containers (defaults where a task says nothing).

    Args:
        cpus: CPUs of a task that sets none.
        max_cpus: the most a task may ask for (``[environment] cpus`` above it is capped).
        memory_mb: memory (swap included) of a task that sets none.
        max_memory_mb: the most a task may ask for.
        pids: processes and threads per container.
        network: ``"none"`` (default), or a Docker network the operator allows.
        sandbox: the per-process rlimits (file size, open files) of the terminal sandbox.

    Raises:
        ValueError: a limit is not positive.

    """

    def __init__(
        self,
        *,
        cpus: float = 1.0,
        max_cpus: float = 2.0,
        memory_mb: int = 2048,
        max_memory_mb: int = 4096,
        pids: int = 512,
        network: str = "none",
        sandbox: SandboxLimits | None = None,
    ) -> None:
        if min(cpus, max_cpus, memory_mb, max_memory_mb, pids) <= 0:
            raise ValueError("container limits must be positive")
        self.cpus, self.max_cpus = cpus, max_cpus
        self.memory_mb, self.max_memory_mb = memory_mb, max_memory_mb
        self.pids = pids
        self.network = network
        self.sandbox = sandbox or SandboxLimits()

    def for_task(self, task: HarborTask) -> dict[str, Any]:
        """Return the Docker SDK's create options enforcing these limits for ``task``."""
        import docker.types

        cpus = min(task.cpus or self.cpus, self.max_cpus)
        memory = min(task.memory_mb or self.memory_mb, self.max_memory_mb)
        ulimits = [
            docker.types.Ulimit(
                name="fsize", soft=self.sandbox.file_size, hard=self.sandbox.file_size
            ),
            docker.types.Ulimit(
                name="nofile", soft=self.sandbox.open_files, hard=self.sandbox.open_files
            ),
            docker.types.Ulimit(name="core", soft=0, hard=0),
        ]
        return {
            "nano_cpus": int(cpus * 1e9),
            "mem_limit": f"{memory}m",
            "memswap_limit": f"{memory}m",
            "pids_limit": self.pids,
            "ulimits": ulimits,
            "network_mode": self.network,
        }


def _tar(source: Path) -> bytes:
    """Return a tar of ``source``'s contents (files and folders; links stay links)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path in sorted(source.rglob("*")):
            info = archive.gettarinfo(str(path), arcname=path.relative_to(source).as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if info.isreg():
                with path.open("rb") as handle:
                    archive.addfile(info, handle)
            else:
                archive.addfile(info)
    return buffer.getvalue()


class TaskContainer:
    """One episode's container of a task's image (module docstring).

    Args:
        task: the task.
        image: its image (:func:`image_for`).
        limits: the operator's limits.
        environment: the container's environment (the task's resolved ``[environment] env``).
        client: a Docker SDK client (default: the local engine).

    Attributes:
        start_seconds: from create to the first command answered.

    Raises:
        ServerStartError: the container could not be created or started.

    """

    def __init__(
        self,
        task: HarborTask,
        image: str,
        *,
        limits: ContainerLimits,
        environment: Mapping[str, str] | None = None,
        client: Any = None,
    ) -> None:
        import docker.errors

        start = time.monotonic()
        self.task = task
        self._client = client or _docker_client()
        self._container: Any = None
        options = {
            # The image's own entrypoint (a server, in images FROM openenv-gym) must not run.
            "entrypoint": ["sh", "-c", "sleep infinity"],
            "command": [],
            "healthcheck": {"test": ["NONE"]},
            "labels": {LABEL: "1", OWNER_LABEL: _owner(), TASK_LABEL: task.name},
            "environment": dict(environment or {}),
            "cap_drop": ["ALL"],
            "cap_add": list(TASK_CAPS),
            "security_opt": ["no-new-privileges"],
            "init": True,
            "detach": True,
            **limits.for_task(task),
        }
        if task.workdir:
            options["working_dir"] = task.workdir
        try:
            self._container = self._client.containers.create(image, **options)
            _live.add(self)
            self._finalizer = weakref.finalize(self, _remove, self._container)
            self._container.start()
        except docker.errors.DockerException as exc:
            self.close()
            raise ServerStartError(
                f"task {task.name!r}: cannot start a container of {image!r}: {exc}"
            ) from exc
        # One round trip: Harbor's log folders, and what the image offers (bash, timeout, uid).
        probe = self.exec(
            "mkdir -p /logs/agent /logs/verifier /logs/artifacts && "
            "chmod 777 /logs/agent /logs/verifier /logs/artifacts; "
            "command -v bash; command -v timeout; command -v stat; command -v mktemp; "
            "echo uid=$(id -u)",
            shell=["sh", "-c"],
            timeout=30,
        )
        found = probe.stdout.decode(errors="replace")
        self._shell = ["bash", "-c"] if "bash" in found else ["sh", "-c"]
        self._timeout_tool = "timeout" in found
        self._driver_ok = all(
            f"/{tool}\n" in found for tool in ("bash", "timeout", "stat", "mktemp")
        )
        self._shells: dict[str | None, CommandShell] = {}
        self.default_root = "uid=0" in found.split()
        """Whether commands run as root when no user is named (the image's USER)."""
        self.start_seconds = time.monotonic() - start

    @property
    def id(self) -> str:
        """The container's id."""
        return str(self._container.id)

    def run(
        self,
        command: str,
        *,
        timeout: float,
        user: str | None = None,
        capture_limit: int = CAPTURE_LIMIT,
    ) -> CommandResult:
        """Run an agent's command through the episode's shell (:mod:`.shell`).

        As :meth:`exec` with no ``cwd`` or ``env``, a few hundred ms faster; images without
        bash and coreutils, and a shell that cannot be started, fall back to :meth:`exec`.

        Raises:
            RuntimeError: the container is closed or gone.

        """
        if self._container is None:
            raise RuntimeError(f"task {self.task.name!r}: the container is closed")
        if not self._driver_ok:
            return self.exec(command, timeout=timeout, user=user, capture_limit=capture_limit)
        shell = self._shells.get(user)
        if shell is None or shell.broken:
            try:
                shell = CommandShell(self._client.api, self._container.id, user=user)
            except Exception:  # e.g. the pids limit is full: one exec may still get through
                return self.exec(command, timeout=timeout, user=user, capture_limit=capture_limit)
            self._shells[user] = shell
        return shell.run(command, timeout=timeout, limit=capture_limit)

    def exec(
        self,
        command: str,
        *,
        timeout: float,
        user: str | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        capture_limit: int = CAPTURE_LIMIT,
        shell: list[str] | None = None,
    ) -> CommandResult:
        """Run ``bash -c command`` in the container; stop it after ``timeout`` seconds.

        A timed-out command reports exit code 124 and ``timed_out``.

        Raises:
            RuntimeError: the container is closed or gone.

        """
        if self._container is None:
            raise RuntimeError(f"task {self.task.name!r}: the container is closed")
        argv = [*(shell or self._shell), command]
        if shell is None and self._timeout_tool:
            argv = ["timeout", "-k", "1", f"{timeout:.3f}", *argv]
        api = self._client.api
        try:
            exec_id = api.exec_create(
                self._container.id,
                argv,
                stdout=True,
                stderr=True,
                user=user or "",
                workdir=cwd,
                environment=dict(env or {}),
            )["Id"]
            sock = api.exec_start(exec_id, socket=True)
        except Exception as exc:  # the container died (OOM, pids) or was removed
            raise RuntimeError(f"task {self.task.name!r}: docker exec failed: {exc}") from exc
        try:
            out, err, sizes, cut_off = _read_frames(
                sock, time.monotonic() + timeout + _HOST_GRACE, capture_limit
            )
        finally:
            with contextlib.suppress(OSError):
                sock.close()
        code = api.exec_inspect(exec_id).get("ExitCode")
        timed_out = cut_off or code == TIMEOUT_EXIT_CODE or (code == 137 and self._timeout_tool)
        return CommandResult(
            stdout=out,
            stderr=err,
            exit_code=TIMEOUT_EXIT_CODE
            if timed_out
            else int(code if code is not None else 1) & 0xFF,
            timed_out=timed_out,
            stdout_size=sizes[0],
            stderr_size=sizes[1],
        )

    def put_dir(self, source: Path, target: str, *, before: str = "") -> None:
        """Copy ``source``'s contents into ``target`` (made if missing), owned by root.

        Args:
            source: a host folder.
            target: an absolute path in the container.
            before: a shell command run as root first, in the same round trip.

        Raises:
            RuntimeError: the copy failed.

        """
        prefix = f"{before} ; " if before else ""
        self.exec(f"{prefix}mkdir -p -- {shlex.quote(target)}", user="root", timeout=30)
        if not self._container.put_archive(target, _tar(source)):
            raise RuntimeError(f"task {self.task.name!r}: cannot copy {source.name} to {target}")

    def put_archive(self, target: str, archive: bytes) -> None:
        """Unpack the tar ``archive`` into ``target`` (made if missing).

        Raises:
            RuntimeError: the copy failed.

        """
        result = self.exec(f"mkdir -p -- {shlex.quote(target)}", user="root", timeout=30)
        if result.exit_code != 0 or not self._container.put_archive(target, archive):
            raise RuntimeError(f"task {self.task.name!r}: cannot unpack an archive in {target}")

    def get_archive(self, path: str, *, limit: int) -> bytes | None:
        """Return a tar of ``path`` (at most ``limit`` bytes), or ``None`` if it does not exist.

        Raises:
            ValueError: the archive is larger than ``limit``.

        """
        import docker.errors

        try:
            stream, _ = self._container.get_archive(path)
        except docker.errors.NotFound:
            return None
        data = bytearray()
        for chunk in stream:
            data += chunk
            if len(data) > limit:
                raise ValueError(f"{path}: larger than {limit} bytes")
        return bytes(data)

    def read_files(self, folder: str, names: list[str], *, limit: int) -> dict[str, bytes]:
        """Return the regular files ``names`` of ``folder`` that exist (one download of it).

        Each is cut to ``limit`` bytes; the folder's download is bounded by its files' count.

        Raises:
            ValueError: the folder's tar is larger than ``limit`` times its wanted files + 1.

        """
        archive = self.get_archive(folder, limit=limit * (len(names) + 1) + (1 << 20))
        found: dict[str, bytes] = {}
        if archive is None:
            return found
        base = folder.rstrip("/").rsplit("/", 1)[-1]
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            for member in tar:
                name = member.name.removeprefix(base + "/")
                if name in names and member.isreg():
                    handle = tar.extractfile(member)
                    if handle is not None:
                        found[name] = handle.read(limit)
        return found

    def read_file(self, path: str, *, limit: int) -> bytes | None:
        """Return the regular file ``path``'s bytes, or ``None`` if there is none.

        Raises:
            ValueError: the file is larger than ``limit``.

        """
        archive = self.get_archive(path, limit=limit + 4096)
        if archive is None:
            return None
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            member = next(iter(tar), None)
            if member is None or not member.isreg():
                return None
            handle = tar.extractfile(member)
            return None if handle is None else handle.read(limit)

    def close(self) -> None:
        """Remove the container (its processes with it); idempotent."""
        container, self._container = self._container, None
        _live.discard(self)
        for shell in getattr(self, "_shells", {}).values():
            shell.close()
        if container is not None:
            finalizer = getattr(self, "_finalizer", None)
            if finalizer is not None:
                finalizer.detach()
            _remove(container)


def _remove(container: Any) -> None:
    with contextlib.suppress(Exception):  # already gone is fine
        container.remove(force=True)


def _read_frames(sock: Any, deadline: float, limit: int) -> tuple[bytes, bytes, list[int], bool]:
    """Read docker's multiplexed exec stream until it ends or ``deadline``.

    Returns stdout and stderr (each cut to ``limit`` bytes), their full sizes, and whether the
    deadline cut the stream off.
    """
    kept = [bytearray(), bytearray()]
    sizes = [0, 0]
    buffer = bytearray()
    read = sock.read if isinstance(sock, socket.SocketIO) else sock.recv
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return bytes(kept[0]), bytes(kept[1]), sizes, True
        ready, _, _ = select.select([sock], [], [], remaining)
        if not ready:
            continue
        chunk = read(65536)
        if not chunk:
            return bytes(kept[0]), bytes(kept[1]), sizes, False
        buffer += chunk
        while len(buffer) >= 8:
            size = int.from_bytes(buffer[4:8], "big")
            if size > _MAX_FRAME:
                raise RuntimeError(f"docker exec stream: a frame of {size} bytes")
            if len(buffer) < 8 + size:
                break
            index = 1 if buffer[0] == 2 else 0
            payload = buffer[8 : 8 + size]
            del buffer[: 8 + size]
            sizes[index] += len(payload)
            room = limit - len(kept[index])
            if room > 0:
                kept[index] += payload[:room]


def live_task_containers(*, all_owners: bool = False) -> list[Any]:
    """Return the task containers on the engine (this process's, unless ``all_owners``)."""
    client = _docker_client()
    containers = client.containers.list(all=True, filters={"label": TASK_LABEL})
    if all_owners:
        return list(containers)
    return [c for c in containers if c.labels.get(OWNER_LABEL) == _owner()]


@atexit.register
def _close_all() -> None:
    for container in list(_live):
        container.close()
