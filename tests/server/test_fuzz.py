"""Fuzzing a live server: whatever a client throws at it, it answers or closes, in bounded time.

One server process (``--workers 1``) hosts CartPole and the composite-space ``DictTupleEnv`` for
the whole module; a second one with ``--max-message-bytes 65536`` takes the oversized frames
cheaply. Raw WebSocket connections (``websockets.sync.client``) and raw sockets throw random
bytes, random msgpack values, envelopes with random ops, ids and bodies in every session state,
invalid HELLO/MAKE/RESET fields, bad actions, text frames, fragments, frames split across TCP
segments, invalid frame sequences, HTTP garbage, oversized messages and abrupt disconnects.

For every input the server must send a well-formed reply (an error reply carries a typed error
body) or close the connection cleanly (a close frame with a non-error code, or EOF), within
``ANSWER_TIMEOUT`` seconds; and where the session should carry on, a follow-up request must be
answered. A bystander session opened before the campaign must still step afterwards,
``/healthz`` must answer 200, and the server's session and env counts and its open file
descriptors must be back where they were (checked exactly through its capacity limits).

The tests at the end pin bugs this campaign found (tiny frames decoding to huge arrays, a
request hidden in another frame's payload, unbounded buffering of unread replies, envs leaked
by a disconnect during MAKE with ``--threads``). ``pytest -s`` prints how many inputs each
campaign tried and what the server answered.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import os
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

import openenv_gym
from openenv_gym.protocol import codec
from openenv_gym.protocol.messages import (
    PROTOCOL_VERSION,
    ErrorBody,
    Op,
    Status,
    parse_body,
    parse_reply,
)
from openenv_gym.providers.local import LocalProvider
from openenv_gym.testing.rawws import (
    abort,
    client_frame,
    close_frame,
    healthz,
    open_fds,
    opening_handshake,
    raw_connection,
    read_frames,
    read_until_eof,
    rss_mib,
    split_server_frames,
    upgraded_connection,
    ws_connection,
)

CARTPOLE = "CartPole-v1"
DICT_TUPLE = "openenv_gym.testing.envs:DictTupleEnv"
SPECS = [CARTPOLE, DICT_TUPLE]
MAX_SESSIONS = 32  # small limits make leaked sessions and envs countable exactly
MAX_ENVS = 64
MAX_ENVS_PER_SESSION = 4096  # the server's default
SMALL_LIMIT = 65536
ANSWER_TIMEOUT = 5.0
PROBE_ID = 2**40
CLEAN_CLOSE_CODES = {1000, 1001, 1002, 1007, 1009}  # plus EOF; never 1011 (internal error)

TRIED: collections.Counter[str] = collections.Counter()  # inputs thrown, per campaign
OUTCOMES: collections.Counter[str] = collections.Counter()  # what the server did

FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
QUICK = settings(FUZZ, max_examples=60)


# --------------------------------------------------------------------------- servers


@pytest.fixture(scope="module")
def server() -> Iterator[LocalProvider]:
    limits = ["--max-sessions", str(MAX_SESSIONS), "--max-envs", str(MAX_ENVS)]
    # SESSION_REQUESTS sets "blob" (a 96 KB payload split across segments): the operator allows it.
    policy = ["--set-attr-allow", "blob"]
    with LocalProvider(SPECS, extra_args=["--workers", "1", *limits, *policy]) as provider:
        yield provider


@pytest.fixture(scope="module")
def small_server() -> Iterator[LocalProvider]:
    args = ["--workers", "1", "--max-message-bytes", str(SMALL_LIMIT), "--set-attr-allow", "blob"]
    with LocalProvider(SPECS, extra_args=args) as provider:
        yield provider


@dataclasses.dataclass
class Bystander:
    env: openenv_gym.RemoteEnv[Any, Any]
    fds: int  # the server's open fds once the bystander is connected


@pytest.fixture(scope="module", autouse=True)
def bystander(server: LocalProvider) -> Iterator[Bystander]:
    """A session opened before the campaign; the last test steps it. Prints the tallies."""
    started = time.monotonic()
    env = openenv_gym.RemoteEnv(CARTPOLE, url=server.urls[0], call_timeout=10)
    env.reset(seed=0)
    assert env.step(np.int64(0))[0].shape == (4,)
    yield Bystander(env, open_fds(server.pids[0]))
    env.close()
    print(f"\n\nfuzz campaign: {sum(TRIED.values())} inputs in {time.monotonic() - started:.1f} s")
    for name, count in sorted(TRIED.items()):
        print(f"  {name:<44} {count:>6}")
    print("server answers:")
    for name, count in sorted(OUTCOMES.items()):
        print(f"  {name:<44} {count:>6}")


# --------------------------------------------------------------------------- outcomes


@dataclasses.dataclass(frozen=True)
class Outcome:
    """A reply (``status`` set) or a closed connection (``closed``)."""

    status: Status | None = None
    request_id: int | None = None
    body: Any = None
    closed: bool = False
    close_code: int | None = None

    @property
    def error_type(self) -> str:
        return self.body["type"] if self.status is Status.ERROR else ""


def _closed(exc: ConnectionClosed) -> Outcome:
    code = exc.rcvd.code if exc.rcvd is not None else None
    assert code is None or code in CLEAN_CLOSE_CODES, f"unclean close: {exc.rcvd}"
    OUTCOMES[f"closed ({code or 'EOF'})"] += 1
    return Outcome(closed=True, close_code=code)


def _check_reply(frame: bytes | str) -> Outcome:
    assert isinstance(frame, bytes), f"the server sent a text frame: {frame[:80]!r}"
    status, request_id, body = parse_reply(codec.decode(frame, max_bytes=None))
    if status is Status.ERROR:
        error = parse_body(ErrorBody, body)  # exactly the four keys, typed
        assert error.type and isinstance(error.message, str), body
        assert error.traceback is None  # no --debug: no traceback
        OUTCOMES[f"error reply {error.type.rpartition('.')[2]}"] += 1
    else:
        OUTCOMES["ok reply"] += 1
    return Outcome(status, request_id, body)


def _answer(ws: ClientConnection) -> Outcome:
    """The server's next reply, or how it closed; fail if it does neither in time."""
    try:
        frame = ws.recv(timeout=ANSWER_TIMEOUT)
    except TimeoutError:
        raise AssertionError(f"no reply and no close within {ANSWER_TIMEOUT} s") from None
    except ConnectionClosed as exc:
        return _closed(exc)
    return _check_reply(frame)


def _send(ws: ClientConnection, data: Any, *, text: bool | None = None) -> Outcome:
    """Send one message (or fragments) and return the answer."""
    with contextlib.suppress(ConnectionClosed):  # the server closed first: recv() says how
        ws.send(data, text=text)
    return _answer(ws)


def _request_header(frame: bytes | None) -> tuple[Any, Any]:
    """The (op, request id) of a frame that decodes to a 3-array, else (None, None)."""
    with contextlib.suppress(Exception):
        value = codec.decode(frame, max_bytes=None) if frame is not None else None
        if isinstance(value, list) and len(value) == 3:
            return value[0], value[1]
    return None, None


def _reply_ids(frame: bytes) -> tuple[int, ...]:
    """The ids a reply to ``frame`` may carry: 0, or the request's own."""
    _, request_id = _request_header(frame)
    return (0, request_id) if type(request_id) is int else (0,)


def _carries_on(ws: ClientConnection, first: Outcome, sent: bytes | None) -> None:
    """After ``first``, the session must answer one more request, unless it ended."""
    op, _ = _request_header(sent)
    op = op if type(op) is int else None
    ended = (
        first.closed
        or (first.status is Status.OK and op == Op.CLOSE)
        or (first.error_type == "openenv_gym.errors.CapacityError" and op == Op.HELLO)
    )
    probe = _send(ws, codec.encode([int(Op.CLOSE), PROBE_ID, None]))
    if ended:
        assert probe.closed, f"a session that ended answered {probe}"
    else:
        assert (probe.status, probe.request_id) == (Status.OK, PROBE_ID), (first, probe)


SESSION_KINDS: dict[str, dict[str, Any] | None] = {
    "new": None,
    "open": None,
    "single cartpole": {"env_id": CARTPOLE},
    "single dict-tuple": {"env_id": DICT_TUPLE},
    "batched cartpole": {"env_id": CARTPOLE, "num_envs": 3, "autoreset_mode": "NextStep"},
    "batched dict-tuple": {"env_id": DICT_TUPLE, "num_envs": 2, "autoreset_mode": "SameStep"},
    "batched disabled": {"env_id": CARTPOLE, "num_envs": 2, "autoreset_mode": "Disabled"},
}
ACTIVE_KINDS = [kind for kind, make in SESSION_KINDS.items() if make is not None]


def _expect_ok(ws: ClientConnection, op: Op, request_id: int, body: Any) -> Any:
    ws.send(codec.encode([int(op), request_id, body]))
    outcome = _answer(ws)
    assert (outcome.status, outcome.request_id) == (Status.OK, request_id), outcome
    return outcome.body


def _open(ws: ClientConnection, kind: str) -> None:
    """Bring a fresh connection's session to ``kind`` (request ids 1, 2, 3)."""
    if kind == "new":
        return
    _expect_ok(ws, Op.HELLO, 1, {"protocol_version": PROTOCOL_VERSION})
    make = SESSION_KINDS[kind]
    if make is None:
        return
    _expect_ok(ws, Op.MAKE, 2, make)
    _expect_ok(ws, Op.RESET, 3, {"seed": 0})


# --------------------------------------------------------------------------- raw sockets


def _read_until_eof(sock: socket.socket, timeout: float = ANSWER_TIMEOUT) -> bytes:
    """Everything the server sends until it closes (a reset is counted as an outcome)."""
    received, reset = read_until_eof(sock, timeout)
    if reset:
        OUTCOMES["closed (reset)"] += 1
    return received


def _read_frames(sock: socket.socket, count: int) -> list[tuple[int, bytes]]:
    return read_frames(sock, count, ANSWER_TIMEOUT)


def _check_server_frames(data: bytes) -> None:
    """Every complete frame the server sent is a valid reply, a pong or a clean close."""
    frames, _ = split_server_frames(data)
    for opcode, payload in frames:
        if opcode == 0x2:
            _check_reply(payload)
        elif opcode == 0x8:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
            assert code is None or code in CLEAN_CLOSE_CODES, (code, payload[2:])
            OUTCOMES[f"closed ({code or 'no code'})"] += 1
        else:
            assert opcode == 0xA, f"unexpected server frame opcode {opcode}"


# --------------------------------------------------------------------------- strategies

TEXT = st.text(st.characters(codec="utf-8"), max_size=24)
INTS = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.sampled_from([0, 1, -1, 2, 3, 2**31, 2**63 - 1, 2**63, 2**64 - 1, -(2**63)]),
)
FLOATS = st.floats(allow_nan=True, allow_infinity=True)
SCALARS = st.one_of(st.none(), st.booleans(), INTS, FLOATS, TEXT, st.binary(max_size=24))

DTYPES = [
    np.dtype(name)
    for name in ["|b1", "|i1", "<i8", "|u1", "<u8", "<f2", "<f4", "<f8", ">f8", "<c8", "<U3", "|S2"]
]
ARRAYS = st.sampled_from(DTYPES).flatmap(
    lambda dtype: hnp.arrays(
        dtype, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
    )
)
NP_SCALARS = st.sampled_from(DTYPES).flatmap(
    lambda dtype: hnp.arrays(dtype, ()).map(lambda array: array[()])
)
CODEC_VALUES = st.recursive(
    st.one_of(SCALARS, ARRAYS, NP_SCALARS),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(TEXT, children, max_size=4),
    ),
    max_leaves=10,
)

# Extension payloads: random bytes, or an array header (sampled dtype string, small dims) with
# a random body. Dims stay small: an itemsize-0 dtype would otherwise allocate unboundedly
# (see test_server_refuses_tiny_frames_that_decode_to_huge_arrays).
DTYPE_STRINGS = [b"<f8", b"|b1", b"<i4", b">u2", b"<U2", b"|S3", b"<M8[s]", b"|O", b"|V4", b"<f3"]
ARRAY_PAYLOADS = st.builds(
    lambda dtype, dims, body: (
        bytes((len(dtype),))
        + dtype
        + bytes((len(dims),))
        + b"".join(struct.pack("<q", d) for d in dims)
        + body
    ),
    st.one_of(st.sampled_from(DTYPE_STRINGS), st.binary(max_size=6)),
    st.lists(st.integers(-2, 8), max_size=3),
    st.binary(max_size=64),
)
EXT_TYPES = st.builds(
    msgpack.ExtType,
    st.one_of(st.integers(0, 6), st.integers(0, 127)),
    st.one_of(st.binary(max_size=48), ARRAY_PAYLOADS),
)
# Any code, negative ones included (-1 is msgpack's timestamp), as raw ext 8 bytes in a STEP.
RAW_EXT_STEPS = st.builds(
    lambda code, data: b"\x93\x03\x05\xc7" + bytes((len(data),)) + struct.pack("b", code) + data,
    st.integers(-128, 127),
    st.one_of(st.binary(max_size=48), ARRAY_PAYLOADS),
)
MSGPACK_VALUES = st.recursive(
    st.one_of(SCALARS, EXT_TYPES),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(TEXT, INTS, st.none(), st.booleans()), children, max_size=4),
    ),
    max_leaves=12,
)

NAMES = st.one_of(
    st.sampled_from(
        [
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
    ),
    TEXT,
)
CONTROL_BODIES = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "name": st.one_of(NAMES, SCALARS),
            "args": st.one_of(st.lists(st.one_of(NAMES, CODEC_VALUES), max_size=3), SCALARS),
            "kwargs": st.one_of(st.dictionaries(TEXT, CODEC_VALUES, max_size=3), SCALARS),
            "values": CODEC_VALUES,
            "per_env": st.one_of(st.booleans(), SCALARS),
            "seed": st.one_of(INTS, st.none(), FLOATS),
            "options": st.one_of(st.none(), st.dictionaries(TEXT, CODEC_VALUES, max_size=2)),
            "protocol_version": st.one_of(INTS, SCALARS),
            "env_id": st.one_of(st.sampled_from(SPECS), TEXT),
            "num_envs": st.sampled_from([0, -1, 1, 2, 100, 4097, 10**9]),
            "bogus": SCALARS,
        },
    ),
    CODEC_VALUES,
)


# --------------------------------------------------------------------------- campaigns


@FUZZ
@given(
    kind=st.sampled_from(["new", "open", "single cartpole"]),
    data=st.one_of(st.binary(max_size=300), RAW_EXT_STEPS),
)
def test_server_answers_random_bytes(server: LocalProvider, kind: str, data: bytes) -> None:
    TRIED["random bytes frames"] += 1
    with ws_connection(server.urls[0], ANSWER_TIMEOUT) as ws:
        _open(ws, kind)
        outcome = _send(ws, data)
        assert outcome.closed or outcome.request_id in _reply_ids(data), outcome
        _carries_on(ws, outcome, data)


@FUZZ
@given(kind=st.sampled_from(list(SESSION_KINDS)), value=MSGPACK_VALUES)
def test_server_answers_random_msgpack_values(server: LocalProvider, kind: str, value: Any) -> None:
    TRIED["random msgpack values"] += 1
    frame = msgpack.packb(value, use_bin_type=True)
    with ws_connection(server.urls[0], ANSWER_TIMEOUT) as ws:
        _open(ws, kind)
        outcome = _send(ws, frame)
        assert outcome.closed or outcome.request_id in _reply_ids(frame), outcome
        _carries_on(ws, outcome, frame)


@FUZZ
@given(
    kind=st.sampled_from(list(SESSION_KINDS)),
    op=st.one_of(st.integers(-1, 11), st.sampled_from([2**64 - 1, -(2**63)]), SCALARS),
    request_id=st.one_of(st.integers(1, 2**64 - 1), st.sampled_from([0, -1, True]), SCALARS),
    body=CONTROL_BODIES,
)
def test_server_answers_random_envelopes_in_every_state(
    server: LocalProvider, kind: str, op: Any, request_id: Any, body: Any
) -> None:
    TRIED["envelopes with random op/id/body"] += 1
    frame = codec.encode([op, request_id, body])
    with ws_connection(server.urls[0], ANSWER_TIMEOUT) as ws:
        _open(ws, kind)
        outcome = _send(ws, frame)
        assert not outcome.closed, "an envelope never closes the connection"
        valid_header = (
            type(op) is int and 0 <= op <= 9 and type(request_id) is int and request_id >= 1
        )
        if valid_header:
            assert outcome.request_id == request_id, outcome
        else:
            assert (outcome.status, outcome.request_id) == (Status.ERROR, 0), outcome
            assert outcome.error_type == "openenv_gym.errors.DecodeError", outcome
        _carries_on(ws, outcome, frame)


HELLO_BODIES = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "protocol_version": st.one_of(
                st.just(PROTOCOL_VERSION), INTS, FLOATS, TEXT, st.booleans(), st.none()
            ),
            "client": st.one_of(TEXT, INTS, st.none(), st.binary(max_size=4)),
            "extra": SCALARS,
        },
    ),
    SCALARS,
    st.lists(SCALARS, max_size=3),
)


def _hello_expectation(body: Any) -> str:
    body = {} if body is None else body
    if not isinstance(body, dict) or set(body) - {"protocol_version", "client"}:
        return "openenv_gym.errors.DecodeError"
    version = body.get("protocol_version")
    if type(version) is not int or type(body.get("client", "")) is not str:
        return "openenv_gym.errors.DecodeError"
    return "" if version == PROTOCOL_VERSION else "openenv_gym.errors.VersionMismatchError"


@FUZZ
@given(body=HELLO_BODIES)
def test_server_refuses_invalid_hello_fields(server: LocalProvider, body: Any) -> None:
    TRIED["HELLO with random fields"] += 1
    with ws_connection(server.urls[0], ANSWER_TIMEOUT) as ws:
        frame = codec.encode([int(Op.HELLO), 1, body])
        outcome = _send(ws, frame)
        expected = _hello_expectation(body)
        assert outcome.request_id == 1, outcome
        assert outcome.error_type == expected, (body, outcome)
        if expected == "openenv_gym.errors.VersionMismatchError":
            assert outcome.body["details"] == {
                "client_version": body["protocol_version"],
                "server_version": PROTOCOL_VERSION,
            }
        _carries_on(ws, outcome, frame)


MAKE_KWARGS = st.dictionaries(
    st.one_of(
        st.sampled_from(
            ["max_episode_steps", "disable_env_checker", "render_mode", "max_length", "autoreset"]
        ),
        TEXT,
    ),
    st.one_of(SCALARS, st.sampled_from(["rgb_array", "ansi", "bogus"])),
    max_size=3,
)
MAKE_BODIES = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "env_id": st.one_of(
                st.sampled_from([*SPECS, "Nope-v0", "", "x" * 513, "os:system"]), TEXT, INTS
            ),
            # Valid counts stay tiny; the others are all refused before anything is built.
            "num_envs": st.one_of(
                st.sampled_from([1, 2, 3, 0, -1, 100, 4097, 100_000, 10**9, 2**63 - 1]),
                INTS,
                FLOATS,
                st.booleans(),
                TEXT,
            ).filter(lambda n: not (type(n) is int and 4 <= n <= MAX_ENVS)),
            "kwargs": st.one_of(MAKE_KWARGS, st.dictionaries(INTS, SCALARS, max_size=2), SCALARS),
            "autoreset_mode": st.one_of(
                st.sampled_from([None, "NextStep", "SameStep", "Disabled", "nextstep", ""]),
                INTS,
            ),
            "extra": SCALARS,
        },
    ),
    SCALARS,
)


def _make_expectation(body: Any) -> str | None:
    """The error type a MAKE must get; ``None``: OK or whatever the env constructor raises."""
    decode = "openenv_gym.errors.DecodeError"
    body = {} if body is None else body
    if not isinstance(body, dict) or set(body) - {"env_id", "num_envs", "kwargs", "autoreset_mode"}:
        return decode
    env_id, num_envs = body.get("env_id"), body.get("num_envs", 1)
    kwargs, mode = body.get("kwargs", {}), body.get("autoreset_mode")
    if type(env_id) is not str or not 1 <= len(env_id) <= 512:
        return decode
    if type(num_envs) is not int or num_envs < 1:
        return decode
    if type(kwargs) is not dict or any(type(key) is not str for key in kwargs):
        return decode
    if mode is not None and mode not in ("NextStep", "SameStep", "Disabled"):
        return decode
    if env_id not in SPECS:
        return "openenv_gym.errors.UnknownEnvError"
    if num_envs > MAX_ENVS:
        return "openenv_gym.errors.CapacityError"
    if mode is None and num_envs != 1:
        return "ValueError"
    return None


@FUZZ
@given(body=MAKE_BODIES)
def test_server_refuses_invalid_make_fields(server: LocalProvider, body: Any) -> None:
    TRIED["MAKE with random fields"] += 1
    with ws_connection(server.urls[0], ANSWER_TIMEOUT) as ws:
        _open(ws, "open")
        frame = codec.encode([int(Op.MAKE), 2, body])
        outcome = _send(ws, frame)
        expected = _make_expectation(body)
        assert outcome.request_id == 2, outcome
        if expected is not None:
            assert outcome.error_type == expected, (body, outcome)
        if expected == "openenv_gym.errors.CapacityError":
            assert (
                "the limit is" in outcome.body["message"]
                or "at capacity" in (outcome.body["message"])
            )
        _carries_on(ws, outcome, frame)


@pytest.mark.parametrize("num_envs", [100_000, 10**9, 2**63 - 1, 2**64 - 1])
@pytest.mark.parametrize("env_id", SPECS)
def test_server_refuses_huge_num_envs_without_building_them(
    server: LocalProvider, num_envs: int, env_id: str
) -> None:
    TRIED["MAKE with a huge num_envs"] += 1
    rss = rss_mib(server.pids[0])
    with ws_connection(server.urls[0], ANSWER_TIMEOUT) as ws:
        _open(ws, "open")
        started = time.monotonic()
        make = {"env_id": env_id, "num_envs": num_envs, "autoreset_mode": "NextStep"}
        outcome = _send(ws, codec.encode([int(Op.MAKE), 2, make]))
        assert time.monotonic() - started < 2.0
        assert outcome.error_type == "openenv_gym.errors.CapacityError", outcome
        message = outcome.body["message"]
        assert message == (
            f"asked for {num_envs} envs per session, the limit is {MAX_ENVS_PER_SESSION}"
        )
        assert outcome.body["details"]["limit"] == "envs per session"
        _carries_on(ws, outcome, None)
    assert rss_mib(server.pids[0]) - rss < 20


ACTIONS = st.one_of(
    st.sampled_from([np.int64(0), np.int64(1), np.int64(-1), np.int64(2), 0, 1]),
    st.sampled_from([np.zeros(3, np.int64), np.ones(2, np.int64), np.array([0, 1, -1])]),
    st.sampled_from([np.nan, np.inf, -np.inf, np.float64(np.nan), np.array([np.nan, np.inf])]),
    st.sampled_from([2**64 - 1, -(2**63), np.uint64(2**64 - 1), np.int8(-128)]),
    CODEC_VALUES,
)


@FUZZ
@given(kind=st.sampled_from(ACTIVE_KINDS), actions=st.lists(ACTIONS, min_size=1, max_size=4))
def test_server_answers_bad_actions(server: LocalProvider, kind: str, actions: list[Any]) -> None:
    with ws_connection(server.urls[0], ANSWER_TIMEOUT) as ws:
        _open(ws, kind)
        for index, action in enumerate(actions):
            TRIED["STEP with random actions"] += 1
            request_id = 10 + index
            outcome = _send(ws, codec.encode([int(Op.STEP), request_id, action]))
            assert outcome.request_id == request_id, outcome
            if outcome.status is Status.OK:
                assert isinstance(outcome.body, list) and len(outcome.body) == 5
        _carries_on(ws, Outcome(Status.OK, 0), None)


SEEDS = st.one_of(
    INTS,
    FLOATS,
    TEXT,
    st.booleans(),
    st.none(),
    st.binary(max_size=4),
    st.lists(st.one_of(INTS, st.none(), FLOATS, TEXT), max_size=4),
    st.sampled_from([np.int64(3), np.uint64(2**64 - 1), np.array([1, 2])]),
)
OPTIONS = st.one_of(
    st.none(),
    st.dictionaries(TEXT, CODEC_VALUES, max_size=2),
    st.fixed_dictionaries(
        {},
        optional={
            "reset_mask": st.one_of(ARRAYS, st.lists(st.booleans(), max_size=4), SCALARS),
            "low": st.one_of(FLOATS, TEXT),
            "high": st.one_of(FLOATS, TEXT),
        },
    ),
    SCALARS,
)


def _seed_is_valid(seed: Any) -> bool:
    if seed is None or type(seed) is int:
        return True
    return type(seed) is list and all(s is None or type(s) is int for s in seed)


@FUZZ
@given(kind=st.sampled_from(ACTIVE_KINDS), seed=SEEDS, options=OPTIONS)
def test_server_answers_invalid_seeds_and_options(
    server: LocalProvider, kind: str, seed: Any, options: Any
) -> None:
    TRIED["RESET with random seeds/options"] += 1
    with ws_connection(server.urls[0], ANSWER_TIMEOUT) as ws:
        _open(ws, kind)
        outcome = _send(ws, codec.encode([int(Op.RESET), 10, {"seed": seed, "options": options}]))
        assert outcome.request_id == 10, outcome
        options_ok = options is None or (
            isinstance(options, dict) and all(type(k) is str for k in options)
        )
        if not (_seed_is_valid(seed) and options_ok):
            assert outcome.error_type == "openenv_gym.errors.DecodeError", outcome
        # Whatever happened, the session resets and steps again.
        _expect_ok(ws, Op.RESET, 11, {"seed": 1})
        make = SESSION_KINDS[kind] or {}
        action: Any = np.int64(0)
        if make.get("autoreset_mode"):
            action = np.zeros(make["num_envs"], dtype=np.int64)
        _expect_ok(ws, Op.STEP, 12, action)


@QUICK
@given(kind=st.sampled_from(["new", "single cartpole"]), text=TEXT)
def test_server_refuses_text_frames(server: LocalProvider, kind: str, text: str) -> None:
    TRIED["text frames"] += 1
    with ws_connection(server.urls[0], ANSWER_TIMEOUT) as ws:
        _open(ws, kind)
        outcome = _send(ws, text)
        assert (outcome.status, outcome.request_id) == (Status.ERROR, 0), outcome
        assert outcome.error_type == "openenv_gym.errors.DecodeError"
        assert "text frames are refused" in outcome.body["message"]
        _carries_on(ws, outcome, None)


def test_server_refuses_invalid_utf8_text_frames(server: LocalProvider) -> None:
    TRIED["text frames"] += 1
    with ws_connection(server.urls[0], ANSWER_TIMEOUT) as ws:
        outcome = _send(ws, b"\xff\xfe not utf-8", text=True)
        if outcome.closed:  # RFC 6455 8.1 allows failing the connection with 1007
            assert outcome.close_code in (1007, None), outcome
        else:  # the server refuses text frames without decoding them (docs/protocol.md 1)
            assert (outcome.status, outcome.request_id) == (Status.ERROR, 0), outcome
            assert "text frames are refused" in outcome.body["message"]
            _carries_on(ws, outcome, None)


def _cuts(data: bytes, positions: list[int]) -> list[bytes]:
    bounds = sorted({0, len(data), *(p % (len(data) + 1) for p in positions)})
    return [data[a:b] for a, b in itertools.pairwise(bounds)] or [data]


@QUICK
@given(
    request=st.sampled_from(["hello", "garbage"]),
    positions=st.lists(st.integers(0, 10_000), max_size=6),
    empty=st.booleans(),
)
def test_server_reassembles_fragmented_messages(
    server: LocalProvider, request: str, positions: list[int], empty: bool
) -> None:
    TRIED["fragmented messages"] += 1
    if request == "hello":
        data = codec.encode([int(Op.HELLO), 1, {"protocol_version": PROTOCOL_VERSION}])
    else:
        data = b"\xc1" + os.urandom(40)
    fragments = _cuts(data, positions) + ([b""] if empty else [])
    with ws_connection(server.urls[0], ANSWER_TIMEOUT) as ws:
        outcome = _send(ws, fragments)
        if request == "hello":
            assert (outcome.status, outcome.request_id) == (Status.OK, 1), outcome
        else:
            assert outcome.error_type == "openenv_gym.errors.DecodeError", outcome
        _carries_on(ws, outcome, None)


SESSION_REQUESTS = [
    [int(Op.HELLO), 1, {"protocol_version": PROTOCOL_VERSION}],
    [int(Op.MAKE), 2, {"env_id": DICT_TUPLE, "num_envs": 2, "autoreset_mode": "NextStep"}],
    [int(Op.RESET), 3, {"seed": 0}],
    [int(Op.STEP), 4, np.array([1, -1])],
    [int(Op.STATE), 5, None],
    [int(Op.SET_ATTR), 6, {"name": "blob", "values": np.arange(12_000.0), "per_env": False}],
    [int(Op.STEP), 7, np.array([0, 0])],
]


@QUICK
@given(
    positions=st.lists(st.integers(0, 120_000), max_size=8), key=st.binary(min_size=4, max_size=4)
)
def test_server_reassembles_frames_split_across_tcp_segments(
    server: LocalProvider, positions: list[int], key: bytes
) -> None:
    TRIED["frames split across TCP segments"] += 1
    stream = b"".join(client_frame(codec.encode(request), key=key) for request in SESSION_REQUESTS)
    sock = upgraded_connection(server.urls[0], ANSWER_TIMEOUT)
    try:
        for segment in _cuts(stream, positions):
            sock.sendall(segment)
            time.sleep(0.002)  # let the server read each segment on its own
        frames = _read_frames(sock, len(SESSION_REQUESTS))
        replies = [_check_reply(payload) for opcode, payload in frames if opcode == 0x2]
        assert [(r.status, r.request_id) for r in replies] == [
            (Status.OK, request_id) for _, request_id, _ in SESSION_REQUESTS
        ]
        sock.sendall(close_frame())
        _check_server_frames(_read_until_eof(sock))
    finally:
        sock.close()


RAW_FRAMES = st.lists(
    st.builds(
        lambda opcode, fin, rsv, payload, masked: client_frame(
            payload, opcode=opcode, fin=fin, rsv=rsv, key=b"\x01\x02\x03\x04" if masked else None
        ),
        opcode=st.one_of(st.sampled_from([0x0, 0x1, 0x2, 0x8, 0x9, 0xA]), st.integers(0, 15)),
        fin=st.booleans(),
        rsv=st.sampled_from([0, 0, 0, 1, 2, 4, 7]),
        payload=st.one_of(
            st.binary(max_size=140),
            st.just(codec.encode([int(Op.HELLO), 1, {"protocol_version": PROTOCOL_VERSION}])),
            st.just(b"\x03\xe8"),
            st.just(b"\x03\xe8\xff\xfe"),
        ),
        masked=st.sampled_from([True, True, True, False]),
    )
    | st.binary(min_size=1, max_size=16),  # raw bytes between frames
    min_size=1,
    max_size=6,
)


@FUZZ
@given(frames=RAW_FRAMES, unmasked=st.booleans())
def test_server_closes_cleanly_on_invalid_frame_sequences(
    server: LocalProvider, frames: list[bytes], unmasked: bool
) -> None:
    TRIED["raw frame sequences"] += 1
    sock = upgraded_connection(server.urls[0], ANSWER_TIMEOUT)
    try:
        with contextlib.suppress(OSError):  # the server may close part-way
            for frame in frames:
                sock.sendall(frame)
            if unmasked:
                sock.sendall(client_frame(b"x", key=None))  # an unmasked client frame: 1002
            sock.sendall(close_frame())
            sock.shutdown(socket.SHUT_WR)  # a frame may still await bytes: EOF ends it
        _check_server_frames(_read_until_eof(sock))
    finally:
        sock.close()


@FUZZ
@given(
    prefix=st.sampled_from(
        [b"", b"GET / HTTP/1.1\r\n", b"GET /healthz HTTP/1.1\r\n", b"POST / HTTP/1.0\r\n"]
    ),
    garbage=st.one_of(
        st.binary(max_size=300),
        st.lists(
            st.sampled_from(
                [
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
            ),
            max_size=6,
        ).map(b"".join),
    ),
    fin=st.booleans(),
)
def test_server_closes_on_http_garbage(
    server: LocalProvider, prefix: bytes, garbage: bytes, fin: bool
) -> None:
    TRIED["HTTP garbage before the handshake"] += 1
    sock = raw_connection(server.urls[0], ANSWER_TIMEOUT)
    try:
        with contextlib.suppress(OSError):  # the server may refuse and close part-way
            sock.sendall(prefix + garbage)
            if not fin:
                sock.sendall(b"\r\n\r\n")
            sock.shutdown(socket.SHUT_WR)
        response = _read_until_eof(sock)
        assert response == b"" or response.startswith(b"HTTP/1.1 "), response[:80]
        OUTCOMES[f"HTTP {response[9:12].decode() or 'EOF'}"] += 1
    finally:
        sock.close()


@FUZZ
@given(cut=st.integers(0, 10**6), how=st.sampled_from(["reset", "fin", "garbage then fin"]))
def test_server_survives_abrupt_disconnects(server: LocalProvider, cut: int, how: str) -> None:
    TRIED["abrupt disconnects mid-request"] += 1
    requests = b"".join(client_frame(codec.encode(request)) for request in SESSION_REQUESTS)
    stream = opening_handshake() + requests
    sock = raw_connection(server.urls[0], ANSWER_TIMEOUT)
    try:
        sock.sendall(stream[: cut % (len(stream) + 1)])
        if how == "reset":
            abort(sock)
        else:
            with contextlib.suppress(OSError):  # the server may have closed already
                if how == "garbage then fin":
                    sock.sendall(os.urandom(32))
                sock.shutdown(socket.SHUT_WR)
            _read_until_eof(sock)  # the server notices the EOF and closes its side
    finally:
        sock.close()
    assert healthz(server.urls[0], ANSWER_TIMEOUT) == 200


@QUICK
@given(
    size=st.one_of(
        st.sampled_from([SMALL_LIMIT - 1, SMALL_LIMIT, SMALL_LIMIT + 1]),
        st.integers(SMALL_LIMIT + 1, 4 * SMALL_LIMIT),
    ),
    parts=st.integers(1, 4),
)
def test_server_closes_oversized_messages_with_1009(
    small_server: LocalProvider, size: int, parts: int
) -> None:
    TRIED["oversized messages (limit 64 KiB)"] += 1
    data = b"\x00" * size  # msgpack 0 and trailing bytes: refused if it is ever decoded
    fragments = _cuts(data, [size * i // parts for i in range(1, parts)])
    with ws_connection(small_server.urls[0], ANSWER_TIMEOUT) as ws:
        _open(ws, "open")
        outcome = _send(ws, fragments)
        if size <= SMALL_LIMIT:
            assert (outcome.status, outcome.request_id) == (Status.ERROR, 0), outcome
            assert outcome.error_type == "openenv_gym.errors.DecodeError"
        else:
            assert outcome.closed and outcome.close_code in (1009, None), outcome


def test_server_refuses_replies_over_its_limit(small_server: LocalProvider) -> None:
    TRIED["replies over the limit"] += 1
    with ws_connection(small_server.urls[0], ANSWER_TIMEOUT) as ws:
        ws.send(codec.encode([int(Op.HELLO), 1, {"protocol_version": PROTOCOL_VERSION}]))
        _answer(ws)
        make = {"env_id": CARTPOLE, "num_envs": 2, "autoreset_mode": "NextStep"}
        _expect_ok(ws, Op.MAKE, 2, make)
        blob = np.zeros(5000)  # 40 kB in, the same value for both envs: 80 kB out
        _expect_ok(ws, Op.SET_ATTR, 3, {"name": "blob", "values": blob, "per_env": False})
        outcome = _send(ws, codec.encode([int(Op.GET_ATTR), 4, {"name": "blob"}]))
        assert (outcome.status, outcome.request_id) == (Status.ERROR, 4), outcome
        assert outcome.error_type == "openenv_gym.errors.MessageTooLargeError"
        assert f"over the limit of {SMALL_LIMIT} bytes" in outcome.body["message"]
        _carries_on(ws, outcome, None)
    assert healthz(small_server.urls[0], ANSWER_TIMEOUT) == 200


# --------------------------------------------------------------------------- known bugs


def test_server_refuses_tiny_frames_that_decode_to_huge_arrays(server: LocalProvider) -> None:
    TRIED["tiny frames decoding to huge arrays"] += 1
    dtype = b"|S0"
    header = bytes((len(dtype),)) + dtype + b"\x01" + struct.pack("<q", 4 * 2**20)
    body = {"name": "blob", "values": msgpack.ExtType(1, header), "per_env": False}
    frame = msgpack.packb([int(Op.SET_ATTR), 3, body], use_bin_type=True)
    assert len(frame) < 64
    with ws_connection(server.urls[0], ANSWER_TIMEOUT) as ws:
        _open(ws, "open")
        _expect_ok(ws, Op.MAKE, 2, {"env_id": CARTPOLE})
        outcome = _send(ws, frame)
        assert (outcome.status, outcome.error_type) == (
            Status.ERROR,
            "openenv_gym.errors.DecodeError",
        ), f"a {len(frame)}-byte frame was accepted as a 4 MiB array"


def test_server_does_not_serve_a_frame_hidden_in_another_frames_payload(
    server: LocalProvider,
) -> None:
    TRIED["frame hidden in a payload"] += 1
    inner = client_frame(codec.encode([int(Op.HELLO), 1, {"protocol_version": PROTOCOL_VERSION}]))
    assert len(inner) < 126
    sock = upgraded_connection(server.urls[0], ANSWER_TIMEOUT)
    try:
        sock.sendall(bytes((0x82, 0x80 | len(inner))) + b"\0\0\0\0")  # header + zero mask
        time.sleep(0.2)  # the server reads the header on its own
        sock.sendall(inner)  # the payload: bytes that happen to form a whole frame
        reply = _check_reply(_read_frames(sock, 1)[0][1])
        assert (reply.status, reply.request_id) == (Status.ERROR, 0), (
            f"the payload was served as a request: {reply}"
        )
    finally:
        abort(sock)


def test_server_bounds_memory_for_replies_a_client_does_not_read(server: LocalProvider) -> None:
    requests = 100
    TRIED["unread replies (backpressure)"] += requests
    pid = server.pids[0]
    sock = upgraded_connection(server.urls[0], ANSWER_TIMEOUT)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        setup = [
            [int(Op.HELLO), 1, {"protocol_version": PROTOCOL_VERSION}],
            [int(Op.MAKE), 2, {"env_id": CARTPOLE}],
            [int(Op.SET_ATTR), 3, {"name": "blob", "values": np.ones(2**17), "per_env": False}],
        ]
        sock.sendall(b"".join(client_frame(codec.encode(request)) for request in setup))
        assert len(_read_frames(sock, 3)) == 3
        baseline = rss_mib(pid)
        get = [
            client_frame(codec.encode([int(Op.GET_ATTR), 10 + i, {"name": "blob"}]))
            for i in range(requests)
        ]
        sock.sendall(b"".join(get))  # 100 x 30 bytes; never read the 100 x 1 MiB replies
        deadline, growth = time.monotonic() + 2.0, 0.0
        while time.monotonic() < deadline and growth < 32:
            growth = max(growth, rss_mib(pid) - baseline)
            time.sleep(0.1)
        assert growth < 32, f"server RSS grew {growth:.0f} MiB for {requests} unread replies"
    finally:
        abort(sock)


def test_threaded_server_releases_envs_of_a_client_gone_during_make() -> None:
    TRIED["disconnects during MAKE (--threads)"] += 1
    args = ["--workers", "1", "--threads", "--max-envs", "2048"]
    with LocalProvider([CARTPOLE], extra_args=args) as provider:
        sock = upgraded_connection(provider.urls[0], ANSWER_TIMEOUT)
        make = {"env_id": CARTPOLE, "num_envs": 2048, "autoreset_mode": "NextStep"}
        hello = [int(Op.HELLO), 1, {"protocol_version": PROTOCOL_VERSION}]
        sock.sendall(
            client_frame(codec.encode(hello)) + client_frame(codec.encode([int(Op.MAKE), 2, make]))
        )
        time.sleep(0.02)  # HELLO is done; MAKE of 2048 envs takes ~0.25 s on its thread
        abort(sock)
        deadline, outcome = time.monotonic() + 2.5, Outcome()
        while time.monotonic() < deadline:
            time.sleep(0.25)
            with ws_connection(provider.urls[0], ANSWER_TIMEOUT) as ws:
                _open(ws, "open")
                one = {"env_id": CARTPOLE, "num_envs": 1, "autoreset_mode": "NextStep"}
                outcome = _send(ws, codec.encode([int(Op.MAKE), 2, one]))
            if outcome.status is Status.OK:
                break
        assert outcome.status is Status.OK, f"envs leaked: {outcome.body}"


# --------------------------------------------------------------------------- afterwards


def _open_sessions_until_refused(url: str, limit: int) -> tuple[list[socket.socket], Outcome]:
    """HELLO on new raw connections until one is refused; return the open ones and the refusal."""
    opened: list[socket.socket] = []
    hello = client_frame(codec.encode([int(Op.HELLO), 1, {"protocol_version": PROTOCOL_VERSION}]))
    for _ in range(limit + 1):
        sock = upgraded_connection(url, ANSWER_TIMEOUT)
        sock.sendall(hello)
        outcome = _check_reply(_read_frames(sock, 1)[0][1])
        if outcome.status is not Status.OK:
            sock.close()
            return opened, outcome
        opened.append(sock)
    raise AssertionError(f"more than {limit} sessions admitted")


def test_server_keeps_serving_after_the_campaign(
    server: LocalProvider, small_server: LocalProvider, bystander: Bystander
) -> None:
    url, pid = server.urls[0], server.pids[0]
    env = bystander.env
    for _ in range(30):  # the bystander opened before the campaign still steps correctly
        obs, reward, terminated, truncated, _ = env.step(np.int64(1))
        assert obs.shape == (4,) and reward == 1.0
        if terminated or truncated:
            env.reset()
    assert (
        healthz(url, ANSWER_TIMEOUT) == 200 and healthz(small_server.urls[0], ANSWER_TIMEOUT) == 200
    )
    # Exactly MAX_SESSIONS - 1 more sessions fit next to the bystander: none leaked. Connection
    # teardown is asynchronous, so give the last campaign's closes a moment.
    for attempt in range(10):
        opened, refusal = _open_sessions_until_refused(url, MAX_SESSIONS)
        try:
            if len(opened) == MAX_SESSIONS - 1 or attempt == 9:
                assert len(opened) == MAX_SESSIONS - 1, refusal
                assert refusal.error_type == "openenv_gym.errors.CapacityError"
                expected = f"at capacity: {MAX_SESSIONS}/{MAX_SESSIONS} sessions"
                assert refusal.body["message"] == expected
                # ... and exactly MAX_ENVS - 1 more envs: none leaked either.
                sock = opened[0]
                batch = {"env_id": CARTPOLE, "num_envs": MAX_ENVS - 1, "autoreset_mode": "Disabled"}
                sock.sendall(client_frame(codec.encode([int(Op.MAKE), 2, batch])))
                assert _check_reply(_read_frames(sock, 1)[0][1]).status is Status.OK
                sock = opened[1]
                sock.sendall(client_frame(codec.encode([int(Op.MAKE), 2, {"env_id": CARTPOLE}])))
                full = _check_reply(_read_frames(sock, 1)[0][1])
                message = f"at capacity: {MAX_ENVS}/{MAX_ENVS} envs (asked for 1 more)"
                assert full.body["message"] == message, full
                break
        finally:
            for sock in opened:
                sock.close()
        time.sleep(0.3)
    # No descriptors leaked: back to the count taken when the bystander connected.
    deadline = time.monotonic() + 5.0
    while open_fds(pid) > bystander.fds and time.monotonic() < deadline:
        time.sleep(0.1)
    assert open_fds(pid) <= bystander.fds, f"{open_fds(pid) - bystander.fds} fds leaked"
    print(f"\nserver pid {pid}: {open_fds(pid)} fds, {rss_mib(pid):.0f} MiB RSS after the campaign")
