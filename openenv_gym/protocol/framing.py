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

__all__ = ["binary_frame", "parse_binary_frame"]

_FIN_BINARY = 0x82
_MASK_BIT = 0x80
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")


def binary_frame(payload: bytes, *, mask: bool) -> bytes:
    """Build one final binary frame; clients MUST mask (``mask=True``), servers MUST NOT."""
    length = len(payload)
    mask_bit = _MASK_BIT if mask else 0
    if length < 126:
        header = bytes((_FIN_BINARY, mask_bit | length))
    elif length < 65536:
        header = bytes((_FIN_BINARY, mask_bit | 126)) + _U16.pack(length)
    else:
        header = bytes((_FIN_BINARY, mask_bit | 127)) + _U64.pack(length)
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
