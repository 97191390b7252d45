"""Plain HTTP requests that are not WebSocket upgrades (``POST /mcp``), read with bounds.

websockets' server protocol parses ``GET`` requests only (an upgrade, or a plain answer to
one); a ``POST`` makes it fail the connection. The connection (``ws/server.py``) therefore looks
at the request line first and hands any other method to :class:`PlainRequestReader`, which
reads one request (head and ``Content-Length`` body) and nothing more: one request per
connection, answered with ``Connection: close``.

Bounds: the head is at most :data:`MAX_HEAD_BYTES`, the body at most the reader's
``max_body``; a body without ``Content-Length`` (chunked) is refused (``411``), as is a second
``Content-Length``. Pure: bytes in, a request (or an :class:`HttpError`) out.
"""

from __future__ import annotations

import dataclasses
from http import HTTPStatus

__all__ = [
    "MAX_HEAD_BYTES",
    "HttpError",
    "PlainRequest",
    "PlainRequestReader",
    "is_plain_request",
]

MAX_HEAD_BYTES = 16 << 10
"""The largest request line plus headers read (16 KiB)."""

_UPGRADE_METHOD = b"GET "
_TOKEN_CHARS = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-.^_`|~"
)
"""RFC 9110's token characters: what a method or a header name may hold."""


@dataclasses.dataclass(frozen=True)
class PlainRequest:
    """One HTTP request read whole.

    Attributes:
        method: ``"POST"``, ``"PUT"`` ...
        path: the path without its query.
        query: the query string (may be empty).
        headers: ``(name, value)`` pairs in order, repeated names included.
        body: the body (``Content-Length`` bytes).

    """

    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


class HttpError(Exception):
    """A request refused while it is read (answered with ``status`` and closed)."""

    def __init__(self, status: HTTPStatus, reason: str) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason

    def __str__(self) -> str:
        return f"{int(self.status)} {self.reason}"


def is_plain_request(start: bytes) -> bool | None:
    """Tell from a connection's first bytes whether they start a non-``GET`` request.

    Returns:
        ``True`` (not a ``GET``: read it with :class:`PlainRequestReader`), ``False`` (a
        ``GET``: websockets' protocol reads it), ``None`` (too few bytes to tell).

    """
    if start.startswith(_UPGRADE_METHOD):
        return False
    if _UPGRADE_METHOD.startswith(start):
        return None
    return True


class PlainRequestReader:
    """Accumulate one request's bytes until it is whole.

    Args:
        max_body: the largest body accepted, in bytes.

    """

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self._buffer = bytearray()
        self._head: tuple[str, str, str, tuple[tuple[str, str], ...], int] | None = None

    def feed(self, data: bytes) -> PlainRequest | None:
        """Add bytes; return the request once it is whole, else ``None``.

        Raises:
            HttpError: a malformed or oversized request, or a body without a length.

        """
        self._buffer += data
        if self._head is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD_BYTES:
                    raise HttpError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "head too large")
                return None
            if end > MAX_HEAD_BYTES:
                raise HttpError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "head too large")
            self._head = self._parse_head(bytes(self._buffer[:end]))
            del self._buffer[: end + 4]
        method, path, query, headers, length = self._head
        if len(self._buffer) < length:
            return None
        return PlainRequest(method, path, query, headers, bytes(self._buffer[:length]))

    def _parse_head(self, head: bytes) -> tuple[str, str, str, tuple[tuple[str, str], ...], int]:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise HttpError(HTTPStatus.BAD_REQUEST, f"bad request line {lines[0][:80]!r}")
        method, target, _ = parts
        if not method or not set(method.encode()) <= _TOKEN_CHARS:
            raise HttpError(HTTPStatus.BAD_REQUEST, f"bad method {method[:20]!r}")
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or not set(name.encode()) <= _TOKEN_CHARS:
                raise HttpError(HTTPStatus.BAD_REQUEST, f"bad header line {line[:80]!r}")
            headers.append((name, value.strip()))
        path, _, query = target.partition("?")
        return method, path, query, tuple(headers), self._length(headers)

    def _length(self, headers: list[tuple[str, str]]) -> int:
        lengths = [value for name, value in headers if name.lower() == "content-length"]
        if any(name.lower() == "transfer-encoding" for name, _ in headers):
            raise HttpError(HTTPStatus.LENGTH_REQUIRED, "chunked bodies are refused")
        if len(lengths) > 1:
            raise HttpError(HTTPStatus.BAD_REQUEST, "more than one Content-Length header")
        if not lengths:
            return 0
        if not lengths[0].isdigit():
            raise HttpError(HTTPStatus.BAD_REQUEST, f"bad Content-Length {lengths[0][:20]!r}")
        length = int(lengths[0])
        if length > self.max_body:
            raise HttpError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"body of {length} bytes, at most {self.max_body}",
            )
        return length
