"""The server process: binds, forks workers, accepts connections, shuts down gracefully.

Each connection (``ws/server.py``) speaks WebSocket through websockets' sans-I/O protocol and
serves its own :class:`Session`; requests of one session are answered in order. The
:class:`_Router` here decides what each request gets: the access check first (every surface),
then ``GET /healthz`` (plain ``200 ok``), OpenEnv's routes when ``ServerConfig.openenv`` is on,
else an upgrade to a binary protocol session.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import ipaddress
import logging
import os
import signal
import socket
from collections.abc import Callable, Iterable
from http import HTTPStatus
from types import ModuleType

from openenv_gym.protocol.compression import available_codecs
from openenv_gym.server.catalog import EnvCatalog
from openenv_gym.server.config import ServerConfig
from openenv_gym.server.limits import ConnectionTable, Limits, Usage
from openenv_gym.server.metered import MeteredSession
from openenv_gym.server.observe import (
    OBSERVE_PATHS,
    Observer,
    SnapshotDir,
    is_upgrade,
    sample_forever,
    shared_snapshots,
)
from openenv_gym.server.session import Session, SessionState
from openenv_gym.server.stats import ServerStats
from openenv_gym.server.workers import supervise
from openenv_gym.ws.http import PlainRequest
from openenv_gym.ws.server import (
    ConnectionOptions,
    HttpReply,
    ServedSession,
    WebSocketConnection,
)

__all__ = ["ServerConfig", "run_server"]

logger = logging.getLogger("openenv_gym.server")

HEALTH_PATH = "/healthz"
"""Answered ``200 ok`` (plain HTTP) to any request that passes Origin and Host checks."""

_SHUTDOWN_GRACE = 5.0
"""Seconds clients get to complete the closing handshake before their connections drop."""


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _Router:
    """Decide, per request, what a connection serves (``ws/server.py``'s ``Router``)."""

    def __init__(
        self,
        config: ServerConfig,
        catalog: EnvCatalog,
        usage: Usage,
        observer: Observer | None = None,
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.usage = usage
        self.observer = observer
        self.access = config.access_policy()
        installed = available_codecs()
        self._codecs = tuple(name for name in config.compression if name in installed)
        # OpenEnv's surface is a plug-in above the server (interop sits above server): loaded
        # only when switched on, so the server package never imports it at module level.
        self._openenv_surface: ModuleType | None = None
        self._openenv_rpc: ModuleType | None = None
        if config.openenv:
            from openenv_gym.interop.openenv import rpc as openenv_rpc
            from openenv_gym.interop.openenv import session as openenv_surface

            self._openenv_surface = openenv_surface
            self._openenv_rpc = openenv_rpc

    def _openenv(self, path: str, query: str) -> tuple[str, str] | None:
        surface = self._openenv_surface
        return None if surface is None else surface.route(path, query)

    def admit(self, path: str, query: str, headers: Iterable[tuple[str, str]]) -> HttpReply | None:
        """Return the access check's refusal (every path but ``/healthz`` needs the token)."""
        headers = list(headers)
        if self._observed(path, headers):
            assert self.observer is not None
            return self.observer.admit(path, query, headers)
        path, _ = self._openenv(path, query) or (path, query)
        refusal = self.access.check(headers, require_token=path != HEALTH_PATH)
        return None if refusal is None else HttpReply(refusal.status, f"{refusal.reason}\n")

    def _observed(self, path: str, headers: list[tuple[str, str]]) -> bool:
        """Tell whether a request is for an observation route (``/`` only when not an upgrade)."""
        return (
            self.observer is not None
            and path in OBSERVE_PATHS
            and (path != "/" or not is_upgrade(headers))
        )

    def reply(self, path: str, query: str, *, upgrade: bool = True) -> HttpReply | None:
        """Answer ``/healthz``, the observation routes and OpenEnv's HTTP routes; else upgrade."""
        if path == HEALTH_PATH:
            return HttpReply(HTTPStatus.OK, "ok\n")
        if self.observer is not None and path in OBSERVE_PATHS and (path != "/" or not upgrade):
            return self.observer.reply(path, query)
        openenv = self._openenv(path, query)
        surface = self._openenv_surface
        if surface is not None and openenv is not None and openenv[0] in surface.OPENENV_HTTP_PATHS:
            status, body = surface.http_reply(self.catalog, *openenv)
            return HttpReply(status, json=body)
        return None

    def new_session(self, path: str, query: str) -> ServedSession:
        """Return the session an upgraded request serves, counted unless metrics are off."""
        session = self._new_session(path, query)
        if self.observer is None:
            return session
        openenv = self._openenv(path, query)
        query = "" if openenv is None else openenv[1]
        return MeteredSession(session, self.observer.stats, specs=self.catalog.specs, query=query)

    def _new_session(self, path: str, query: str) -> ServedSession:
        """Return an OpenEnv session for its ``/ws``, else a binary protocol session."""
        openenv = self._openenv(path, query)
        surface = self._openenv_surface
        if surface is not None and openenv is not None and openenv[0] == surface.OPENENV_WS_PATH:
            served: ServedSession = self._rpc().ws_session(
                self.catalog, openenv[1], self.usage, self._mcp_sessions()
            )
            return served
        return Session(
            self.catalog,
            server_name=f"openenv-gym pid {os.getpid()}",
            debug=self.config.debug,
            max_message_bytes=self.config.max_message_bytes,
            usage=self.usage,
            compression=self._codecs,
        )

    max_request_body = 1 << 20
    """The largest body of a plain HTTP request (``POST /mcp``): 1 MiB, as ``/ws``'s JSON."""

    def _rpc(self) -> ModuleType:
        assert self._openenv_rpc is not None
        return self._openenv_rpc

    def _mcp_sessions(self) -> object:
        """Return this server's sessions made over ``POST /mcp`` (built on first use)."""
        return self._rpc().session_store(
            self.catalog,
            self.usage,
            mode=self.config.mcp_mode,
            idle_timeout=self.config.idle_timeout,
        )

    def close_sessions(self) -> None:
        """Close the sessions made over ``POST /mcp`` (their envs) at shutdown."""
        if self._openenv_rpc is not None:
            self._mcp_sessions().close_all()  # type: ignore[attr-defined]

    def request(self, request: PlainRequest) -> HttpReply:
        """Answer a plain HTTP request (already admitted): ``POST /mcp``, else 404/405."""
        openenv = self._openenv(request.path, request.query)
        surface = self._openenv_surface
        if surface is None or openenv is None:
            return HttpReply(HTTPStatus.NOT_FOUND, f"no {request.method} route {request.path!r}\n")
        path, query = openenv
        if request.method != "POST" or path not in surface.OPENENV_POST_PATHS:
            return HttpReply(
                HTTPStatus.METHOD_NOT_ALLOWED, f"{request.method} {path} is not served\n"
            )
        body = self._rpc().rpc_reply(request.body, self._mcp_sessions(), query)
        return HttpReply(HTTPStatus.OK, json=body)

    def admitted(self, session: ServedSession) -> bool:
        """Binary sessions are admitted past HELLO; OpenEnv's at their first message."""
        if isinstance(session, MeteredSession):
            session = session.inner
        return not isinstance(session, Session) or session.state is not SessionState.NEW


class _App:
    """Serves sessions on an already bound socket until stopped."""

    def __init__(
        self,
        config: ServerConfig,
        catalog: EnvCatalog,
        *,
        worker: int = 0,
        stats_dir: str | None = None,
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.usage = Usage(config.limits)
        self.stats = ServerStats(worker=worker, specs=catalog.specs)
        self._peers = None if stats_dir is None else SnapshotDir(stats_dir, worker)
        self.connections: set[WebSocketConnection] = set()
        self._all_closed = asyncio.Event()
        self._executor = (
            concurrent.futures.ThreadPoolExecutor(
                config.limits.max_sessions, thread_name_prefix="openenv-gym-session"
            )
            if config.threads
            else None
        )
        observer = (
            Observer(
                self.stats,
                config.access_policy(),
                secure=config.certfile is not None,
                peers=self._peers,
            )
            if config.metrics
            else None
        )
        self.router = _Router(config, catalog, self.usage, observer)
        self.access = self.router.access
        """The access check of every surface (binary protocol, OpenEnv routes, MCP)."""
        self.connection_table: ConnectionTable[WebSocketConnection] = ConnectionTable(config.limits)
        self._options = ConnectionOptions(
            max_message_bytes=config.max_message_bytes,
            executor=self._executor,
            handshake_timeout=config.handshake_timeout,
            close_timeout=config.close_timeout,
            connections=self.connection_table,
            busy_wait=config.busy_wait,
        )

    def _new_connection(self) -> WebSocketConnection:
        connection = WebSocketConnection(self.router, options=self._options, on_close=self._forget)
        self.connections.add(connection)
        self._all_closed.clear()
        return connection

    def _forget(self, connection: WebSocketConnection) -> None:
        self.connections.discard(connection)
        if not self.connections:
            self._all_closed.set()

    async def serve(
        self, sock: socket.socket, on_started: Callable[[], None] | None = None
    ) -> None:
        """Accept connections until SIGTERM/SIGINT, then close every session gracefully."""
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, _resolve, stop)
        server = await loop.create_server(
            self._new_connection, sock=sock, ssl=self.config.ssl_context()
        )
        sweeper = asyncio.create_task(self._close_idle()) if self.config.idle_timeout else None
        sampler = (
            asyncio.create_task(sample_forever(self.stats, self._peers))
            if self.config.metrics
            else None
        )
        pinger = asyncio.create_task(self._keepalive())
        mcp = None
        if self.config.mcp_port is not None:
            mcp_ready: asyncio.Future[int] = loop.create_future()
            mcp = asyncio.create_task(self._serve_mcp(mcp_ready))
            await mcp_ready  # announce only once both ports accept (raises what stopped MCP)
        if on_started is not None:
            on_started()
        await stop
        server.close()
        for task in (sweeper, mcp, sampler, pinger):
            if task is not None:
                task.cancel()
        # Requests in flight have already been answered (they run to completion inside the
        # loop's callbacks); now every client gets a going-away close frame.
        for connection in list(self.connections):
            connection.close()
        if self.connections:
            try:
                await asyncio.wait_for(self._all_closed.wait(), _SHUTDOWN_GRACE)
            except TimeoutError:
                for connection in list(self.connections):
                    connection.abort()
        await server.wait_closed()
        self.router.close_sessions()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def _serve_mcp(self, ready: asyncio.Future[int] | None = None) -> None:
        """Serve the first hosted env as MCP tools until cancelled (see ``openenv_gym.mcp``).

        Every request passes the same access policy as the main port; tools run on threads.

        Args:
            ready: resolved with the MCP port once it listens (or with the error that stopped
                it), so that the server can announce itself only when both ports accept.

        """
        from openenv_gym.mcp import DEFAULT_TOOL_TIMEOUT, serve_http

        assert self.config.mcp_port is not None
        tool_timeout = self.config.mcp_tool_timeout or DEFAULT_TOOL_TIMEOUT

        def bound(port: int) -> None:
            if ready is not None and not ready.done():
                ready.set_result(port)

        try:
            env_id = self.catalog.specs[0]
            env = self.catalog.factory(env_id, {})()
            if self.config.mcp_mode == "production":
                env.reset()  # the world agents act in; they cannot reset it themselves
            try:
                await serve_http(
                    env,
                    mode=self.config.mcp_mode,
                    name=env_id,
                    host=self.config.host,
                    port=self.config.mcp_port,
                    policy=self.config.access_policy(),
                    tool_timeout=tool_timeout,
                    on_bound=bound,
                )
            finally:
                env.close()
        except Exception as exc:
            if ready is None or ready.done():
                raise
            ready.set_exception(exc)

    async def _keepalive(self) -> None:
        """Ping the clients of sessions with long steps in flight, every ``keepalive_ping`` s."""
        while True:
            await asyncio.sleep(self.config.keepalive_ping)
            for connection in list(self.connections):
                connection.ping_if_working()

    async def _close_idle(self) -> None:
        """Close connections idle for longer than ``idle_timeout``, checking now and then."""
        timeout = self.config.idle_timeout
        assert timeout is not None
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(timeout / 4, 30.0))
            now = loop.time()
            for connection in list(self.connections):
                connection.close_if_idle(now, timeout)


_SPARE_DESCRIPTORS = 128
"""File descriptors kept for what is not a connection (the socket, envs' files, logs)."""


def _fit_descriptors(limits: Limits) -> Limits:
    """Raise the soft open-files limit so ``max_connections`` fit; else lower the caps to fit.

    Past the limit, accept() fails (EMFILE) and asyncio stops accepting for a second: every
    client would be locked out instead of the newest refused.
    """
    try:
        import resource
    except ImportError:  # not a Unix
        return limits
    needed = limits.max_connections + _SPARE_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return limits
    soft = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft >= needed:
        return limits
    fitting = max(1, soft - _SPARE_DESCRIPTORS)
    logger.warning(
        "only %d open files allowed (ulimit -n): serving at most %d connections, not %d",
        soft,
        fitting,
        limits.max_connections,
    )
    per_peer = min(limits.max_connections_per_peer, fitting)
    return dataclasses.replace(limits, max_connections=fitting, max_connections_per_peer=per_peer)


def _resolve_host(host: str) -> str:
    return str(socket.getaddrinfo(host, None)[0][4][0]) if host else "0.0.0.0"


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _worker(
    config: ServerConfig,
    sock: socket.socket,
    stats_dir: str | None,
    slot: int,
    on_started: Callable[[], None],
) -> None:
    if slot:  # one MCP endpoint per server: worker 0 serves it
        config = dataclasses.replace(config, mcp_port=None)
    app = _App(config, config.catalog(), worker=slot, stats_dir=stats_dir)
    asyncio.run(app.serve(sock, on_started))


def run_server(config: ServerConfig, *, on_ready: Callable[[str], None] | None = None) -> None:
    """Run a server until SIGTERM or SIGINT.

    Builds the catalog (so a bad spec fails before anything listens for clients), binds, and
    serves: in this process with one worker, else in ``workers`` processes sharing the socket
    under this one, which replaces those that die (see ``server/workers.py``).

    Args:
        config: how to serve.
        on_ready: called with the server's URL once it accepts connections.

    Raises:
        OSError: the address cannot be bound.
        ValueError: a configured spec names no registered id or cannot be imported, or the
            limits are inconsistent.
        ServerStartError: a worker process exited before it served.

    """
    config.limits.check()
    config = dataclasses.replace(config, limits=_fit_descriptors(config.limits))
    catalog = config.catalog()
    if not config.token and not ipaddress.ip_address(_resolve_host(config.host)).is_loopback:
        logger.warning(
            "serving on %s WITHOUT A TOKEN: anyone who can reach this address can run the hosted "
            "envs; pass --token (or set OPENENV_GYM_TOKEN)",
            config.host,
        )
    sock = _bind(config.host, config.port)
    host, port = sock.getsockname()[:2]
    scheme = "wss" if config.certfile else "ws"
    url = f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"
    announce = None if on_ready is None else (lambda: on_ready(url))
    stack = contextlib.ExitStack()  # the workers' snapshot directory (server/observe.py)
    try:
        stats_dir = stack.enter_context(shared_snapshots(config.workers > 1 and config.metrics))
        if config.workers > 1:
            target = functools.partial(_worker, config, sock, stats_dir)
            supervise(config.workers, target, grace=_SHUTDOWN_GRACE + 1, on_started=announce)
        else:
            asyncio.run(_App(config, catalog).serve(sock, announce))
    finally:
        stack.close()
        sock.close()
