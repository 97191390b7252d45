"""A fast path for the one WebSocket frame the hot path uses: a whole binary message.

Request/reply traffic is one unfragmented binary frame per message. Parsing and building those
by hand (RFC 6455 section 5.2) costs a few microseconds less per frame than websockets' general
parser, which matters at loopback latencies. Everything else (handshake, control frames,
fragments, text frames, partial reads, oversized frames) goes through websockets' own
protocol: these helpers return ``None`` whenever a chunk is not exactly one simple binary frame.
Pure functions on bytes.
"""

from __future__ import annotations

import os
import struct

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets without its C extension
    from websockets.utils import apply_mask

__all__ = [
    "FrameBoundary",
    "apply_mask",
    "binary_frame",
    "binary_header",
    "large_frame_start",
    "parse_binary_frame",
]

_FIN_BINARY = 0x82
_MASK_BIT = 0x80
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")


def binary_header(length: int, *, mask: bool) -> bytes:
    """Return the header of one final binary frame of ``length`` bytes (without a mask key)."""
    mask_bit = _MASK_BIT if mask else 0
    if length < 126:
        return bytes((_FIN_BINARY, mask_bit | length))
    if length < 65536:
        return bytes((_FIN_BINARY, mask_bit | 126)) + _U16.pack(length)
    return bytes((_FIN_BINARY, mask_bit | 127)) + _U64.pack(length)


def binary_frame(payload: bytes, *, mask: bool) -> bytes:
    """Build one final binary frame; clients MUST mask (``mask=True``), servers MUST NOT."""
    header = binary_header(len(payload), mask=mask)
    if not mask:
        return header + payload
    key = os.urandom(4)
    return header + key + apply_mask(payload, key)


def parse_binary_frame(chunk: bytes, *, masked: bool, max_size: int | None) -> bytes | None:
    """Return the payload if ``chunk`` is exactly one final binary frame, else ``None``.

    Args:
        chunk: bytes as read from the socket.
        masked: whether the frame must be masked (frames a server receives) or not.
        max_size: the largest payload accepted; a larger one is left to the general parser,
            which closes the connection as RFC 6455 prescribes.

    """
    if len(chunk) < 2 or chunk[0] != _FIN_BINARY or bool(chunk[1] & _MASK_BIT) != masked:
        return None
    length = chunk[1] & 0x7F
    offset = 2
    if length == 126:
        if len(chunk) < 4:
            return None
        (length,) = _U16.unpack_from(chunk, 2)
        offset = 4
    elif length == 127:
        if len(chunk) < 10:
            return None
        (length,) = _U64.unpack_from(chunk, 2)
        offset = 10
    if max_size is not None and length > max_size:
        return None
    if not masked:
        return chunk[offset:] if len(chunk) == offset + length else None
    if len(chunk) != offset + 4 + length:
        return None
    return apply_mask(chunk[offset + 4 :], chunk[offset : offset + 4])


def large_frame_start(chunk: bytes, *, max_size: int | None) -> tuple[int, int] | None:
    """Return ``(payload offset, payload length)`` if ``chunk`` starts a longer binary frame.

    For an unmasked (server-sent) final binary frame whose payload runs past the end of
    ``chunk``, so that the reader may receive the rest straight into one buffer of the
    payload's size; ``None`` for anything else (the general parser's business).
    """
    if len(chunk) < 10 or chunk[0] != _FIN_BINARY or chunk[1] & _MASK_BIT:
        return None
    length = chunk[1] & 0x7F
    if length == 126:
        (length,) = _U16.unpack_from(chunk, 2)
        offset = 4
    elif length == 127:
        (length,) = _U64.unpack_from(chunk, 2)
        offset = 10
    else:
        return None  # a frame under 126 bytes fits any read
    if (max_size is not None and length > max_size) or offset + length <= len(chunk):
        return None
    return offset, length


class FrameBoundary:
    """Track where frames end in a byte stream, so a whole frame may skip the general parser.

    The fast path is only sound at a frame boundary: websockets' parser may have consumed a
    header and wait for its payload with an empty buffer. Feed every byte that goes to the
    general parser here; :attr:`at_boundary` says whether the stream stands between frames.
    """

    def __init__(self) -> None:
        self._header = b""
        self._remaining = 0

    @property
    def at_boundary(self) -> bool:
        """True when no frame is partly received."""
        return not self._header and self._remaining == 0

    def feed(self, chunk: bytes) -> None:
        """Account for ``chunk``, the next bytes of the stream."""
        view = memoryview(chunk)
        while view:
            if self._remaining:
                taken = min(self._remaining, len(view))
                self._remaining -= taken
                view = view[taken:]
                continue
            needed = _header_size(self._header + bytes(view[: 2 - len(self._header)]))
            taken = max(0, min(needed - len(self._header), len(view)))
            self._header += bytes(view[:taken])
            view = view[taken:]
            if len(self._header) >= needed and len(self._header) >= 2:
                self._remaining = _payload_size(self._header)
                self._header = b""


def _header_size(start: bytes) -> int:
    """Return the full header size given its first bytes (2 until the length byte is known)."""
    if len(start) < 2:
        return 2
    size = 2 + {126: 2, 127: 8}.get(start[1] & 0x7F, 0)
    return size + (4 if start[1] & _MASK_BIT else 0)


def _payload_size(header: bytes) -> int:
    length = header[1] & 0x7F
    if length == 126:
        return int(_U16.unpack_from(header, 2)[0])
    if length == 127:
        return int(_U64.unpack_from(header, 2)[0])
    return length
