"""Long-lived (detached, named) Ray servers: list and remove them (``openenv-gym ray ps|down``).

``RayProvider(..., detached=True)`` (what ``openenv-gym ray up`` makes) names its actors
``NAME-INDEX`` in namespace :data:`~openenv_gym.providers.ray.NAMESPACE` and gives them Ray's
detached lifetime: they outlive the process that started them. This module finds them again
through Ray's named-actor registry and each actor's own account of its server.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from typing import Any

from openenv_gym.providers.ray import NAMESPACE, wait_dead

try:
    import ray
    from ray.util.placement_group import remove_placement_group
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "openenv_gym.providers.ray_deploy needs Ray: pip install 'openenv-gym[ray]'"
    ) from exc

__all__ = ["DeployedServer", "list_servers", "remove"]

logger = logging.getLogger("openenv_gym.providers")

_INFO_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0


@dataclasses.dataclass(frozen=True)
class DeployedServer:
    """One named server actor and what it says about its server."""

    actor_name: str
    deployment: str
    url: str | None
    node_ip: str | None
    alive: bool
    args: tuple[str, ...]
    placement_group: Any = None


def _deployment(actor_name: str) -> str:
    """Return ``NAME`` of an actor named ``NAME-INDEX`` (or ``NAME-INDEX.GENERATION``)."""
    return actor_name.rpartition("-")[0] or actor_name


def list_servers(deployment: str | None = None) -> list[DeployedServer]:
    """List the named server actors in :data:`NAMESPACE` (of one deployment, if given).

    Ray must be initialised (connected to the cluster). An actor that does not answer within
    10 s is listed with ``alive=False`` and no URL.

    Returns:
        The servers, sorted by actor name.

    """
    names = sorted(
        entry["name"]
        for entry in ray.util.list_named_actors(all_namespaces=True)
        if entry["namespace"] == NAMESPACE
        and (deployment is None or _deployment(entry["name"]) == deployment)
    )
    servers = []
    for name in names:
        info: dict[str, Any] = {}
        with contextlib.suppress(Exception):  # gone between listing and asking, or stuck
            actor = ray.get_actor(name, namespace=NAMESPACE)
            info = ray.get(actor.info.remote(), timeout=_INFO_TIMEOUT)
        servers.append(
            DeployedServer(
                actor_name=name,
                deployment=_deployment(name),
                url=info.get("url"),
                node_ip=info.get("node_ip"),
                alive=bool(info.get("alive")),
                args=tuple(info.get("args", ())),
                placement_group=info.get("placement_group"),
            )
        )
    return servers


def remove(deployment: str | None = None) -> list[str]:
    """Stop and remove the named servers (of one deployment, if given) and their groups.

    Returns:
        The names of the actors removed.

    """
    servers = list_servers(deployment)
    stops, actors = [], []
    for server in servers:
        with contextlib.suppress(Exception):
            actor = ray.get_actor(server.actor_name, namespace=NAMESPACE)
            actors.append(actor)
            stops.append(actor.stop.remote())
    with contextlib.suppress(Exception):
        ray.wait(stops, num_returns=len(stops), timeout=_STOP_TIMEOUT)
    for actor in actors:
        with contextlib.suppress(Exception):
            ray.kill(actor, no_restart=True)
    wait_dead(actors, time.monotonic() + _STOP_TIMEOUT)
    groups = {server.placement_group for server in servers} - {None}
    for group in groups:
        with contextlib.suppress(Exception):
            remove_placement_group(group)
    for name in {server.deployment for server in servers}:
        # A group whose actors all died before they could report it.
        with contextlib.suppress(Exception):
            remove_placement_group(ray.util.get_placement_group(name))
    logger.debug("removed ray servers %s", [server.actor_name for server in servers])
    return [server.actor_name for server in servers]
