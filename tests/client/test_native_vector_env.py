"""RemoteVectorEnv over native server vectorization, diffed against the engine in-process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import gymnasium
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, VectorEnv

import openenv_gym  # noqa: F401 - registers the openenv/ ids
from openenv_gym.client.vector_env import RemoteVectorEnv
from openenv_gym.errors import AutoresetModeMismatchError, EncodeError, VectorizationError
from openenv_gym.providers.local import LocalProvider
from openenv_gym.testing.vector_envs import COUNTING_SAME_STEP

COUNTING = f"openenv_gym.testing.vector_envs:{COUNTING_SAME_STEP}"
NATIVE = "vector_entry_point"

AssertSame = Callable[[Any, Any, str], None]


@pytest.fixture(scope="module")
def native_servers() -> Iterator[LocalProvider]:
    """Two local servers hosting the native engines these tests use."""
    args = ["--set-attr-allow", "tag"]
    with LocalProvider(
        ["CartPole-v1", "Pendulum-v1", COUNTING], num_servers=2, extra_args=args
    ) as provider:
        yield provider


@pytest.fixture
def remote(native_servers: LocalProvider) -> Iterator[Callable[..., RemoteVectorEnv]]:
    built: list[RemoteVectorEnv] = []

    def make(env_id: str, num_envs: int, shards: int = 1, **kwargs: Any) -> RemoteVectorEnv:
        kwargs.setdefault("server_vectorization", NATIVE)
        env = RemoteVectorEnv(env_id, num_envs, urls=native_servers.urls[:shards], **kwargs)
        built.append(env)
        return env

    yield make
    for env in built:
        env.close()


def _engine(env_id: str, num_envs: int) -> VectorEnv[Any, Any, Any]:
    return gymnasium.make_vec(env_id, num_envs, vectorization_mode=NATIVE)


def _diff(
    remote: RemoteVectorEnv,
    engines: list[VectorEnv[Any, Any, Any]],
    assert_same: AssertSame,
    *,
    seed: int,
    steps: int,
) -> int:
    """Step ``remote`` and its shards' engines alike; return how many episodes ended."""
    sizes = [engine.num_envs for engine in engines]
    starts = np.cumsum([0, *sizes])[:-1]
    obs, _ = remote.reset(seed=seed)
    for start, engine in zip(starts, engines, strict=True):
        want_obs, want_infos = engine.reset(seed=seed + int(start))
        assert_same(obs[start : start + engine.num_envs], want_obs, "reset obs")
        assert want_infos == {} or len(engines) == 1
    rng = np.random.default_rng(seed)
    ended = 0
    for step in range(steps):
        actions = remote.action_space.sample() if step % 2 else rng.integers(0, 2, remote.num_envs)
        got = remote.step(actions)
        wants = [
            engine.step(actions[start : start + engine.num_envs])
            for start, engine in zip(starts, engines, strict=True)
        ]
        for index, name in enumerate(("obs", "rewards", "terminated", "truncated")):
            want = np.concatenate([w[index] for w in wants]) if len(wants) > 1 else wants[0][index]
            assert_same(got[index], want, f"step {step} {name}")
        if len(wants) == 1:
            assert_same(got[4], wants[0][4], f"step {step} infos")
        ended += int(np.sum(got[2] | got[3]))
    return ended


def test_native_vector_env_one_shard_equals_make_vec(
    remote: Callable[..., RemoteVectorEnv], assert_same: AssertSame
) -> None:
    env = remote("CartPole-v1", 16)
    engine = _engine("CartPole-v1", 16)
    assert env.autoreset_mode is AutoresetMode.NEXT_STEP
    assert env.metadata["autoreset_mode"] is AutoresetMode.NEXT_STEP
    assert env.single_observation_space == engine.single_observation_space
    assert env.max_episode_steps == 500
    assert _diff(env, [engine], assert_same, seed=11, steps=400) > 16  # autoresets included
    engine.close()


def test_native_vector_env_two_shards_each_equal_their_engine(
    remote: Callable[..., RemoteVectorEnv], assert_same: AssertSame
) -> None:
    env = remote("CartPole-v1", 9, shards=2)
    sizes = [shard_stop - shard_start for shard_start, shard_stop in ((0, 4), (4, 9))]
    engines = [_engine("CartPole-v1", size) for size in sizes]
    assert _diff(env, engines, assert_same, seed=3, steps=300) > 9
    for engine in engines:
        engine.close()


@pytest.mark.parametrize("shards", [1, 2])
def test_native_vector_env_same_step_engine_infos_and_partial_resets(
    remote: Callable[..., RemoteVectorEnv], assert_same: AssertSame, shards: int
) -> None:
    env = remote(COUNTING, 6, shards=shards)
    assert env.autoreset_mode is AutoresetMode.SAME_STEP
    engines = [_engine(COUNTING_SAME_STEP, 6 // shards) for _ in range(shards)]
    size = 6 // shards
    obs, _ = env.reset(seed=1)
    for index, engine in enumerate(engines):
        assert_same(
            obs[index * size : (index + 1) * size], engine.reset(seed=1 + index * size)[0], "obs"
        )
    for step in range(40):
        actions = np.arange(6) % 2
        if step % 7 == 6:
            mask = np.arange(6) % 3 == step % 3
            got_obs, _ = env.reset(options={"reset_mask": mask})
            want_obs = np.concatenate(
                [
                    engine.reset(options={"reset_mask": mask[i * size : (i + 1) * size]})[0]
                    for i, engine in enumerate(engines)
                ]
            )
            assert_same(got_obs, want_obs, f"partial reset {step}")
        got = env.step(actions)
        wants = [e.step(actions[i * size : (i + 1) * size]) for i, e in enumerate(engines)]
        want_infos = wants[0][4]
        if shards == 1:
            assert_same(got[4], want_infos, f"step {step} infos")
        else:  # each shard's slice of every key is its engine's; absent keys are masked off
            for i, want in enumerate(wants):
                part = slice(i * size, (i + 1) * size)
                for key, value in want[4].items():
                    assert_same(got[4][key][part], value, f"step {step} infos[{key!r}]")
                for key in set(got[4]) - set(want[4]):
                    if key.startswith("_"):
                        assert not got[4][key][part].any(), f"step {step} {key} set"
        assert_same(got[0], np.concatenate([w[0] for w in wants]), f"step {step} obs")
        assert_same(got[1], np.concatenate([w[1] for w in wants]), f"step {step} rewards")


def test_native_vector_env_refuses_another_autoreset_mode(
    remote: Callable[..., RemoteVectorEnv],
) -> None:
    with pytest.raises(AutoresetModeMismatchError, match=r"'NextStep'.*'SameStep'") as info:
        remote("CartPole-v1", 2, autoreset_mode=AutoresetMode.SAME_STEP)
    assert isinstance(info.value, ValueError)
    env = remote("CartPole-v1", 2, autoreset_mode="NextStep")  # the engine's own mode is fine
    assert env.autoreset_mode is AutoresetMode.NEXT_STEP


def test_native_vector_env_refuses_a_spec_without_vector_entry_point(
    remote: Callable[..., RemoteVectorEnv],
) -> None:
    with pytest.raises(VectorizationError, match=r"'Pendulum-v1'.*no vector_entry_point"):
        remote("Pendulum-v1", 2)
    with pytest.raises(VectorizationError, match=r"reconnect"):
        remote("CartPole-v1", 2, reconnect=True)


def test_native_vector_env_attrs_render_and_state(
    remote: Callable[..., RemoteVectorEnv],
) -> None:
    env = remote("CartPole-v1", 3)
    env.reset(seed=0)
    assert env.get_attr("max_episode_steps") == 500
    env.set_attr("tag", [1, 2])  # one value for the engine, even a list
    assert env.get_attr("tag") == [1, 2] and env.call("tag") == [1, 2]
    assert env.render() is None  # no render mode: the engine renders nothing
    env.step(np.zeros(3, dtype=np.int64))
    assert [state["step_count"] for state in env.state()] == [1, 1, 1]
    two = remote("CartPole-v1", 4, shards=2)
    assert two.get_attr("max_episode_steps") == (500, 500)


def test_native_vector_env_through_make_vec(native_servers: LocalProvider) -> None:
    env = gymnasium.make_vec(
        "openenv/CartPole-v1",
        2,
        vectorization_mode=NATIVE,
        server_vectorization=NATIVE,
        urls=native_servers.urls[:1],
    )
    try:
        assert isinstance(env.unwrapped, RemoteVectorEnv)
        assert env.unwrapped.server_vectorization == NATIVE
        engine = _engine("CartPole-v1", 2)
        np.testing.assert_array_equal(env.reset(seed=4)[0], engine.reset(seed=4)[0], strict=True)
        engine.close()
    finally:
        env.close()


def test_native_vector_env_all_false_mask_goes_to_the_engine(
    remote: Callable[..., RemoteVectorEnv], assert_same: AssertSame
) -> None:
    # It reaches the engine, which decides, as in-process (SyncVectorEnv would refuse it).
    env = remote("CartPole-v1", 3)
    engine = _engine("CartPole-v1", 3)
    env.reset(seed=4)
    engine.reset(seed=4)
    actions = np.array([1, 0, 1])
    env.step(actions)
    engine.step(actions)
    mask = np.zeros(3, dtype=bool)
    got = env.reset(options={"reset_mask": mask})
    want = engine.reset(options={"reset_mask": mask.copy()})
    assert_same(got[0], want[0], "all-False reset obs")
    assert_same(got[1], want[1], "all-False reset infos")
    assert_same(env.step(actions)[0], engine.step(actions)[0], "the step after it")
    engine.close()
    with pytest.raises(ValueError, match="at least one True"):
        remote("CartPole-v1", 3, server_vectorization="sync").reset(options={"reset_mask": mask})


def test_native_vector_env_reset_no_shard_can_take_resets_no_shard(
    remote: Callable[..., RemoteVectorEnv], assert_same: AssertSame
) -> None:
    env = remote("CartPole-v1", 4, shards=2)
    engines = [_engine("CartPole-v1", 2), _engine("CartPole-v1", 2)]
    env.reset(seed=10)
    for start, engine in zip((0, 2), engines, strict=True):
        engine.reset(seed=10 + start)
    # Shard 1's seed, 2**64 - 1 + 2, is past the wire's 64 bits: shard 0 must not reset either.
    with pytest.raises(EncodeError):
        env.reset(seed=2**64 - 1)
    actions = np.array([1, 0, 0, 1])
    pairs = zip((0, 2), engines, strict=True)
    want = [engine.step(actions[start : start + 2])[0] for start, engine in pairs]
    assert_same(env.step(actions)[0], np.concatenate(want), "the step after the failed reset")
    for engine in engines:
        engine.close()
