"""Environment servers as Ray actors, placed across a cluster's nodes (extra ``ray``).

Each server is one actor (class ``OpenEnvGymServer``) that runs ``openenv-gym serve ... --port 0
--announce`` as its own subprocess and reports the URL it announced. The actors sit in one
placement group, a bundle per server (``num_cpus`` and ``resources`` each), spread over the
nodes (``SPREAD``, the default) or packed (``PACK``). A server is ready when the provider
completes a protocol handshake with it, before a deadline.

Addresses and the token: a server on the driver's own machine binds ``127.0.0.1`` (the token
travels over loopback only, and nothing else on the network can reach it); a server on another
machine binds the address Ray reports for its node, the address the driver already reaches the
cluster by, and :attr:`RayProvider.allow_insecure_token` says that the token then crosses the
cluster's network in clear text, as Ray's own traffic does. The token is always on: a new one
per provider unless given, handed to each actor as a task argument and to its server through an
inherited pipe (never argv, environment or a file).

Cleanup: :meth:`RayProvider.close` stops the servers, kills the actors (returning once Ray
reports them dead) and removes the placement group; the last provider on a Ray connection this
module made closes it (shutting down a local Ray it started). It also runs at interpreter exit.
If the driver dies, Ray removes its actors and placement groups, and a server dies with its actor
(``PR_SET_PDEATHSIG``). Detached providers (``detached=True``, ``openenv-gym ray up``) are the
exception: named actors in namespace :data:`NAMESPACE` that outlive the driver until
``close()`` or ``openenv_gym.providers.ray_deploy.remove``.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import secrets
import socket
import sys
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from openenv_gym.errors import OpenEnvError, ServerStartError
from openenv_gym.providers.local import _Process
from openenv_gym.ws.handshake import probe, token_allowed

try:
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "openenv_gym.providers.ray needs Ray: pip install 'openenv-gym[ray]'"
    ) from exc

__all__ = ["NAMESPACE", "Bind", "RayProvider", "Strategy"]

logger = logging.getLogger("openenv_gym.providers")

Strategy = Literal["SPREAD", "PACK", "STRICT_SPREAD", "STRICT_PACK"]
Bind = Literal["auto", "node"]
"""Where a server listens: ``"auto"`` (loopback on the driver's machine, else the node's
address) or ``"node"`` (always the node's address, for clients on other machines)."""

NAMESPACE = "openenv-gym"
"""The Ray namespace of detached (long-lived, named) servers."""

_STOP_TIMEOUT = 10.0
_live: weakref.WeakSet[RayProvider] = weakref.WeakSet()


def _machine() -> tuple[str, str]:
    """Return what tells this machine apart: its kernel's boot id and its host name."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as file:
            boot_id = file.read().strip()
    except OSError:
        boot_id = ""
    return boot_id, socket.gethostname()


def _running_cluster() -> str | None:
    """Return the cluster a bare ``ray.init()`` would join, if one is up; else ``None``.

    That is ``$RAY_ADDRESS``, else the latest cluster started on this machine (``ray start``,
    ``ray.cluster_utils.Cluster``). Ray's own resolver is private; the Ray tests that start a
    cluster without ``ray.init`` fail if it changes. A recorded address whose GCS no longer
    accepts connections (a crashed cluster) counts as none.
    """
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    try:
        from ray._private.services import canonicalize_bootstrap_address

        address: str | None = canonicalize_bootstrap_address(None)  # type: ignore[arg-type]
    except Exception:  # a Ray without that helper, or a malformed record: start our own
        return None
    if address is None:
        return None
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2.0):
            return address
    except (OSError, ValueError):
        return None


def wait_dead(actors: Sequence[Any], deadline: float) -> None:
    """Return once Ray reports every one of ``actors`` dead, or at ``deadline``.

    ``ray.kill`` only asks; whoever counts live actors right after ``close()`` (the state API)
    must find none. A call to a dead actor fails with ``RayActorError``: that is the signal.
    """
    for actor in actors:
        while time.monotonic() < deadline:
            try:
                ray.get(actor.info.remote(), timeout=max(0.1, deadline - time.monotonic()))
            except ray.exceptions.RayActorError:
                break  # dead (killed, or its worker or node gone)
            except ray.exceptions.GetTimeoutError:
                return
            time.sleep(0.05)  # the kill is on its way: ask again


class _Session:
    """The Ray connection this module made: shared by providers, closed by the last one."""

    def __init__(self) -> None:
        self._job: str | None = None
        self._users = 0

    def start(self) -> bool:
        self._job, self._users = ray.get_runtime_context().get_job_id(), 1
        return True

    def join(self) -> bool:
        if self._job is None or self._job != ray.get_runtime_context().get_job_id():
            return False  # the caller's own connection: theirs to close
        self._users += 1
        return True

    def leave(self) -> None:
        self._users -= 1
        if self._users <= 0:
            self._job, self._users = None, 0
            ray.shutdown()


_session = _Session()


class OpenEnvGymServer:
    """One server process on a Ray node, from launch to ready URL.

    The actor's class name is what the dashboard and ``ray.util.state.list_actors`` show.
    """

    def __init__(self) -> None:
        self._process: _Process | None = None
        self._info: dict[str, Any] = {}

    def start(
        self, args: list[str], token: str, driver: tuple[str, str], timeout: float, bind: Bind
    ) -> dict[str, Any]:
        """Start the server, wait until it answers a handshake, and say where it is."""
        node_ip: str = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
        host = "127.0.0.1" if bind == "auto" and driver == _machine() else node_ip
        command = [sys.executable, "-m", "openenv_gym", "serve", *args]
        command += ["--host", host, "--port", "0", "--announce"]
        self._process = _Process(command, token)
        url = self._process.wait_ready(
            time.monotonic() + timeout, allow_insecure_token=not token_allowed(f"ws://{host}")
        )
        self._info = {
            "url": url,
            "node_id": ray.get_runtime_context().get_node_id(),
            "node_ip": node_ip,
            "pid": self._process.popen.pid,
            "args": list(args),
            # Public and picklable: lets ``ray down`` remove the group of detached servers.
            "placement_group": ray.util.get_current_placement_group(),
        }
        return self.info()

    def info(self) -> dict[str, Any]:
        """Say where the server is (``url``, ``node_id``, ``node_ip``, ``pid``, ``args``)."""
        alive = self._process is not None and self._process.popen.poll() is None
        return {**self._info, "alive": alive}

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL)."""
        if self._process is not None:
            self._process.stop()
            self._process = None


_RemoteServer = ray.remote(max_restarts=0, max_task_retries=0)(OpenEnvGymServer)


class RayProvider:
    """Start ``num_servers`` servers hosting ``specs`` as Ray actors, spread over the nodes.

    Args:
        specs: env ids / ``module:attr`` entry points the servers host.
        num_servers: servers (actors) to start, in parallel.
        num_cpus: CPUs each server reserves.
        resources: custom resources each server reserves (e.g. ``{"env_node": 1}``).
        strategy: how the placement group places the servers: ``"SPREAD"`` (over as many
            nodes as possible), ``"PACK"`` (on as few as possible), or a ``STRICT_`` one.
        address: the cluster to connect to (``"auto"``, ``"ray://head:10001"``, ...) when Ray
            is not initialised yet. ``None``: the one a bare ``ray.init()`` joins
            (``$RAY_ADDRESS``, else the latest cluster started on this machine) if it is up,
            else a local Ray of its own. A connection the provider made is shared with the
            providers after it and closed (a local Ray shut down) when the last one closes.
        token: the token the servers require (default: a new random one).
        startup_timeout: seconds for placement and for all servers to become ready.
        server_args: more ``openenv-gym serve`` options after the specs.
        bind: where servers listen (:data:`Bind`); ``"node"`` for clients on other machines.
        name: a name for the servers: actors ``NAME-0``, ``NAME-1``, ... and placement group
            ``NAME`` in namespace :data:`NAMESPACE` (default: unnamed, or a new one if detached).
        runtime_env: Ray's runtime environment for the server actors (and so their server
            processes): ``env_vars``, ``py_modules`` or ``working_dir`` with your env code,
            ``pip``, or on clusters with podman a container (``image_uri``: an image holding
            the cluster's Ray and Python versions and openenv-gym; see docs/scaling.md).
        detached: outlive this process (Ray's detached lifetime): no cleanup at exit or when
            the driver dies; ``close()`` or ``openenv_gym.providers.ray_deploy.remove`` (the
            ``openenv-gym ray down`` command) removes them.

    Attributes:
        urls: the ready servers' URLs, one per server.
        token: the token clients present to them.
        allow_insecure_token: some server is on another machine, reached over plain ``ws://``.

    Raises:
        ServerStartError: the placement group or a server did not come up in time.
        ValueError: ``num_servers`` or ``num_cpus`` is out of range.

    """

    def __init__(
        self,
        specs: Sequence[str],
        *,
        num_servers: int = 1,
        num_cpus: float = 1,
        resources: Mapping[str, float] | None = None,
        strategy: Strategy = "SPREAD",
        address: str | None = None,
        token: str | None = None,
        startup_timeout: float = 60.0,
        server_args: Sequence[str] = (),
        bind: Bind = "auto",
        name: str | None = None,
        runtime_env: Mapping[str, Any] | None = None,
        detached: bool = False,
    ) -> None:
        if num_servers < 1:
            raise ValueError(f"num_servers must be at least 1, got {num_servers}")
        if num_cpus < 0:
            raise ValueError(f"num_cpus must be at least 0, got {num_cpus}")
        self.token: str | None = token or secrets.token_urlsafe(24)
        self.startup_timeout = startup_timeout
        self._args = [*specs, *server_args]
        self._options: dict[str, Any] = {"num_cpus": num_cpus, "resources": dict(resources or {})}
        if runtime_env is not None:
            self._options["runtime_env"] = dict(runtime_env)
        self._owns_ray = False
        self._actors: list[Any] = []
        self._group: Any = None
        self._info: list[dict[str, Any]] = []
        self.urls: list[str] = []
        self._bind = bind
        self._restarts = 0
        self.name = name or (f"servers-{secrets.token_hex(4)}" if detached else None)
        self.detached = detached
        group_options: dict[str, Any] = {}
        if self.name is not None:
            group_options = {"name": self.name, "lifetime": "detached" if detached else None}
        if not detached:
            _live.add(self)
        try:
            self._init_ray(address, num_servers * num_cpus)
            bundle = {"CPU": num_cpus, **self._options["resources"]}
            self._group = placement_group(
                [dict(bundle) for _ in range(num_servers)], strategy, **group_options
            )
            deadline = time.monotonic() + startup_timeout
            if not self._group.wait(timeout_seconds=startup_timeout):
                raise ServerStartError(
                    f"ray placement group of {num_servers} x {bundle} ({strategy}) was not "
                    f"placed within {startup_timeout} s: the cluster lacks the resources"
                )
            self._actors = [self._new_actor(index) for index in range(num_servers)]
            self._info = self._wait_ready(list(range(num_servers)), deadline)
            self.urls = [info["url"] for info in self._info]
        except BaseException:
            self.close()
            raise
        logger.debug("ray servers ready: %s", self.urls)

    @property
    def allow_insecure_token(self) -> bool:
        """Tell whether some server is reached over plain ``ws://`` beyond loopback."""
        return not all(token_allowed(url) for url in self.urls)

    @property
    def node_ids(self) -> list[str]:
        """The Ray node id each server runs on."""
        return [info["node_id"] for info in self._info]

    @property
    def actors(self) -> list[Any]:
        """The servers' actor handles (e.g. for ``ray.kill``)."""
        return list(self._actors)

    @property
    def pids(self) -> list[int]:
        """Process ids of the servers (on their nodes)."""
        return [info["pid"] for info in self._info]

    @property
    def placement_group_id(self) -> str | None:
        """The hex id of the servers' placement group (``None`` once closed)."""
        return None if self._group is None else str(self._group.id.hex())

    def _init_ray(self, address: str | None, cpus: float) -> None:
        """Connect to Ray unless the caller did; remember whether ``close()`` disconnects."""
        if ray.is_initialized():
            # Another provider's connection is shared (and closed by the last one out).
            self._owns_ray = _session.join()
            return
        if address is None:
            address = _running_cluster()
        if address is None:
            # A local Ray of our own: room for every server even on a small machine.
            cores = max(os.cpu_count() or 1, int(cpus + 0.999))
            ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
        self._owns_ray = _session.start()

    def _new_actor(self, index: int, generation: int = 0) -> Any:
        strategy = PlacementGroupSchedulingStrategy(
            placement_group=self._group, placement_group_bundle_index=index
        )
        options = dict(self._options)
        if self.name is not None:
            # A replacement gets a name of its own: the dead actor's may not be free yet.
            suffix = f".{generation}" if generation else ""
            options.update(name=f"{self.name}-{index}{suffix}", namespace=NAMESPACE)
        if self.detached:
            options["lifetime"] = "detached"
        return _RemoteServer.options(scheduling_strategy=strategy, **options).remote()

    def _wait_ready(self, indices: list[int], deadline: float) -> list[dict[str, Any]]:
        """Start the servers of ``indices`` and handshake with each before ``deadline``."""
        remaining = max(0.1, deadline - time.monotonic())
        refs = [
            self._actors[i].start.remote(self._args, self.token, _machine(), remaining, self._bind)
            for i in indices
        ]
        try:
            infos: list[dict[str, Any]] = ray.get(refs, timeout=remaining + 5.0)
        except ray.exceptions.GetTimeoutError as exc:
            raise ServerStartError(
                f"ray servers {indices} were not ready within {self.startup_timeout} s"
            ) from exc
        except ray.exceptions.RayError as exc:
            raise ServerStartError(f"a ray server of {indices} failed to start: {exc}") from exc
        for info in infos:
            url = info["url"]
            try:
                probe(
                    url,
                    timeout=max(0.1, deadline - time.monotonic()),
                    token=self.token,
                    allow_insecure_token=not token_allowed(url),
                )
            except OpenEnvError as exc:
                raise ServerStartError(
                    f"ray server at {url} (node {info['node_ip']}) failed its handshake from "
                    f"the driver: {exc}"
                ) from exc
        return infos

    def restart(self, index: int, *, startup_timeout: float | None = None) -> str:
        """Replace server ``index`` (e.g. after its actor died) with a new actor; return its URL.

        Raises:
            ServerStartError: the new server failed to start.

        """
        old = self._actors[index]
        with contextlib.suppress(Exception):
            ray.kill(old, no_restart=True)
        self._restarts += 1
        self._actors[index] = self._new_actor(index, self._restarts)
        timeout = self.startup_timeout if startup_timeout is None else startup_timeout
        (info,) = self._wait_ready([index], time.monotonic() + timeout)
        self._info[index] = info
        self.urls[index] = info["url"]
        return self.urls[index]

    def close(self) -> None:
        """Stop every server, kill the actors, remove the placement group; idempotent."""
        actors, self._actors = self._actors, []
        if actors and ray.is_initialized():
            stops = []
            for actor in actors:
                with contextlib.suppress(Exception):
                    stops.append(actor.stop.remote())
            with contextlib.suppress(Exception):
                ray.wait(stops, num_returns=len(stops), timeout=_STOP_TIMEOUT)
            for actor in actors:
                with contextlib.suppress(Exception):
                    ray.kill(actor, no_restart=True)
            wait_dead(actors, time.monotonic() + _STOP_TIMEOUT)
        group, self._group = self._group, None
        if group is not None and ray.is_initialized():
            with contextlib.suppress(Exception):
                remove_placement_group(group)
        if self._owns_ray:
            self._owns_ray = False
            _session.leave()
        _live.discard(self)

    def __enter__(self) -> RayProvider:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@atexit.register
def _close_all() -> None:
    for provider in list(_live):
        provider.close()
