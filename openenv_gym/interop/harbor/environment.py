r"""Harbor's ``BaseEnvironment`` on an openenv-gym server: Harbor's own agents on our sandboxes.

Harbor (Python >= 3.12) loads custom environments by import path::

    harbor run -p tasks/hello-file --agent oracle \
        --env openenv_gym.interop.harbor.environment:OpenEnvGymEnvironment \
        --ek url=ws://127.0.0.1:8765 --ek env_id=harbor:tasks

The server hosts the same task folders (``openenv-gym serve --hosting FILE`` with
``spec = "harbor:/srv/tasks"`` and ``kwargs = { sandbox_api = true }``): ``start`` opens a
session and resets it to the task of Harbor's ``environment_name`` (the task folder's name,
or ``--ek task=NAME``), so the container is built and confined by the server exactly as for a
Gymnasium episode; ``exec``, ``upload_*`` and ``download_*`` become calls of
:meth:`HarborEnv.exec`, :meth:`~HarborEnv.upload` and :meth:`~HarborEnv.download` (tar
archives over the protocol, each at most 64 MiB); ``stop`` closes the session, which removes the
container. Harbor's trial then runs its agent and its own verifier through these calls.

Settings come from ``--ek`` (``url``, ``env_id``, ``token``, ``task``, ``call_timeout``) or
the environment (``OPENENV_GYM_URL``, ``OPENENV_GYM_ENV_ID``, ``OPENENV_GYM_TOKEN``). The
container has no network, so tasks asking for ``network_mode = "public"`` run without one.
"""

from __future__ import annotations

import asyncio
import io
import os
import tarfile
import threading
from pathlib import Path, PurePosixPath
from typing import Any

from harbor.environments.base import (  # type: ignore[import-not-found,unused-ignore]
    BaseEnvironment,
    ExecResult,
)
from harbor.environments.capabilities import (  # type: ignore[import-not-found,unused-ignore]
    EnvironmentCapabilities,
    EnvironmentResourceCapabilities,
)

from openenv_gym.client.env import RemoteEnv

__all__ = ["OpenEnvGymEnvironment"]

DEFAULT_ENV_ID = "harbor:tasks"


def _tar_path(source: Path, arcname: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        if source.is_dir():
            for path in sorted(source.rglob("*")):
                archive.add(
                    path,
                    arcname=f"{arcname}/{path.relative_to(source).as_posix()}".lstrip("/"),
                    recursive=False,
                )
        else:
            archive.add(source, arcname=arcname, recursive=False)
    return buffer.getvalue()


def _extract(archive: bytes, target: Path, *, strip: int) -> None:
    """Unpack ``archive`` into ``target``, dropping ``strip`` leading path parts; never outside."""
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar:
            parts = PurePosixPath(member.name).parts[strip:]
            if not parts or ".." in parts or member.issym() or member.islnk():
                continue
            destination = root.joinpath(*parts)
            if root not in destination.resolve().parents and destination.resolve() != root:
                continue
            if member.isdir():
                destination.mkdir(parents=True, exist_ok=True)
            elif member.isreg():
                destination.parent.mkdir(parents=True, exist_ok=True)
                handle = tar.extractfile(member)
                if handle is not None:
                    destination.write_bytes(handle.read())
                    destination.chmod(member.mode & 0o777 | 0o600)


class OpenEnvGymEnvironment(BaseEnvironment):  # type: ignore[misc]
    """A Harbor environment whose container an openenv-gym server runs (module docstring)."""

    def __init__(
        self,
        *args: Any,
        url: str | None = None,
        env_id: str | None = None,
        token: str | None = None,
        task: str | None = None,
        call_timeout: float | str = 3600.0,
        **kwargs: Any,
    ) -> None:
        self._url = url or os.environ.get("OPENENV_GYM_URL") or "ws://127.0.0.1:8765"
        self._env_id = env_id or os.environ.get("OPENENV_GYM_ENV_ID") or DEFAULT_ENV_ID
        self._token = token or os.environ.get("OPENENV_GYM_TOKEN") or None
        self._task = task
        self._call_timeout = float(call_timeout)
        self._remote: RemoteEnv[Any, Any] | None = None
        self._lock = threading.Lock()  # one request at a time on the session
        super().__init__(*args, **kwargs)

    @staticmethod
    def type() -> str:
        """Return the environment type's name."""
        return "openenv-gym"

    @property
    def capabilities(self) -> Any:
        """What this environment offers: containers without network; no mounts, no GPUs."""
        return EnvironmentCapabilities(disable_internet=True)

    @classmethod
    def resource_capabilities(cls) -> Any:
        """CPU and memory limits (the server applies the task's, capped by the operator's)."""
        return EnvironmentResourceCapabilities(
            cpu_limit=True, memory_limit=True, fractional_cpus=True
        )

    def _validate_definition(self) -> None:
        """Accept any task: the server builds and checks its environment at ``start``."""

    def _call(self, name: str, *args: Any) -> Any:
        with self._lock:
            if self._remote is None:
                raise RuntimeError(f"{self._env_id} at {self._url}: the environment is not started")
            return self._remote.call(name, *args)

    def _open(self) -> None:
        with self._lock:
            remote: RemoteEnv[Any, Any] = RemoteEnv(
                self._env_id, url=self._url, token=self._token, call_timeout=self._call_timeout
            )
            try:
                remote.reset(options={"task": self._task or self.environment_name})
            except BaseException:
                remote.close()
                raise
            self._remote = remote

    async def start(self, force_build: bool) -> None:
        """Open a session and reset it to this trial's task (the server builds its image)."""
        await asyncio.to_thread(self._open)

    async def stop(self, delete: bool) -> None:
        """Close the session: the server removes the container."""

        def close() -> None:
            with self._lock:
                remote, self._remote = self._remote, None
            if remote is not None:
                remote.close()

        await asyncio.to_thread(close)

    async def exec(
        self,
        command: str,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        timeout_sec: int | None = None,
        user: str | int | None = None,
    ) -> Any:
        """Run ``command`` in the container (``bash -c``), as Harbor's Docker environment does."""
        result = await asyncio.to_thread(
            self._call,
            "exec",
            command,
            cwd or self.task_env_config.workdir,
            self._merge_env(env),
            timeout_sec,
            None if self._resolve_user(user) is None else str(self._resolve_user(user)),
        )
        return ExecResult(
            stdout=result["stdout"], stderr=result["stderr"], return_code=result["return_code"]
        )

    async def upload_file(self, source_path: Path | str, target_path: str) -> None:
        """Copy a local file to ``target_path`` in the container."""
        target = PurePosixPath(target_path)
        archive = _tar_path(Path(source_path), target.name)
        await asyncio.to_thread(self._call, "upload", str(target.parent), archive)

    async def upload_dir(self, source_dir: Path | str, target_dir: str) -> None:
        """Copy a local folder's contents into ``target_dir`` in the container."""
        archive = _tar_path(Path(source_dir), "")
        await asyncio.to_thread(self._call, "upload", target_dir, archive)

    async def download_file(self, source_path: str, target_path: Path | str) -> None:
        """Copy the container's file ``source_path`` to ``target_path`` here."""
        archive = await asyncio.to_thread(self._call, "download", source_path)
        if archive is None:
            raise FileNotFoundError(f"{source_path}: no such file in the environment")
        target = Path(target_path)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            member = next((m for m in tar if m.isreg()), None)
            handle = None if member is None else tar.extractfile(member)
            if handle is None:
                raise FileNotFoundError(f"{source_path}: not a regular file")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(handle.read())

    async def download_dir(self, source_dir: str, target_dir: Path | str) -> None:
        """Copy the container's folder ``source_dir``'s contents into ``target_dir`` here."""
        archive = await asyncio.to_thread(self._call, "download", source_dir)
        if archive is None:
            raise FileNotFoundError(f"{source_dir}: no such folder in the environment")
        _extract(archive, Path(target_dir), strip=1)  # docker's archive names the folder first
