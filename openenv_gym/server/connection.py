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
import logging
from collections.abc import Callable
from http import HTTPStatus

from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from openenv_gym.protocol.framing import binary_frame, parse_binary_frame
from openenv_gym.server.session import Session

__all__ = ["WebSocketConnection"]

logger = logging.getLogger("openenv_gym.server")

HEALTH_PATH = "/healthz"
GOING_AWAY = 1001


_READ_SIZE = 1 << 16


class WebSocketConnection(asyncio.BufferedProtocol):
    """Serve one client: the opening handshake, then one reply per request message.

    Args:
        new_session: builds the session for this connection once the upgrade succeeds.
        max_message_bytes: the largest message accepted (larger ones close the connection
            with code 1009, as RFC 6455 prescribes).
        on_close: called once when the connection is gone.

    """

    def __init__(
        self,
        new_session: Callable[[], Session],
        *,
        max_message_bytes: int,
        on_close: Callable[[WebSocketConnection], None],
    ) -> None:
        self._new_session = new_session
        self._on_close = on_close
        self._protocol = ServerProtocol(max_size=max_message_bytes)
        self._max_size = max_message_bytes
        self._transport: asyncio.Transport | None = None
        self._session: Session | None = None
        self._fragments: list[bytes] = []
        self._text = False
        # Reads land in this one buffer: asyncio's default allocates 256 KiB per read.
        self._buffer = memoryview(bytearray(_READ_SIZE))
        self.peer = "?"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # noqa: D102
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"

    def get_buffer(self, sizehint: int) -> memoryview:  # noqa: D102
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:  # noqa: D102
        chunk = bytes(self._buffer[:nbytes])
        if self._simple_frames_only():
            message = parse_binary_frame(chunk, masked=True, max_size=self._max_size)
            if message is not None:
                self._serve(message, text=False)
                return
        self._protocol.receive_data(chunk)
        self._process_events()

    def eof_received(self) -> bool:  # noqa: D102
        self._protocol.receive_eof()
        self._process_events()
        return False

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102
        self._transport = None
        session, self._session = self._session, None
        if session is not None:
            session.close()
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
        if request.path.partition("?")[0] == HEALTH_PATH:
            response = self._protocol.reject(HTTPStatus.OK, "ok\n")
        else:
            response = self._protocol.accept(request)
        self._protocol.send_response(response)
        if response.status_code == 101:
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

    def _serve(self, message: bytes, *, text: bool) -> None:
        """Answer one request message (one reply frame; a closing handshake after CLOSE)."""
        session = self._session
        if session is None or self._protocol.state is not State.OPEN or self._transport is None:
            return
        if text:
            reply = session.refuse("text frames are refused: the protocol is binary msgpack")
        else:
            reply = session.handle(message)
        self._transport.write(binary_frame(reply, mask=False))
        if session.closed:
            self._protocol.send_close(1000, "session closed")
            self._flush()

    def _simple_frames_only(self) -> bool:
        """Tell whether no partial frame is pending, so a whole frame may bypass the protocol."""
        return (
            self._session is not None
            and self._protocol.state is State.OPEN
            and not self._fragments
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
