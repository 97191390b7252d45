"""The whole-binary-frame fast path, checked against websockets' own frame codec."""

from __future__ import annotations

import os

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from openenv_gym.ws.frames import binary_frame, parse_binary_frame


def _parse_with_websockets(data: bytes, *, mask: bool) -> Frame:
    reader = StreamReader()
    reader.feed_data(data)
    parser = Frame.parse(reader.read_exact, mask=mask)
    try:
        next(parser)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    raise AssertionError("incomplete frame")


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 300_000])
@pytest.mark.parametrize("mask", [True, False])
def test_framing_round_trip_matches_websockets(size: int, mask: bool) -> None:
    payload = os.urandom(size)
    frame = binary_frame(payload, mask=mask)
    parsed = _parse_with_websockets(frame, mask=mask)
    assert parsed.opcode is Opcode.BINARY and parsed.fin and parsed.data == payload
    assert parse_binary_frame(frame, masked=mask, max_size=None) == payload


def test_framing_parses_websockets_frames() -> None:
    payload = os.urandom(70_000)
    frame = Frame(Opcode.BINARY, payload).serialize(mask=True, extensions=[])
    assert parse_binary_frame(frame, masked=True, max_size=None) == payload


@pytest.mark.parametrize(
    "frame",
    [
        Frame(Opcode.TEXT, b"hello").serialize(mask=True, extensions=[]),
        Frame(Opcode.BINARY, b"part", fin=False).serialize(mask=True, extensions=[]),
        Frame(Opcode.PING, b"").serialize(mask=True, extensions=[]),
        Frame(Opcode.CLOSE, b"\x03\xe8").serialize(mask=True, extensions=[]),
        binary_frame(b"unmasked", mask=False),  # a server must refuse unmasked frames
        binary_frame(b"x" * 200, mask=True)[:-1],  # partial read
        binary_frame(b"x" * 200, mask=True) + binary_frame(b"y", mask=True),  # two frames
        b"\x82",
        b"",
    ],
)
def test_framing_leaves_anything_else_to_the_general_parser(frame: bytes) -> None:
    assert parse_binary_frame(frame, masked=True, max_size=None) is None


def test_framing_leaves_oversized_frames_to_the_general_parser() -> None:
    frame = binary_frame(b"x" * 1000, mask=True)
    assert parse_binary_frame(frame, masked=True, max_size=999) is None
    assert parse_binary_frame(frame, masked=True, max_size=1000) == b"x" * 1000


def test_frame_boundary_tracks_frames_split_anywhere() -> None:
    from openenv_gym.ws.frames import FrameBoundary

    stream = b"".join(
        binary_frame(os.urandom(size), mask=True) for size in (0, 5, 125, 126, 70_000)
    )
    ends = set()
    offset = 0
    for size in (0, 5, 125, 126, 70_000):
        offset += len(binary_frame(b"x" * size, mask=True))
        ends.add(offset)
    for cut in range(0, len(stream), 997):  # feed in two pieces cut at many places
        boundary = FrameBoundary()
        boundary.feed(stream[:cut])
        assert boundary.at_boundary == (cut in ends or cut == 0)
        boundary.feed(stream[cut:])
        assert boundary.at_boundary
    header_only = binary_frame(b"y" * 41, mask=True)[:6]
    boundary = FrameBoundary()
    boundary.feed(header_only)
    assert not boundary.at_boundary  # the attack: a header, then a "frame" inside its payload


def test_frames_large_frame_start_only_for_a_longer_server_frame() -> None:
    from openenv_gym.ws.frames import large_frame_start

    for size in (126, 70_000, 200_000):
        frame = binary_frame(b"z" * size, mask=False)
        offset = len(frame) - size
        assert large_frame_start(frame[: offset + 10], max_size=None) == (offset, size)
        assert large_frame_start(frame, max_size=None) is None  # whole: parse_binary_frame's
        assert large_frame_start(frame[: offset + 10], max_size=size - 1) is None  # too big
    masked = binary_frame(b"z" * 70_000, mask=True)
    assert large_frame_start(masked[:100], max_size=None) is None  # client frames: not here
    assert large_frame_start(binary_frame(b"z" * 100, mask=False)[:50], max_size=None) is None
