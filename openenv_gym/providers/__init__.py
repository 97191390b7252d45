"""Where servers come from: each provider returns ready endpoint URLs and cleans up after them.

A provider's job ends at "here are ready endpoints" (``urls``) and "they are gone now"
(``close()``); readiness is a protocol handshake, never a sleep.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from openenv_gym.providers.local import LocalProvider

__all__ = ["LocalProvider", "Provider", "embedded_server_args", "start_servers"]


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


def start_servers(
    specs: Sequence[str],
    *,
    num_servers: int = 1,
    docker_image: str | None = None,
    docker_options: Mapping[str, Any] | None = None,
    server_args: Sequence[str] = (),
) -> Provider:
    """Start ``num_servers`` servers hosting ``specs``: local processes, or containers.

    Args:
        specs: env ids / entry points the servers host.
        num_servers: how many servers.
        docker_image: run the servers in containers of this image instead of local processes.
        docker_options: more ``DockerProvider`` options (``cpus``, ``memory``, ``environment``).
        server_args: more ``openenv-gym serve`` options (e.g. :func:`embedded_server_args`).

    Raises:
        ServerStartError: a server did not come up; the text says why.

    """
    if docker_image is None:
        # A token of its own: no other local process (or web page) can use these servers.
        return LocalProvider(
            specs,
            num_servers=num_servers,
            extra_args=server_args,
            token=secrets.token_urlsafe(24),
        )
    from openenv_gym.providers.docker import DockerProvider

    return DockerProvider(
        specs,
        image=docker_image,
        num_servers=num_servers,
        server_args=server_args,
        **dict(docker_options or {}),
    )
