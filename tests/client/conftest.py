"""Fixtures of the RemoteVectorEnv tests: shared local servers, in-process twins, a deep diff."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import gymnasium
import numpy as np
import pytest
from gymnasium.envs.registration import EnvSpec
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from openenv_gym.client.vector_env import RemoteVectorEnv
from openenv_gym.providers.local import LocalProvider

VECTOR_SPECS = [
    "CartPole-v1",
    "MountainCar-v0",
    "MountainCarContinuous-v0",
    "Acrobot-v1",
    "Pendulum-v1",
    "FrozenLake-v1",
    "FrozenLake8x8-v1",
    "CliffWalking-v1",
    "Taxi-v4",
    "Blackjack-v1",
    "openenv_gym.testing.envs:DictTupleEnv",
    "openenv_gym.testing.envs:TextEnv",
    "openenv_gym.testing.envs:MultiDiscreteEnv",
]


@pytest.fixture(scope="session")
def vector_servers() -> Iterator[LocalProvider]:
    """Three local servers hosting every env the vector tests use, shared by all of them."""
    args = ["--set-attr-allow", "max_length", "gravity"]
    with LocalProvider(VECTOR_SPECS, num_servers=3, extra_args=args) as provider:
        yield provider


@pytest.fixture
def remote_vector(vector_servers: LocalProvider) -> Iterator[Callable[..., RemoteVectorEnv]]:
    """Build RemoteVectorEnvs on the shared servers (``shards`` of them); closed at teardown."""
    built: list[RemoteVectorEnv] = []

    def make(env_id: str, num_envs: int, shards: int = 1, **kwargs: Any) -> RemoteVectorEnv:
        env = RemoteVectorEnv(env_id, num_envs, urls=vector_servers.urls[:shards], **kwargs)
        built.append(env)
        return env

    yield make
    for env in built:
        env.close()


def make_single_local(env_id: str, **kwargs: Any) -> gymnasium.Env[Any, Any]:
    """Build one env in-process exactly as the server builds it (same wrappers)."""
    if ":" in env_id:
        return gymnasium.make(EnvSpec(id=env_id, entry_point=env_id), **kwargs)
    return gymnasium.make(env_id, **kwargs)


def _make_local_vector(
    env_id: str,
    num_envs: int,
    autoreset_mode: AutoresetMode = AutoresetMode.NEXT_STEP,
    **kwargs: Any,
) -> SyncVectorEnv:
    return SyncVectorEnv(
        [lambda: make_single_local(env_id, **kwargs)] * num_envs, autoreset_mode=autoreset_mode
    )


@pytest.fixture
def make_local_vector() -> Iterator[Callable[..., SyncVectorEnv]]:
    """Build in-process ``SyncVectorEnv`` twins of remote vector envs; closed at teardown."""
    built: list[SyncVectorEnv] = []

    def make(*args: Any, **kwargs: Any) -> SyncVectorEnv:
        env = _make_local_vector(*args, **kwargs)
        built.append(env)
        return env

    yield make
    for env in built:
        env.close()


def _assert_same(actual: Any, expected: Any, path: str = "value") -> None:
    """Assert ``actual`` equals ``expected`` exactly: types, dtypes, shapes, key order, values."""
    assert type(actual) is type(expected), (
        f"{path}: type {type(actual).__name__} != {type(expected).__name__}"
    )
    if isinstance(expected, np.ndarray):
        assert actual.dtype == expected.dtype, f"{path}: dtype {actual.dtype} != {expected.dtype}"
        assert actual.shape == expected.shape, f"{path}: shape {actual.shape} != {expected.shape}"
        if expected.dtype.hasobject:
            for index in np.ndindex(expected.shape):
                _assert_same(actual[index], expected[index], f"{path}[{index}]")
        else:
            np.testing.assert_array_equal(actual, expected, err_msg=path, strict=True)
    elif isinstance(expected, dict):
        assert list(actual) == list(expected), f"{path}: keys {list(actual)} != {list(expected)}"
        for key, value in expected.items():
            _assert_same(actual[key], value, f"{path}[{key!r}]")
    elif isinstance(expected, (tuple, list)):
        assert len(actual) == len(expected), f"{path}: length {len(actual)} != {len(expected)}"
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _assert_same(a, e, f"{path}[{index}]")
    elif isinstance(expected, (float, np.floating)):
        if math.isnan(expected):
            assert math.isnan(actual), f"{path}: {actual!r} is not NaN"
        else:
            assert actual == expected, f"{path}: {actual!r} != {expected!r}"
    elif isinstance(expected, np.generic):
        assert actual.dtype == expected.dtype, f"{path}: dtype {actual.dtype} != {expected.dtype}"
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


@pytest.fixture(scope="session")
def assert_same() -> Callable[[Any, Any, str], None]:
    """The recursive exact comparison (type, dtype, shape, key order, value, NaN)."""
    return _assert_same
