"""The server process: binds, forks workers, accepts connections, shuts down gracefully.

Each connection (``server/connection.py``) speaks WebSocket through websockets' sans-I/O
protocol and serves its own :class:`Session`; requests of one session are answered in order.
``GET /healthz`` on the same port answers plain HTTP.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import multiprocessing
import os
import signal
import socket
from collections.abc import Callable, Sequence

from openenv_gym.protocol import codec
from openenv_gym.server.catalog import EnvCatalog
from openenv_gym.server.connection import WebSocketConnection
from openenv_gym.server.session import Session

__all__ = ["ServerConfig", "run_server"]

logger = logging.getLogger("openenv_gym.server")

_SHUTDOWN_GRACE = 5.0
"""Seconds clients get to complete the closing handshake before their connections drop."""


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """How a server runs.

    Attributes:
        specs: env ids and ``module:attr`` entry points hosted (see ``EnvCatalog``).
        allow_any_id: also host every registered gymnasium id.
        host: address to bind; loopback by default.
        port: port to bind; 0 picks a free one (reported through ``on_ready``).
        workers: processes sharing the listening socket.
        debug: include tracebacks in error replies.
        max_message_bytes: largest frame accepted.

    """

    specs: Sequence[str] = ()
    allow_any_id: bool = False
    host: str = "127.0.0.1"
    port: int = 8765
    workers: int = 1
    debug: bool = False
    max_message_bytes: int = codec.DEFAULT_MAX_MESSAGE_BYTES


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _App:
    """Serves sessions on an already bound socket until stopped."""

    def __init__(self, config: ServerConfig, catalog: EnvCatalog) -> None:
        self.config = config
        self.catalog = catalog
        self.connections: set[WebSocketConnection] = set()
        self._all_closed = asyncio.Event()

    def _new_session(self) -> Session:
        return Session(
            self.catalog,
            server_name=f"openenv-gym pid {os.getpid()}",
            debug=self.config.debug,
            max_message_bytes=self.config.max_message_bytes,
        )

    def _new_connection(self) -> WebSocketConnection:
        connection = WebSocketConnection(
            self._new_session,
            max_message_bytes=self.config.max_message_bytes,
            on_close=self._forget,
        )
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
        server = await loop.create_server(self._new_connection, sock=sock)
        if on_started is not None:
            on_started()
        await stop
        server.close()
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


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _worker(config: ServerConfig, sock: socket.socket) -> None:
    catalog = EnvCatalog(config.specs, allow_any_id=config.allow_any_id)
    asyncio.run(_App(config, catalog).serve(sock))


def run_server(config: ServerConfig, *, on_ready: Callable[[str], None] | None = None) -> None:
    """Run a server until SIGTERM or SIGINT.

    Binds first, then builds the catalog (so a bad spec fails before anything listens for
    clients), forks ``workers - 1`` extra processes sharing the socket, and serves.

    Args:
        config: how to serve.
        on_ready: called with the server's URL once it accepts connections.

    Raises:
        OSError: the address cannot be bound.
        ValueError: a configured spec names no registered id or cannot be imported.

    """
    catalog = EnvCatalog(config.specs, allow_any_id=config.allow_any_id)
    sock = _bind(config.host, config.port)
    host, port = sock.getsockname()[:2]
    url = f"ws://[{host}]:{port}" if ":" in host else f"ws://{host}:{port}"
    context = multiprocessing.get_context("fork")
    children = [
        context.Process(target=_worker, args=(config, sock), daemon=True)
        for _ in range(config.workers - 1)
    ]
    for child in children:
        child.start()
    announce = None if on_ready is None else (lambda: on_ready(url))
    try:
        asyncio.run(_App(config, catalog).serve(sock, announce))
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.join(timeout=5)
        sock.close()
