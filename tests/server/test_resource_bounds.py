"""Every resource one request can grow has a bound: request size and structure, reply size.

Session tests are bytes in, bytes out: a frame goes into ``Session.handle`` and the reply frame
is decoded. The last test runs a live server and checks that a well-behaved client keeps its
latency while another connection sends amplification frames.
"""

from __future__ import annotations

import statistics
import threading
import time
import tracemalloc
from typing import Any, ClassVar

import gymnasium
import msgpack
import numpy as np
import pytest

from openenv_gym.protocol import codec
from openenv_gym.protocol.messages import PROTOCOL_VERSION, REQUEST_BOUNDS, Op, Status
from openenv_gym.server.catalog import EnvCatalog
from openenv_gym.server.session import Session

MESSAGE_TYPE = "openenv_gym.errors.MessageTooLargeError"
DECODE_TYPE = "openenv_gym.errors.DecodeError"


class RenderCountingEnv(gymnasium.Env[np.ndarray, np.int64]):
    """An env whose ``rgb_array`` frames are 100x100x3 uint8 (30 000 bytes); renders counted."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}
    renders: ClassVar[int] = 0

    def __init__(self, render_mode: str | None = None) -> None:
        self.render_mode = render_mode
        self.observation_space = gymnasium.spaces.Box(0, 1, (1,), np.float32)
        self.action_space = gymnasium.spaces.Discrete(2)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action: np.int64) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        return np.zeros(1, np.float32), 0.0, False, False, {}

    def render(self) -> np.ndarray:
        type(self).renders += 1
        return np.full((100, 100, 3), type(self).renders % 256, np.uint8)


FRAME_BYTES = 100 * 100 * 3
RENDER_SPEC = f"{__name__}:RenderCountingEnv"


def handle(session: Session, frame: bytes) -> tuple[int, int, Any]:
    status, request_id, body = codec.decode(session.handle(frame), max_bytes=None)
    return status, request_id, body


def request(op: Op, request_id: int, body: Any = None) -> bytes:
    return codec.encode([int(op), request_id, body])


def ok(session: Session, op: Op, request_id: int, body: Any = None) -> Any:
    status, reply_id, reply = handle(session, request(op, request_id, body))
    assert (status, reply_id) == (Status.OK, request_id), reply
    return reply


def new_session(*specs: str, max_message_bytes: int = codec.DEFAULT_MAX_MESSAGE_BYTES) -> Session:
    return Session(EnvCatalog(list(specs or ["CartPole-v1"])), max_message_bytes=max_message_bytes)


def active_session(
    num_envs: int = 1, *, env_id: str = "CartPole-v1", **make: Any
) -> tuple[Session, int]:
    """Return a session past HELLO and MAKE (vector of ``num_envs``) and the next request id."""
    session = new_session(env_id, **make.pop("session", {}))
    ok(session, Op.HELLO, 1, {"protocol_version": PROTOCOL_VERSION})
    ok(
        session,
        Op.MAKE,
        2,
        {"env_id": env_id, "num_envs": num_envs, "autoreset_mode": "NextStep", **make},
    )
    ok(session, Op.RESET, 3, {"seed": 0})
    return session, 4


def empty_maps_frame(size: int, *, prefix: bytes = b"") -> bytes:
    """``prefix`` then one array of one-byte empty maps: ``size`` bytes, ~72x that once decoded."""
    count = size - len(prefix) - 5
    return prefix + b"\xdd" + count.to_bytes(4, "big") + b"\x80" * count


def nested_empty_maps(size: int) -> bytes:
    """An array of arrays of 1000 empty maps: no container is long, the whole is huge."""
    inner = b"\xdc" + (1000).to_bytes(2, "big") + b"\x80" * 1000
    count = size // len(inner)
    return b"\xdd" + count.to_bytes(4, "big") + inner * count


def peak_traced_bytes(call: Any) -> int:
    """Return the peak of Python allocations while ``call()`` runs."""
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# --------------------------------------------------------------------------- before decoding


def test_session_new_refuses_a_large_frame_before_decoding_it() -> None:
    session = new_session()
    frame = empty_maps_frame(4 << 20)  # decoded, this would be some 300 MB of dicts
    peak = peak_traced_bytes(lambda: handle(session, frame))
    status, request_id, body = handle(session, frame)
    assert (status, request_id, body["type"]) == (Status.ERROR, 0, MESSAGE_TYPE)
    assert body["message"] == f"message of {len(frame)} bytes is over the limit of 4096 bytes"
    assert body["details"] == {"size": len(frame), "limit": 4096}
    assert peak < 1 << 20, f"refusing a {len(frame)}-byte frame allocated {peak} bytes"
    ok(session, Op.HELLO, 1, {"protocol_version": PROTOCOL_VERSION})  # the session carries on


def test_session_new_refuses_a_valid_hello_over_its_bound() -> None:
    session = new_session()
    hello = request(Op.HELLO, 1, {"protocol_version": PROTOCOL_VERSION, "client": "x" * 5000})
    status, _, body = handle(session, hello)
    assert (status, body["type"]) == (Status.ERROR, MESSAGE_TYPE)
    assert body["details"]["limit"] == REQUEST_BOUNDS[Op.HELLO].max_bytes == 4096


def test_session_new_holds_an_op_it_does_not_allow_to_the_states_bound() -> None:
    # A STEP cannot be served before HELLO, so it is not decoded at STEP's size either.
    session = new_session()
    status, _, body = handle(session, request(Op.STEP, 1, np.zeros(1000)))
    assert (status, body["type"], body["details"]["limit"]) == (Status.ERROR, MESSAGE_TYPE, 4096)
    status, _, body = handle(session, request(Op.STEP, 2, np.zeros(10)))
    assert "not allowed in session state new" in body["message"]


def test_session_open_bounds_make_to_one_mib() -> None:
    session = new_session()
    ok(session, Op.HELLO, 1, {"protocol_version": PROTOCOL_VERSION})
    make = {"env_id": "CartPole-v1", "kwargs": {"blob": b"x" * (1 << 20)}}
    status, _, body = handle(session, request(Op.MAKE, 2, make))
    assert (status, body["type"], body["details"]["limit"]) == (Status.ERROR, MESSAGE_TYPE, 1 << 20)
    assert session.host is None  # nothing was built


@pytest.mark.parametrize("op", [Op.GET_ATTR, Op.STATE, Op.RENDER, Op.CLOSE])
def test_session_active_bounds_small_ops_to_4_kib(op: Op) -> None:
    session, next_id = active_session()
    status, _, body = handle(session, request(op, next_id, {"name": "x" * 5000}))
    assert (status, body["type"], body["details"]["limit"]) == (Status.ERROR, MESSAGE_TYPE, 4096)
    assert not session.closed


def test_session_active_step_may_be_as_large_as_the_message_limit() -> None:
    limit = 1 << 20
    session, next_id = active_session(2, session={"max_message_bytes": limit})
    frame = request(Op.STEP, next_id, np.zeros(limit // 8 - 64, dtype=np.int64))
    status, _, body = handle(session, frame)  # decoded and given to the env: the env refuses it
    assert status == Status.ERROR and body["type"] != MESSAGE_TYPE, body
    over = request(Op.STEP, next_id + 1, np.zeros(limit // 8 + 1, dtype=np.int64))
    status, _, body = handle(session, over)
    assert (body["type"], body["details"]["limit"]) == (MESSAGE_TYPE, limit)


def test_session_serves_a_request_whose_op_is_not_a_fixint() -> None:
    # A peer whose encoder writes the envelope unusually gets the state's largest bound.
    session, next_id = active_session(2)
    frame = (
        b"\xdc\x00\x03" + b"\xcc\x03" + codec.encode(next_id) + codec.encode(np.ones(2, np.int64))
    )
    status, reply_id, reply = handle(session, frame)
    assert (status, reply_id) == (Status.OK, next_id), reply
    assert reply[0].shape == (2, 4)


# --------------------------------------------------------------------------- value budget


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
def test_session_step_refuses_an_empty_map_bomb_without_building_it(nested: bool) -> None:
    session, next_id = active_session(4)
    size = 4 << 20
    body = nested_empty_maps(size) if nested else empty_maps_frame(size)
    frame = b"\x93" + bytes((int(Op.STEP),)) + codec.encode(next_id) + body
    peak = peak_traced_bytes(lambda: handle(session, frame))
    status, request_id, reply = handle(session, frame)
    budget = REQUEST_BOUNDS[Op.STEP].max_values + 4 * REQUEST_BOUNDS[Op.STEP].values_per_env
    assert (status, request_id, reply["type"]) == (Status.ERROR, 0, DECODE_TYPE)
    assert f"holds more than {budget} values" in reply["message"]
    assert peak < 2 << 20, f"refusing a {len(frame)}-byte bomb allocated {peak} bytes"
    ok(session, Op.STEP, next_id, np.ones(4, np.int64))  # and stepping carries on


def test_session_value_budget_counts_inside_tuple_extensions() -> None:
    session, next_id = active_session(1)
    inner = msgpack.packb([{}] * 200_000)
    frame = msgpack.packb([int(Op.CALL), next_id, msgpack.ExtType(3, inner)], use_bin_type=True)
    status, _, reply = handle(session, frame)
    assert (status, reply["type"]) == (Status.ERROR, DECODE_TYPE)
    assert "values" in reply["message"]


def test_session_value_budget_grows_with_the_envs_of_the_session() -> None:
    bound = REQUEST_BOUNDS[Op.STEP]
    num_envs = 64
    budget = bound.max_values + bound.values_per_env * num_envs
    session, next_id = active_session(num_envs)
    # The envelope is 3 values, a tuple 2 plus its items: pad one to exactly the budget.
    fits = (np.int64(1),) * num_envs + (0,) * (budget - 5 - num_envs)
    frame = request(Op.STEP, next_id, fits)
    assert codec.count_values(frame, budget) == budget
    status, _, reply = handle(session, frame)  # decoded: the env's space refuses the action
    assert status == Status.ERROR and "values" not in reply["message"], reply
    status, _, reply = handle(session, request(Op.STEP, next_id + 1, (*fits, 0)))
    assert (status, reply["type"]) == (Status.ERROR, DECODE_TYPE)
    assert f"holds more than {budget} values" in reply["message"]


# --------------------------------------------------------------------------- replies


def test_session_render_stops_once_the_frames_exceed_the_reply_limit() -> None:
    limit = 100_000  # three frames fit, the fourth does not
    session, next_id = active_session(
        64,
        env_id=RENDER_SPEC,
        kwargs={"render_mode": "rgb_array"},
        session={"max_message_bytes": limit},
    )
    RenderCountingEnv.renders = 0
    status, request_id, body = handle(session, request(Op.RENDER, next_id))
    assert (status, request_id, body["type"]) == (Status.ERROR, next_id, MESSAGE_TYPE)
    # One frame projects the reply to 64 envs: nothing more is rendered once it cannot fit.
    assert RenderCountingEnv.renders == 1, "envs were rendered after the reply could not fit"
    assert body["details"] == {"size": 64 * FRAME_BYTES, "limit": limit}
    assert (
        body["message"] == f"message of {64 * FRAME_BYTES} bytes is over the limit of {limit} bytes"
    )
    ok(session, Op.STEP, next_id + 1, np.ones(64, np.int64))  # the session carries on


def test_session_render_under_the_limit_returns_every_envs_frame() -> None:
    session, next_id = active_session(3, env_id=RENDER_SPEC, kwargs={"render_mode": "rgb_array"})
    RenderCountingEnv.renders = 0
    frames = ok(session, Op.RENDER, next_id)
    assert isinstance(frames, tuple) and [int(f[0, 0, 0]) for f in frames] == [1, 2, 3]
    assert all(f.shape == (100, 100, 3) and f.dtype == np.uint8 for f in frames)


def test_session_reply_over_the_limit_is_an_error_reply_naming_the_limit() -> None:
    limit = 1500  # a reset of 64 CartPoles fits (1 KiB of observations), a step does not
    session, next_id = active_session(64, session={"max_message_bytes": limit})
    status, request_id, body = handle(session, request(Op.STEP, next_id, np.ones(64, np.int64)))
    assert (status, request_id, body["type"]) == (Status.ERROR, next_id, MESSAGE_TYPE)
    assert body["details"]["limit"] == limit and body["details"]["size"] > limit
    assert f"over the limit of {limit} bytes" in body["message"]
    assert not session.closed


# --------------------------------------------------------------------------- live server


@pytest.mark.slow
def test_server_keeps_a_good_client_fast_while_others_send_amplification_frames() -> None:
    from openenv_gym.providers.local import LocalProvider
    from openenv_gym.testing.rawws import client_frame, read_frames, upgraded_connection

    def exchange(sock: Any, frame: bytes) -> None:
        sock.sendall(client_frame(frame))
        read_frames(sock, 1, 60)

    def attack(url: str, active: bool, stop: threading.Event, answered: list[int]) -> None:
        # Before HELLO: 15 MiB of empty maps; after MAKE: STEPs of flat and nested empty maps.
        bombs = [
            b"\x93\x03\x05" + nested_empty_maps(4 << 20),
            empty_maps_frame(15 << 20, prefix=b"\x93\x03\x05"),
        ]
        while not stop.is_set():
            try:
                sock = upgraded_connection(url, 10)
                if active:
                    exchange(sock, request(Op.HELLO, 1, {"protocol_version": PROTOCOL_VERSION}))
                    exchange(sock, request(Op.MAKE, 2, {"env_id": "CartPole-v1"}))
                while not stop.is_set():
                    exchange(sock, bombs[answered[0] % 2] if active else empty_maps_frame(15 << 20))
                    answered[0] += 1
            except (OSError, TimeoutError):
                pass
            finally:
                sock.close()

    with LocalProvider(["CartPole-v1"]) as provider:
        url = provider.urls[0]
        good = upgraded_connection(url, 30)
        replies = 0

        def call(op: Op, body: Any = None) -> Any:
            nonlocal replies
            replies += 1
            good.sendall(client_frame(request(op, replies, body)))
            status, request_id, reply = codec.decode(read_frames(good, 1, 60)[0][1])
            assert (status, request_id) == (Status.OK, replies), reply
            return reply

        call(Op.HELLO, {"protocol_version": PROTOCOL_VERSION})
        call(Op.MAKE, {"env_id": "CartPole-v1", "num_envs": 16, "autoreset_mode": "NextStep"})
        call(Op.RESET, {"seed": 0})
        stop, answered = threading.Event(), [0]
        attackers = [
            threading.Thread(target=attack, args=(url, active, stop, answered), daemon=True)
            for active in (False, True, True)
        ]
        for attacker in attackers:
            attacker.start()
        latencies = []
        try:
            start, deadline = time.monotonic(), time.monotonic() + 60
            while (time.monotonic() - start < 3 or answered[0] < 6) and time.monotonic() < deadline:
                began = time.perf_counter()
                call(Op.STEP, np.ones(16, np.int64))
                latencies.append(time.perf_counter() - began)
        finally:
            stop.set()
            for attacker in attackers:
                attacker.join(60)
            good.close()
        assert answered[0] >= 6, f"only {answered[0]} attack frames answered while stepping"
        p50, worst = statistics.median(latencies), max(latencies)
        steps = f"{len(latencies)} steps under attack"
        assert p50 < 0.2, f"p50 step latency {p50 * 1000:.0f} ms, {steps}"
        # Each bomb decoded would stall every session of the process for seconds.
        assert worst < 1.0, f"slowest step {worst * 1000:.0f} ms, {steps}"
