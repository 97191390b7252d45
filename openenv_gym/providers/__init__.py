"""Where servers come from: each provider returns ready endpoint URLs and cleans up after them.

A provider's job ends at "here are ready endpoints" (``urls``) and "they are gone now"
(``close()``); readiness is a protocol handshake, never a sleep.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

from openenv_gym.providers.local import LocalProvider

__all__ = [
    "LocalProvider",
    "Provider",
    "ProviderName",
    "embedded_server_args",
    "start_servers",
]


class Provider(Protocol):
    """What the facades need of a provider: ready endpoints, replacements, and cleanup."""

    urls: list[str]
    token: str | None
    """The token its servers require (``None``: none)."""

    def restart(self, index: int) -> str:
        """Replace server ``index`` (e.g. after it died) and return its new, ready URL.

        Raises:
            ServerStartError: the replacement did not come up.
            RestartUnsupportedError: this provider cannot replace servers.

        """

    def close(self) -> None:
        """Stop the servers; idempotent."""


def embedded_server_args(env_kwargs: Mapping[str, Any]) -> list[str]:
    """Return the ``serve`` options of a server started for one client alone.

    Its operator is that client's caller, so it allows the kwargs the caller passes (by name),
    the render mode asked for, and setting any public attribute; no one else can reach it
    (it listens on loopback, or in a container, with the provider's own token).
    """
    args = ["--set-attr-allow", "*"]
    names = sorted(set(env_kwargs) - {"render_mode"})
    if names:
        args += ["--env-kwargs-allow", *names]
    if env_kwargs.get("render_mode") is not None:
        args += ["--render-modes", str(env_kwargs["render_mode"])]
    return args


ProviderName = Literal["local", "docker", "ray"]


class _Borrowed:
    """A provider the caller owns: used (urls, restart) but never closed by the facade."""

    def __init__(self, provider: Provider) -> None:
        self._provider = provider
        self.urls = provider.urls  # the same list: restarts update it in place
        self.token = provider.token
        self.allow_insecure_token = bool(getattr(provider, "allow_insecure_token", False))

    def restart(self, index: int) -> str:
        return self._provider.restart(index)

    def close(self) -> None:
        """Leave the servers to their owner."""


def start_servers(
    specs: Sequence[str],
    *,
    num_servers: int = 1,
    provider: ProviderName | Provider | None = None,
    provider_options: Mapping[str, Any] | None = None,
    docker_image: str | None = None,
    docker_options: Mapping[str, Any] | None = None,
    server_args: Sequence[str] = (),
) -> Provider:
    """Start ``num_servers`` servers hosting ``specs``: local processes, containers or actors.

    Args:
        specs: env ids / entry points the servers host.
        num_servers: how many servers.
        provider: ``"local"`` processes (the default without ``docker_image``), ``"docker"``
            containers (the default with it), ``"ray"`` actors (``RayProvider``), or a
            ``Provider`` the caller made and keeps owning (its servers are used, not closed).
        provider_options: more options of the provider's class (``RayProvider``'s
            ``num_cpus``, ``resources``, ``strategy``, ``address``; ``DockerProvider``'s).
        docker_image: run the servers in containers of this image.
        docker_options: more ``DockerProvider`` options (``cpus``, ``memory``, ``environment``).
        server_args: more ``openenv-gym serve`` options (e.g. :func:`embedded_server_args`).

    Raises:
        ServerStartError: a server did not come up; the text says why.
        ValueError: ``provider`` names no provider.
        ImportError: the provider's extra is not installed.

    """
    if provider is not None and not isinstance(provider, str):
        return _Borrowed(provider)
    name = provider or ("local" if docker_image is None else "docker")
    options = dict(provider_options or {})
    if name == "local":
        # A token of its own: no other local process (or web page) can use these servers.
        options.setdefault("token", secrets.token_urlsafe(24))
        return LocalProvider(specs, num_servers=num_servers, extra_args=server_args, **options)
    if name == "docker":
        from openenv_gym.providers.docker import DockerProvider

        options = {**dict(docker_options or {}), **options}
        if docker_image is not None:
            options["image"] = docker_image
        return DockerProvider(specs, num_servers=num_servers, server_args=server_args, **options)
    if name == "ray":
        from openenv_gym.providers.ray import RayProvider

        return RayProvider(specs, num_servers=num_servers, server_args=server_args, **options)
    raise ValueError(f"provider must be 'local', 'docker', 'ray' or a Provider, got {name!r}")
