"""One OpenEnv WebSocket session (one env on the server): JSON text requests and replies.

A request is ``{"type": "reset" | "step" | "state" | "close", "data": {...}}``; its reply is
``{"type": "observation" | "state" | "error", "data": {...}}``. An ``error`` reply becomes the
typed exception (``CAPACITY_REACHED`` a :class:`~openenv_gym.errors.CapacityError`, any other
code a :class:`~openenv_gym.errors.RemoteError` whose ``remote_type`` is the code).
"""

from __future__ import annotations

import contextlib
import inspect
import json
from typing import Any, cast

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import ClientConnection, connect

from openenv_gym.errors import (
    CallTimeoutError,
    CapacityError,
    ConnectError,
    ConnectionLostError,
    DecodeError,
    remote_error,
)

__all__ = ["MAX_MESSAGE_BYTES", "OpenEnvConnection", "raise_error_reply"]

MAX_MESSAGE_BYTES = 1 << 28
"""Largest WebSocket message accepted (observations may carry images)."""

# ``proxy`` appeared in websockets 15; loopback and remote servers are reached directly.
_NO_PROXY: dict[str, Any] = (
    {"proxy": None} if "proxy" in inspect.signature(connect).parameters else {}
)


def raise_error_reply(url: str, data: dict[str, Any]) -> None:
    """Raise the typed exception for the ``data`` of an OpenEnv ``error`` reply.

    Raises:
        CapacityError: the code is ``CAPACITY_REACHED``.
        RemoteError: any other code (its ``remote_type``), with pydantic's details if sent.

    """
    code = str(data.get("code", "ERROR"))
    message = str(data.get("message", ""))
    if code == "CAPACITY_REACHED":
        raise CapacityError(
            "sessions", int(data.get("active_sessions", 0)), int(data.get("max_sessions", 0))
        )
    if "errors" in data:  # pydantic's validation details say which field and why
        message = f"{message}: {json.dumps(data['errors'], default=str)}"
    raise remote_error(url, code, message)


class OpenEnvConnection:
    """One OpenEnv WebSocket session; a request may be sent before the previous reply is read.

    After a timeout or a lost connection the session is closed: a late reply would otherwise
    answer the next request.

    Args:
        url: the session's ``ws(s)://.../ws`` URL.
        connect_timeout: seconds to connect and complete the opening handshake.
        call_timeout: default seconds to wait for each reply; ``None`` waits forever.

    Raises:
        ConnectError: the server cannot be reached or refuses the WebSocket.

    """

    def __init__(self, url: str, *, connect_timeout: float, call_timeout: float | None) -> None:
        self.url = url
        self.call_timeout = call_timeout
        self.closed = False
        try:
            opened = connect(
                url,
                open_timeout=connect_timeout,
                close_timeout=2.0,
                ping_interval=None,  # call_timeout bounds every wait instead
                max_size=MAX_MESSAGE_BYTES,
                **_NO_PROXY,
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise ConnectError(url, f"cannot open an OpenEnv session: {exc}") from exc
        # Entered as a context manager (websockets >= 17.1 asks for it); closed in close().
        self._ws = cast(ClientConnection, opened).__enter__()

    def send(self, kind: str, data: Any = None) -> None:
        """Send one ``{"type": kind, "data": data}`` message (no ``data`` when ``None``).

        Raises:
            ConnectionLostError: the session is closed or the server went away.
            RemoteError, CapacityError: the server had sent an error reply before closing.

        """
        message: dict[str, Any] = {"type": kind}
        if data is not None:
            message["data"] = data
        if self.closed:
            raise ConnectionLostError(self.url, "the session is closed")
        try:
            self._ws.send(json.dumps(message))
        except (ConnectionClosed, OSError) as exc:
            self._raise_queued_error()  # e.g. CAPACITY_REACHED, sent just before closing
            self.close()
            raise ConnectionLostError(self.url, f"server went away: {exc}") from exc

    def _raise_queued_error(self) -> None:
        """Raise the error reply the server sent before closing, if one is queued."""
        try:
            raw = self._ws.recv(timeout=0)
        except Exception:  # nothing queued: the caller reports the lost connection
            return
        self.close()
        self._parse(raw)

    def receive(self, operation: str, timeout: float | None = None) -> dict[str, Any]:
        """Wait for the next reply and return its ``data``.

        Args:
            operation: names the request in errors.
            timeout: seconds to wait (default: ``call_timeout``); a timeout is reported
                against ``call_timeout`` when it is set.

        Raises:
            RemoteError: the server answered with an error (``remote_type`` is its code).
            CapacityError: the server is at its session limit.
            CallTimeoutError: no reply within the timeout.
            ConnectionLostError: the server went away.
            DecodeError: the reply is not an OpenEnv JSON message.

        """
        if self.closed:
            raise ConnectionLostError(self.url, "the session is closed")
        wait = self.call_timeout if timeout is None else timeout
        try:
            raw = self._ws.recv(timeout=wait)
        except TimeoutError as exc:
            self.close()
            limit = self.call_timeout if self.call_timeout is not None else wait
            raise CallTimeoutError(self.url, operation, limit or 0.0) from exc
        except (ConnectionClosed, OSError) as exc:
            self.close()
            raise ConnectionLostError(self.url, f"server went away during {operation}") from exc
        return self._parse(raw)

    def _parse(self, raw: str | bytes) -> dict[str, Any]:
        """Return a reply's ``data``; raise the typed error of an ``error`` reply."""
        try:
            reply = json.loads(raw)
            data = reply.get("data") or {}
        except (ValueError, AttributeError) as exc:
            self.close()
            raise DecodeError(f"{self.url}: not an OpenEnv reply: {raw[:200]!r}") from exc
        if reply.get("type") == "error":
            raise_error_reply(self.url, data)
        return cast(dict[str, Any], data)

    def request(self, kind: str, data: Any = None) -> dict[str, Any]:
        """Send a message and return the ``data`` of its reply (see :meth:`receive`)."""
        self.send(kind, data)
        return self.receive(kind)

    def close(self, *, say_goodbye: bool = False) -> None:
        """Close the connection (after a ``close`` message if ``say_goodbye``); idempotent."""
        if self.closed:
            return
        if say_goodbye:
            with contextlib.suppress(ConnectionClosed, OSError):
                self._ws.send(json.dumps({"type": "close"}))
        self.closed = True
        with contextlib.suppress(Exception):  # the server may already be gone
            self._ws.close()
