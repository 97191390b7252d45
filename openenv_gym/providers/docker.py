"""Environment servers in Docker containers, through the Docker SDK.

Each container runs the server image's ``openenv-gym serve`` on port 8765 inside, published
on 127.0.0.1 at a host port Docker chooses (no free-port race). Containers start in parallel;
each is ready when a protocol handshake through its published port succeeds. They carry labels
naming this provider's owner, and are removed by :meth:`DockerProvider.close`, at interpreter
exit, and by :func:`prune` for anything a crashed client left behind.

Containers are confined by default: every capability dropped but the three the terminal
sandbox needs to run each episode as its own uid (:data:`SANDBOX_CAPS`), ``no-new-privileges``,
``docker-init`` as pid 1 (it reaps what episodes orphan), pids, memory and CPU limits, and the
:data:`ISOLATED_NETWORK`: a bridge with IP masquerading and inter-container traffic off. Its
published 127.0.0.1 port works (``network_mode="none"`` would leave nothing to publish; an
``--internal`` network publishes no ports), but packets to the outside are not NATed, so the
container reaches no other host, and no other container. It can still reach the Docker host's
own addresses (the bridge's gateway). Pass ``network="bridge"`` (or any network's name) for a
network with outside access.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import logging
import os
import secrets
import socket
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from openenv_gym.errors import OpenEnvError, ServerStartError
from openenv_gym.providers.docker_image import DEFAULT_IMAGE, _docker_client
from openenv_gym.ws.handshake import probe

__all__ = [
    "CONTAINER_PORT",
    "ISOLATED_NETWORK",
    "LABEL",
    "SANDBOX_CAPS",
    "DockerProvider",
    "list_containers",
    "prune",
]

logger = logging.getLogger("openenv_gym.providers")

CONTAINER_PORT = 8765
LABEL = "io.openenv-gym.server"
"""Every container we start has this label; its value names the owner (``host:pid``)."""
OWNER_LABEL = "io.openenv-gym.owner"
ISOLATED_NETWORK = "openenv-gym-isolated"
"""The default network: no NAT to the outside, no traffic between containers."""
SANDBOX_CAPS = ("CHOWN", "SETGID", "SETUID")
"""Kept of root's capabilities: to hand an episode's workdir to its uid, and to run as it."""
DEFAULT_CPUS = 2.0
DEFAULT_MEMORY = "2g"
DEFAULT_PIDS = 1024

_live: weakref.WeakSet[DockerProvider] = weakref.WeakSet()


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class DockerProvider:
    """Start ``num_servers`` server containers from ``image`` and wait until they are ready.

    Args:
        specs: env ids / ``module:attr`` entry points to host (``None``: the image's default,
            any registered gymnasium id).
        image: the server image (see ``openenv-gym docker build``).
        num_servers: containers to start, in parallel.
        cpus: CPU limit per container (``None``: none).
        memory: memory limit per container, swap included (``None``: none).
        pids: processes (and threads) per container (``None``: none).
        network: the network to join: :data:`ISOLATED_NETWORK` (created when missing), or a
            network's name, e.g. ``"bridge"`` for outside access. Not ``"none"``: the server
            needs a published port.
        cap_add: capabilities kept (all others are dropped); default :data:`SANDBOX_CAPS`.
        environment: environment variables of the containers.
        startup_timeout: seconds for all containers to become ready.
        keep: leave the containers running after ``close()`` and at exit (``docker up``).
        container_port: the port the server listens on inside (8765; OpenEnv images: 8000).
        scheme: of the URLs returned (``ws``; ``http`` for OpenEnv servers).
        ready: ``ready(url, timeout)`` raises until the server answers (default: our
            protocol handshake; for OpenEnv images, its ``/health``).
        server_args: more ``openenv-gym serve`` options after the specs (our image only).
        token: the token the servers require (our image only; default: a new random one,
            passed in the container's environment, never on its command line).

    Attributes:
        urls: ``ws://127.0.0.1:PORT`` of each ready container.
        token: the token clients present to them (``None`` for other images).

    Raises:
        ServerStartError: the engine is unreachable, the image is missing, or a container did
            not become ready; the text names it and holds its last log lines.

    """

    def __init__(
        self,
        specs: Sequence[str] | None = None,
        *,
        image: str = DEFAULT_IMAGE,
        num_servers: int = 1,
        cpus: float | None = DEFAULT_CPUS,
        memory: str | None = DEFAULT_MEMORY,
        pids: int | None = DEFAULT_PIDS,
        network: str = ISOLATED_NETWORK,
        cap_add: Sequence[str] = SANDBOX_CAPS,
        environment: Mapping[str, str] | None = None,
        startup_timeout: float = 60.0,
        keep: bool = False,
        container_port: int = CONTAINER_PORT,
        scheme: str = "ws",
        ready: Callable[[str, float], object] | None = None,
        server_args: Sequence[str] = (),
        token: str | None = None,
    ) -> None:
        if network in ("none", "host"):
            raise ValueError(
                f"network must publish the server's port: expected a bridge network's name "
                f"(default {ISOLATED_NETWORK!r}), not {network!r}"
            )
        self.image = image
        self.keep = keep
        # Our image's servers get a token of their own: the agent commands of a TerminalEnv run
        # in the same container and can reach the port, but cannot read the server's environ.
        self.token = token if token is not None or ready is not None else secrets.token_urlsafe(24)
        self.container_port = container_port
        self.scheme = scheme
        self._ready = ready or (lambda url, timeout: probe(url, timeout=timeout, token=self.token))
        self._client = _docker_client()
        self._containers: list[Any] = []
        self._starting: list[Any] = []
        _live.add(self)
        options: dict[str, Any] = {
            "command": _command(specs, server_args),
            "ports": {f"{container_port}/tcp": ("127.0.0.1", None)},
            "labels": {LABEL: "1", OWNER_LABEL: "cli" if keep else _owner()},
            "environment": {
                **(environment or {}),
                **({"OPENENV_GYM_TOKEN": self.token} if self.token else {}),
            },
            "cap_drop": ["ALL"],
            "cap_add": list(cap_add),
            "security_opt": ["no-new-privileges"],
            "init": True,
            "network": network,
        }
        if cpus is not None:
            options["nano_cpus"] = int(cpus * 1e9)
        if memory is not None:
            options["mem_limit"] = options["memswap_limit"] = memory
        if pids is not None:
            options["pids_limit"] = pids
        if network == ISOLATED_NETWORK:
            _ensure_isolated_network(self._client)
        self._options = options
        self._startup_timeout = startup_timeout
        deadline = time.monotonic() + startup_timeout
        try:
            with concurrent.futures.ThreadPoolExecutor(max(1, num_servers)) as pool:
                futures = [pool.submit(self._start, options, deadline) for _ in range(num_servers)]
                started = [future.result() for future in futures]
            self._containers = [container for container, _ in started]
            self.urls = [url for _, url in started]
        except BaseException:
            self.close(force=True)
            raise

    def _start(self, options: dict[str, Any], deadline: float) -> tuple[Any, str]:
        import docker.errors

        try:
            # create + start, not run: run() would try to pull a missing image from a registry.
            container = self._client.containers.create(self.image, **options)
            self._starting.append(container)  # removed by close() even if start() fails
            container.start()
        except docker.errors.ImageNotFound as exc:
            raise ServerStartError(
                f"image {self.image!r} not found: build it with `openenv-gym docker build`"
            ) from exc
        except docker.errors.APIError as exc:
            raise ServerStartError(f"cannot start a container of {self.image!r}: {exc}") from exc
        return container, self._wait_ready(container, deadline)

    def _wait_ready(self, container: Any, deadline: float) -> str:
        url = None
        while True:
            container.reload()
            if container.status in ("exited", "dead"):
                raise self._failure(
                    container, f"exited with code {container.attrs['State']['ExitCode']}"
                )
            bindings = (container.ports or {}).get(f"{self.container_port}/tcp") or []
            if bindings and url is None:
                url = f"{self.scheme}://127.0.0.1:{bindings[0]['HostPort']}"
            if url is not None:
                try:
                    self._ready(url, max(0.2, min(2.0, deadline - time.monotonic())))
                    return url
                except (OpenEnvError, OSError):
                    pass  # the server in the container is still starting
            if time.monotonic() >= deadline:
                raise self._failure(container, "did not answer a protocol handshake in time")
            time.sleep(0.1)  # between handshake attempts; the deadline bounds the loop

    def _failure(self, container: Any, what: str) -> ServerStartError:
        try:
            logs = container.logs(tail=20).decode(errors="replace").strip()
        except Exception as exc:  # the container may be gone already
            logs = f"(no logs: {exc})"
        return ServerStartError(
            f"container {container.short_id} of {self.image!r} {what}; its last log lines:\n"
            f"{logs or '(none)'}"
        )

    def restart(self, index: int) -> str:
        """Replace container ``index`` (e.g. after it died) with a new one; return its URL.

        Raises:
            ServerStartError: the new container did not become ready.

        """
        old = self._containers[index]
        with contextlib.suppress(Exception):  # already gone is fine
            old.remove(force=True)
        container, url = self._start(self._options, time.monotonic() + self._startup_timeout)
        self._containers[index] = container
        self.urls[index] = url
        return url

    @property
    def container_ids(self) -> list[str]:
        """Ids of the containers, in the order of ``urls``."""
        return [container.id for container in self._containers]

    def close(self, *, force: bool = False) -> None:
        """Remove the containers (unless ``keep``, or ``force``); idempotent."""
        _live.discard(self)
        containers = self._containers or self._starting
        self._containers, self._starting = [], []
        if self.keep and not force:
            return
        for container in containers:
            with contextlib.suppress(Exception):  # already gone is fine
                container.remove(force=True)

    def __enter__(self) -> DockerProvider:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _ensure_isolated_network(client: Any) -> None:
    """Create :data:`ISOLATED_NETWORK` unless it exists (racing creators are fine)."""
    import docker.errors

    if any(net.name == ISOLATED_NETWORK for net in client.networks.list(names=[ISOLATED_NETWORK])):
        return  # (the name filter also matches longer names)
    with contextlib.suppress(docker.errors.APIError):  # created meanwhile by another process
        client.networks.create(
            ISOLATED_NETWORK,
            driver="bridge",
            check_duplicate=True,
            labels={LABEL: "1"},
            options={
                "com.docker.network.bridge.enable_ip_masquerade": "false",
                "com.docker.network.bridge.enable_icc": "false",
            },
        )


def list_containers(*, all_owners: bool = True) -> list[Any]:
    """Return the containers started by openenv-gym on this engine (running or not)."""
    client = _docker_client()
    containers = client.containers.list(all=True, filters={"label": LABEL})
    if all_owners:
        return list(containers)
    return [c for c in containers if c.labels.get(OWNER_LABEL) == _owner()]


def prune(*, include_cli: bool = False) -> list[str]:
    """Remove containers whose owning process on this host is gone; return their short ids.

    Args:
        include_cli: also remove those started by ``openenv-gym docker up`` (no owner process).

    """
    removed = []
    host = socket.gethostname()
    for container in list_containers():
        owner = container.labels.get(OWNER_LABEL, "")
        owner_host, _, pid = owner.partition(":")
        if owner == "cli":
            orphan = include_cli
        elif owner_host == host and pid.isdigit():
            orphan = not _process_alive(int(pid))
        else:
            orphan = False  # another host's container: not ours to judge
        if orphan:
            with contextlib.suppress(Exception):
                container.remove(force=True)
                removed.append(container.short_id)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@atexit.register
def _close_all() -> None:
    for provider in list(_live):
        provider.close()


def _command(specs: Sequence[str] | None, server_args: Sequence[str]) -> list[str] | None:
    """Return the container command: the specs (or the image's default) and more options."""
    if not specs and not server_args:
        return None  # the image's CMD
    return [*(specs or ["--allow-any-id"]), *server_args]
