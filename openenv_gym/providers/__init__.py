"""Where servers come from: each provider returns ready endpoint URLs and cleans up after them.

A provider's job ends at "here are ready endpoints" (``urls``) and "they are gone now"
(``close()``); readiness is a protocol handshake, never a sleep.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from openenv_gym.providers.local import LocalProvider

__all__ = ["LocalProvider", "Provider", "start_servers"]


class Provider(Protocol):
    """What the facades need of a provider."""

    urls: list[str]

    def close(self) -> None:
        """Stop the servers; idempotent."""


def start_servers(
    specs: Sequence[str],
    *,
    num_servers: int = 1,
    docker_image: str | None = None,
    docker_options: Mapping[str, Any] | None = None,
) -> Provider:
    """Start ``num_servers`` servers hosting ``specs``: local processes, or containers.

    Args:
        specs: env ids / entry points the servers host.
        num_servers: how many servers.
        docker_image: run the servers in containers of this image instead of local processes.
        docker_options: more ``DockerProvider`` options (``cpus``, ``memory``, ``environment``).

    Raises:
        ServerStartError: a server did not come up; the text says why.

    """
    if docker_image is None:
        return LocalProvider(specs, num_servers=num_servers)
    from openenv_gym.providers.docker import DockerProvider

    return DockerProvider(
        specs, image=docker_image, num_servers=num_servers, **dict(docker_options or {})
    )
