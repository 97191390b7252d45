"""One server-side WebSocket connection as an ``asyncio.Protocol``.

websockets' own ``ServerProtocol`` (sans-I/O) does the HTTP upgrade, framing, ping/pong and the
closing handshake; this class feeds it the socket's bytes (read into one reused buffer) and,
for each whole message, calls the session synchronously and writes the reply. There is no
per-connection task and no queue between the socket and the session: a request is served
inside the callback that delivered it, which keeps a loopback round trip near the floor. A read
that is exactly one whole binary frame (the common case) is parsed by ``ws/frames.py``.

What to serve is the :class:`Router`'s business (the server's ``server/app.py`` implements
it): whether a request is admitted (access checks), which paths get a plain HTTP answer instead
of an upgrade, and the session each upgraded connection serves. This module knows WebSocket
framing and timing, nothing of envs. Nothing a client does holds a connection forever: the
opening handshake plus the first message must arrive within ``handshake_timeout``, a closing
handshake that does not complete within ``close_timeout`` (a client that stopped reading) ends
in an abort, and the :class:`ConnectionCaps` bound connections in total and per address.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any, Protocol

from websockets.datastructures import Headers
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from openenv_gym.errors import CapacityError
from openenv_gym.protocol.codec import Parts, join_parts
from openenv_gym.ws.awake import keep_awake
from openenv_gym.ws.frames import FrameBoundary, binary_frame, binary_header, parse_binary_frame
from openenv_gym.ws.http import HttpError, PlainRequest, PlainRequestReader, is_plain_request

__all__ = [
    "ConnectionCaps",
    "ConnectionOptions",
    "HttpReply",
    "Router",
    "ServedSession",
    "WebSocketConnection",
]

logger = logging.getLogger("openenv_gym.server")

GOING_AWAY = 1001
MESSAGE_TOO_BIG = 1009

_READ_SIZE = 1 << 16
_MAX_FRAGMENTS = 1 << 14
"""Frames one message may span: empty continuation frames cost nothing against max_size."""
_REFUSAL_WAIT = 1.0
"""Seconds a connection over a cap is kept waiting for its request, to answer it 503."""


@dataclasses.dataclass(frozen=True)
class HttpReply:
    """A plain HTTP answer instead of an upgrade (a refusal, a health check, a JSON route).

    Attributes:
        status: the HTTP status.
        text: the body as text (``text/plain``), when ``json`` is ``None``.
        json: the body as JSON (``application/json``).
        body: the body as bytes of ``content_type`` (a page, metrics), when ``json`` is
            ``None``; takes precedence over ``text``.
        content_type: the ``Content-Type`` of ``body``.
        headers: more response headers (``Set-Cookie``, ``Location``, ``Cache-Control``).

    """

    status: int
    text: str = ""
    json: dict[str, Any] | None = None
    body: bytes | None = None
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


class ServedSession(Protocol):
    """What a connection needs of the session it serves: bytes in, bytes out, no I/O."""

    @property
    def text_protocol(self) -> bool:
        """True if the session speaks text frames (else binary)."""

    @property
    def closed(self) -> bool:
        """True once the session is over: the connection sends a close frame after its reply."""

    def handle(self, message: bytes) -> bytes:
        """Answer one request message; never raises."""

    def refuse(self, reason: str) -> bytes:
        """Return the error reply for a message refused before decoding (wrong frame type)."""

    def close(self) -> None:
        """Release what the session holds; idempotent."""

    # Optional: ``handle_parts(message)``, the reply as parts to write in order (views of large
    # arrays, valid until the next request); ``after_reply()``, called once an inline request's
    # reply is written (work the reply did not need); ``attach(notify)`` and ``events()``, for
    # sessions that push messages.


class Router(Protocol):
    """What a server decides for each connection; ``server/app.py`` implements it."""

    def admit(self, path: str, query: str, headers: Iterable[tuple[str, str]]) -> HttpReply | None:
        """Return the refusal of a request (401, 403, 400 ...), or ``None`` to admit it."""

    def reply(self, path: str, query: str, *, upgrade: bool = True) -> HttpReply | None:
        """Return a plain HTTP answer for an admitted request, or ``None`` to upgrade it.

        ``upgrade`` tells whether the request asks for a WebSocket (a browser loading a page
        does not).
        """

    def new_session(self, path: str, query: str) -> ServedSession:
        """Return the session an upgraded request to ``path`` serves."""

    def admitted(self, session: ServedSession) -> bool:
        """Tell whether ``session`` is past its opening message (ends the handshake deadline)."""

    def request(self, request: PlainRequest) -> HttpReply:
        """Answer a plain (non-``GET``) HTTP request such as ``POST /mcp``; never raises."""

    @property
    def max_request_body(self) -> int:
        """The largest body of a plain HTTP request, in bytes."""


class ConnectionCaps(Protocol):
    """The process's connection counts (``server/limits.py``'s ``ConnectionTable``)."""

    def open(self, connection: WebSocketConnection, peer: str) -> list[WebSocketConnection]:
        """Count a new connection; return those evicted for it.

        Raises:
            CapacityError: over a cap: the connection is answered 503.

        """

    def established(self, connection: WebSocketConnection) -> None:
        """Mark ``connection`` as past its handshake (no longer evictable)."""

    def close(self, connection: WebSocketConnection) -> None:
        """Stop counting ``connection``."""


@dataclasses.dataclass(frozen=True)
class ConnectionOptions:
    """How connections are served.

    Attributes:
        max_message_bytes: the largest message accepted (larger ones close the connection
            with code 1009, as RFC 6455 prescribes).
        executor: run each session's requests on these threads (one at a time per session),
            so a slow or hung env does not stall other sessions; ``None`` serves inline.
        keepalive: TCP keepalive (idle, interval, probes) in seconds, so that the kernel
            reaps half-open connections of vanished clients; ``None`` leaves it off.
        handshake_timeout: seconds from accept to the first message answered (the session
            admitted); past them the connection is aborted.
        close_timeout: seconds a closing handshake may take before the connection is aborted.
        connections: the process's connection caps; ``None``: uncounted.
        busy_wait: seconds the event loop polls instead of sleeping after each binary reply
            that took less than that to serve, so that a client's next request is taken
            without a scheduler wake-up (``ws/awake.py``); ``0``: sleep at once.

    """

    max_message_bytes: int
    executor: concurrent.futures.Executor | None = None
    keepalive: tuple[int, int, int] | None = (30, 10, 3)
    handshake_timeout: float = 10.0
    close_timeout: float = 5.0
    connections: ConnectionCaps | None = None
    busy_wait: float = 0.0


class WebSocketConnection(asyncio.BufferedProtocol):
    """Serve one client: the opening handshake, then one reply per request message.

    Args:
        router: admits requests and builds the session once the upgrade succeeds.
        options: limits, timeouts and threading (see :class:`ConnectionOptions`).
        on_close: called once when the connection is gone.

    Attributes:
        last_activity: ``loop.time()`` of the last request (for idle timeouts).

    """

    def __init__(
        self,
        router: Router,
        *,
        options: ConnectionOptions,
        on_close: Callable[[WebSocketConnection], None],
    ) -> None:
        self._router = router
        self._on_close = on_close
        self._options = options
        self._protocol = ServerProtocol(max_size=options.max_message_bytes)
        self._max_size = options.max_message_bytes
        self._pending: collections.deque[tuple[bytes, bool]] = collections.deque()
        self._busy = False
        self._paused = False
        self.last_activity = 0.0
        self._transport: asyncio.Transport | None = None
        self._fd: int | None = None  # the socket, for gathering writes (not over TLS)
        self._session: ServedSession | None = None
        self._fragments = bytearray()
        self._fragment_count = 0
        self._boundary = FrameBoundary()
        self._head_tail = b""  # the last bytes of the HTTP request seen so far
        self._text = False
        # Reads land in this one buffer: asyncio's default allocates 256 KiB per read.
        self._buffer = memoryview(bytearray(_READ_SIZE))
        self._timer: asyncio.TimerHandle | None = None
        self._handshaking = True
        self._closing = False  # the close deadline is armed
        self._refusal: str | None = None  # over a connection cap: answered 503
        self.peer = "?"
        # Until the method is known (see _plain_http): a non-GET request is read by ws/http.py.
        self._start: bytes | None = b""
        self._plain: PlainRequestReader | None = None
        self._plain_done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # noqa: D102
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self.last_activity = asyncio.get_running_loop().time()
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        sock = transport.get_extra_info("socket")
        if sock is not None and transport.get_extra_info("sslcontext") is None:
            self._fd = sock.fileno()  # gathering writes go straight to a plain TCP socket
        if self._options.keepalive is not None and sock is not None:
            _enable_keepalive(sock, *self._options.keepalive)
        self._arm(self._options.handshake_timeout, "no handshake and first message")
        table = self._options.connections
        if table is None:
            return
        try:
            evicted = table.open(self, str(peer[0]) if peer else "?")
        except CapacityError as exc:
            logger.warning("refusing a connection from %s: %s", self.peer, exc)
            self._refusal = f"{exc}\n"
            self._arm(min(_REFUSAL_WAIT, self._options.handshake_timeout), "refused")
            return
        for victim in evicted:
            logger.warning("dropping %s, still handshaking, for a new connection", victim.peer)
            victim.abort()

    def get_buffer(self, sizehint: int) -> memoryview:  # noqa: D102
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:  # noqa: D102
        chunk = bytes(self._buffer[:nbytes])
        if self._session is None and not self._protocol_fed:
            chunk = self._plain_http(chunk)
            if not chunk:
                return
        if self._simple_frames_only():
            message = parse_binary_frame(chunk, masked=True, max_size=self._max_size)
            if message is not None:
                self._serve(message, text=False)
                return
        if self._session is not None:
            self._boundary.feed(chunk)  # frames the general parser sees; see _simple_frames_only
            self._protocol.receive_data(chunk)
            self._process_events()
            return
        # Frames may follow the upgrade request in the same read: track them from the request's
        # end, or the fast path would take a frame's tail for a frame.
        stream = self._head_tail + chunk
        self._protocol.receive_data(chunk)
        self._process_events()
        if self._session is not None:
            self._boundary.feed(stream[stream.index(b"\r\n\r\n") + 4 :])
        else:
            self._head_tail = stream[-3:]

    def pause_writing(self) -> None:  # noqa: D102
        # The client does not read its replies: hold its requests (those already read wait in
        # order) and stop reading more until it does, so that replies cannot pile up unbounded.
        self._paused = True
        self._update_reading()

    def resume_writing(self) -> None:  # noqa: D102
        self._paused = False
        self._drain()
        self._update_reading()

    def _update_reading(self) -> None:
        """Read only while no request runs on a thread and the client reads its replies.

        One request at a time is buffered: what a client sends meanwhile waits in its socket
        (and TCP's flow control pushes back on it) instead of in this process's memory.
        """
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self._busy or self._paused:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def eof_received(self) -> bool:  # noqa: D102
        self._protocol.receive_eof()
        self._process_events()
        return False

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102
        self._transport = None
        if self._timer is not None:
            self._timer.cancel()
        if self._options.connections is not None:
            self._options.connections.close(self)
        session, self._session = self._session, None
        if session is not None and not self._busy:
            session.close()
        # else: a request of this session runs on a thread; _on_answered closes the session
        # once it returns, so whatever that request builds is closed too.
        self._on_close(self)

    def close(self, code: int = GOING_AWAY, reason: str = "server shutting down") -> None:
        """Start the closing handshake; abort if it has not completed within ``close_timeout``."""
        if self._protocol.state is State.OPEN:
            self._protocol.send_close(code, reason)
            self._flush()
        elif self._transport is not None and self._protocol.state is State.CONNECTING:
            self._close_transport()
        self._arm_close("closing handshake not completed")

    def abort(self) -> None:
        """Drop the connection now."""
        if self._transport is not None:
            self._transport.abort()

    def _arm(self, delay: float, why: str) -> None:
        """Abort the connection in ``delay`` seconds (replacing the previous deadline)."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(delay, self._expire, delay, why)

    def _arm_close(self, why: str) -> None:
        """Start the close deadline, once: later closes must not push it back."""
        if not self._closing and self._transport is not None:
            self._closing = True
            self._arm(self._options.close_timeout, why)

    def _expire(self, delay: float, why: str) -> None:
        logger.info("aborting %s: %s within %.1f s", self.peer, why, delay)
        self._timer = None
        self.abort()

    def _close_transport(self) -> None:
        """Close TCP once written data is flushed; a client that does not read gets aborted."""
        assert self._transport is not None
        if not self._transport.is_closing():
            self._transport.close()
        self._arm_close("buffered data not read")

    @property
    def _protocol_fed(self) -> bool:
        """Tell whether websockets' protocol reads this connection (a GET was seen)."""
        return self._start is None

    def _plain_http(self, chunk: bytes) -> bytes:
        """Route a connection's first bytes: a GET to websockets, anything else to ws/http.py.

        Returns:
            The bytes websockets' protocol is to read now (empty while undecided or plain).

        """
        if self._plain is None:
            assert self._start is not None
            start = self._start + chunk
            verdict = is_plain_request(start)
            if verdict is None:
                self._start = start
                return b""
            if not verdict:
                self._start = None  # from now on, websockets reads
                return start
            self._plain = PlainRequestReader(self._router.max_request_body)
            chunk = start
        if self._plain_done or self._transport is None:
            return b""
        try:
            request = self._plain.feed(chunk)
        except HttpError as exc:
            self._plain_done = True
            self._plain_reply(HttpReply(exc.status, f"{exc.reason}\n"))
            return b""
        if request is not None:
            self._plain_done = True
            self._transport.pause_reading()  # one request per connection
            if self._timer is not None:  # read in time: the answer may take what the env takes
                self._timer.cancel()
                self._timer = None
            self._answer_plain(request)
        return b""

    def _answer_plain(self, request: PlainRequest) -> None:
        if self._refusal is not None:
            self._plain_reply(HttpReply(HTTPStatus.SERVICE_UNAVAILABLE, self._refusal))
            return
        refusal = self._router.admit(request.path, request.query, request.headers)
        if refusal is not None:
            logger.warning("refused a request from %s: %s", self.peer, refusal.text.strip())
            self._plain_reply(refusal)
        elif self._options.executor is None:
            self._plain_reply(self._router.request(request))
        else:
            self._busy = True  # connection_lost leaves the (absent) session alone meanwhile
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(self._options.executor, self._router.request, request)
            future.add_done_callback(self._on_plain_answered)

    def _on_plain_answered(self, done: asyncio.Future[HttpReply]) -> None:
        self._busy = False
        if not done.cancelled():
            self._plain_reply(done.result())

    def _plain_reply(self, reply: HttpReply) -> None:
        """Write a plain request's answer and close (the body is JSON or text)."""
        if self._transport is None:
            return
        if reply.json is not None:
            response = _json_response(reply.status, reply.json)
        else:
            response = self._protocol.reject(reply.status, reply.text)
        self._transport.write(response.serialize())
        self._close_transport()

    def _process_events(self) -> None:
        for event in self._protocol.events_received():
            if isinstance(event, Request):
                self._handshake(event)
            elif isinstance(event, Frame):
                self._on_frame(event)
        self._flush()

    def _handshake(self, request: Request) -> None:
        path, _, query = request.path.partition("?")
        if self._refusal is not None:
            reply: HttpReply | None = HttpReply(HTTPStatus.SERVICE_UNAVAILABLE, self._refusal)
        else:
            reply = self._router.admit(path, query, request.headers.raw_items())
            if reply is not None:
                logger.warning("refused a request from %s: %s", self.peer, reply.text.strip())
            else:
                upgrade = any(
                    value.strip().lower() == "websocket"
                    for value in request.headers.get_all("Upgrade")
                )
                reply = self._router.reply(path, query, upgrade=upgrade)
        response = self._protocol.accept(request) if reply is None else self._http(reply)
        self._protocol.send_response(response)
        self._flush()  # the response goes out before any reply to frames read with it
        if response.status_code == 101:
            self._session = self._router.new_session(path, query)
            attach = getattr(self._session, "attach", None)
            if attach is not None:  # a session that pushes messages unasked (pool sessions)
                loop = asyncio.get_running_loop()
                attach(lambda: loop.call_soon_threadsafe(self._push_events))

    def _http(self, reply: HttpReply) -> Response:
        if reply.body is not None:
            return _response(reply.status, reply.body, reply.content_type, reply.headers)
        if reply.json is None:
            return self._protocol.reject(reply.status, reply.text)
        return _json_response(reply.status, reply.json)

    def _on_frame(self, frame: Frame) -> None:
        if frame.opcode in (Opcode.BINARY, Opcode.TEXT):
            self._text = frame.opcode is Opcode.TEXT
        elif frame.opcode is not Opcode.CONT:
            return  # ping, pong and close are answered by the protocol itself
        if frame.fin and not self._fragment_count:
            self._serve(bytes(frame.data), text=self._text)
            return
        self._fragments += frame.data
        self._fragment_count += 1
        if len(self._fragments) > self._max_size or self._fragment_count > _MAX_FRAGMENTS:
            self._fragments, self._fragment_count = bytearray(), 0
            self._protocol.fail(
                MESSAGE_TOO_BIG,
                f"message over {self._max_size} bytes or {_MAX_FRAGMENTS} fragments",
            )
            return
        if not frame.fin:
            return
        message = bytes(self._fragments)
        self._fragments, self._fragment_count = bytearray(), 0
        self._serve(message, text=self._text)

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
            budget = self._options.busy_wait
            started = time.monotonic() if budget else 0.0
            self._reply(session, _answer(session, message, text))
            after_reply = getattr(session, "after_reply", None)
            if after_reply is not None:  # work the reply did not need, once it is on its way
                after_reply()
            # Only after a quick request: past the budget a wake-up is a small share of the
            # step, and the env may have threads a polling loop would take a core from.
            if budget and not text and time.monotonic() - started < budget:
                keep_awake(budget)
            self._admitted(session)
        else:
            self._submit(session, message, text)

    def _admitted(self, session: ServedSession) -> None:
        """End the handshake phase once the session is past HELLO (OpenEnv's: any message)."""
        if not self._handshaking or not self._router.admitted(session):
            return
        self._handshaking = False
        if self._timer is not None and not self._closing:
            self._timer.cancel()
            self._timer = None
        if self._options.connections is not None:
            self._options.connections.established(self)

    def _drain(self) -> None:
        """Serve queued requests while neither a request runs nor writing is paused."""
        while self._pending and not (self._busy or self._paused) and self._session is not None:
            message, text = self._pending.popleft()
            self._serve(message, text=text)

    def _submit(self, session: ServedSession, message: bytes, text: bool) -> None:
        self._busy = True
        self._update_reading()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._options.executor, _answer, session, message, text)
        future.add_done_callback(lambda done: self._on_answered(session, done))

    def _on_answered(self, session: ServedSession, done: asyncio.Future[Parts]) -> None:
        self._busy = False
        if done.cancelled() or self._session is not session:
            session.close()  # the connection went away meanwhile
            return
        self._reply(session, done.result())
        self._admitted(session)
        if not session.closed:
            self._drain()
        self._update_reading()

    def _reply(self, session: ServedSession, reply: Parts) -> None:
        if self._transport is None or self._protocol.state is not State.OPEN:
            return
        if session.text_protocol:
            self._protocol.send_text(join_parts(reply))
            self._flush()
        elif len(reply) == 1:
            self._transport.write(binary_frame(join_parts(reply), mask=False))
        else:
            self._write_parts(self._transport, reply)
        if session.closed:
            self._protocol.send_close(1000, "session closed")
            self._flush()

    def _write_parts(self, transport: asyncio.Transport, parts: Parts) -> None:
        """Write one binary frame of ``parts`` without joining them: one gathering write.

        Straight to the socket while the transport has nothing buffered (as asyncio's own
        ``writelines`` does from Python 3.12); what the socket does not take, and any write
        over TLS, goes through the transport, copied: the parts may be views of the env's
        arrays, which the next step may change.
        """
        chunks = [binary_header(sum(map(len, parts)), mask=False), *parts]
        sent, fd = 0, self._fd
        if fd is not None and not transport.is_closing() and not transport.get_write_buffer_size():
            try:
                sent = os.writev(fd, chunks)
            except OSError:  # would block, or a broken connection the write below reports
                sent = 0
        rest = []
        for chunk in chunks:
            if sent >= len(chunk):
                sent -= len(chunk)
                continue
            rest.append(memoryview(chunk)[sent:] if sent else chunk)
            sent = 0
        if rest:
            # What the socket did not take, as bytes of its own: a transport may keep what it
            # is given until sent (Python 3.12's does), and the views are the env's arrays.
            transport.write(b"".join(rest))

    def _push_events(self) -> None:
        """Write the messages the session pushes unasked (``session.events()``), in order."""
        session = self._session
        if session is None or self._transport is None or self._protocol.state is not State.OPEN:
            return
        for frame in session.events():  # type: ignore[attr-defined]
            self._transport.write(binary_frame(frame, mask=False))

    def ping_if_working(self) -> bool:
        """Ping the client while its session works unasked (a long step): keepalive.

        Returns:
            True if a ping was sent.

        """
        if self._protocol.state is not State.OPEN or not getattr(self._session, "busy", False):
            return False
        self._protocol.send_ping(b"working")
        self._flush()
        return True

    def close_if_idle(self, now: float, idle_timeout: float) -> bool:
        """Close the connection if no request came for ``idle_timeout`` s; tell if it did."""
        if self._closing or self._busy or now - self.last_activity < idle_timeout:
            return False
        if getattr(self._session, "busy", False):
            self.last_activity = now  # steps in flight: not idle
            return False
        logger.info("closing %s: idle for %.0f s", self.peer, now - self.last_activity)
        self.close(GOING_AWAY, "idle timeout")
        return True

    def _simple_frames_only(self) -> bool:
        """Tell whether no partial frame is pending, so a whole frame may bypass the protocol."""
        return (
            self._session is not None
            and self._protocol.state is State.OPEN
            and not self._fragment_count
            and self._boundary.at_boundary
            and not self._protocol.reader.buffer
        )

    def _flush(self) -> None:
        transport = self._transport
        if transport is None:
            return
        for chunk in self._protocol.data_to_send():
            if not chunk:  # end of stream: the protocol is done with this connection
                self._close_transport()  # flushes what is buffered first
                return
            transport.write(chunk)
        if self._protocol.close_expected():
            self._close_transport()  # after the closing handshake the server closes TCP first


def _answer(session: ServedSession, message: bytes, text: bool) -> Parts:
    if text != session.text_protocol:
        return [
            session.refuse(
                "OpenEnv messages on /ws are JSON text frames"
                if session.text_protocol
                else "text frames are refused: the protocol is binary msgpack"
            )
        ]
    handle_parts = getattr(session, "handle_parts", None)  # a reply with views of large arrays
    return [session.handle(message)] if handle_parts is None else handle_parts(message)


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


def _response(
    status: int, body: bytes, content_type: str, extra: tuple[tuple[str, str], ...]
) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
            *extra,
        ]
    )
    return Response(status, HTTPStatus(status).phrase, headers, body)


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
