"""The SB3 adapter: ``RemoteVecEnv`` against SB3's ``DummyVecEnv`` of in-process envs, step by
step (obs, rewards, dones, infos, reset infos, types), with SB3's own wrappers on top. (PPO on
both, ending bit-identical: tests/examples/test_sb3_ppo_batched.py.)"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import gymnasium
import numpy as np
import pytest
from gymnasium.envs.registration import EnvSpec
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from openenv_gym.testing.optional import require_module

require_module("stable_baselines3", family="sb3", install="pip install 'openenv-gym[sb3]'")

from stable_baselines3.common.utils import check_for_correct_spaces
from stable_baselines3.common.vec_env import DummyVecEnv, VecCheckNan, VecEnv

from openenv_gym.adapters.sb3 import RemoteVecEnv
from openenv_gym.client.vector_env import RemoteVectorEnv
from openenv_gym.errors import AttributeNotAllowedError, AutoresetModeMismatchError
from openenv_gym.providers.local import LocalProvider

SPECS = [
    "CartPole-v1",
    "Pendulum-v1",
    "FrozenLake-v1",
    "Blackjack-v1",  # Tuple observations: SB3 holds them as a tuple of arrays
    "openenv_gym.testing.envs:MultiDiscreteEnv",
]
KWARGS: dict[str, dict[str, Any]] = {"Pendulum-v1": {"max_episode_steps": 15}}


@pytest.fixture(scope="module")
def servers() -> Iterator[LocalProvider]:
    args = ["--set-attr-allow", "gravity"]
    with LocalProvider(SPECS, num_servers=2, extra_args=args) as provider:
        yield provider


def _make_local(env_id: str, **kwargs: Any) -> gymnasium.Env[Any, Any]:
    if ":" in env_id:
        return gymnasium.make(EnvSpec(id=env_id, entry_point=env_id), **kwargs)
    return gymnasium.make(env_id, **kwargs)


@pytest.fixture
def pair(servers: LocalProvider) -> Iterator[Callable[..., tuple[RemoteVecEnv, DummyVecEnv]]]:
    built: list[VecEnv] = []

    def make(env_id: str, num_envs: int, **kwargs: Any) -> tuple[RemoteVecEnv, DummyVecEnv]:
        kwargs = {**KWARGS.get(env_id, {}), **kwargs}
        remote = RemoteVecEnv(env_id, num_envs, urls=servers.urls, **kwargs)
        built.append(remote)
        local = DummyVecEnv([lambda: _make_local(env_id, **kwargs)] * num_envs)
        built.append(local)
        return remote, local

    yield make
    for env in built:
        env.close()


def _assert_same(actual: Any, expected: Any, path: str) -> None:
    assert type(actual) is type(expected), f"{path}: {type(actual)} != {type(expected)}"
    if isinstance(expected, np.ndarray):
        assert actual.dtype == expected.dtype and actual.shape == expected.shape, path
        np.testing.assert_array_equal(actual, expected, err_msg=path, strict=True)
    elif isinstance(expected, dict):
        assert list(actual) == list(expected), f"{path}: {list(actual)} != {list(expected)}"
        for key in expected:
            _assert_same(actual[key], expected[key], f"{path}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), path
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _assert_same(a, e, f"{path}[{index}]")
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def _run_both(remote: VecEnv, local: VecEnv, steps: int, seed: int) -> int:
    """Drive both with the same seeded random actions; diff everything; return episode ends."""
    assert remote.seed(seed) == local.seed(seed)
    _assert_same(remote.reset(), local.reset(), "reset obs")
    # A VecEnvWrapper (VecCheckNan) keeps a reset_infos of its own that SB3 never updates.
    _assert_same(remote.unwrapped.reset_infos, local.reset_infos, "reset_infos")
    space = remote.action_space
    space.seed(seed)
    ends = 0
    for t in range(steps):
        actions = np.stack([space.sample() for _ in range(remote.num_envs)])
        got, want = remote.step(actions), local.step(actions)
        for name, a, e in zip(("obs", "rewards", "dones", "infos"), got, want, strict=True):
            _assert_same(a, e, f"step {t} {name}")
        _assert_same(remote.unwrapped.reset_infos, local.reset_infos, f"step {t} reset_infos")
        ends += int(want[2].sum())
    return ends


@pytest.mark.parametrize("env_id", SPECS)
def test_remote_vec_env_matches_dummy_vec_env(
    env_id: str, pair: Callable[..., tuple[RemoteVecEnv, DummyVecEnv]]
) -> None:
    remote, local = pair(env_id, 5)
    assert len(remote.venv.urls) == 2  # two shards: one message per server per step
    assert remote.observation_space == local.observation_space
    assert remote.action_space == local.action_space
    check_for_correct_spaces(remote, local.observation_space, local.action_space)
    ends = _run_both(VecCheckNan(remote, raise_exception=True), local, 60, seed=11)
    assert ends >= 3, "the run must cross episode ends (terminal_observation, autoreset)"
    # A second seeded reset in the same sessions (seeds are used once, then None).
    assert remote._seeds == local._seeds == [None] * 5
    _run_both(remote, local, 20, seed=2)


def test_remote_vec_env_time_limit_truncation_is_flagged(
    pair: Callable[..., tuple[RemoteVecEnv, DummyVecEnv]],
) -> None:
    remote, _ = pair("Pendulum-v1", 3)
    remote.seed(0)
    remote.reset()
    for step in range(1, 16):
        _, _, dones, infos = remote.step(np.zeros((3, 1), dtype=np.float32))
        assert dones.tolist() == [step == 15] * 3
        assert [info["TimeLimit.truncated"] for info in infos] == [step == 15] * 3
    assert all(info["terminal_observation"].shape == (3,) for info in infos)


def test_remote_vec_env_reset_options_per_env(
    pair: Callable[..., tuple[RemoteVecEnv, DummyVecEnv]],
) -> None:
    remote, local = pair("CartPole-v1", 4)
    for env in (remote, local):
        env.seed(5)
        env.set_options([{"low": -0.5, "high": 0.5}, {}, {"low": -0.5, "high": 0.5}, {}])
    obs = remote.reset()
    _assert_same(obs, local.reset(), "obs")
    assert np.abs(obs[[0, 2]]).max() > 0.05 >= np.abs(obs[[1, 3]]).max()  # options applied
    _assert_same(remote.reset_infos, local.reset_infos, "reset_infos")


def test_remote_vec_env_methods_and_attributes(
    pair: Callable[..., tuple[RemoteVecEnv, DummyVecEnv]],
) -> None:
    remote, local = pair("CartPole-v1", 4, render_mode="rgb_array")
    for env in (remote, local):
        env.seed(1)
        env.reset()
    assert remote.render_mode == local.render_mode == "rgb_array"
    assert remote.get_attr("gravity") == local.get_attr("gravity")
    assert remote.get_attr("np_random_seed", indices=[1, 3]) == [2, 4]
    assert remote.env_method("render", indices=2)[0].shape == (400, 600, 3)
    _assert_same(remote.get_images(), local.get_images(), "images")
    _assert_same(remote.render(), local.render(), "tiled render")
    remote.set_attr("gravity", 20.0, indices=[0, 2])
    assert remote.get_attr("gravity") == [20.0, 9.8, 20.0, 9.8]
    with pytest.raises(AttributeNotAllowedError, match="length"):
        remote.set_attr("length", 2.0)
    with pytest.raises(AttributeError):
        remote.get_attr("no_such_attribute")
    assert remote.has_attr("gravity") and not remote.has_attr("no_such_attribute")
    assert remote.env_is_wrapped(gymnasium.wrappers.TimeLimit) == local.env_is_wrapped(
        gymnasium.wrappers.TimeLimit
    )
    assert remote.env_is_wrapped(gymnasium.wrappers.RecordEpisodeStatistics) == [False] * 4


def test_remote_vec_env_from_vector_env_unbatches_infos(servers: LocalProvider) -> None:
    env_id = "openenv_gym.testing.envs:MultiDiscreteEnv"
    sync = SyncVectorEnv([lambda: _make_local(env_id)] * 3, autoreset_mode=AutoresetMode.SAME_STEP)
    adapted = RemoteVecEnv.from_vector_env(sync)
    local = DummyVecEnv([lambda: _make_local(env_id)] * 3)
    try:
        adapted.seed(4), local.seed(4)
        np.testing.assert_array_equal(adapted.reset(), local.reset())
        for _ in range(30):
            actions = np.stack([adapted.action_space.sample() for _ in range(3)])
            (obs, rewards, dones, infos), want = adapted.step(actions), local.step(actions)
            np.testing.assert_array_equal(obs, want[0])
            np.testing.assert_array_equal(rewards, want[1])
            np.testing.assert_array_equal(dones, want[2])
            for info, expected in zip(infos, want[3], strict=True):
                assert info.keys() == expected.keys()
                for key, value in expected.items():
                    np.testing.assert_array_equal(info[key], value)  # numpy scalars here
    finally:
        adapted.close()
        local.close()
    next_step = RemoteVectorEnv("CartPole-v1", 2, urls=servers.urls[:1])
    try:
        with pytest.raises(AutoresetModeMismatchError, match="SameStep"):
            RemoteVecEnv.from_vector_env(next_step)
    finally:
        next_step.close()
    with pytest.raises(TypeError, match="SAME_STEP"):
        RemoteVecEnv("CartPole-v1", 2, urls=servers.urls, autoreset_mode="NextStep")


def test_remote_vec_env_adopts_a_remote_vector_env_with_exact_infos(
    servers: LocalProvider,
) -> None:
    env_id = "openenv_gym.testing.envs:MultiDiscreteEnv"
    envs = RemoteVectorEnv(env_id, 4, urls=servers.urls, autoreset_mode=AutoresetMode.SAME_STEP)
    adopted = RemoteVecEnv(envs)
    local = DummyVecEnv([lambda: _make_local(env_id)] * 4)
    try:
        assert _run_both(adopted, local, 30, seed=8) >= 3  # infos: int, np.int64, bool
    finally:
        adopted.close()
        local.close()
    assert envs.closed  # owned: closed with the adapter
