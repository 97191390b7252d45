"""Generators of malformed inputs for the fuzz campaign, one per kind, over ``random.Random``.

Each generator takes a :class:`random.Random` and returns the arguments of the matching check
of :class:`~openenv_gym.testing.compliance.fuzz.Fuzzer` (``gen_hello`` feeds ``check_hello``).
The reliability report draws from a seeded ``Random``; the tests draw from hypothesis'
``st.randoms()``, so a failing draw is replayed and shrunk. Sizes stay small: valid env counts
are tiny, array dims are single digits (an itemsize-0 dtype would otherwise allocate without
bound, see ``check_tiny_frame_huge_array``).
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np

from openenv_gym.protocol import codec
from openenv_gym.protocol.messages import PROTOCOL_VERSION, Op
from openenv_gym.testing.rawws import client_frame

__all__ = ["GENERATORS", "SESSION_KINDS", "SPECS"]

CARTPOLE = "CartPole-v1"
DICT_TUPLE = "openenv_gym.testing.envs:DictTupleEnv"
SPECS = (CARTPOLE, DICT_TUPLE)
MAX_ENVS = 64  # the fuzz server's --max-envs: counts between 4 and this would be built

SESSION_KINDS: dict[str, dict[str, Any] | None] = {
    "new": None,
    "open": None,
    "single cartpole": {"env_id": CARTPOLE},
    "single dict-tuple": {"env_id": DICT_TUPLE},
    "batched cartpole": {"env_id": CARTPOLE, "num_envs": 3, "autoreset_mode": "NextStep"},
    "batched dict-tuple": {"env_id": DICT_TUPLE, "num_envs": 2, "autoreset_mode": "SameStep"},
    "batched disabled": {"env_id": CARTPOLE, "num_envs": 2, "autoreset_mode": "Disabled"},
}
"""The session states an input is thrown into: none, after HELLO, and after MAKE + RESET."""
ACTIVE_KINDS = [kind for kind, make in SESSION_KINDS.items() if make is not None]

DTYPES = ["|b1", "|i1", "<i8", "|u1", "<u8", "<f2", "<f4", "<f8", ">f8", "<c8", "<U3", "|S2"]
DTYPE_STRINGS = [b"<f8", b"|b1", b"<i4", b">u2", b"<U2", b"|S3", b"<M8[s]", b"|O", b"|V4", b"<f3"]
SPECIAL_INTS = [0, 1, -1, 2, 3, 2**31, 2**63 - 1, 2**63, 2**64 - 1, -(2**63)]
NAMES = [
    "close",
    "reset",
    "render",
    "np_random",
    "np_random_seed",
    "metadata",
    "spec",
    "unwrapped",
    "env",
    "action_space",
    "observation_space",
    "render_mode",
    "get_wrapper_attr",
    "set_wrapper_attr",
    "has_wrapper_attr",
    "max_length",
    "gravity",
    "state",
    "_np_random",
    "__class__",
    "",
]
HELLO = [int(Op.HELLO), 1, {"protocol_version": PROTOCOL_VERSION}]
HTTP_LINES = [
    b"Host: 127.0.0.1\r\n",
    b"Upgrade: websocket\r\n",
    b"Connection: Upgrade\r\n",
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    b"Sec-WebSocket-Version: 13\r\n",
    b"Sec-WebSocket-Extensions: permessage-deflate\r\n",
    b"Authorization: Bearer guess\r\n",
    b"Content-Length: 5\r\n",
    b"X: " + b"y" * 9000 + b"\r\n",
    b"no colon\r\n",
]


def _maybe(rng: random.Random, p: float = 0.5) -> bool:
    return rng.random() < p


def rand_int(rng: random.Random) -> int:
    """Return an edge-case or random 64-bit integer (signed or unsigned range)."""
    return rng.choice(SPECIAL_INTS) if _maybe(rng) else rng.randint(-(2**63), 2**64 - 1)


def rand_float(rng: random.Random) -> float:
    """Return nan, an infinity, a signed zero or a random double."""
    return rng.choice(
        [float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1.5, rng.uniform(-1e300, 1e300)]
    )


def rand_text(rng: random.Random, size: int = 24) -> str:
    """Return up to ``size`` characters from ASCII, the BMP and beyond (no surrogates)."""
    ranges = [(32, 126), (0x80, 0xD7FF), (0xE000, 0x10FFFF)]
    return "".join(chr(rng.randint(*rng.choice(ranges))) for _ in range(rng.randint(0, size)))


def rand_scalar(rng: random.Random) -> Any:
    """Return None, a bool, an int, a float, a str or bytes."""
    pick = rng.randrange(6)
    if pick == 0:
        return rng.choice([None, True, False])
    makers: list[Callable[[random.Random], Any]] = [
        rand_int,
        rand_float,
        rand_text,
        lambda r: r.randbytes(r.randint(0, 24)),
    ]
    return makers[pick % 4](rng)


def rand_array(rng: random.Random) -> np.ndarray:
    """Return an array of a sampled dtype and up to 3 dims of side 0-4, random bytes inside."""
    dtype = np.dtype(rng.choice(DTYPES))
    shape = tuple(rng.randint(0, 4) for _ in range(rng.randint(0, 3)))
    count = int(np.prod(shape)) if shape else 1
    if dtype.kind == "U":  # valid code points only: a bad one fails the whole message
        return np.array([rand_text(rng, 3) for _ in range(count)], dtype=dtype).reshape(shape)
    return np.frombuffer(rng.randbytes(count * dtype.itemsize), dtype=dtype).reshape(shape)


def rand_value(rng: random.Random, depth: int = 0) -> Any:
    """Return a value the codec encodes: scalars, numpy data, lists, tuples and maps."""
    roll = rng.random()
    if depth >= 3 or roll < 0.45:
        return rand_scalar(rng)
    if roll < 0.65:
        array = rand_array(rng)
        return array[()] if array.ndim == 0 else array
    items = [rand_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if roll < 0.8:
        return items
    return tuple(items) if roll < 0.9 else {rand_text(rng): item for item in items}


def array_payload(rng: random.Random) -> bytes:
    """Return an array extension payload: a dtype string, small dims, a random body."""
    dtype = rng.choice(DTYPE_STRINGS) if _maybe(rng, 0.7) else rng.randbytes(rng.randint(0, 6))
    dims = [rng.randint(-2, 8) for _ in range(rng.randint(0, 3))]
    head = bytes((len(dtype),)) + dtype + bytes((len(dims),))
    return head + b"".join(struct.pack("<q", d) for d in dims) + rng.randbytes(rng.randint(0, 64))


def rand_ext(rng: random.Random) -> msgpack.ExtType:
    """Return an extension value: our codes or any, random bytes or an array header."""
    code = rng.randint(0, 6) if _maybe(rng) else rng.randint(0, 127)
    data = rng.randbytes(rng.randint(0, 48)) if _maybe(rng) else array_payload(rng)
    return msgpack.ExtType(code, data)


def rand_msgpack(rng: random.Random, depth: int = 0) -> Any:
    """Return a msgpack value: scalars, extension values, lists and maps of any key type."""
    roll = rng.random()
    if depth >= 3 or roll < 0.5:
        return rand_ext(rng) if roll < 0.15 else rand_scalar(rng)
    items = [rand_msgpack(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if roll < 0.75:
        return items
    keys: list[Callable[[random.Random], Any]] = [
        rand_text,
        rand_int,
        lambda r: None,
        lambda r: r.random() < 0.5,
    ]
    return {rng.choice(keys)(rng): item for item in items}


def _optional(rng: random.Random, fields: dict[str, Any]) -> dict[str, Any]:
    """Return a dict of a random subset of ``fields`` (callables of ``rng``)."""
    return {key: make(rng) for key, make in fields.items() if _maybe(rng)}


def _either(*makers: Any) -> Any:
    return lambda rng: rng.choice(makers)(rng)


def _const(*values: Any) -> Any:
    return lambda rng: rng.choice(values)


CONTROL_FIELDS = {
    "name": _either(_const(*NAMES), rand_text, rand_scalar),
    "args": lambda rng: [
        _either(_const(*NAMES), rand_value)(rng) for _ in range(rng.randint(0, 3))
    ],
    "kwargs": lambda rng: {rand_text(rng): rand_value(rng) for _ in range(rng.randint(0, 3))},
    "values": rand_value,
    "per_env": _either(_const(True, False), rand_scalar),
    "seed": _either(rand_int, rand_float, _const(None)),
    "options": _either(_const(None), lambda rng: {rand_text(rng): rand_value(rng)}),
    "protocol_version": _either(rand_int, rand_scalar),
    "env_id": _either(_const(*SPECS), rand_text),
    "num_envs": _const(0, -1, 1, 2, 100, 4097, 10**9),
    "bogus": rand_scalar,
}


def gen_bytes(rng: random.Random) -> tuple[str, bytes]:
    """Random bytes (or a STEP carrying a raw ext 8 of any code) in a new/open/active session."""
    kind = rng.choice(["new", "open", "single cartpole"])
    if _maybe(rng, 0.7):
        return kind, rng.randbytes(rng.randint(0, 300))
    data = rng.randbytes(rng.randint(0, 48)) if _maybe(rng) else array_payload(rng)
    code = struct.pack("b", rng.randint(-128, 127))
    return kind, b"\x93\x03\x05\xc7" + bytes((len(data),)) + code + data


def gen_msgpack(rng: random.Random) -> tuple[str, Any]:
    """Return a random msgpack value in any session state."""
    return rng.choice(list(SESSION_KINDS)), rand_msgpack(rng)


def gen_envelope(rng: random.Random) -> tuple[str, Any, Any, Any]:
    """Return an envelope with a random op, id and body, in any session state."""
    op = _either(lambda r: r.randint(-1, 11), _const(2**64 - 1, -(2**63)), rand_scalar)(rng)
    request_id = _either(lambda r: r.randint(1, 2**64 - 1), _const(0, -1, True), rand_scalar)(rng)
    body = _optional(rng, CONTROL_FIELDS) if _maybe(rng) else rand_value(rng)
    return rng.choice(list(SESSION_KINDS)), op, request_id, body


HELLO_FIELDS = {
    "protocol_version": _either(
        _const(PROTOCOL_VERSION), rand_int, rand_float, rand_text, _const(True, False, None)
    ),
    "client": _either(rand_text, rand_int, _const(None), lambda r: r.randbytes(4)),
    "extra": rand_scalar,
}


def gen_hello(rng: random.Random) -> tuple[Any]:
    """Return a HELLO body: a random subset of its fields (and extras), a scalar or a list."""
    roll = rng.random()
    if roll < 0.7:
        return (_optional(rng, HELLO_FIELDS),)
    if roll < 0.85:
        return (rand_scalar(rng),)
    return ([rand_scalar(rng) for _ in range(rng.randint(0, 3))],)


def _num_envs(rng: random.Random) -> Any:
    value = _either(
        _const(1, 2, 3, 0, -1, 100, 4097, 100_000, 10**9, 2**63 - 1),
        rand_int,
        rand_float,
        _const(True, False),
        rand_text,
    )(rng)
    return 1 if type(value) is int and 4 <= value <= MAX_ENVS else value  # never build many


MAKE_KWARG_NAMES = ["max_episode_steps", "disable_env_checker", "render_mode", "max_length"]
MAKE_FIELDS = {
    "env_id": _either(_const(*SPECS, "Nope-v0", "", "x" * 513, "os:system"), rand_text, rand_int),
    "num_envs": _num_envs,
    "kwargs": _either(
        lambda r: {
            _either(_const(*MAKE_KWARG_NAMES, "autoreset"), rand_text)(r): _either(
                rand_scalar, _const("rgb_array", "ansi", "bogus")
            )(r)
            for _ in range(r.randint(0, 3))
        },
        lambda r: {rand_int(r): rand_scalar(r)},
        rand_scalar,
    ),
    "autoreset_mode": _either(
        _const(None, "NextStep", "SameStep", "Disabled", "nextstep", ""), rand_int
    ),
    "extra": rand_scalar,
}


def gen_make(rng: random.Random) -> tuple[Any]:
    """Return a MAKE body: a subset of its fields (valid env counts stay tiny), or a scalar."""
    return (_optional(rng, MAKE_FIELDS) if _maybe(rng, 0.85) else rand_scalar(rng),)


def rand_action(rng: random.Random) -> Any:
    """Return a valid, out-of-range, wrongly shaped, non-finite or random action."""
    return rng.choice(
        [
            _const(np.int64(0), np.int64(1), np.int64(-1), np.int64(2), 0, 1),
            _const(np.zeros(3, np.int64), np.ones(2, np.int64), np.array([0, 1, -1])),
            _const(np.nan, np.inf, -np.inf, np.float64(np.nan), np.array([np.nan, np.inf])),
            _const(2**64 - 1, -(2**63), np.uint64(2**64 - 1), np.int8(-128)),
            rand_value,
        ]
    )(rng)


def gen_actions(rng: random.Random) -> tuple[str, list[Any]]:
    """One to four STEP actions in an active session."""
    return rng.choice(ACTIVE_KINDS), [rand_action(rng) for _ in range(rng.randint(1, 4))]


def rand_seed(rng: random.Random) -> Any:
    """Return a valid or invalid RESET seed (ints, lists, floats, text, numpy scalars)."""
    return _either(
        rand_int,
        rand_float,
        rand_text,
        _const(True, False, None, np.int64(3), np.uint64(2**64 - 1), np.array([1, 2])),
        lambda r: r.randbytes(4),
        lambda r: [
            _either(rand_int, _const(None), rand_float, rand_text)(r)
            for _ in range(r.randint(0, 4))
        ],
    )(rng)


OPTION_FIELDS = {
    "reset_mask": _either(
        rand_array, lambda r: [r.random() < 0.5 for _ in range(r.randint(0, 4))], rand_scalar
    ),
    "low": _either(rand_float, rand_text),
    "high": _either(rand_float, rand_text),
}


def gen_reset(rng: random.Random) -> tuple[str, Any, Any]:
    """Return a RESET seed and options in an active session."""
    options = _either(
        _const(None),
        lambda r: {rand_text(r): rand_value(r) for _ in range(r.randint(0, 2))},
        lambda r: _optional(r, OPTION_FIELDS),
        rand_scalar,
    )(rng)
    return rng.choice(ACTIVE_KINDS), rand_seed(rng), options


def gen_text(rng: random.Random) -> tuple[str, str]:
    """Return a text frame in a new or an active session."""
    return rng.choice(["new", "single cartpole"]), rand_text(rng)


def _positions(rng: random.Random, top: int, count: int) -> list[int]:
    return [rng.randint(0, top) for _ in range(rng.randint(0, count))]


def gen_fragments(rng: random.Random) -> tuple[str, list[int], bool]:
    """Return a HELLO or garbage, cut at random positions, maybe with an empty last fragment."""
    return rng.choice(["hello", "garbage"]), _positions(rng, 10_000, 6), _maybe(rng)


def gen_segments(rng: random.Random) -> tuple[list[int], bytes]:
    """Cut positions over a whole session's frames, and a masking key."""
    return _positions(rng, 120_000, 8), rng.randbytes(4)


def rand_raw_frame(rng: random.Random) -> bytes:
    """Return a hand-built frame breaking some rule, or raw bytes between frames."""
    if _maybe(rng, 0.15):
        return rng.randbytes(rng.randint(1, 16))
    payload = rng.choice(
        [rng.randbytes(rng.randint(0, 140)), codec.encode(HELLO), b"\x03\xe8", b"\x03\xe8\xff\xfe"]
    )
    return client_frame(
        payload,
        opcode=rng.choice([0x0, 0x1, 0x2, 0x8, 0x9, 0xA]) if _maybe(rng) else rng.randint(0, 15),
        fin=_maybe(rng),
        rsv=rng.choice([0, 0, 0, 1, 2, 4, 7]),
        key=b"\x01\x02\x03\x04" if _maybe(rng, 0.75) else None,
    )


def gen_raw_frames(rng: random.Random) -> tuple[list[bytes], bool]:
    """One to six raw frames, and whether an unmasked frame follows them."""
    return [rand_raw_frame(rng) for _ in range(rng.randint(1, 6))], _maybe(rng)


def gen_http(rng: random.Random) -> tuple[bytes, bytes, bool]:
    """HTTP garbage before the opening handshake, and whether the head stays unterminated."""
    prefix = rng.choice(
        [b"", b"GET / HTTP/1.1\r\n", b"GET /healthz HTTP/1.1\r\n", b"POST / HTTP/1.0\r\n"]
    )
    if _maybe(rng):
        garbage = rng.randbytes(rng.randint(0, 300))
    else:
        garbage = b"".join(rng.choices(HTTP_LINES, k=rng.randint(0, 6)))
    return prefix, garbage, _maybe(rng)


def gen_abrupt(rng: random.Random) -> tuple[int, str]:
    """Where to cut a session's byte stream, and how (RST, FIN, garbage then FIN)."""
    return rng.randint(0, 10**6), rng.choice(["reset", "fin", "garbage then fin"])


def gen_oversize(rng: random.Random, limit: int = 65536) -> tuple[int, int]:
    """Return a message size around or over ``limit``, and a number of fragments."""
    size = (
        rng.choice([limit - 1, limit, limit + 1])
        if _maybe(rng)
        else rng.randint(limit + 1, 4 * limit)
    )
    return size, rng.randint(1, 4)


GENERATORS = {
    "bytes": gen_bytes,
    "msgpack": gen_msgpack,
    "envelope": gen_envelope,
    "hello": gen_hello,
    "make": gen_make,
    "actions": gen_actions,
    "reset": gen_reset,
    "text": gen_text,
    "fragments": gen_fragments,
    "segments": gen_segments,
    "raw_frames": gen_raw_frames,
    "http": gen_http,
    "abrupt": gen_abrupt,
    "oversize": gen_oversize,
}
"""Input kind -> its generator; ``Fuzzer.check_<kind>`` takes what the generator returns."""
