"""The protocol's opening handshake over a WebSocket: HELLO, and a readiness probe.

A server is ready when it completes this handshake; providers wait on :func:`probe` (never a
sleep), and the client's :class:`~openenv_gym.client.connection.Connection` opens its sessions
with :func:`connect`. Knows the wire format (``protocol/``) and WebSockets (``ws/client.py``),
nothing of gymnasium or of the client's envs.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from collections.abc import Sequence
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidURI
from websockets.uri import parse_uri

from openenv_gym.errors import (
    AuthenticationError,
    CapacityError,
    ConnectError,
    DecodeError,
    InsecureTokenError,
    OpenEnvError,
    RemoteError,
    TransportError,
    VersionMismatchError,
    remote_error,
)
from openenv_gym.protocol import codec
from openenv_gym.protocol.compression import DEFAULT_THRESHOLD
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
from openenv_gym.ws.client import BlockingWebSocket

__all__ = [
    "ALLOW_INSECURE_TOKEN_ENV",
    "DEFAULT_CONNECT_TIMEOUT",
    "connect",
    "is_loopback",
    "probe",
    "reply_error",
    "token_allowed",
]

DEFAULT_CONNECT_TIMEOUT = 10.0
"""Seconds to open a connection and complete the protocol handshake."""

ALLOW_INSECURE_TOKEN_ENV = "OPENENV_GYM_ALLOW_INSECURE_TOKEN"
"""Set to ``1`` to send tokens over plain ``ws://`` to any host, as ``allow_insecure_token``."""

HELLO_ID = 1
"""The request id of HELLO, the first request of every session."""

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
        secure = parse_uri(url).secure
    except InvalidURI:
        return False
    return secure or is_loopback(url)


def is_loopback(url: str) -> bool:
    """Tell whether ``url``'s host is loopback: ``127.0.0.0/8``, ``::1`` or ``localhost``.

    Pure: no name lookup (other names are not trusted to stay on this machine). ``False`` for
    a URL that is not a valid WebSocket URL.
    """
    try:
        uri = parse_uri(url)
    except InvalidURI:
        return False
    if uri.host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(uri.host.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def connect(
    url: str,
    *,
    timeout: float,
    max_message_bytes: int = codec.DEFAULT_MAX_MESSAGE_BYTES,
    token: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    allow_insecure_token: bool = False,
    compression: Sequence[str] = (),
    compression_threshold: int = DEFAULT_THRESHOLD,
) -> tuple[BlockingWebSocket, HelloReply]:
    """Open a WebSocket to ``url`` and complete HELLO (request id :data:`HELLO_ID`).

    Args:
        url: ``ws://host:port`` or ``wss://`` of the server.
        timeout: seconds for connecting plus the handshake.
        max_message_bytes: largest message accepted.
        token: the server's shared secret (``None``: ``$OPENENV_GYM_TOKEN``, if set). Sent
            only to ``wss://`` URLs and loopback hosts (see :func:`token_allowed`).
        ssl_context: TLS settings for ``wss://`` (default: the system's trusted CAs).
        allow_insecure_token: also send the token in clear text to other hosts.
        compression: codecs to offer at HELLO, in order of preference (``()``: none).
        compression_threshold: the smallest message either side compresses.

    Returns:
        The open socket (the session is past HELLO) and the server's HELLO reply, whose
        ``compression`` is the codec agreed on (one of ``compression``, or ``None``).

    Raises:
        InsecureTokenError: a token would travel in clear text; raised before connecting.
        AuthenticationError: the server refused the token (HTTP 401).
        CapacityError: the server is at its session limit.
        VersionMismatchError: the server speaks another protocol version.
        ConnectError: the server cannot be reached or its handshake fails.

    """
    token = token or os.environ.get("OPENENV_GYM_TOKEN") or None
    if token:
        _check_token_url(url, allow_insecure_token)
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        ws = BlockingWebSocket(
            url,
            open_timeout=timeout,
            max_size=max_message_bytes,
            headers=headers,
            ssl_context=ssl_context,
        )
    except TransportError as exc:
        if exc.status == 401:
            raise AuthenticationError(url, "the server refused the token (HTTP 401)") from exc
        raise ConnectError(url, str(exc)) from exc
    try:
        hello = Hello(
            protocol_version=PROTOCOL_VERSION,
            client="openenv-gym",
            compression=list(compression),
            compression_threshold=compression_threshold,
        )
        try:
            body = _exchange(ws, url, Op.HELLO, HELLO_ID, hello.wire(), timeout)
        except DecodeError as exc:
            if not compression or not isinstance(exc, RemoteError):
                raise
            # A server older than compression refuses the unknown field; a failed HELLO
            # leaves the session NEW, so ask again without it (docs/protocol.md, 5.2).
            plain = Hello(protocol_version=PROTOCOL_VERSION, client="openenv-gym")
            body = _exchange(ws, url, Op.HELLO, HELLO_ID, plain.wire(), timeout)
        reply = parse_body(HelloReply, body)
        if reply.compression is not None and reply.compression not in compression:
            raise DecodeError(
                f"the server chose compression {reply.compression!r}; offered: "
                f"{', '.join(compression) or 'none'}"
            )
        return ws, reply
    except (VersionMismatchError, CapacityError):
        ws.close()
        raise
    except OpenEnvError as exc:
        ws.close()
        raise ConnectError(url, f"protocol handshake failed: {exc}") from exc
    except BaseException:
        ws.close()
        raise


def probe(
    url: str,
    *,
    timeout: float = DEFAULT_CONNECT_TIMEOUT,
    token: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    allow_insecure_token: bool = False,
) -> HelloReply:
    """Connect, complete the protocol handshake, and disconnect: a readiness check.

    Returns:
        The server's HELLO reply (its protocol version and name).

    Raises:
        InsecureTokenError: a token would travel in clear text (see :func:`connect`).
        ConnectError: the server is not (yet) reachable or fails the handshake.
        VersionMismatchError: it speaks another protocol version.

    """
    ws, hello = connect(
        url,
        timeout=timeout,
        token=token,
        ssl_context=ssl_context,
        allow_insecure_token=allow_insecure_token,
    )
    try:
        _exchange(ws, url, Op.CLOSE, HELLO_ID + 1, None, timeout)
        return hello
    except OpenEnvError as exc:
        raise ConnectError(url, f"closing the probe's session failed: {exc}") from exc
    finally:
        ws.close()


def reply_error(url: str, body: Any) -> OpenEnvError:
    """Return the exception an error reply's ``body`` stands for (not raised).

    Raises:
        DecodeError: ``body`` is no error body.

    """
    error = parse_body(ErrorBody, body)
    if error.type.endswith("VersionMismatchError") and error.details:
        return VersionMismatchError(url, PROTOCOL_VERSION, int(error.details["server_version"]))
    return remote_error(url, error.type, error.message, error.traceback)


def _exchange(
    ws: BlockingWebSocket, url: str, op: Op, request_id: int, body: Any, timeout: float
) -> Any:
    """Send one request and return its reply's body; raise the reply's error."""
    try:
        ws.send(codec.encode([op.value, request_id, body]))
        frame = ws.recv(timeout=timeout)
    except TimeoutError:
        raise ConnectError(url, f"no reply to {op.name} within {timeout:g} s") from None
    except ConnectionClosed as exc:
        raise ConnectError(url, f"connection closed during {op.name}: {exc}") from exc
    if isinstance(frame, str):
        raise DecodeError(f"{url}: text frame received, the protocol is binary")
    status, _, reply = parse_reply(codec.decode(frame, max_bytes=None))
    if status is Status.ERROR:
        raise reply_error(url, reply)
    return reply


def _check_token_url(url: str, allow_insecure_token: bool) -> None:
    """Raise unless a token may be sent to ``url`` (see :func:`token_allowed`)."""
    try:
        parse_uri(url)
    except InvalidURI as exc:
        raise ConnectError(url, f"invalid url: {exc}") from exc
    opted_in = allow_insecure_token or os.environ.get(ALLOW_INSECURE_TOKEN_ENV) == "1"
    if not opted_in and not token_allowed(url):
        raise InsecureTokenError(url)
