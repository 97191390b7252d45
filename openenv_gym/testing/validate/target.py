"""What ``openenv-gym validate TARGET`` points at, opened for the run and closed after it.

TARGET is one of:

- a hosted spec (``CartPole-v1``, ``mypkg.envs:MyEnv``): started in a local server on loopback
  for the run, and built in-process too, so every contract check is a diff;
- a URL of this project's protocol (``ws://``, ``wss://``): the spec is ``--env-id``, else the
  server's first hosted spec; it is also built in-process if it resolves here;
- an OpenEnv server (``openenv+ws://``, ``openenv+wss://``): driven through
  :class:`~openenv_gym.interop.openenv.env.OpenEnvEnv`; protocol checks are OpenEnv's;
- a Docker image (``docker:IMAGE``): started with
  :class:`~openenv_gym.providers.docker.DockerProvider` (its own token) for the run.

Whatever cannot be reached raises :class:`Unreachable` (exit status 2).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any, Literal

import gymnasium

from openenv_gym.errors import OpenEnvError

__all__ = ["OpenedTarget", "Unreachable", "local_factory", "open_target", "target_kind"]

TargetKind = Literal["spec", "url", "openenv", "docker"]
DEFAULT_ENV_ID = "CartPole-v1"
"""What a server that hosts any gymnasium id is validated on, unless ``--env-id`` says."""


class Unreachable(Exception):
    """The target cannot be reached or started; the message says why."""


@dataclasses.dataclass
class OpenedTarget:
    """A target ready to be validated.

    Attributes:
        kind: what TARGET named.
        url: the server's URL.
        env_id: the spec validated.
        token: the token clients present, if the server requires one.
        pid: the server's process id when it runs on this machine (memory figures).
        hosted: the specs the server says it hosts.
        local: builds the same env in-process (``kwargs`` as a client would pass them), or
            ``None`` when it does not resolve here.

    """

    kind: TargetKind
    url: str
    env_id: str
    token: str | None = None
    pid: int | None = None
    hosted: list[str] = dataclasses.field(default_factory=list)
    local: Callable[..., gymnasium.Env[Any, Any]] | None = None

    def remote(self, **kwargs: Any) -> gymnasium.Env[Any, Any]:
        """Open a new session on the target: a single env (``kwargs`` as for ``RemoteEnv``)."""
        if self.kind == "openenv":
            from openenv_gym.interop.openenv.env import OpenEnvEnv

            return OpenEnvEnv(self.url, call_timeout=30)
        from openenv_gym.client.env import RemoteEnv

        return RemoteEnv(self.env_id, url=self.url, token=self.token, call_timeout=30, **kwargs)


def target_kind(target: str) -> TargetKind:
    """Tell what ``target`` names, from its form alone."""
    if target.startswith(("openenv+ws://", "openenv+wss://")):
        return "openenv"
    if target.startswith(("ws://", "wss://")):
        return "url"
    if target.startswith("docker:"):
        return "docker"
    return "spec"


def local_factory(env_id: str) -> Callable[..., gymnasium.Env[Any, Any]] | None:
    """Return a function building ``env_id`` in-process as a server would, or ``None``.

    The env is built with ``gymnasium.make`` and its time limit, but without the passive
    checker: the checks must see what the env itself returns, not the checker's complaints.
    """
    from openenv_gym.server.catalog import EnvCatalog

    try:
        hosted = EnvCatalog([env_id]).hosted(env_id)
    except (ValueError, LookupError, ImportError, OpenEnvError):
        return None
    spec = hosted.spec

    def make(**kwargs: Any) -> gymnasium.Env[Any, Any]:
        return gymnasium.make(dataclasses.replace(spec), disable_env_checker=True, **kwargs)

    return make


def _hello(url: str, token: str | None) -> list[str]:
    from openenv_gym.client.connection import Connection

    try:
        connection = Connection(url, token=token, connect_timeout=15, call_timeout=15)
    except (OpenEnvError, OSError) as exc:
        raise Unreachable(f"cannot reach {url}: {exc}") from exc
    try:
        return list(connection.hello.specs)
    finally:
        connection.close()


def _pick(hosted: list[str], env_id: str | None) -> str:
    """Return ``env_id``, else the server's first hosted spec, else ``CartPole-v1``.

    A server that hosts several specs is validated on its first unless ``--env-id`` names
    another; one that hosts any gymnasium id (``--allow-any-id``) on CartPole.
    """
    if env_id is not None:
        return env_id
    return hosted[0] if hosted else DEFAULT_ENV_ID


@contextlib.contextmanager
def _spec_target(spec: str) -> Iterator[OpenedTarget]:
    from openenv_gym.providers.local import LocalProvider

    try:
        provider = LocalProvider([spec], startup_timeout=60)
    except (OpenEnvError, OSError) as exc:
        raise Unreachable(f"cannot host {spec!r} in a local server: {exc}") from exc
    with provider:
        yield OpenedTarget(
            "spec",
            provider.urls[0],
            spec,
            pid=provider.pids[0],
            hosted=[spec],
            local=local_factory(spec),
        )


@contextlib.contextmanager
def _docker_target(image: str, env_id: str | None) -> Iterator[OpenedTarget]:
    try:
        from openenv_gym.providers.docker import DockerProvider

        provider = DockerProvider([env_id] if env_id else None, image=image, startup_timeout=90)
    except Exception as exc:  # no engine, no image, no SDK: all mean "cannot reach"
        raise Unreachable(f"cannot start image {image!r}: {type(exc).__name__}: {exc}") from exc
    try:
        url, token = provider.urls[0], provider.token
        hosted = _hello(url, token)
        chosen = _pick(hosted, env_id)
        yield OpenedTarget(
            "docker", url, chosen, token=token, hosted=hosted, local=local_factory(chosen)
        )
    finally:
        provider.close()


@contextlib.contextmanager
def _openenv_target(url: str) -> Iterator[OpenedTarget]:
    from openenv_gym.interop.openenv.env import OpenEnvEnv

    try:
        OpenEnvEnv(url, connect_timeout=15).close()
    except (OpenEnvError, OSError, ValueError) as exc:
        raise Unreachable(f"cannot reach the OpenEnv server {url}: {exc}") from exc
    yield OpenedTarget("openenv", url, url)


@contextlib.contextmanager
def open_target(
    target: str, *, env_id: str | None = None, token: str | None = None
) -> Iterator[OpenedTarget]:
    """Open ``target`` for a validation run; stop what was started for it afterwards.

    Args:
        target: a hosted spec, a ``ws(s)://`` or ``openenv+ws(s)://`` URL, or ``docker:IMAGE``.
        env_id: the spec to validate on a server that hosts several.
        token: the token a URL's server requires (default: ``$OPENENV_GYM_TOKEN``).

    Raises:
        Unreachable: the server does not answer, or the image or spec cannot be started.

    """
    kind = target_kind(target)
    if kind == "spec":
        with _spec_target(target) as opened:
            yield opened
    elif kind == "docker":
        with _docker_target(target.removeprefix("docker:"), env_id) as opened:
            yield opened
    elif kind == "openenv":
        with _openenv_target(target) as opened:
            yield opened
    else:
        hosted = _hello(target, token)
        chosen = _pick(hosted, env_id)
        yield OpenedTarget(
            "url", target, chosen, token=token, hosted=hosted, local=local_factory(chosen)
        )
