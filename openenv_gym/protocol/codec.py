"""Encode Python and numpy values to msgpack bytes and back, keeping their exact types.

The codec carries what environments exchange: ``None``, ``bool``, ``int``, ``float``, ``str``,
``bytes``, ``list``, ``dict`` natively, and as msgpack extension types (codes below):

* ``numpy.ndarray`` (any numeric, bool, unicode, bytes or datetime dtype) as dtype, shape and
  raw bytes; object arrays element by element;
* numpy scalars (``np.int64(3)`` stays ``np.int64``, ``np.bool_`` stays ``np.bool_``);
* ``tuple`` (distinct from ``list``) and ``gymnasium.spaces.GraphInstance``.

Decoding builds only these types: it never imports or calls anything named by the peer, and
object dtypes or structured dtypes are refused. Decoded arrays are writable and share memory
with nothing else: fresh copies, or, in a large message handed over as a ``bytearray`` (a
client's received frame), numeric arrays of :data:`GATHER_MIN_BYTES` or more are views of
that buffer, which the caller must then leave alone.
"""

from __future__ import annotations

import functools
import math
import re
import struct
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeAlias

import msgpack
import numpy as np

from openenv_gym.errors import DecodeError, EncodeError, MessageTooLargeError

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "GATHER_MIN_BYTES",
    "Parts",
    "count_values",
    "decode",
    "encode",
    "encode_parts",
    "join_parts",
    "safe_dtype",
]

DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""Largest message either side accepts unless configured otherwise (16 MiB).

Sized from the largest replies a shard legitimately sends (a STEP of 512 envs of 84x84x4 uint8
Atari frames is 14.5 MB); larger batches are split over shards or need ``--max-message-bytes``.
Every connection may hold a request and a reply of this size, so it multiplies with sessions.
"""

GATHER_MIN_BYTES = 128 * 1024
"""Arrays at least this large stay out of :func:`encode_parts`'s packed bytes (a view each):
below it, copying is cheaper than the Python that avoids it (CartPole's 64 KiB at 4096 envs)."""
_GATHER_MAX_ITEMS = 15
"""Containers :func:`encode_parts` looks into are at most this long (a step reply's are; one
header byte, fixarray or fixmap): a longer one (a list per env) is packed whole, so the walk
never costs a Python step per env."""

Parts: TypeAlias = "list[bytes | memoryview]"
"""One message as parts to be written in order (see :func:`encode_parts`)."""

EXT_NDARRAY = 1
EXT_NPSCALAR = 2
EXT_TUPLE = 3
EXT_OBJECT_ARRAY = 4
EXT_GRAPH = 5
EXT_VIEW = 127
"""Never on the wire: the reference :func:`decode` puts in place of a large array it hands out
as a view of the message (a peer's message holding it is refused as an unknown type)."""
_EXT_NDARRAY_CODE, _EXT_VIEW_CODE = bytes((EXT_NDARRAY,)), bytes((EXT_VIEW,))

# Byte order, kind, item size and optional datetime unit; nothing else reaches np.dtype().
_DTYPE_PATTERN = re.compile(r"[<>|=]?[biufcUSMm]\d+(\[\w+\])?")
_U8 = struct.Struct("<B")


@functools.lru_cache(maxsize=1024)
def _array_header(dtype: np.dtype[Any], shape: tuple[int, ...]) -> bytes:
    """Extension header of an array: dtype string and shape (cached: shapes repeat per step)."""
    if not _DTYPE_PATTERN.fullmatch(dtype.str):
        raise EncodeError(f"cannot encode numpy data of dtype {dtype} (structured or void)")
    dtype_str = dtype.str.encode("ascii")
    return b"".join(
        (
            _U8.pack(len(dtype_str)),
            dtype_str,
            _U8.pack(len(shape)),
            struct.pack(f"<{len(shape)}q", *shape),
        )
    )


@functools.lru_cache(maxsize=1024)
def _parse_header(header: bytes) -> tuple[np.dtype[Any], tuple[int, ...]]:
    """Validate and parse an array header (cached by its bytes)."""
    try:
        dtype_len = header[0]
        dtype_str = header[1 : 1 + dtype_len].decode("ascii")
        ndim = header[1 + dtype_len]
        shape = struct.unpack_from(f"<{ndim}q", header, 2 + dtype_len)
    except (IndexError, UnicodeDecodeError, struct.error) as exc:
        raise DecodeError(f"truncated array header: {exc}") from exc
    if not _DTYPE_PATTERN.fullmatch(dtype_str):
        raise DecodeError(f"refused array dtype {dtype_str!r}")
    if any(dim < 0 for dim in shape):
        raise DecodeError(f"negative array dimension in shape {shape}")
    return np.dtype(dtype_str), shape


def safe_dtype(name: str) -> np.dtype[Any]:
    """Return ``np.dtype(name)`` for the plain dtypes the protocol carries.

    Raises:
        DecodeError: ``name`` is not a byte-order/kind/size dtype string (e.g. object, void).

    """
    if not isinstance(name, str) or not _DTYPE_PATTERN.fullmatch(name):
        raise DecodeError(f"refused dtype {name!r}")
    return np.dtype(name)


def _unpack_dtype_shape(data: bytes | memoryview) -> tuple[np.dtype[Any], tuple[int, ...], int]:
    """Return the dtype, the shape and the offset of the raw bytes in an array payload."""
    try:
        dtype_len = data[0]
        end = 2 + dtype_len + 8 * data[1 + dtype_len]
    except IndexError as exc:
        raise DecodeError("truncated array header") from exc
    dtype, shape = _parse_header(bytes(data[:end]))
    return dtype, shape, end


def _encode_array(array: np.ndarray[Any, Any]) -> msgpack.ExtType:
    if array.dtype.hasobject:
        return msgpack.ExtType(
            EXT_OBJECT_ARRAY, _packb_nested([list(array.shape), list(array.reshape(-1))])
        )
    header = _array_header(array.dtype, array.shape)
    if not array.flags.c_contiguous:
        array = _c_order(array)
    try:
        raw: Any = array.reshape(-1).view(np.uint8)  # a view: the join below is the one copy
    except (ValueError, TypeError):  # item size 0 (empty strings): no bytes to view
        raw = array.tobytes()
    return msgpack.ExtType(EXT_NDARRAY, b"".join((header, raw)))


def _c_order(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Return a C-ordered copy; a few-column Fortran-ordered matrix goes column by column.

    Batched observations are often the transpose of a ``(features, num_envs)`` array (gymnasium's
    own CartPole vector env): numpy copies such a view element by element, several times slower
    than these few strided column copies.
    """
    out = np.empty(array.shape, dtype=array.dtype)
    if array.ndim == 2 and array.flags.f_contiguous and array.shape[1] <= 64:
        for column in range(array.shape[1]):
            out[:, column] = array[:, column]
    else:
        out[...] = array
    return out


def _decode_array(data: bytes | memoryview, *, view: bool = False) -> np.ndarray[Any, Any]:
    """Return the array of an extension payload, a fresh copy.

    With ``view`` (``data`` is a writable buffer the caller hands over), a numeric array whose
    numbers are aligned is a view of ``data`` instead.
    """
    dtype, shape, offset = _unpack_dtype_shape(data)
    count = math.prod(shape)
    if len(data) - offset != count * dtype.itemsize:
        raise DecodeError(
            f"array of shape {shape} and dtype {dtype} needs {count * dtype.itemsize} bytes, "
            f"got {len(data) - offset}"
        )
    if dtype.itemsize == 0:
        # Only an empty np.str_/np.bytes_ scalar has item size 0; an array of them would let
        # a few bytes of message ask for any amount of memory.
        if shape != ():
            raise DecodeError(f"refused array of item size 0 with shape {shape}")
        return np.zeros((), dtype=dtype)
    if count == 0:
        return np.empty(shape, dtype=dtype)
    flat: np.ndarray[Any, Any] = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    if (
        dtype.kind == "U"
        and np.frombuffer(data, dtype=dtype.byteorder.replace("|", "=") + "u4", offset=offset).max(
            initial=0
        )
        > 0x10FFFF
    ):
        raise DecodeError("unicode array holds a code point above U+10FFFF")
    if view and dtype.kind in "biufc" and flat.flags.aligned and flat.flags.writeable:
        return flat.reshape(shape)
    result: np.ndarray[Any, Any] = flat.reshape(shape).copy()
    return result


_VIEW_WALK_LIMIT = 256
"""Values :func:`_skeleton` reads before it leaves a message to the plain decoder."""


def _skeleton(data: bytearray) -> tuple[bytes, list[tuple[int, int]]] | None:
    """Return ``data`` with each large array extension replaced by a reference, and their spans.

    The references are :data:`EXT_VIEW` extensions holding an index into the spans (start
    and size of each array payload in ``data``), decoded as views of ``data`` (see
    :func:`decode`). Only values outside extension payloads are walked, at most
    :data:`_VIEW_WALK_LIMIT` of them. ``None``: no large array, a walk past the limit, or
    bytes that are not exactly one plain message (the plain decoder then reads, or refuses,
    them).
    """
    found: list[tuple[int, int, int]] = []  # (header offset, payload offset, payload size)
    peer_view = False  # EXT_VIEW in the message: never sent by a reference peer

    def note(offset: int, start: int, size: int, _: int) -> int:
        nonlocal peer_view
        code = bytes(data[start - 1 : start])
        peer_view = peer_view or code == _EXT_VIEW_CODE
        if code == _EXT_NDARRAY_CODE and size >= GATHER_MIN_BYTES and start + size <= len(data):
            found.append((offset, start, size))
        return 0

    _, reached, pending = _walk(data, _VIEW_WALK_LIMIT, note)
    # A message that holds EXT_VIEW is the plain decoder's to refuse.
    if not found or pending or reached != len(data) or peer_view:
        return None
    pieces: list[bytes | bytearray] = []
    copied = 0
    for index, (offset, start, size) in enumerate(found):
        reference = bytes((0xD6, EXT_VIEW)) + index.to_bytes(4, "big")  # fixext 4
        pieces += (data[copied:offset], reference)
        copied = start + size
    pieces.append(data[copied:])
    return b"".join(pieces), [(start, size) for _, start, size in found]


def _decode_view(data: bytes) -> np.ndarray[Any, Any]:
    """Resolve an :data:`EXT_VIEW` reference of the skeleton being decoded (only there)."""
    views = getattr(_local, "views", None)
    # Depth 1: a reference in the skeleton itself, not one inside a tuple's payload.
    if views is None or getattr(_local, "depth", 0) != 1 or len(data) != 4:
        raise DecodeError(f"unknown extension type {EXT_VIEW}")
    message, spans, used = views
    index = int.from_bytes(data, "big")
    if index >= len(spans) or index in used:
        raise DecodeError(f"unknown extension type {EXT_VIEW}")
    used.add(index)
    start, size = spans[index]
    return _decode_array(memoryview(message)[start : start + size], view=True)


def _decode_object_array(data: bytes) -> np.ndarray[Any, Any]:
    shape, items = _unpackb(data)
    if not isinstance(shape, list) or not isinstance(items, list):
        raise DecodeError("object array must be [shape, items]")
    if not all(type(dim) is int and dim >= 0 for dim in shape):
        raise DecodeError(f"object array shape must be non-negative integers, got {shape}")
    array = np.empty(len(items), dtype=object)
    for index, item in enumerate(items):
        # One by one: slice assignment would broadcast nested sequences into new axes.
        array[index] = item
    try:
        return array.reshape(tuple(shape))
    except (ValueError, TypeError) as exc:
        raise DecodeError(f"object array of {len(items)} items cannot have shape {shape}") from exc


def _encode_scalar(value: np.generic) -> msgpack.ExtType:
    # An empty np.str_/np.bytes_ has item size 0 yet tobytes() gives one padding character.
    raw = value.tobytes() if value.dtype.itemsize else b""
    return msgpack.ExtType(EXT_NPSCALAR, _array_header(value.dtype, ()) + raw)


def _decode_scalar(data: bytes) -> np.generic:
    array = _decode_array(data)
    if array.shape != ():
        raise DecodeError(f"numpy scalar must have shape (), got {array.shape}")
    scalar: Any = array[()]
    return scalar  # type: ignore[no-any-return]


def _default(value: Any) -> Any:
    """Turn a value msgpack does not know natively into an extension type or a plain value."""
    if isinstance(value, np.ndarray):
        return _encode_array(value)
    if isinstance(value, np.generic):
        return _encode_scalar(value)
    if _is_graph(value):
        return msgpack.ExtType(
            EXT_GRAPH, _packb_nested([value.nodes, value.edges, value.edge_links])
        )
    if isinstance(value, tuple):
        return msgpack.ExtType(EXT_TUPLE, _packb_nested(list(value)))
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    for base in (bool, int, float, str, bytes):
        if isinstance(value, base):
            return base(value)  # type: ignore[arg-type]  # a subclass such as IntEnum travels as its plain base value
    raise EncodeError(
        f"cannot encode value of type {type(value).__module__}.{type(value).__name__}"
    )


def _is_graph(value: Any) -> bool:
    """Tell whether ``value`` is a ``GraphInstance``, without importing gymnasium for it."""
    # A GraphInstance exists only once gymnasium.spaces is loaded: a codec used without
    # gymnasium (providers' handshake, a bare protocol peer) never loads it.
    spaces = sys.modules.get("gymnasium.spaces")
    return spaces is not None and isinstance(value, spaces.GraphInstance)


def _decode_graph(data: bytes) -> Any:
    from gymnasium.spaces import GraphInstance

    parts = _unpackb(data)
    if not (isinstance(parts, list) and len(parts) == 3):
        raise DecodeError("graph instance must be [nodes, edges, edge_links]")
    return GraphInstance(*parts)


def _decode_tuple(data: bytes) -> tuple[Any, ...]:
    items = _unpackb(data)
    if not isinstance(items, list):
        raise DecodeError("tuple payload must be an array")
    return tuple(items)


_EXT_DECODERS: dict[int, Callable[[bytes], Any]] = {
    EXT_NDARRAY: _decode_array,
    EXT_NPSCALAR: _decode_scalar,
    EXT_TUPLE: _decode_tuple,
    EXT_OBJECT_ARRAY: _decode_object_array,
    EXT_GRAPH: _decode_graph,
    EXT_VIEW: _decode_view,
}


MAX_EXT_DEPTH = 32
"""How deeply extension types (tuples in tuples, ...) may nest. Each level decodes with a new
msgpack unpacker on the C stack, so an unbounded depth would let a peer crash the process."""

_local = threading.local()


def _ext_hook(code: int, data: bytes) -> Any:
    decoder = _EXT_DECODERS.get(code)
    if decoder is None:
        raise DecodeError(f"unknown extension type {code}")
    depth = getattr(_local, "depth", 0)
    if depth >= MAX_EXT_DEPTH:
        raise DecodeError(f"extension types nested deeper than {MAX_EXT_DEPTH}")
    _local.depth = depth + 1
    try:
        return decoder(data)
    finally:
        _local.depth = depth


def _packb_nested(value: Any) -> bytes:
    """Pack an extension type's payload with its own Packer (the thread's one is mid-message)."""
    depth = getattr(_local, "pack_depth", 0)
    if depth >= MAX_EXT_DEPTH:
        raise EncodeError(f"tuples or object arrays nested deeper than {MAX_EXT_DEPTH}")
    _local.pack_depth = depth + 1
    try:
        return msgpack.packb(value, default=_default, strict_types=True, use_bin_type=True)  # type: ignore[no-any-return]
    finally:
        _local.pack_depth = depth


class _LargeArray(Exception):
    """Raised by :func:`_default_or_gather` at a large array: the message goes out as parts."""


def _default_or_gather(value: Any) -> Any:
    """:func:`_default`, but stop at an array :func:`encode_parts` leaves out of the packing."""
    if type(value) is np.ndarray and value.nbytes >= GATHER_MIN_BYTES:
        raise _LargeArray  # (an object array too: _gathers then tells it apart)
    return _default(value)


def _packb(value: Any, *, gathering: bool = False) -> bytes:
    # One Packer per thread: building one per message costs more than packing a small step.
    name = "gathering_packer" if gathering else "packer"
    packer = getattr(_local, name, None)
    if packer is None:
        packer = msgpack.Packer(
            default=_default_or_gather if gathering else _default,
            strict_types=True,
            use_bin_type=True,
        )
        setattr(_local, name, packer)
    try:
        return packer.pack(value)  # type: ignore[no-any-return]
    except BaseException:
        packer.reset()
        raise


def _unpackb(data: bytes | bytearray) -> Any:
    return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False, use_list=True)


def _unpackb_bounded(data: bytes | bytearray, max_values: int) -> Any:
    # No container header may claim more items than the budget (msgpack preallocates them).
    return msgpack.unpackb(
        data,
        ext_hook=_ext_hook,
        raw=False,
        strict_map_key=False,
        use_list=True,
        max_array_len=max_values,
        max_map_len=max_values,
    )


# For every first byte of a msgpack value: (bytes to skip, values it contains, kind). Kind 0:
# done; 1: bin/str with a length field of `skip - 1` bytes; 2: array/map with a count field of
# `skip - 1` bytes, `contains` values per count; 3: ext with a length field of `skip - 2` bytes
# (`contains` is the fixed payload size of fixext); 4: the reserved byte 0xc1.
_VALUE_HEADERS: list[tuple[int, int, int]] = [(1, 0, 0)] * 256
for _byte in range(0x80, 0x90):
    _VALUE_HEADERS[_byte] = (1, 2 * (_byte & 0x0F), 0)
for _byte in range(0x90, 0xA0):
    _VALUE_HEADERS[_byte] = (1, _byte & 0x0F, 0)
for _byte in range(0xA0, 0xC0):
    _VALUE_HEADERS[_byte] = (1 + (_byte & 0x1F), 0, 0)
_VALUE_HEADERS[0xC1] = (1, 0, 4)
_NUMBER_SIZES = {0xCA: 5, 0xCB: 9, 0xCC: 2, 0xCD: 3, 0xCE: 5, 0xCF: 9}  # floats, uints
_NUMBER_SIZES |= {0xD0: 2, 0xD1: 3, 0xD2: 5, 0xD3: 9}  # ints
for _byte, _skip in _NUMBER_SIZES.items():
    _VALUE_HEADERS[_byte] = (_skip, 0, 0)
for _byte, _width in {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4}.items():
    _VALUE_HEADERS[_byte] = (1 + _width, 0, 1)
for _byte, _width in {0xC7: 1, 0xC8: 2, 0xC9: 4}.items():
    _VALUE_HEADERS[_byte] = (2 + _width, 0, 3)
for _byte, _size in {0xD4: 1, 0xD5: 2, 0xD6: 4, 0xD7: 8, 0xD8: 16}.items():
    _VALUE_HEADERS[_byte] = (2, _size, 3)
for _byte, (_width, _per) in {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}.items():
    _VALUE_HEADERS[_byte] = (1 + _width, _per, 2)
# Extension payloads that are msgpack themselves: their values are built too.
_NESTED_EXT_BYTES = frozenset(bytes((code,)) for code in (EXT_TUPLE, EXT_OBJECT_ARRAY, EXT_GRAPH))


def count_values(data: bytes | bytearray, budget: int, *, _depth: int = 0) -> int:
    """Count the values one message would build, reading only headers; stop past ``budget``.

    Every value counts once at any depth: container, scalar, and the values inside tuple,
    object-array and graph extension payloads. Strings, binaries and array payloads are skipped
    whole, so the cost is one step per value read, at most ``budget + 1`` steps.

    Args:
        data: the message bytes.
        budget: stop counting once the count is over this.

    Returns:
        The number of values, or a number over ``budget`` if there are more. Malformed or
        truncated bytes stop the count early (the decoder then refuses them).

    """

    def nested(_: int, start: int, size: int, counted: int) -> int:
        if data[start - 1 : start] in _NESTED_EXT_BYTES and _depth < MAX_EXT_DEPTH:
            return count_values(data[start : start + size], budget - counted, _depth=_depth + 1)
        return 0

    return _walk(data, budget, nested)[0]


def _walk(
    data: bytes | bytearray, budget: int, on_ext: Callable[[int, int, int, int], int]
) -> tuple[int, int, int]:
    """Read the headers of one message's values in order, until more than ``budget`` are read.

    Strings, binaries and extension payloads are skipped whole; ``on_ext(offset, start, size,
    count)`` is told of each extension (the offsets of its header and payload in ``data``, the
    payload's size, the values counted so far) and returns how many values it counts inside.
    Malformed or truncated bytes stop the walk early.

    Returns:
        ``(values counted, offset reached, values still pending)``: a whole message read is
        ``(n, len(data), 0)``.

    """
    headers = _VALUE_HEADERS
    pos, count, pending, end = 0, 0, 1, len(data)
    while pending > 0 and count <= budget and pos < end:
        pending -= 1
        count += 1
        skip, contains, kind = headers[data[pos]]
        if kind == 0:
            pos += skip
            pending += contains
            continue
        field = int.from_bytes(data[pos + 1 : pos + skip - (kind == 3)], "big")
        if kind == 1:
            pos += skip + field
        elif kind == 2:
            pos += skip
            pending += contains * field
        elif kind == 3:
            size = contains or field
            start = pos + skip
            count += on_ext(pos, start, size, count)
            pos = start + size
        else:
            break
    return count, pos, pending


def encode(value: Any, *, max_bytes: int | None = None) -> bytes:
    """Encode ``value`` into one msgpack message.

    Args:
        value: the value; see the module docstring for the types carried.
        max_bytes: refuse results larger than this many bytes (``None``: no limit).

    Returns:
        The message bytes.

    Raises:
        EncodeError: a value (at any depth) has no wire representation.
        MessageTooLargeError: the message is over ``max_bytes``.

    """
    return _encode(value, max_bytes, gathering=False)


_PACK_ERRORS = (TypeError, ValueError, OverflowError, RecursionError)
"""What msgpack (and :func:`_default`) raise for a value they cannot pack."""


def _encode_error(exc: BaseException) -> EncodeError:
    """Return the :class:`EncodeError` for one of :data:`_PACK_ERRORS`.

    (A plain ``try`` at each packing, not a context manager: that would cost ~0.6 µs a message.)
    """
    return EncodeError(f"cannot encode value: {type(exc).__name__}: {exc}")


def _encode(value: Any, max_bytes: int | None, *, gathering: bool) -> bytes:
    try:
        data = _packb(value, gathering=gathering)
    except (EncodeError, _LargeArray):
        raise
    except _PACK_ERRORS as exc:
        raise _encode_error(exc) from exc
    if max_bytes is not None and len(data) > max_bytes:
        raise MessageTooLargeError(len(data), max_bytes)
    return data


def encode_parts(value: Any, *, max_bytes: int | None = None) -> Parts:
    """Encode ``value`` as :func:`encode` does, as parts whose concatenation is its bytes.

    Large arrays (:data:`GATHER_MIN_BYTES`) in short lists and dicts (a step reply's pixel
    observations) are views of the arrays themselves (of a C-ordered copy for other layouts),
    not copied into the message: a socket takes the parts in one gathering write. The views
    are valid while the arrays are unchanged. Anything else is one part, :func:`encode`'s.

    Raises:
        EncodeError, MessageTooLargeError: as :func:`encode`.

    """
    try:  # msgpack's own speed until a large array turns up (most messages hold none)
        return [_encode(value, max_bytes, gathering=True)]
    except _LargeArray:
        pass
    if not _gathers(value, 0):  # in a place the parts do not reach (a long list, a tuple)
        return [encode(value, max_bytes=max_bytes)]
    parts: Parts = []
    try:
        _gather(value, parts, 0)
    except EncodeError:
        raise
    except _PACK_ERRORS as exc:
        raise _encode_error(exc) from exc
    size = sum(map(len, parts))  # the views are flat bytes: len() is their size
    if max_bytes is not None and size > max_bytes:
        raise MessageTooLargeError(size, max_bytes)
    return _coalesce(parts)


def join_parts(parts: Parts) -> bytes:
    """Return the message the parts make (the one part itself when there is one)."""
    if len(parts) == 1 and isinstance(parts[0], bytes):
        return parts[0]
    return b"".join(parts)


def _gathers(value: Any, depth: int) -> bool:
    """Tell whether ``value`` holds an array :func:`encode_parts` leaves out of the packing."""
    kind = type(value)
    if kind is np.ndarray:
        return bool(value.nbytes >= GATHER_MIN_BYTES and not value.dtype.hasobject)
    if depth >= 3 or (kind is not list and kind is not dict) or len(value) > _GATHER_MAX_ITEMS:
        return False
    return any(_gathers(item, depth + 1) for item in (value.values() if kind is dict else value))


def _gather(value: Any, parts: Parts, depth: int) -> None:
    """Append the parts of ``value``, which :func:`_gathers`."""
    kind = type(value)
    if kind is np.ndarray:
        header = _array_header(value.dtype, value.shape)
        if not value.flags.c_contiguous:
            value = _c_order(value)
        parts.append(_ext_prefix(len(header) + value.nbytes) + header)
        parts.append(memoryview(value.reshape(-1).view(np.uint8)))
        return
    items = value.items() if kind is dict else ((None, item) for item in value)
    parts.append(bytes(((0x80 if kind is dict else 0x90) | len(value),)))  # fixmap, fixarray
    for key, item in items:
        if kind is dict:
            parts.append(_packb(key))
        if _gathers(item, depth + 1):
            _gather(item, parts, depth + 1)
        else:
            parts.append(_packb(item))


_FIXEXT = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}


def _ext_prefix(length: int) -> bytes:
    """Return the header of an array extension of ``length`` bytes, the one msgpack writes."""
    if length in _FIXEXT:
        return bytes((_FIXEXT[length], EXT_NDARRAY))
    if length < 256:
        return bytes((0xC7, length, EXT_NDARRAY))
    if length < 65536:
        return b"\xc8" + length.to_bytes(2, "big") + bytes((EXT_NDARRAY,))
    return b"\xc9" + length.to_bytes(4, "big") + bytes((EXT_NDARRAY,))


def _coalesce(parts: Parts) -> Parts:
    """Join each run of packed bytes into one part: fewer, larger pieces to write."""
    out: Parts = []
    run: list[bytes | memoryview] = []
    for part in parts:
        if isinstance(part, bytes):
            run.append(part)
            continue
        if run:
            out.append(b"".join(run))
            run = []
        out.append(part)
    if run:
        out.append(b"".join(run))
    return out


def decode(
    data: bytes | bytearray,
    *,
    max_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES,
    max_values: int | None = None,
) -> Any:
    """Decode one msgpack message produced by :func:`encode`.

    A message can ask for far more memory than its size: each one-byte empty map becomes a
    72-byte dict. ``max_values`` bounds that: a message of more bytes than ``max_values`` is
    first counted (:func:`count_values`, headers only) and refused before anything is built.
    msgpack's own per-container limits (``max_array_len``...) alone cannot do this: a nesting
    of containers each under the limit multiplies without bound.

    Args:
        data: the message bytes; a ``bytearray`` is handed over: large numeric arrays may be
            views of it (see the module docstring), so it must not be reused.
        max_bytes: refuse messages larger than this many bytes (``None``: no limit).
        max_values: refuse messages that would build more values than this, at any depth and
            inside extension payloads (``None``: no limit).

    Returns:
        The decoded value, with the exact types that were encoded.

    Raises:
        DecodeError: the bytes are not one valid message, or hold more than ``max_values``.
        MessageTooLargeError: the message is over ``max_bytes``.

    """
    if max_bytes is not None and len(data) > max_bytes:
        raise MessageTooLargeError(len(data), max_bytes)
    skeleton = None
    if isinstance(data, bytearray) and len(data) >= GATHER_MIN_BYTES:
        skeleton = _skeleton(data)  # a large message handed over: large arrays become views
    if skeleton is None:
        return _decode_values(data, max_values)
    _local.views = (data, skeleton[1], set())
    try:
        return _decode_values(skeleton[0], max_values)
    finally:
        _local.views = None


def _decode_values(data: bytes | bytearray, max_values: int | None) -> Any:
    try:
        # Each value takes at least one byte: a message this short cannot hold too many (and
        # msgpack's own length limits default to the message size).
        if max_values is None or len(data) <= max_values:
            return _unpackb(data)
        if count_values(data, max_values) > max_values:
            raise DecodeError(
                f"message of {len(data)} bytes holds more than {max_values} values, "
                f"over the limit of {max_values}"
            )
        return _unpackb_bounded(data, max_values)
    except DecodeError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError, SystemError) as exc:
        raise DecodeError(f"malformed message: {type(exc).__name__}: {exc}") from exc
