"""Per-message compression, negotiated at HELLO (normative: docs/protocol.md, "Compression").

After a HELLO that agreed on a codec, either side may send any message as one standard
compressed frame of that codec instead of the plain msgpack bytes: a zstd frame
(``zstandard`` package) or an LZ4 frame (``lz4`` package), each with its content size in the
frame header. A receiver tells the two apart by the first bytes: every plain message is a
msgpack array of three (``0x93``), every compressed one starts with its codec's frame magic.
Senders compress only messages of at least the threshold the client asked for at HELLO, and
only when that makes them smaller.

Decompression is bounded before any output is made: a frame must declare its content size and
that size must be within the receiver's message limit; a frame that inflates beyond what it
declared is malformed. Pure functions on bytes; the codecs are imported when first used.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Literal, get_args, overload

from openenv_gym.errors import DecodeError, MessageTooLargeError

__all__ = [
    "CODECS",
    "DEFAULT_THRESHOLD",
    "CodecName",
    "Compressor",
    "available_codecs",
    "is_compressed",
    "make_compressor",
    "negotiate",
]

CodecName = Literal["zstd", "lz4"]
CODECS: tuple[CodecName, ...] = get_args(CodecName)
"""The codecs of the protocol, in the order a server prefers them."""

DEFAULT_THRESHOLD = 8192
"""Messages smaller than this many bytes are sent plain (compressing them costs more than it
saves: a CartPole step reply of 256 envs is ~7 KiB)."""

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_LZ4_MAGIC = b"\x04\x22\x4d\x18"
_MAGICS = {_ZSTD_MAGIC: "zstd", _LZ4_MAGIC: "lz4"}
_MODULES = {"zstd": "zstandard", "lz4": "lz4.frame"}

ZSTD_LEVEL = 1
"""zstd's level: on Atari frames level 1 already gives most of the ratio of level 3 at
about twice the speed (``openenv-gym bench --compression`` measures both)."""


def is_compressed(frame: bytes) -> bool:
    """Return whether ``frame`` starts like a compressed message (of any codec)."""
    return bytes(frame[:4]) in _MAGICS


def available_codecs() -> tuple[CodecName, ...]:
    """Return the codecs whose package is installed, in :data:`CODECS` order."""
    found = []
    for name in CODECS:
        try:
            _import(name)
        except ImportError:
            continue
        found.append(name)
    return tuple(found)


def negotiate(offered: Sequence[str], accepted: Sequence[str]) -> CodecName | None:
    """Return the first codec of the client's ``offered`` list the server ``accepted``."""
    for name in offered:
        for codec in CODECS:
            if name == codec and codec in accepted:
                return codec
    return None


@dataclasses.dataclass(frozen=True)
class Compressor:
    """One side's codec for a session: compress what it sends, decompress what it receives.

    Args:
        codec: the codec agreed at HELLO.
        threshold: messages shorter than this are sent plain.
        compress_frame: the codec's one-shot compression of a message.
        decompress_frame: bounded decompression (see :meth:`decompress`).

    """

    codec: CodecName
    threshold: int
    compress_frame: Callable[[bytes], bytes]
    decompress_frame: Callable[[bytes, int], bytes]

    def compress(self, message: bytes) -> bytes:
        """Return ``message`` compressed if it is at least the threshold and shrinks, else as is."""
        if len(message) < self.threshold:
            return message
        packed = self.compress_frame(message)
        return packed if len(packed) < len(message) else message

    @overload
    def decompress(self, frame: bytes, *, max_bytes: int) -> bytes: ...
    @overload
    def decompress(self, frame: bytes | bytearray, *, max_bytes: int) -> bytes | bytearray: ...

    def decompress(self, frame: bytes | bytearray, *, max_bytes: int) -> bytes | bytearray:
        """Return the message in ``frame``: plain frames as they are, compressed ones inflated.

        Args:
            frame: a received message.
            max_bytes: the largest message accepted once inflated.

        Raises:
            DecodeError: the frame is of another codec than the session's, declares no
                content size, or is corrupt.
            MessageTooLargeError: it declares more than ``max_bytes``.

        """
        codec = _MAGICS.get(bytes(frame[:4]))  # large frames arrive as bytearray (ws/client.py)
        if codec is None:
            return frame
        if codec != self.codec:
            raise DecodeError(f"a {codec} frame on a session that agreed on {self.codec}")
        return self.decompress_frame(
            bytes(frame) if isinstance(frame, bytearray) else frame, max_bytes
        )


def make_compressor(codec: CodecName, *, threshold: int = DEFAULT_THRESHOLD) -> Compressor:
    """Return the :class:`Compressor` of ``codec``.

    Raises:
        ImportError: the codec's package is not installed (extra ``compression``).
        ValueError: ``codec`` is not one of :data:`CODECS`.

    """
    if codec == "zstd":
        zstandard = _import("zstd")
        compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True)
        decompressor = zstandard.ZstdDecompressor()

        def zstd_decompress(frame: bytes, max_bytes: int) -> bytes:
            size = _declared(zstandard.frame_content_size, frame, zstandard.ZstdError)
            _check_size(size, max_bytes)
            try:  # output is bounded by the declared size: a frame inflating beyond it fails
                return bytes(decompressor.decompress(frame, max_output_size=size))
            except zstandard.ZstdError as exc:
                raise DecodeError(f"corrupt zstd frame: {exc}") from exc

        return Compressor("zstd", threshold, compressor.compress, zstd_decompress)
    if codec == "lz4":
        lz4_frame = _import("lz4")

        def lz4_decompress(frame: bytes, max_bytes: int) -> bytes:
            size = _declared(
                lambda data: lz4_frame.get_frame_info(data)["content_size"] or -1,
                frame,
                RuntimeError,
            )
            _check_size(size, max_bytes)
            inflater = lz4_frame.LZ4FrameDecompressor()
            try:  # never more than the declared size is produced
                message = inflater.decompress(frame, max_length=size)
            except RuntimeError as exc:
                raise DecodeError(f"corrupt lz4 frame: {exc}") from exc
            if len(message) != size or not inflater.eof:
                raise DecodeError(f"lz4 frame inflates to other than its declared {size} bytes")
            return bytes(message)

        def lz4_compress(message: bytes) -> bytes:
            return bytes(lz4_frame.compress(message, store_size=True))

        return Compressor("lz4", threshold, lz4_compress, lz4_decompress)
    raise ValueError(f"unknown compression codec {codec!r}; expected one of {CODECS}")


def _declared(read_size: Callable[[bytes], int], frame: bytes, error: type[Exception]) -> int:
    """Return the content size a frame header declares (``DecodeError`` if none or corrupt)."""
    try:
        size = int(read_size(frame))
    except error as exc:
        raise DecodeError(f"corrupt compressed frame header: {exc}") from exc
    if size < 0:
        raise DecodeError("compressed frame declares no content size")
    return size


def _check_size(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise MessageTooLargeError(size, max_bytes)


def _import(codec: str) -> Any:
    """Import the package of ``codec`` or raise the error naming the extra."""
    import importlib

    try:
        return importlib.import_module(_MODULES[codec])
    except ImportError as exc:
        package = _MODULES[codec].split(".")[0]
        raise ImportError(
            f"{codec} compression needs the {package!r} package: "
            "pip install 'openenv-gym[compression]'"
        ) from exc
