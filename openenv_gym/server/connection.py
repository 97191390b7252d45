"""One server-side WebSocket connection as an ``asyncio.Protocol``.

websockets' own ``ServerProtocol`` (sans-I/O) does the HTTP upgrade, framing, ping/pong and the
closing handshake; this class feeds it the socket's bytes (read into one reused buffer) and,
for each whole message, calls the session synchronously and writes the reply. There is no
per-connection task and no queue between the socket and the session: a request is served
inside the callback that delivered it, which keeps a loopback round trip near the floor. A read
that is exactly one whole binary frame (the common case) is parsed by ``protocol.framing``.

Plain ``GET /healthz`` is answered ``200 ok`` without an upgrade.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import hmac
import json
import logging
import socket
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from websockets.datastructures import Headers
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from openenv_gym.protocol.framing import FrameBoundary, binary_frame, parse_binary_frame
from openenv_gym.server.catalog import EnvCatalog
from openenv_gym.server.limits import Usage
from openenv_gym.server.openenv_session import (
    OPENENV_HTTP_PATHS,
    OPENENV_WS_PATH,
    OpenEnvSession,
    http_reply,
    route,
)
from openenv_gym.server.session import Session

AnySession = Session | OpenEnvSession

__all__ = ["ConnectionOptions", "WebSocketConnection"]

logger = logging.getLogger("openenv_gym.server")

HEALTH_PATH = "/healthz"
GOING_AWAY = 1001


_READ_SIZE = 1 << 16


@dataclasses.dataclass(frozen=True)
class ConnectionOptions:
    """How connections are served.

    Attributes:
        max_message_bytes: the largest message accepted (larger ones close the connection
            with code 1009, as RFC 6455 prescribes).
        token: when set, the opening handshake must carry ``Authorization: Bearer <token>``;
            anything else gets HTTP 401 before a session exists.
        executor: run each session's requests on these threads (one at a time per session),
            so a slow or hung env does not stall other sessions; ``None`` serves inline.
        keepalive: TCP keepalive (idle, interval, probes) in seconds, so that the kernel
            reaps half-open connections of vanished clients; ``None`` leaves it off.

    """

    max_message_bytes: int
    token: str | None = None
    executor: concurrent.futures.Executor | None = None
    keepalive: tuple[int, int, int] | None = (30, 10, 3)
    openenv: OpenEnvHosting | None = None


@dataclasses.dataclass(frozen=True)
class OpenEnvHosting:
    """What OpenEnv's protocol (``/ws``, ``/health``, ``/schema``, ``/metadata``) needs."""

    catalog: EnvCatalog
    usage: Usage


class WebSocketConnection(asyncio.BufferedProtocol):
    """Serve one client: the opening handshake, then one reply per request message.

    Args:
        new_session: builds the session for this connection once the upgrade succeeds.
        options: limits, authentication and threading (see :class:`ConnectionOptions`).
        on_close: called once when the connection is gone.

    Attributes:
        last_activity: ``loop.time()`` of the last request (for idle timeouts).

    """

    def __init__(
        self,
        new_session: Callable[[], Session],
        *,
        options: ConnectionOptions,
        on_close: Callable[[WebSocketConnection], None],
    ) -> None:
        self._new_session = new_session
        self._on_close = on_close
        self._options = options
        self._protocol = ServerProtocol(max_size=options.max_message_bytes)
        self._max_size = options.max_message_bytes
        self._pending: collections.deque[tuple[bytes, bool]] = collections.deque()
        self._busy = False
        self._paused = False
        self.last_activity = 0.0
        self._transport: asyncio.Transport | None = None
        self._session: AnySession | None = None
        self._fragments: list[bytes] = []
        self._boundary = FrameBoundary()
        self._text = False
        # Reads land in this one buffer: asyncio's default allocates 256 KiB per read.
        self._buffer = memoryview(bytearray(_READ_SIZE))
        self.peer = "?"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # noqa: D102
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self.last_activity = asyncio.get_running_loop().time()
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        sock = transport.get_extra_info("socket")
        if self._options.keepalive is not None and sock is not None:
            _enable_keepalive(sock, *self._options.keepalive)

    def get_buffer(self, sizehint: int) -> memoryview:  # noqa: D102
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:  # noqa: D102
        chunk = bytes(self._buffer[:nbytes])
        if self._simple_frames_only():
            message = parse_binary_frame(chunk, masked=True, max_size=self._max_size)
            if message is not None:
                self._serve(message, text=False)
                return
        if self._session is not None:
            self._boundary.feed(chunk)  # frames the general parser sees; see _simple_frames_only
        self._protocol.receive_data(chunk)
        self._process_events()

    def pause_writing(self) -> None:  # noqa: D102
        # The client does not read its replies: hold its requests (those already read wait in
        # order) and stop reading more until it does, so that replies cannot pile up unbounded.
        self._paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:  # noqa: D102
        self._paused = False
        self._drain()
        if self._transport is not None and not self._transport.is_closing() and not self._paused:
            self._transport.resume_reading()

    def eof_received(self) -> bool:  # noqa: D102
        self._protocol.receive_eof()
        self._process_events()
        return False

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102
        self._transport = None
        session, self._session = self._session, None
        if session is not None and not self._busy:
            session.close()
        # else: a request of this session runs on a thread; _on_answered closes the session
        # once it returns, so whatever that request builds is closed too.
        self._on_close(self)

    def close(self, code: int = GOING_AWAY, reason: str = "server shutting down") -> None:
        """Start the closing handshake; the transport closes when it completes."""
        if self._protocol.state is State.OPEN:
            self._protocol.send_close(code, reason)
            self._flush()
        elif self._transport is not None and self._protocol.state is State.CONNECTING:
            self._transport.close()

    def abort(self) -> None:
        """Drop the connection now."""
        if self._transport is not None:
            self._transport.abort()

    def _process_events(self) -> None:
        for event in self._protocol.events_received():
            if isinstance(event, Request):
                self._handshake(event)
            elif isinstance(event, Frame):
                self._on_frame(event)
        self._flush()

    def _handshake(self, request: Request) -> None:
        path, _, query = request.path.partition("?")
        hosting = self._options.openenv
        openenv = route(path, query) if hosting is not None else None
        if openenv is not None:
            path, query = openenv
        if path == HEALTH_PATH:
            response = self._protocol.reject(HTTPStatus.OK, "ok\n")
        elif not self._authorized(request):
            logger.warning("refused a connection from %s: invalid or missing token", self.peer)
            response = self._protocol.reject(HTTPStatus.UNAUTHORIZED, "invalid or missing token\n")
        elif hosting is not None and openenv is not None and path in OPENENV_HTTP_PATHS:
            status, body = http_reply(hosting.catalog, path, query)
            response = _json_response(status, body)
        else:
            response = self._protocol.accept(request)
        self._protocol.send_response(response)
        if response.status_code != 101:
            return
        if hosting is not None and openenv is not None and path == OPENENV_WS_PATH:
            self._session = OpenEnvSession(hosting.catalog, query, hosting.usage)
        else:
            self._session = self._new_session()

    def _on_frame(self, frame: Frame) -> None:
        if frame.opcode in (Opcode.BINARY, Opcode.TEXT):
            self._text = frame.opcode is Opcode.TEXT
        elif frame.opcode is not Opcode.CONT:
            return  # ping, pong and close are answered by the protocol itself
        self._fragments.append(bytes(frame.data))
        if not frame.fin:
            return
        message = b"".join(self._fragments)
        self._fragments = []
        self._serve(message, text=self._text)

    def _authorized(self, request: Request) -> bool:
        if self._options.token is None:
            return True
        supplied = request.headers.get("Authorization", "")
        expected = f"Bearer {self._options.token}"
        return hmac.compare_digest(supplied.encode(), expected.encode())

    def _serve(self, message: bytes, *, text: bool) -> None:
        """Answer one request message (one reply frame; a closing handshake after CLOSE)."""
        session = self._session
        if session is None or self._protocol.state is not State.OPEN or self._transport is None:
            return
        self.last_activity = asyncio.get_running_loop().time()
        if self._busy or self._paused:
            # Served in order once the running request returns or the client reads again.
            self._pending.append((message, text))
        elif self._options.executor is None:
            self._reply(session, _answer(session, message, text))
        else:
            self._submit(session, message, text)

    def _drain(self) -> None:
        """Serve queued requests while neither a request runs nor writing is paused."""
        while self._pending and not (self._busy or self._paused) and self._session is not None:
            message, text = self._pending.popleft()
            self._serve(message, text=text)

    def _submit(self, session: AnySession, message: bytes, text: bool) -> None:
        self._busy = True
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._options.executor, _answer, session, message, text)
        future.add_done_callback(lambda done: self._on_answered(session, done))

    def _on_answered(self, session: AnySession, done: asyncio.Future[bytes]) -> None:
        self._busy = False
        if done.cancelled() or self._session is not session:
            session.close()  # the connection went away meanwhile
            return
        self._reply(session, done.result())
        if not session.closed:
            self._drain()

    def _reply(self, session: AnySession, reply: bytes) -> None:
        if self._transport is None or self._protocol.state is not State.OPEN:
            return
        if session.text_protocol:
            self._protocol.send_text(reply)
            self._flush()
        else:
            self._transport.write(binary_frame(reply, mask=False))
        if session.closed:
            self._protocol.send_close(1000, "session closed")
            self._flush()

    def close_if_idle(self, now: float, idle_timeout: float) -> bool:
        """Close the connection if no request came for ``idle_timeout`` s; tell if it did."""
        if self._busy or now - self.last_activity < idle_timeout:
            return False
        logger.info("closing %s: idle for %.0f s", self.peer, now - self.last_activity)
        self.close(GOING_AWAY, "idle timeout")
        return True

    def _simple_frames_only(self) -> bool:
        """Tell whether no partial frame is pending, so a whole frame may bypass the protocol."""
        return (
            self._session is not None
            and self._protocol.state is State.OPEN
            and not self._fragments
            and self._boundary.at_boundary
            and not self._protocol.reader.buffer
        )

    def _flush(self) -> None:
        transport = self._transport
        if transport is None:
            return
        for chunk in self._protocol.data_to_send():
            if not chunk:  # end of stream: the protocol is done with this connection
                transport.close()  # flushes what is buffered first
                return
            transport.write(chunk)
        if self._protocol.close_expected():
            transport.close()  # after the closing handshake the server closes TCP first


def _answer(session: AnySession, message: bytes, text: bool) -> bytes:
    if text != session.text_protocol:
        return session.refuse(
            "OpenEnv messages on /ws are JSON text frames"
            if session.text_protocol
            else "text frames are refused: the protocol is binary msgpack"
        )
    return session.handle(message)


def _json_response(status: int, body: dict[str, Any]) -> Response:
    payload = json.dumps(body).encode()
    headers = Headers(
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
            ("Connection", "close"),
        ]
    )
    return Response(status, HTTPStatus(status).phrase, headers, payload)


def _enable_keepalive(sock: socket.socket, idle: int, interval: int, probes: int) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (
        ("TCP_KEEPIDLE", idle),
        ("TCP_KEEPINTVL", interval),
        ("TCP_KEEPCNT", probes),
    ):
        option = getattr(socket, name, None)
        if option is not None:  # Linux has all three; other systems may lack some
            sock.setsockopt(socket.IPPROTO_TCP, option, value)
