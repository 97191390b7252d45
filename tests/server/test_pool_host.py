"""Pool sessions in-process: bytes in, bytes out, results pushed as POOL_EVENT messages."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from openenv_gym.protocol import codec
from openenv_gym.protocol.messages import POOL_EVENT, PROTOCOL_VERSION, MakeRequest, Op
from openenv_gym.server.catalog import EnvCatalog
from openenv_gym.server.hosting import HostedSpec, HostingPolicy, load_hosting_file
from openenv_gym.server.session import Session, SessionState

HEAVY = "openenv_gym.testing.slow_envs:HeavyTailEnv"
HANG = "openenv_gym.testing.slow_envs:HangEnv"


class _Client:
    """One in-process session, with the pushed messages collected as the connection would."""

    def __init__(self, spec: str, policy: HostingPolicy, **make: Any) -> None:
        self.session = Session(EnvCatalog([HostedSpec(spec, policy)]))
        self.pushed = threading.Event()
        self.session.attach(self.pushed.set)
        self.next_id = 1
        assert self.request(Op.HELLO, {"protocol_version": PROTOCOL_VERSION})[0] == 0
        self.make = self.request(Op.MAKE, {"env_id": spec, "pool": True, **make})

    def request(self, op: Op, body: Any) -> list[Any]:
        self.next_id += 1
        reply: list[Any] = codec.decode(
            self.session.handle(codec.encode([int(op), self.next_id, body]))
        )
        return reply

    def events(self, count: int, timeout: float = 10.0) -> list[list[Any]]:
        """Collect POOL_EVENT bodies until ``count`` results (errors included) came."""
        deadline, bodies, seen = time.monotonic() + timeout, [], 0
        while seen < count:
            assert self.pushed.wait(max(0.0, deadline - time.monotonic())), f"{seen}/{count}"
            self.pushed.clear()
            for frame in self.session.events():
                status, request_id, body = codec.decode(frame)
                assert (status, request_id) == (POOL_EVENT, 0)
                bodies.append(body)
                seen += len(body[0]) + len(body[6])
        return bodies


def test_pool_session_inline_results_of_one_send_come_in_one_message() -> None:
    policy = HostingPolicy(concurrent_steps=0, allow_kwargs=frozenset({"max_delay"}))
    client = _Client(HEAVY, policy, num_envs=6, kwargs={"max_delay": 0.002})
    assert client.make[0] == 0 and "concurrent_steps" not in client.make[2]
    assert client.session.state is SessionState.POOL
    assert client.request(Op.POOL_RESET, {"seed": 5}) == [0, client.next_id, None]
    (reset,) = client.events(6)
    assert reset[0].tolist() == list(range(6)) and reset[1].shape == (6, 2)
    assert [m[1]["length"] >= 5 for m in reset[5]] == [True] * 6
    ok = client.request(Op.POOL_SEND, {"env_ids": np.array([4, 1]), "actions": np.array([0, 2])})
    assert ok == [0, client.next_id, None]  # an ack; the results are pushed
    (step,) = client.events(2)
    env_ids, obs, rewards, terminated, _, merges, errors = step
    assert env_ids.tolist() == [4, 1] and obs.dtype == np.float32 and rewards.dtype == np.float64
    assert terminated.dtype == bool and errors == []
    assert all("delay" in info for _, info in merges)


def test_pool_session_refuses_vector_ops_and_bad_ids() -> None:
    policy = HostingPolicy(concurrent_steps=2, allow_kwargs=frozenset({"hang"}))
    client = _Client(HANG, policy, num_envs=3, kwargs={"hang": 0.5})
    assert client.make[2]["concurrent_steps"] == 2
    status, _, error = client.request(Op.STEP, np.array([0, 0, 0]))
    assert status == 1 and error["type"].endswith("SessionStateError")
    cases = [
        ({"env_ids": [0], "actions": [1]}, "needs a reset first (never reset)"),
        ({"env_ids": np.arange(1_000_000), "actions": [1]}, "must be 1 to 3 ints"),
        ({"env_ids": [3], "actions": [1]}, "out of range"),
        ({"env_ids": [-1], "actions": [1]}, "out of range"),
        ({"env_ids": [0.5], "actions": [1]}, "ints"),
        ({"env_ids": [0], "actions": [1], "timeout": 0.0}, "timeout must be in"),
        ({"env_ids": [0], "actions": [1], "timeout": float("nan")}, "timeout must be in"),
        ({"env_ids": [0], "actions": [1], "spread": 1}, "Extra inputs"),
    ]
    for body, text in cases:
        status, _, error = client.request(Op.POOL_SEND, body)
        assert status == 1 and text in error["message"], (body, error)
    client.request(Op.POOL_RESET, {"env_ids": [0, 1]})
    client.events(2)
    client.request(Op.POOL_SEND, {"env_ids": [1], "actions": np.array([1])})  # 0.5 s
    status, _, error = client.request(Op.POOL_RESET, {"env_ids": [1]})
    assert status == 1 and "env 1 already has a step in flight" in error["message"]
    client.events(1)
    status, _, error = client.request(Op.POOL_SEND, {"env_ids": [0, 1], "actions": [1]})
    assert status == 1 and "expected a batch of 2" in error["message"]
    client.session.close()


def test_pool_session_thread_deadline_is_counted_and_bounded() -> None:
    policy = HostingPolicy(concurrent_steps=1, step_timeout=0.3, allow_kwargs=frozenset({"hang"}))
    client = _Client(HANG, policy, num_envs=3, kwargs={"hang": 1.0})
    assert client.make[2]["step_timeout"] == 0.3
    client.request(Op.POOL_RESET, None)
    client.events(3)
    start = time.monotonic()
    client.request(Op.POOL_SEND, {"env_ids": [0], "actions": np.array([1])})
    (event,) = client.events(1)
    elapsed = time.monotonic() - start
    assert 0.3 <= elapsed < 0.9, elapsed
    ((env_id, error),) = event[6]
    assert env_id == 0 and error["type"] == "openenv_gym.errors.StepTimeoutError"
    assert error["details"]["timeout"] == 0.3 and error["details"]["action"] == "step"
    assert client.session.pool is not None and client.session.pool.abandoned == 1
    # One thread may hang past its deadline (the limit is the workers, here 1): refused now.
    status, _, refusal = client.request(Op.POOL_SEND, {"env_ids": [1], "actions": np.array([0])})
    assert status == 1 and "step_isolation='process'" in refusal["message"]
    deadline = time.monotonic() + 5
    while client.session.pool.abandoned and time.monotonic() < deadline:
        time.sleep(0.05)  # the hung step returns after 1 s; polling a counter, bounded
    assert client.session.pool.abandoned == 0
    state = client.request(Op.STATE, None)[2]
    assert [s["state"] for s in state] == ["needs_reset", "ready", "ready"]
    client.request(Op.POOL_SEND, {"env_ids": [1], "actions": np.array([0])})
    assert client.events(1)[0][0].tolist() == [1]
    client.session.close()


def test_make_request_without_pool_is_sent_as_old_clients_send_it() -> None:
    assert "pool" not in MakeRequest(env_id="CartPole-v1").wire()
    assert MakeRequest(env_id="CartPole-v1", pool=True).wire()["pool"] is True
    with pytest.raises(ValueError, match="pool session takes no autoreset_mode"):
        MakeRequest(env_id="CartPole-v1", pool=True, autoreset_mode="NextStep")


def test_hosting_file_pool_fields_are_checked(tmp_path: Any) -> None:
    good = tmp_path / "ok.toml"
    good.write_text(
        '[[env]]\nspec = "CartPole-v1"\nconcurrent_steps = 8\nstep_timeout = 30\n'
        'step_isolation = "process"\n'
    )
    (spec,) = load_hosting_file(good)
    policy = spec.policy
    assert (policy.concurrent_steps, policy.step_timeout, policy.step_isolation) == (
        8,
        30.0,
        "process",
    )
    for line, text in [
        ("concurrent_steps = -1", "concurrent_steps"),
        ("concurrent_steps = 100000", "concurrent_steps"),
        ("step_timeout = -5", "step_timeout"),
        ('step_isolation = "thread"', "step_isolation"),
    ]:
        bad = tmp_path / "bad.toml"
        bad.write_text(f'[[env]]\nspec = "CartPole-v1"\n{line}\n')
        with pytest.raises(ValueError, match=text):
            load_hosting_file(bad)


def test_pool_session_by_default_moves_to_threads_once_a_step_is_slow() -> None:
    policy = HostingPolicy(allow_kwargs=frozenset({"hang"}))
    client = _Client(HANG, policy, num_envs=4, kwargs={"hang": 0.4})
    assert client.make[2]["concurrent_steps"] == 4  # auto: up to one thread per env here
    pool = client.session.pool
    assert pool is not None and not pool.slow
    client.request(Op.POOL_RESET, None)
    client.events(4)
    client.request(Op.POOL_SEND, {"env_ids": [0, 1, 2, 3], "actions": np.zeros(4, np.int64)})
    client.events(4)
    assert not pool.slow  # fast steps: still inline
    start = time.monotonic()
    client.request(Op.POOL_SEND, {"env_ids": [0, 1], "actions": np.array([1, 1])})
    client.request(Op.POOL_SEND, {"env_ids": [2, 3], "actions": np.array([1, 1])})
    client.events(4)
    # Env 0's slow step ran inline (0.4 s), then the rest of the steps ran at once on threads.
    assert pool.slow and time.monotonic() - start < 1.2
    client.session.close()


def test_pool_session_server_pings_while_a_step_runs() -> None:
    from openenv_gym.providers.local import LocalProvider
    from openenv_gym.testing import rawws

    args = ["--keepalive-ping", "0.2", "--concurrent-steps", "2", "--env-kwargs-allow", "hang"]
    with LocalProvider([HANG], extra_args=args) as provider:
        sock = rawws.upgraded_connection(provider.urls[0], timeout=10.0)
        try:

            def send(op: Op, request_id: int, body: Any) -> None:
                sock.sendall(rawws.client_frame(codec.encode([int(op), request_id, body])))

            make = {"env_id": HANG, "pool": True, "kwargs": {"hang": 1.5}}
            send(Op.HELLO, 1, {"protocol_version": PROTOCOL_VERSION})
            send(Op.MAKE, 2, make)
            send(Op.POOL_RESET, 3, None)
            rawws.read_frames(sock, 4, timeout=10.0)  # HELLO, MAKE, RESET replies, the event
            send(Op.POOL_SEND, 4, {"env_ids": [0], "actions": np.array([1])})
            frames = rawws.read_frames(sock, 3, timeout=1.4)  # the ack, then pings
        finally:
            rawws.abort(sock)
    assert frames[0][0] == 0x2 and codec.decode(frames[0][1]) == [0, 4, None]
    assert [opcode for opcode, _ in frames[1:3]] == [0x9, 0x9]  # pings while env 0 sleeps
