"""gymnasium's vector wrappers over RemoteVectorEnv give what they give over SyncVectorEnv."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from gymnasium.spaces import Box
from gymnasium.vector import AutoresetMode, VectorEnv, VectorWrapper
from gymnasium.wrappers.vector import (
    ClipAction,
    DictInfoToList,
    NormalizeObservation,
    NormalizeReward,
    RecordEpisodeStatistics,
)

DICT_TUPLE = "openenv_gym.testing.envs:DictTupleEnv"
NEXT, SAME, DISABLED = AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP, AutoresetMode.DISABLED
STEPS = 250


class _KeepOptions(VectorWrapper):
    """SyncVectorEnv, except that ``reset`` leaves the caller's ``options`` intact.

    ``SyncVectorEnv.reset`` pops ``options["reset_mask"]``; ``RecordEpisodeStatistics`` reads the
    mask only after calling ``reset``, so over a bare ``SyncVectorEnv`` it takes every partial
    reset for a full one and zeroes all envs' statistics. ``RemoteVectorEnv`` does not mutate
    ``options``, so the reference for partial resets under that wrapper is this one.
    """

    def reset(self, *, seed: Any = None, options: dict[str, Any] | None = None) -> Any:
        return self.env.reset(seed=seed, options=None if options is None else dict(options))


def _pair(
    remote_vector: Any,
    make_local_vector: Any,
    env_id: str,
    wrap: Callable[[VectorEnv], VectorEnv],
    *,
    num_envs: int = 5,
    shards: int = 3,
    mode: AutoresetMode = NEXT,
    keep_options: bool = False,
) -> tuple[VectorEnv, VectorEnv]:
    """The same wrapper stack over a remote env and over its in-process twin."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        remote = wrap(remote_vector(env_id, num_envs, shards, autoreset_mode=mode))
    # The wrappers read metadata["autoreset_mode"]; a remote env must not make them guess.
    assert not [w for w in caught if "autoreset" in str(w.message).lower()]
    local = make_local_vector(env_id, num_envs, mode)
    return remote, wrap(_KeepOptions(local) if keep_options else local)


def _drive(
    remote: VectorEnv,
    local: VectorEnv,
    assert_same: Any,
    *,
    seed: int,
    steps: int = STEPS,
    action_space: Any = None,
    partial_resets: bool = True,
    split_info: Callable[[Any], Any] = lambda info: info,
) -> None:
    """Step both stacks with the same seeds and actions; diff every output of every call."""
    num_envs = local.num_envs
    disabled = local.unwrapped.autoreset_mode is DISABLED
    rng = np.random.default_rng(seed)
    space = copy.deepcopy(action_space if action_space is not None else local.action_space)
    space.seed(seed)

    obs_r, info_r = remote.reset(seed=seed)
    obs_l, info_l = local.reset(seed=seed)
    assert_same(obs_r, obs_l, "reset obs")
    assert_same(split_info(info_r), split_info(info_l), "reset info")
    done = np.zeros(num_envs, dtype=bool)
    for t in range(steps):
        mask = np.zeros(num_envs, dtype=bool)
        if partial_resets and rng.random() < 0.04:
            mask = rng.random(num_envs) < 0.4
        if disabled:
            mask |= done
        if mask.any():
            obs_r, info_r = remote.reset(options={"reset_mask": mask})
            obs_l, info_l = local.reset(options={"reset_mask": mask})
            assert_same(obs_r, obs_l, f"step {t}: partial reset obs")
            assert_same(split_info(info_r), split_info(info_l), f"step {t}: partial reset info")
        actions = space.sample()
        obs_r, rew_r, term_r, trunc_r, info_r = remote.step(actions)
        obs_l, rew_l, term_l, trunc_l, info_l = local.step(actions)
        assert_same(obs_r, obs_l, f"step {t}: obs")
        assert_same(rew_r, rew_l, f"step {t}: rewards")
        assert_same(term_r, term_l, f"step {t}: terminations")
        assert_same(trunc_r, trunc_l, f"step {t}: truncations")
        assert_same(split_info(info_r), split_info(info_l), f"step {t}: info")
        done = term_l | trunc_l


def _without_episode_time(info: dict[str, Any]) -> dict[str, Any]:
    """Drop the wall-clock ``episode["t"]`` (it differs run to run), after checking its form."""
    if "episode" not in info:
        return info
    info = dict(info)
    episode = dict(info["episode"])
    elapsed = episode.pop("t")
    assert elapsed.dtype == np.float64 and elapsed.shape == info["_episode"].shape
    assert (elapsed[~info["_episode"]] == 0).all() and (elapsed >= 0).all()
    info["episode"] = episode
    return info


RECORD_CASES = [
    # Without partial resets: against a bare SyncVectorEnv.
    (NEXT, False),
    (SAME, False),
    # With partial resets (DISABLED needs them): against SyncVectorEnv that keeps options.
    (NEXT, True),
    (SAME, True),
    (DISABLED, True),
]


@pytest.mark.parametrize(
    ("mode", "partial_resets"),
    RECORD_CASES,
    ids=[f"{mode.value}-{'partial' if partial else 'full'}" for mode, partial in RECORD_CASES],
)
@pytest.mark.parametrize("env_id", ["CartPole-v1", DICT_TUPLE])
def test_record_episode_statistics_matches_sync(
    remote_vector: Any,
    make_local_vector: Any,
    assert_same: Any,
    env_id: str,
    mode: AutoresetMode,
    partial_resets: bool,
) -> None:
    remote, local = _pair(
        remote_vector,
        make_local_vector,
        env_id,
        RecordEpisodeStatistics,
        mode=mode,
        keep_options=partial_resets,
    )
    _drive(
        remote,
        local,
        assert_same,
        seed=17,
        partial_resets=partial_resets,
        split_info=_without_episode_time,
    )
    assert local.episode_count > 10
    assert remote.episode_count == local.episode_count
    assert_same(list(remote.return_queue), list(local.return_queue), "return_queue")
    assert_same(list(remote.length_queue), list(local.length_queue), "length_queue")
    assert len(remote.time_queue) == len(local.time_queue)


def test_record_episode_statistics_partial_reset_restarts_only_masked_envs(
    remote_vector: Any,
) -> None:
    envs = RecordEpisodeStatistics(remote_vector("CartPole-v1", 3, 2))
    envs.reset(seed=0)
    for t in range(5):
        envs.step(np.array([t % 2] * 3))
    np.testing.assert_array_equal(envs.episode_lengths, [5, 5, 5])
    envs.reset(options={"reset_mask": np.array([True, False, False])})
    np.testing.assert_array_equal(envs.episode_lengths, [0, 5, 5])
    envs.step(np.array([0, 1, 0]))
    np.testing.assert_array_equal(envs.episode_lengths, [1, 6, 6])


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1", "MountainCarContinuous-v0"])
def test_normalize_observation_matches_sync(
    remote_vector: Any, make_local_vector: Any, assert_same: Any, env_id: str
) -> None:
    remote, local = _pair(remote_vector, make_local_vector, env_id, NormalizeObservation)
    assert remote.single_observation_space == local.single_observation_space
    _drive(remote, local, assert_same, seed=3, partial_resets=False)
    assert_same(remote.obs_rms.mean, local.obs_rms.mean, "running mean")
    assert_same(remote.obs_rms.var, local.obs_rms.var, "running var")
    assert remote.obs_rms.count == local.obs_rms.count


@pytest.mark.parametrize("mode", [SAME, DISABLED], ids=lambda mode: mode.value)
def test_normalize_observation_refuses_non_next_step_mode_like_sync(
    remote_vector: Any, make_local_vector: Any, mode: AutoresetMode
) -> None:
    with pytest.raises(ValueError, match="NEXT_STEP") as local_error:
        NormalizeObservation(make_local_vector("CartPole-v1", 2, mode))
    with pytest.raises(ValueError, match="NEXT_STEP") as remote_error:
        NormalizeObservation(remote_vector("CartPole-v1", 2, 2, autoreset_mode=mode))
    assert str(remote_error.value) == str(local_error.value)


@pytest.mark.parametrize("mode", [NEXT, SAME], ids=lambda mode: mode.value)
@pytest.mark.parametrize("env_id", ["Pendulum-v1", DICT_TUPLE])
def test_normalize_reward_matches_sync(
    remote_vector: Any,
    make_local_vector: Any,
    assert_same: Any,
    env_id: str,
    mode: AutoresetMode,
) -> None:
    remote, local = _pair(
        remote_vector,
        make_local_vector,
        env_id,
        lambda env: NormalizeReward(env, gamma=0.9),
        mode=mode,
    )
    _drive(remote, local, assert_same, seed=29)
    assert_same(remote.accumulated_reward, local.accumulated_reward, "accumulated reward")
    assert_same(remote.return_rms.var, local.return_rms.var, "return variance")


@pytest.mark.parametrize("mode", [NEXT, SAME, DISABLED], ids=lambda mode: mode.value)
@pytest.mark.parametrize("env_id", [DICT_TUPLE, "Taxi-v4", "openenv_gym.testing.envs:TextEnv"])
def test_dict_info_to_list_matches_sync(
    remote_vector: Any,
    make_local_vector: Any,
    assert_same: Any,
    env_id: str,
    mode: AutoresetMode,
) -> None:
    remote, local = _pair(remote_vector, make_local_vector, env_id, DictInfoToList, mode=mode)
    _drive(remote, local, assert_same, seed=41)
    _, info = remote.reset(seed=0)
    assert isinstance(info, list) and len(info) == 5


@pytest.mark.parametrize("mode", [NEXT, SAME], ids=lambda mode: mode.value)
@pytest.mark.parametrize("env_id", ["MountainCarContinuous-v0", "Pendulum-v1"])
def test_clip_action_matches_sync(
    remote_vector: Any,
    make_local_vector: Any,
    assert_same: Any,
    env_id: str,
    mode: AutoresetMode,
) -> None:
    remote, local = _pair(remote_vector, make_local_vector, env_id, ClipAction, mode=mode)
    low = float(local.unwrapped.single_action_space.low[0])
    # Actions well outside the env's bounds, so clipping does happen.
    wide = Box(4 * low, -4 * low, (5, 1), np.float32)
    _drive(remote, local, assert_same, seed=53, action_space=wide)


def test_wrapper_stack_matches_sync(
    remote_vector: Any, make_local_vector: Any, assert_same: Any
) -> None:
    def stack(env: VectorEnv) -> VectorEnv:
        return DictInfoToList(RecordEpisodeStatistics(NormalizeReward(ClipAction(env))))

    remote, local = _pair(
        remote_vector, make_local_vector, "Pendulum-v1", stack, num_envs=7, keep_options=True
    )
    wide = Box(-5.0, 5.0, (7, 1), np.float32)

    def split(infos: list[dict[str, Any]]) -> list[dict[str, Any]]:
        result = []
        for info in infos:
            info = dict(info)
            if "episode" in info:
                info["episode"] = {k: v for k, v in info["episode"].items() if k != "t"}
            result.append(info)
        return result

    _drive(remote, local, assert_same, seed=61, steps=450, action_space=wide, split_info=split)
