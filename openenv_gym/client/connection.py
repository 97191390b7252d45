"""A connection to one server: handshake, request/reply, timeouts, typed errors.

The only client module that knows about WebSockets. Requests can be split in two halves
(:meth:`Connection.send` then :meth:`Connection.receive`) so that a vector env sends to every
shard before it waits for any.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
import time
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidURI
from websockets.uri import parse_uri

from openenv_gym.client.transport import BlockingWebSocket, TransportError
from openenv_gym.errors import (
    AuthenticationError,
    CallTimeoutError,
    CapacityError,
    ConnectError,
    ConnectionLostError,
    DecodeError,
    InsecureTokenError,
    OpenEnvError,
    VersionMismatchError,
    remote_error,
)
from openenv_gym.protocol import codec
from openenv_gym.protocol.messages import (
    PROTOCOL_VERSION,
    ErrorBody,
    Hello,
    HelloReply,
    Op,
    Status,
    parse_body,
    parse_reply,
)

__all__ = [
    "ALLOW_INSECURE_TOKEN_ENV",
    "DEFAULT_CALL_TIMEOUT",
    "DEFAULT_CONNECT_TIMEOUT",
    "Connection",
    "probe",
    "token_allowed",
]

DEFAULT_CONNECT_TIMEOUT = 10.0
"""Seconds to open a connection and complete the protocol handshake."""

DEFAULT_CALL_TIMEOUT = 300.0
"""Seconds to wait for any one reply (a hung env must not hang the trainer forever)."""

ALLOW_INSECURE_TOKEN_ENV = "OPENENV_GYM_ALLOW_INSECURE_TOKEN"
"""Set to ``1`` to send tokens over plain ``ws://`` to any host, as ``allow_insecure_token``."""

_LOOPBACK_NAMES = frozenset({"localhost", "localhost."})


def token_allowed(url: str) -> bool:
    """Tell whether a token may travel to ``url``: over TLS, or to a loopback host.

    ``wss://`` URLs and the hosts ``127.0.0.0/8``, ``::1`` (also IPv4-mapped) and
    ``localhost`` qualify. Other host names are not resolved: a name is not trusted to stay
    on this machine. Pure: no name lookup, no socket.

    Args:
        url: a ``ws://`` or ``wss://`` URL.

    Returns:
        ``False`` also for a URL that is not a valid WebSocket URL.

    """
    try:
        uri = parse_uri(url)
    except InvalidURI:
        return False
    if uri.secure or uri.host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(uri.host.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


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

    Raises:
        InsecureTokenError: there is a token, the URL is plain ``ws://`` to a host that is not
            loopback, and no opt-in: raised before any connection is attempted.
        ConnectError: the server cannot be reached or its handshake fails.
        AuthenticationError: the server refused the token.
        CapacityError: the server is at its session limit.
        VersionMismatchError: the server speaks another protocol version.

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
    ) -> None:
        self.url = url
        token = token or os.environ.get("OPENENV_GYM_TOKEN") or None
        if token:
            _check_token_url(url, allow_insecure_token)
        headers = {"Authorization": f"Bearer {token}"} if token else None
        self.call_timeout = call_timeout
        self.max_message_bytes = max_message_bytes
        self._next_id = 1
        self._ws: BlockingWebSocket | None = None
        try:
            self._ws = BlockingWebSocket(
                url,
                open_timeout=connect_timeout,
                max_size=max_message_bytes,
                headers=headers,
                ssl_context=ssl_context,
            )
        except TransportError as exc:
            if exc.status == 401:
                raise AuthenticationError(url, "the server refused the token (HTTP 401)") from exc
            raise ConnectError(url, str(exc)) from exc
        try:
            body = self.request(
                Op.HELLO,
                Hello(protocol_version=PROTOCOL_VERSION, client="openenv-gym").model_dump(),
                timeout=connect_timeout,
                operation="handshake",
            )
            self.hello = parse_body(HelloReply, body)
        except (VersionMismatchError, CapacityError):
            self.close()
            raise
        except OpenEnvError as exc:
            self.close()
            raise ConnectError(url, f"protocol handshake failed: {exc}") from exc
        except BaseException:
            self.close()
            raise

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
        request_id = self._next_id
        self._next_id += 1
        # op.value, a plain int: an IntEnum would take the codec's Python fallback per message.
        frame = codec.encode([op.value, request_id, body], max_bytes=self.max_message_bytes)
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
            if isinstance(frame, str):
                raise DecodeError(f"{self.url}: text frame received, the protocol is binary")
            status, reply_id, body = parse_reply(codec.decode(frame, max_bytes=None))
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
        error = parse_body(ErrorBody, body)
        if error.type.endswith("VersionMismatchError") and error.details:
            return VersionMismatchError(
                self.url, PROTOCOL_VERSION, int(error.details["server_version"])
            )
        return remote_error(self.url, error.type, error.message, error.traceback)


def _check_token_url(url: str, allow_insecure_token: bool) -> None:
    """Raise unless a token may be sent to ``url`` (see :func:`token_allowed`)."""
    try:
        parse_uri(url)
    except InvalidURI as exc:
        raise ConnectError(url, f"invalid url: {exc}") from exc
    opted_in = allow_insecure_token or os.environ.get(ALLOW_INSECURE_TOKEN_ENV) == "1"
    if not opted_in and not token_allowed(url):
        raise InsecureTokenError(url)


def probe(
    url: str,
    *,
    timeout: float = DEFAULT_CONNECT_TIMEOUT,
    token: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    allow_insecure_token: bool = False,
) -> HelloReply:
    """Connect, complete the protocol handshake, and disconnect: a readiness check.

    Raises:
        InsecureTokenError: a token would travel in clear text (see :class:`Connection`).
        ConnectError: the server is not (yet) reachable or fails the handshake.
        VersionMismatchError: it speaks another protocol version.

    """
    connection = Connection(
        url,
        connect_timeout=timeout,
        token=token,
        ssl_context=ssl_context,
        allow_insecure_token=allow_insecure_token,
    )
    try:
        connection.request(Op.CLOSE, timeout=timeout)
        return connection.hello
    finally:
        connection.close()
