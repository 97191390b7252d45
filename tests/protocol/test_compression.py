"""Per-message compression: codecs, thresholds, negotiation, bounded decompression."""

from __future__ import annotations

import numpy as np
import pytest

from openenv_gym.errors import DecodeError, MessageTooLargeError
from openenv_gym.protocol import codec
from openenv_gym.protocol.compression import (
    CODECS,
    available_codecs,
    is_compressed,
    make_compressor,
    negotiate,
)
from openenv_gym.protocol.messages import Hello, HelloReply, parse_body
from openenv_gym.testing.optional import require_module

INSTALL = "pip install 'openenv-gym[compression]'"
zstandard = require_module("zstandard", family="compression", install=INSTALL)
lz4_frame = require_module("lz4.frame", family="compression", install=INSTALL)

FRAMES = np.zeros((16, 4, 84, 84), np.uint8)
FRAMES[:, :, 30:40, 10:12] = 200  # a paddle: frames are mostly flat, as Atari's are
MESSAGE = codec.encode([0, 7, [FRAMES, np.ones(16, np.float32)]])


@pytest.mark.parametrize("name", CODECS)
def test_compression_round_trip_is_exact_and_smaller(name: str) -> None:
    compressor = make_compressor(name, threshold=1024)
    packed = compressor.compress(MESSAGE)
    assert is_compressed(packed) and len(packed) * 20 < len(MESSAGE)
    assert compressor.decompress(packed, max_bytes=len(MESSAGE)) == MESSAGE
    decoded = codec.decode(compressor.decompress(packed, max_bytes=1 << 24), max_bytes=None)
    np.testing.assert_array_equal(decoded[2][0], FRAMES)


@pytest.mark.parametrize("name", CODECS)
def test_compression_leaves_small_and_incompressible_messages_plain(name: str) -> None:
    compressor = make_compressor(name, threshold=len(MESSAGE) + 1)
    assert compressor.compress(MESSAGE) is MESSAGE  # under the threshold
    noise = codec.encode([0, 1, np.random.default_rng(0).bytes(1 << 16)])
    assert make_compressor(name, threshold=0).compress(noise) is noise  # would not shrink
    assert not is_compressed(MESSAGE)
    assert compressor.decompress(MESSAGE, max_bytes=10) is MESSAGE  # plain frames pass as is


@pytest.mark.parametrize("name", CODECS)
def test_compression_refuses_frames_declaring_more_than_the_limit(name: str) -> None:
    compressor = make_compressor(name, threshold=0)
    packed = compressor.compress(MESSAGE)
    with pytest.raises(MessageTooLargeError, match=f"{len(MESSAGE)} bytes is over the limit"):
        compressor.decompress(packed, max_bytes=len(MESSAGE) - 1)


def test_compression_refuses_frames_without_a_declared_size() -> None:
    undeclared_zstd = zstandard.ZstdCompressor(write_content_size=False).compress(MESSAGE)
    with pytest.raises(DecodeError, match="declares no content size"):
        make_compressor("zstd").decompress(undeclared_zstd, max_bytes=1 << 30)
    undeclared_lz4 = lz4_frame.compress(MESSAGE, store_size=False)
    with pytest.raises(DecodeError, match="declares no content size"):
        make_compressor("lz4").decompress(undeclared_lz4, max_bytes=1 << 30)


def test_compression_refuses_frames_inflating_beyond_their_declared_size() -> None:
    # An LZ4 frame whose header claims 100 bytes, holding a whole message.
    packed = bytearray(lz4_frame.compress(MESSAGE, store_size=True))
    lying = lz4_frame.compress(b"x" * 100, store_size=True)[:15] + bytes(packed[15:])
    with pytest.raises(DecodeError):
        make_compressor("lz4").decompress(lying, max_bytes=1 << 30)
    frame = bytearray(make_compressor("zstd", threshold=0).compress(MESSAGE))
    frame[12:40] = bytes(28)  # the header (and its declared size) intact, the blocks broken
    with pytest.raises(DecodeError, match="corrupt zstd frame"):
        make_compressor("zstd").decompress(bytes(frame), max_bytes=1 << 24)


def test_compression_refuses_another_codec_than_agreed() -> None:
    packed = make_compressor("lz4", threshold=0).compress(MESSAGE)
    with pytest.raises(DecodeError, match="a lz4 frame on a session that agreed on zstd"):
        make_compressor("zstd").decompress(packed, max_bytes=1 << 24)


def test_compression_negotiation_takes_the_clients_first_accepted_codec() -> None:
    assert negotiate(["lz4", "zstd"], ("zstd", "lz4")) == "lz4"
    assert negotiate(["brotli", "zstd"], ("zstd",)) == "zstd"
    assert negotiate(["zstd"], ()) is None
    assert negotiate([], CODECS) is None
    assert set(available_codecs()) == set(CODECS)


def test_compression_hello_fields_are_left_out_at_their_defaults() -> None:
    # Old servers forbid unknown fields: a client that asks for no compression sends none.
    assert Hello(protocol_version=1, client="x").wire() == {"protocol_version": 1, "client": "x"}
    reply = HelloReply(protocol_version=1, server="s", specs=[], allow_any_id=False)
    assert "compression" not in reply.wire()
    with pytest.raises(DecodeError):
        parse_body(HelloReply, {**reply.wire(), "compression": "brotli"})
    with pytest.raises(DecodeError):
        parse_body(Hello, {"protocol_version": 1, "compression": ["zstd"] * 9})
