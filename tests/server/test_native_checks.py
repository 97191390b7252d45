"""What a native session refuses before its engine sees a client's request (and after).

Unit checks of ``server/native_checks.py`` on every action space kind, then the attacks that
took a server down before the checks, against real envpool and ale-py engines on a local
server: out-of-range and wrongly sized actions (envpool crashed or aborted, ale-py hung) and
CALLs of the engines' own operations (``recv`` without a ``send`` blocked the server).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.vector.utils import batch_space

from openenv_gym.client.vector_env import RemoteVectorEnv
from openenv_gym.errors import AttributeNotAllowedError, InvalidActionError, RemoteError
from openenv_gym.protocol.messages import Op
from openenv_gym.providers.local import LocalProvider
from openenv_gym.server.native_checks import check_actions, check_flags, check_reset_mask
from openenv_gym.testing.optional import require_module

NATIVE = "vector_entry_point"


def _check(single: spaces.Space[Any], actions: object, num_envs: int = 3) -> None:
    check_actions(single, batch_space(single, num_envs), actions, num_envs)


@pytest.mark.parametrize(
    ("single", "good", "bad", "message"),
    [
        (
            spaces.Discrete(6),
            [0, 5, 3],
            [0, 6, 3],
            r"env 1 .* got 6, expected 0\.\.5",
        ),
        (
            spaces.Discrete(3, start=-1),
            [-1, 1, 0],
            [-2, 0, 0],
            r"got -2, expected -1\.\.1",
        ),
        (spaces.MultiDiscrete([2, 4]), [[1, 3]] * 3, [[1, 3], [2, 0], [0, 0]], r"env 1 .* got 2"),
        (spaces.MultiBinary(2), [[0, 1]] * 3, [[0, 1], [1, 1], [0, 2]], r"env 2 .* got 2"),
    ],
)
def test_native_checks_integer_actions_in_range_pass_others_are_refused(
    single: spaces.Space,
    good: list[object],
    bad: list[object],
    message: str,  # type: ignore[type-arg]
) -> None:
    _check(single, np.array(good))
    with pytest.raises(InvalidActionError, match=message):
        _check(single, np.array(bad))


def test_native_checks_refuse_wrong_shapes_types_and_dtypes() -> None:
    with pytest.raises(InvalidActionError, match=r"shape \(3,\), got \(2,\)"):
        _check(spaces.Discrete(2), np.zeros(2, dtype=np.int64))
    with pytest.raises(InvalidActionError, match=r"an array of shape \(3,\), got list"):
        _check(spaces.Discrete(2), [0, 1, 0])
    with pytest.raises(InvalidActionError, match=r"an integer dtype, got float64"):
        _check(spaces.Discrete(2), np.zeros(3))
    with pytest.raises(InvalidActionError, match=r"shape \(3, 2\), got \(3,\)"):
        _check(spaces.Box(-1, 1, (2,)), np.zeros(3))


def test_native_checks_take_the_batch_size_from_the_session_not_the_engines_space() -> None:
    # An engine that declares its single space as its batched one still gets its batches.
    single = spaces.Discrete(6)
    check_actions(single, single, np.zeros(3, dtype=np.int64), 3)
    with pytest.raises(InvalidActionError, match=r"shape \(3,\), got \(6,\)"):
        check_actions(single, single, np.zeros(6, dtype=np.int64), 3)


def test_native_checks_leave_box_ranges_to_the_engine() -> None:
    # Engines clip continuous actions; in-process they are accepted as they are.
    _check(spaces.Box(-1, 1, (2,), dtype=np.float32), np.full((3, 2), 5.0))
    _check(spaces.Box(-1, 1, (2,), dtype=np.float32), np.full((3, 2), 5, dtype=np.int64))


def test_native_checks_reset_mask_and_flags() -> None:
    check_reset_mask(np.zeros(3, dtype=bool), 3)  # no True value: the engine decides
    for mask in (np.zeros(4, dtype=bool), np.zeros(3, dtype=np.int8), [True, False, True]):
        with pytest.raises(ValueError, match=r"reset_mask.* bool array of shape \(3,\)"):
            check_reset_mask(mask, 3)
    check_flags("engine:x", 3, np.zeros(3, bool), np.zeros(3, bool))
    with pytest.raises(RuntimeError, match=r"'engine:x' returned truncations of shape \(7,\)"):
        check_flags("engine:x", 3, np.zeros(3, bool), np.zeros(7, bool))


@pytest.fixture(scope="module")
def engines() -> Iterator[LocalProvider]:
    require_module("envpool", family="envpool", install="pip install 'openenv-gym[envpool]'")
    require_module("ale_py", family="ale", install="pip install 'openenv-gym[ale]'")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with LocalProvider(["envpool:CartPole-v1", "envpool:Pong-v5", "ale:pong"]) as provider:
            yield provider


def _remote(provider: LocalProvider, env_id: str, num_envs: int) -> RemoteVectorEnv:
    return RemoteVectorEnv(
        env_id, num_envs, urls=provider.urls, token=provider.token, server_vectorization=NATIVE
    )


@pytest.mark.parametrize(
    ("env_id", "bad_action"), [("envpool:Pong-v5", 10**9), ("ale:pong", 6), ("ale:pong", -1)]
)
def test_native_checks_out_of_range_actions_leave_the_engine_and_server_alive(
    engines: LocalProvider, env_id: str, bad_action: int
) -> None:
    env = _remote(engines, env_id, 2)
    try:
        env.reset(seed=0)
        with pytest.raises(RemoteError, match=r"out of range: got -?\d+, expected 0\.\.5") as info:
            env.step(np.full(2, bad_action))
        assert isinstance(info.value, InvalidActionError)
        env.step(np.zeros(2, dtype=np.int64))  # the same session steps on
    finally:
        env.close()
    assert engines._processes[0].popen.poll() is None


def test_native_checks_a_batch_of_the_wrong_size_never_reaches_envpool(
    engines: LocalProvider,
) -> None:
    env = _remote(engines, "envpool:CartPole-v1", 2)
    try:
        env.reset(seed=0)
        connection = env._shards[0].connection  # the client checks shapes: go round it
        with pytest.raises(RemoteError, match=r"actions must have shape \(2,\), got \(1,\)"):
            connection.request(Op.STEP, np.zeros(1, dtype=np.int64))
        env.step(np.ones(2, dtype=np.int64))
    finally:
        env.close()
    assert engines._processes[0].popen.poll() is None


@pytest.mark.parametrize("name", ["recv", "send", "close_extras", "step", "reset", "close"])
def test_native_checks_call_cannot_reach_the_engines_own_operations(
    engines: LocalProvider, name: str
) -> None:
    env = _remote(engines, "ale:pong", 2)
    try:
        env.reset(seed=0)
        with pytest.raises(RemoteError, match=rf"may not call {name!r}") as info:
            env.call(name)
        assert isinstance(info.value, AttributeNotAllowedError)
        env.step(np.zeros(2, dtype=np.int64))  # neither blocked nor torn down
    finally:
        env.close()
