"""A connection to one server: handshake, request/reply, timeouts, typed errors.

Opened with the protocol handshake of ``ws/handshake.py``. Requests can be split in two halves
(:meth:`Connection.send` then :meth:`Connection.receive`) so that a vector env sends to every
shard before it waits for any.
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Sequence
from typing import Any, Literal

from websockets.exceptions import ConnectionClosed

from openenv_gym.errors import (
    CallTimeoutError,
    ConnectionLostError,
    DecodeError,
)
from openenv_gym.protocol import codec
from openenv_gym.protocol.compression import (
    CODECS,
    DEFAULT_THRESHOLD,
    CodecName,
    available_codecs,
    make_compressor,
)
from openenv_gym.protocol.messages import Op, Status, parse_reply
from openenv_gym.ws.client import BlockingWebSocket
from openenv_gym.ws.handshake import (
    ALLOW_INSECURE_TOKEN_ENV,
    DEFAULT_CONNECT_TIMEOUT,
    HELLO_ID,
    connect,
    is_loopback,
    probe,
    reply_error,
    token_allowed,
)

__all__ = [
    "ALLOW_INSECURE_TOKEN_ENV",
    "AUTO_BUSY_WAIT",
    "DEFAULT_CALL_TIMEOUT",
    "DEFAULT_CONNECT_TIMEOUT",
    "BusyWaitOption",
    "CompressionOption",
    "Connection",
    "busy_wait_seconds",
    "offered_codecs",
    "probe",
    "token_allowed",
]

DEFAULT_CALL_TIMEOUT = 300.0
"""Seconds to wait for any one reply (a hung env must not hang the trainer forever)."""

CompressionOption = Literal["auto", "zstd", "lz4"] | None
"""What a client asks for at HELLO (see :class:`Connection`'s ``compression``)."""


BusyWaitOption = float | Literal["auto"]
"""How long a wait for a reply polls before it sleeps (see :func:`busy_wait_seconds`)."""

AUTO_BUSY_WAIT = 0.002
"""Seconds of ``busy_wait="auto"``: covers a fast step's round trip (CartPole at 4096 envs
takes ~1 ms); a slower reply costs at most this much CPU before the wait sleeps."""


def busy_wait_seconds(option: BusyWaitOption, urls: Sequence[str]) -> float:
    """Return the seconds each wait for a reply from ``urls`` polls before sleeping.

    A client that sleeps while its server steps is woken by the scheduler when the reply
    lands, ~0.1-0.2 ms later on a VM; polling meanwhile takes the reply at once, but keeps a
    core busy. ``"auto"`` polls :data:`AUTO_BUSY_WAIT` seconds unless the loopback servers
    among ``urls`` are as many as this process's cores: those servers then need every core,
    and a polling client would slow them down. (Under ``"auto"`` a connection also stops
    polling while other Python threads compete for the GIL; see
    ``BlockingWebSocket.busy_wait_alone``.) A number is the seconds, polled whatever the
    threads (``0``: never poll).

    Raises:
        ValueError: ``option`` is neither ``"auto"`` nor a number of seconds >= 0.

    """
    if option == "auto":
        local = sum(1 for url in urls if is_loopback(url))
        return AUTO_BUSY_WAIT if local < len(os.sched_getaffinity(0)) else 0.0
    if isinstance(option, bool) or not isinstance(option, (int, float)) or not option >= 0:
        raise ValueError(f"busy_wait must be 'auto' or seconds >= 0, got {option!r}")
    return float(option)


def offered_codecs(url: str, compression: CompressionOption) -> tuple[CodecName, ...]:
    """Return the codecs to offer ``url`` at HELLO for the ``compression`` option.

    Raises:
        ImportError: a named codec's package is not installed (extra ``compression``).
        ValueError: ``compression`` is no option.

    """
    if compression is None:
        return ()
    if compression == "auto":
        return () if is_loopback(url) else available_codecs()
    if compression not in CODECS:
        raise ValueError(
            f"compression must be 'auto', {', '.join(map(repr, CODECS))} or None, "
            f"got {compression!r}"
        )
    make_compressor(compression)  # the codec's package is there, or the error naming the extra
    return (compression,)


class Connection:
    """A protocol session with one server, opened and handshaken on construction.

    Args:
        url: ``ws://host:port`` of the server.
        connect_timeout: seconds for connecting plus the HELLO handshake.
        call_timeout: default seconds to wait for each reply; ``None`` waits forever.
        max_message_bytes: largest frame accepted or sent.
        token: the server's shared secret (default: ``$OPENENV_GYM_TOKEN``). Sent only to
            ``wss://`` URLs and loopback hosts (see :func:`token_allowed`).
        ssl_context: TLS settings for ``wss://`` URLs (default: the system's trusted CAs).
        allow_insecure_token: also send the token in clear text over ``ws://`` to other
            hosts (as does ``$OPENENV_GYM_ALLOW_INSECURE_TOKEN=1``); anyone on the path can
            read it.
        compression: per-message compression to ask for at HELLO
            (``protocol/compression.py``): ``"auto"`` (the default) offers every installed
            codec to servers that are not loopback and none to loopback ones (where copying
            is cheaper than compressing); ``"zstd"`` or ``"lz4"`` offers that one; ``None``
            none. The server chooses; :attr:`compression` is what it chose.
        compression_threshold: the smallest message either side compresses.
        busy_wait: seconds each wait for a reply polls before it sleeps (see
            :func:`busy_wait_seconds`; ``"auto"`` decides for this one URL).

    Raises:
        InsecureTokenError: there is a token, the URL is plain ``ws://`` to a host that is not
            loopback, and no opt-in: raised before any connection is attempted.
        ConnectError: the server cannot be reached or its handshake fails.
        AuthenticationError: the server refused the token.
        CapacityError: the server is at its session limit.
        VersionMismatchError: the server speaks another protocol version.
        ImportError: ``compression`` names a codec whose package is not installed.

    """

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        call_timeout: float | None = DEFAULT_CALL_TIMEOUT,
        max_message_bytes: int = codec.DEFAULT_MAX_MESSAGE_BYTES,
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        allow_insecure_token: bool = False,
        compression: CompressionOption = "auto",
        compression_threshold: int = DEFAULT_THRESHOLD,
        busy_wait: BusyWaitOption = "auto",
    ) -> None:
        seconds = busy_wait_seconds(busy_wait, [url])  # a bad value fails before connecting
        self.url = url
        self.call_timeout = call_timeout
        self.max_message_bytes = max_message_bytes
        self._next_id = HELLO_ID + 1
        self._ws: BlockingWebSocket | None = None
        self._ws, self.hello = connect(
            url,
            timeout=connect_timeout,
            max_message_bytes=max_message_bytes,
            token=token,
            ssl_context=ssl_context,
            allow_insecure_token=allow_insecure_token,
            compression=offered_codecs(url, compression),
            compression_threshold=compression_threshold,
        )
        self._ws.busy_wait = seconds
        self._ws.busy_wait_alone = busy_wait == "auto"
        self.bytes_sent = 0
        """Bytes of messages sent after HELLO, as on the wire (compressed or not)."""
        self.bytes_received = 0
        """Bytes of messages received after HELLO, as on the wire."""
        self.compression: CodecName | None = self.hello.compression
        """The codec of this session's messages (``None``: plain msgpack)."""
        self._compressor = (
            None
            if self.compression is None
            else make_compressor(self.compression, threshold=compression_threshold)
        )

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._ws is None

    def send(self, op: Op, body: Any) -> int:
        """Send one request and return its id without waiting for the reply.

        Raises:
            ConnectionLostError: the connection is closed or breaks while sending.
            EncodeError: ``body`` cannot be encoded.
            MessageTooLargeError: the request is over ``max_message_bytes``.

        """
        ws = self._require_open(op.name)
        request_id, frame = self.encode(op, body)
        return self._send_frame(ws, op, request_id, frame)

    def encode(self, op: Op, body: Any) -> tuple[int, bytes]:
        """Encode one request without sending it: ``(its id, its frame)``.

        For requests to several servers that must all go or none (see
        :meth:`send_encoded`); ids taken by requests never sent are harmless.

        Raises:
            EncodeError: ``body`` cannot be encoded.
            MessageTooLargeError: the request is over ``max_message_bytes``.

        """
        request_id = self._next_id
        self._next_id += 1
        # op.value, a plain int: an IntEnum would take the codec's Python fallback per message.
        frame = codec.encode([op.value, request_id, body], max_bytes=self.max_message_bytes)
        if self._compressor is not None:
            frame = self._compressor.compress(frame)
        return request_id, frame

    def send_encoded(self, op: Op, request_id: int, frame: bytes) -> int:
        """Send a request :meth:`encode` made; return its id.

        Raises:
            ConnectionLostError: the connection is closed or breaks while sending.

        """
        return self._send_frame(self._require_open(op.name), op, request_id, frame)

    def _send_frame(self, ws: BlockingWebSocket, op: Op, request_id: int, frame: bytes) -> int:
        self.bytes_sent += len(frame)
        try:
            ws.send(frame)
        except ConnectionClosed as exc:
            raise self._lost(op.name, exc) from exc
        return request_id

    def receive(
        self, request_id: int, *, timeout: float | None = None, operation: str = "request"
    ) -> Any:
        """Wait for the reply to ``request_id`` and return its body.

        Args:
            request_id: what :meth:`send` returned.
            timeout: seconds to wait; ``None`` uses the connection's ``call_timeout``.
            operation: what to call the request in error messages.

        Raises:
            CallTimeoutError: no reply within the timeout.
            ConnectionLostError: the server closed the connection or went away.
            RemoteError: the server answered with an error (a subclass matching its type).
            DecodeError: the reply is malformed.

        """
        ws = self._require_open(operation)
        timeout = self.call_timeout if timeout is None else timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                frame = ws.recv(timeout=remaining)
            except TimeoutError:
                raise CallTimeoutError(self.url, operation, timeout or 0.0) from None
            except ConnectionClosed as exc:
                raise self._lost(operation, exc) from exc
            status, reply_id, body = parse_reply(self._decode(frame))
            if reply_id == request_id or reply_id == 0:
                break
            # A reply to an earlier request that timed out: drop it, keep waiting.
        if status is Status.ERROR:
            raise self._remote_error(body)
        return body

    def request(
        self,
        op: Op,
        body: Any = None,
        *,
        timeout: float | None = None,
        operation: str | None = None,
    ) -> Any:
        """Send one request and return the body of its reply (see :meth:`receive`)."""
        request_id = self.send(op, body)
        return self.receive(request_id, timeout=timeout, operation=operation or op.name.lower())

    def fileno(self) -> int:
        """Return the socket's descriptor (``-1`` once closed), to wait on several connections."""
        return -1 if self._ws is None else self._ws.fileno()

    def has_message(self) -> bool:
        """Tell whether :meth:`next_message` would return without reading the socket."""
        return self._ws is not None and self._ws.has_message()

    def next_message(self, timeout: float | None, operation: str) -> list[Any]:
        """Return the next message as ``[status, request_id, body]``, pushed ones included.

        Pool sessions get POOL_EVENT messages (status 2) besides replies; this returns both
        without matching ids (``client/env_pool.py`` does).

        Raises:
            TimeoutError: no whole message within ``timeout``.
            ConnectionLostError: the connection closed or broke.
            DecodeError: the message is not a 3-array with an int status.

        """
        ws = self._require_open(operation)
        try:
            frame = ws.recv(timeout=timeout)
        except ConnectionClosed as exc:
            raise self._lost(operation, exc) from exc
        message = self._decode(frame)
        if not (isinstance(message, list) and len(message) == 3 and type(message[0]) is int):
            raise DecodeError(f"{self.url}: a message must be [status, id, body]")
        return message

    def _decode(self, frame: bytes | bytearray | str) -> Any:
        """Count, inflate (if the session compresses) and decode one received message.

        Raises:
            DecodeError: a text frame, or bytes that are no valid (compressed) message.
            MessageTooLargeError: a compressed frame declares more than the message limit.

        """
        if isinstance(frame, str):
            raise DecodeError(f"{self.url}: text frame received, the protocol is binary")
        self.bytes_received += len(frame)
        if self._compressor is not None:
            frame = self._compressor.decompress(frame, max_bytes=self.max_message_bytes)
        return codec.decode(frame, max_bytes=None)

    def close(self) -> None:
        """Close the connection (not the session's envs: send CLOSE first); idempotent."""
        ws, self._ws = self._ws, None
        if ws is not None:
            ws.close()

    def _require_open(self, operation: str) -> BlockingWebSocket:
        if self._ws is None:
            raise ConnectionLostError(self.url, f"{operation} on a closed connection")
        return self._ws

    def _lost(self, operation: str, exc: ConnectionClosed) -> ConnectionLostError:
        detail = f"code {exc.rcvd.code}: {exc.rcvd.reason}" if exc.rcvd else "no close frame"
        return ConnectionLostError(self.url, f"connection lost during {operation} ({detail})")

    def _remote_error(self, body: Any) -> Exception:
        return reply_error(self.url, body)
