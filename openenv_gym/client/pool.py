"""Embedded servers shared by the single envs of one process.

``gymnasium.make("openenv/CartPole-v1")`` without ``url=`` needs a server. Libraries that build
many single envs (SB3's ``make_vec_env``, Tianshou) would start one server process (~56 MB)
per env; instead the envs of one process share a pool: up to ``envs_per_server`` sessions on a
server before another is started, at most ``max_servers`` servers per (env id, options) —
by default one per CPU core — after which sessions go to the least loaded one. A server stops
when its last env closes. Sessions share nothing, so results are those of one server per env.

Configure it with :func:`configure_embedded_pool` or ``OPENENV_GYM_ENVS_PER_SERVER`` /
``OPENENV_GYM_MAX_EMBEDDED_SERVERS``.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Sequence

from openenv_gym.providers import start_servers
from openenv_gym.providers.local import LocalProvider

__all__ = ["PoolOptions", "ServerLease", "ServerPool", "configure_embedded_pool", "embedded_pool"]


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        parsed = int(value)
    except ValueError:
        raise ValueError(f"${name} must be an integer >= 1, got {value!r}") from None
    if parsed < 1:
        raise ValueError(f"${name} must be an integer >= 1, got {value!r}")
    return parsed


@dataclasses.dataclass(frozen=True)
class PoolOptions:
    """How many embedded servers the envs of one process share.

    Attributes:
        envs_per_server: sessions a server takes before another is started.
        max_servers: servers per (env id, server options); then the least loaded is shared.

    """

    envs_per_server: int = 16
    max_servers: int = os.cpu_count() or 1

    @classmethod
    def from_environment(cls) -> PoolOptions:
        """Read ``OPENENV_GYM_ENVS_PER_SERVER`` and ``OPENENV_GYM_MAX_EMBEDDED_SERVERS``.

        Raises:
            ValueError: a variable is not an integer >= 1.

        """
        default = cls()
        return cls(
            envs_per_server=_env_int("OPENENV_GYM_ENVS_PER_SERVER", default.envs_per_server),
            max_servers=_env_int("OPENENV_GYM_MAX_EMBEDDED_SERVERS", default.max_servers),
        )


class _Server:
    def __init__(self, provider: LocalProvider) -> None:
        self.provider = provider
        self.sessions = 0


class ServerLease:
    """One env's share of a pooled server: what ``RemoteEnv`` needs of a provider.

    Attributes:
        urls: the server's URL (one).
        token: the token it requires.

    """

    def __init__(self, pool: ServerPool, key: tuple[str, ...], server: _Server) -> None:
        self._pool = pool
        self._key = key
        self._server: _Server | None = server
        self.urls = list(server.provider.urls)
        self.token = server.provider.token

    def restart(self, index: int) -> str:
        """Pooled servers are shared: they are not restarted for one env.

        Raises:
            NotImplementedError: always.

        """
        raise NotImplementedError(f"{self.urls[0]}: a pooled embedded server is not restarted")

    def close(self) -> None:
        """Give the session back; the server stops when its last session is gone. Idempotent."""
        server, self._server = self._server, None
        if server is not None:
            self._pool.release(self._key, server)


class ServerPool:
    """Local servers shared by the embedded envs of this process (see the module docstring).

    Args:
        options: the pool's sizes (default: from the environment).

    """

    def __init__(self, options: PoolOptions | None = None) -> None:
        self.options = options or PoolOptions.from_environment()
        self._servers: dict[tuple[str, ...], list[_Server]] = {}
        self._lock = threading.Lock()

    def acquire(self, env_id: str, server_args: Sequence[str]) -> ServerLease:
        """Return a lease on a server hosting ``env_id`` with ``server_args``.

        Raises:
            ServerStartError: a new server was needed and did not start.

        """
        key = (env_id, *server_args)
        with self._lock:  # starting a server under the lock: envs of one key wait for it
            servers = self._servers.setdefault(key, [])
            server = min(servers, key=lambda s: s.sessions, default=None)
            if server is None or (
                server.sessions >= self.options.envs_per_server
                and len(servers) < self.options.max_servers
            ):
                provider = start_servers([env_id], server_args=server_args)
                assert isinstance(provider, LocalProvider)
                server = _Server(provider)
                servers.append(server)
            server.sessions += 1
            return ServerLease(self, key, server)

    def release(self, key: tuple[str, ...], server: _Server) -> None:
        """Forget one session of ``server``; stop it when it has none left."""
        with self._lock:
            server.sessions -= 1
            if server.sessions > 0:
                return
            servers = self._servers.get(key, [])
            if server in servers:
                servers.remove(server)
            if not servers:
                self._servers.pop(key, None)
        server.provider.close()

    @property
    def server_count(self) -> int:
        """Servers running now."""
        with self._lock:
            return sum(len(servers) for servers in self._servers.values())


_pool: ServerPool | None = None
_pool_lock = threading.Lock()


def embedded_pool() -> ServerPool:
    """Return this process's pool of embedded servers (created on first use)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ServerPool()
        return _pool


def configure_embedded_pool(*, envs_per_server: int = 16, max_servers: int | None = None) -> None:
    """Set the sizes of this process's embedded pool, for servers started from now on.

    Raises:
        ValueError: a size is below 1.

    """
    options = PoolOptions(envs_per_server, max_servers or PoolOptions().max_servers)
    if options.envs_per_server < 1 or options.max_servers < 1:
        raise ValueError(f"pool sizes must be >= 1, got {options}")
    embedded_pool().options = options
