"""The WebSocket server: one :class:`Session` per connection, health checks, workers, shutdown.

This is the only server module that knows about sockets. Each connection's frames go to its
session one at a time; the reply is sent before the next frame is read, so one session's
requests are served in order. ``GET /healthz`` on the same port answers plain HTTP.
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
from http import HTTPStatus

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from openenv_gym.protocol import codec
from openenv_gym.server.catalog import EnvCatalog
from openenv_gym.server.session import Session

__all__ = ["ServerConfig", "run_server"]

logger = logging.getLogger("openenv_gym.server")


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


def _health(connection: ServerConnection, request: Request) -> Response | None:
    if request.path == "/healthz":
        return connection.respond(HTTPStatus.OK, "ok\n")
    return None


class _App:
    """Serves sessions on an already bound socket until stopped."""

    def __init__(self, config: ServerConfig, catalog: EnvCatalog) -> None:
        self.config = config
        self.catalog = catalog
        self.sessions: set[Session] = set()

    async def handler(self, connection: ServerConnection) -> None:
        session = Session(
            self.catalog,
            server_name=f"openenv-gym pid {os.getpid()}",
            debug=self.config.debug,
            max_message_bytes=self.config.max_message_bytes,
        )
        self.sessions.add(session)
        try:
            async for frame in connection:
                data = frame.encode() if isinstance(frame, str) else frame
                await connection.send(session.handle(data))
                if session.closed:
                    await connection.close()
                    break
        except ConnectionClosed:
            pass  # the client went away; its envs are closed below
        finally:
            self.sessions.discard(session)
            session.close()

    async def serve(
        self, sock: socket.socket, on_started: Callable[[], None] | None = None
    ) -> None:
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, _resolve, stop)
        server: Server
        async with serve(
            self.handler,
            sock=sock,
            process_request=_health,
            compression=None,
            max_size=self.config.max_message_bytes,
        ) as server:
            if on_started is not None:
                on_started()
            await stop
            server.close(close_connections=True)
            await server.wait_closed()
        for session in list(self.sessions):
            session.close()


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
