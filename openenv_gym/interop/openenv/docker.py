"""Start an OpenEnv image's servers in Docker containers, ready when ``/health`` answers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from openenv_gym.interop.openenv.http import health_check

if TYPE_CHECKING:  # the provider module is imported when a container is started
    from openenv_gym.providers.docker import DockerProvider

__all__ = ["OPENENV_IMAGE_PORT", "start_openenv_containers"]

OPENENV_IMAGE_PORT = 8000
"""The port OpenEnv images' servers listen on inside the container."""


def start_openenv_containers(
    image: str,
    *,
    port: int = OPENENV_IMAGE_PORT,
    num_servers: int = 1,
    command: Sequence[str] | None = None,
) -> DockerProvider:
    """Start ``num_servers`` containers of an OpenEnv image; return once each is healthy.

    Args:
        image: an OpenEnv environment image (its server listens on ``port`` inside).
        port: the container's server port.
        num_servers: how many containers.
        command: arguments replacing the image's default command (its entry point's), if any.

    Returns:
        The provider owning the containers: ``urls`` are their ``http://`` addresses,
        ``close()`` removes them.

    Raises:
        ServerStartError: a container did not become healthy; the text has its logs.

    """
    from openenv_gym.providers.docker import DockerProvider

    return DockerProvider(
        command,
        image=image,
        num_servers=num_servers,
        container_port=port,
        scheme="http",
        ready=health_check,
    )
