"""RemoteVectorEnv against real servers on loopback, diffed against in-process SyncVectorEnv."""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Iterator
from typing import Any

import gymnasium
import numpy as np
import pytest
from gymnasium.error import AlreadyPendingCallError, ClosedEnvironmentError, NoAsyncCallError
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.vector.utils import batch_space

import openenv_gym  # noqa: F401 - registers the openenv/ ids
from openenv_gym.client.vector_env import RemoteVectorEnv
from openenv_gym.errors import InvalidActionError, RemoteError
from openenv_gym.providers.local import LocalProvider

DICT_TUPLE = "openenv_gym.testing.envs:DictTupleEnv"
MULTI_DISCRETE = "openenv_gym.testing.envs:MultiDiscreteEnv"
TEXT = "openenv_gym.testing.envs:TextEnv"
GYM_ENVS = [
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
]
TEST_ENVS = [DICT_TUPLE, TEXT, MULTI_DISCRETE]
LONG_RUNS = {"CartPole-v1": 1000, DICT_TUPLE: 1000}
DEFAULT_STEPS = 200
MODES = list(AutoresetMode)
# (num_envs, num_shards): one shard, and uneven shards (7 envs over 3 servers: 2, 3, 2).
LAYOUTS = [(4, 1), (7, 3)]


def _arrays(value: Any) -> Iterator[np.ndarray]:
    """Every numeric array inside a (possibly nested) batch."""
    if isinstance(value, np.ndarray) and not value.dtype.hasobject:
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _arrays(item)
    elif isinstance(value, tuple):
        for item in value:
            yield from _arrays(item)


def _reset_seed(rng: np.random.Generator, num_envs: int) -> int | list[int | None] | None:
    kind = rng.integers(3)
    if kind == 0:
        return None
    if kind == 1:
        return int(rng.integers(1_000_000))
    return [None if rng.random() < 0.4 else int(rng.integers(1_000_000)) for _ in range(num_envs)]


def _run_differential(
    remote: RemoteVectorEnv,
    local: SyncVectorEnv,
    steps: int,
    seed: int,
    assert_same: Any,
) -> None:
    """Drive both envs with the same seeds, actions and partial resets; diff every output."""
    num_envs = local.num_envs
    disabled = local.autoreset_mode is AutoresetMode.DISABLED
    rng = np.random.default_rng(seed)
    action_space = copy.deepcopy(local.action_space)
    action_space.seed(seed)

    obs_r, info_r = remote.reset(seed=seed)
    obs_l, info_l = local.reset(seed=seed)
    assert_same(obs_r, obs_l, "reset obs")
    assert_same(info_r, info_l, "reset info")
    done = np.zeros(num_envs, dtype=bool)
    previous: list[np.ndarray] = list(_arrays(obs_r))
    partial_resets = 0

    for t in range(steps):
        mask = (rng.random(num_envs) < 0.3) if rng.random() < 0.05 else np.zeros(num_envs, bool)
        if disabled:
            mask |= done  # DISABLED: the caller resets finished envs before stepping them
        if mask.any():
            partial_resets += 1
            reset_seed = _reset_seed(rng, num_envs)
            extra = {"tag": t} if rng.random() < 0.5 else {}
            # Two dicts: SyncVectorEnv pops reset_mask out of the one it is given.
            obs_r, info_r = remote.reset(seed=reset_seed, options={"reset_mask": mask, **extra})
            obs_l, info_l = local.reset(seed=reset_seed, options={"reset_mask": mask, **extra})
            assert_same(obs_r, obs_l, f"step {t}: partial reset obs")
            assert_same(info_r, info_l, f"step {t}: partial reset info")
            previous = list(_arrays(obs_r))

        actions = action_space.sample()
        result_r = remote.step(actions)
        result_l = local.step(actions)
        for name, a, e in zip(
            ("obs", "rewards", "term", "trunc", "info"), result_r, result_l, strict=True
        ):
            assert_same(a, e, f"step {t}: {name}")
        obs_r, rewards, terminations, truncations, _ = result_r
        assert rewards.dtype == np.float64 and rewards.shape == (num_envs,)
        assert terminations.dtype == np.bool_ and truncations.dtype == np.bool_
        current = [*_arrays(obs_r), rewards, terminations, truncations]
        assert all(array.flags.writeable for array in current), f"step {t}: read-only output"
        for old, new in zip(previous, current, strict=False):
            assert not np.shares_memory(old, new), f"step {t}: output reuses a previous buffer"
        previous = current
        done = terminations | truncations

    assert partial_resets > 0


def _differential_cases() -> list[Any]:
    cases = []
    for env_id in GYM_ENVS + TEST_ENVS:
        for mode in MODES:
            for num_envs, shards in LAYOUTS:
                cases.append(
                    pytest.param(
                        env_id, mode, num_envs, shards, id=f"{env_id}-{mode.value}-{shards}shard"
                    )
                )
    return cases


@pytest.mark.parametrize(("env_id", "mode", "num_envs", "shards"), _differential_cases())
def test_remote_vector_env_matches_sync_vector_env_every_step(
    remote_vector: Any,
    make_local_vector: Any,
    assert_same: Any,
    env_id: str,
    mode: AutoresetMode,
    num_envs: int,
    shards: int,
) -> None:
    remote = remote_vector(env_id, num_envs, shards, autoreset_mode=mode)
    local = make_local_vector(env_id, num_envs, mode)
    assert len(remote.urls) == shards
    assert remote.single_observation_space == local.single_observation_space
    assert remote.single_action_space == local.single_action_space
    assert remote.action_space == local.action_space
    steps = LONG_RUNS.get(env_id, DEFAULT_STEPS)
    _run_differential(
        remote, local, steps, seed=sum(map(ord, env_id)) + shards, assert_same=assert_same
    )


# -- reset: seeds, masks, options --------------------------------------------------------------


def test_reset_int_seed_seeds_sub_env_i_with_seed_plus_i(
    remote_vector: Any, assert_same: Any
) -> None:
    remote = remote_vector("CartPole-v1", 7, 3)
    obs, _ = remote.reset(seed=100)
    for i in range(7):
        single = gymnasium.make("CartPole-v1")
        expected, _ = single.reset(seed=100 + i)
        assert_same(obs[i], expected, f"env {i}")
        single.close()


def test_reset_seed_list_with_none_entries_seeds_only_given_envs(
    remote_vector: Any, make_local_vector: Any, assert_same: Any
) -> None:
    seeds = [3, None, 5, None, 7, 8, None]
    remote = remote_vector("CartPole-v1", 7, 3)
    obs, _ = remote.reset(seed=seeds)
    for i, seed in enumerate(seeds):
        if seed is not None:
            single = gymnasium.make("CartPole-v1")
            expected, _ = single.reset(seed=seed)
            assert_same(obs[i], expected, f"env {i}")
            single.close()
    # Unseeded envs draw fresh entropy: no two of them start alike.
    unseeded = obs[[i for i, seed in enumerate(seeds) if seed is None]]
    assert len({row.tobytes() for row in unseeded}) == len(unseeded)


def test_reset_seed_none_continues_each_env_rng_like_sync(
    remote_vector: Any, make_local_vector: Any, assert_same: Any
) -> None:
    remote = remote_vector(DICT_TUPLE, 5, 2)
    local = make_local_vector(DICT_TUPLE, 5)
    remote.reset(seed=9)
    local.reset(seed=9)
    for round_ in range(3):
        obs_r, info_r = remote.reset()
        obs_l, info_l = local.reset(seed=None)
        assert_same(obs_r, obs_l, f"reset {round_} obs")
        assert_same(info_r, info_l, f"reset {round_} info")


def test_reset_seed_none_on_fresh_envs_gives_distinct_starts(remote_vector: Any) -> None:
    first = remote_vector("CartPole-v1", 4, 2).reset()[0]
    second = remote_vector("CartPole-v1", 4, 2).reset()[0]
    rows = {row.tobytes() for row in np.concatenate([first, second])}
    assert len(rows) == 8


def _raised(function: Any, *args: Any, **kwargs: Any) -> BaseException:
    with pytest.raises(Exception) as excinfo:
        function(*args, **kwargs)
    return excinfo.value


@pytest.mark.parametrize("length", [6, 8, 0])
def test_reset_seed_list_of_wrong_length_raises_value_error_like_sync(
    remote_vector: Any, make_local_vector: Any, length: int
) -> None:
    remote = remote_vector("CartPole-v1", 7, 3)
    local = make_local_vector("CartPole-v1", 7)
    seeds = list(range(length))
    remote_error = _raised(remote.reset, seed=seeds)
    local_error = _raised(local.reset, seed=seeds)
    assert type(local_error) is ValueError
    assert isinstance(remote_error, ValueError)
    assert str(remote_error) == str(local_error)
    remote.reset(seed=0)  # still usable: nothing was left pending


BAD_MASKS = {
    "list": ([True] * 7, TypeError),
    "short": (np.ones(6, dtype=bool), ValueError),
    "2d": (np.ones((7, 1), dtype=bool), ValueError),
    "int-dtype": (np.ones(7, dtype=np.int64), TypeError),
    "all-false": (np.zeros(7, dtype=bool), ValueError),
}


@pytest.mark.parametrize("case", list(BAD_MASKS))
def test_reset_bad_reset_mask_raises_like_sync(
    remote_vector: Any, make_local_vector: Any, assert_same: Any, case: str
) -> None:
    mask, error_type = BAD_MASKS[case]
    remote = remote_vector("CartPole-v1", 7, 3)
    local = make_local_vector("CartPole-v1", 7)
    remote.reset(seed=1)
    local.reset(seed=1)
    remote_error = _raised(remote.reset, options={"reset_mask": mask})
    local_error = _raised(local.reset, options={"reset_mask": mask})
    assert type(local_error) is error_type
    assert isinstance(remote_error, error_type)
    assert str(remote_error) == str(local_error)
    # The failed reset touched nothing: the next step still matches.
    actions = np.array([0, 1, 1, 0, 1, 0, 1])
    assert_same(remote.step(actions), local.step(actions), "step after refused reset")


def test_reset_does_not_mutate_callers_options(remote_vector: Any) -> None:
    remote = remote_vector(DICT_TUPLE, 5, 2)
    remote.reset(seed=0)
    mask = np.array([True, False, False, True, False])
    options = {"reset_mask": mask, "tag": 7}
    _, info = remote.reset(options=options)
    assert list(options) == ["reset_mask", "tag"]
    assert options["reset_mask"] is mask
    np.testing.assert_array_equal(mask, [True, False, False, True, False])
    # And the env saw the other options but not the mask, as SyncVectorEnv passes them.
    np.testing.assert_array_equal(info["_options"], mask)
    np.testing.assert_array_equal(info["options"]["tag"][mask], [7, 7])


def test_reset_mask_covering_one_shard_leaves_other_shards_obs(
    remote_vector: Any, make_local_vector: Any, assert_same: Any
) -> None:
    remote = remote_vector(DICT_TUPLE, 7, 3)
    local = make_local_vector(DICT_TUPLE, 7)
    assert_same(remote.reset(seed=4), local.reset(seed=4), "reset")
    actions = np.array([1, 0, -1, 1, 0, -1, 1])
    assert_same(remote.step(actions), local.step(actions), "step")
    mask = np.array([False, False, True, True, False, False, False])  # inside shard 1 only
    assert_same(
        remote.reset(seed=11, options={"reset_mask": mask}),
        local.reset(seed=11, options={"reset_mask": mask}),
        "partial reset",
    )


# -- autoreset DISABLED ---------------------------------------------------------------------------


@pytest.mark.parametrize("shards", [1, 3])
def test_disabled_mode_stepping_a_done_env_raises_assertion_error_like_sync(
    remote_vector: Any, make_local_vector: Any, assert_same: Any, shards: int
) -> None:
    mode = AutoresetMode.DISABLED
    remote = remote_vector(DICT_TUPLE, 7, shards, autoreset_mode=mode)
    local = make_local_vector(DICT_TUPLE, 7, mode)
    remote.reset(seed=2)
    local.reset(seed=2)
    actions = np.zeros(7, dtype=np.int64)
    done = np.zeros(7, dtype=bool)
    while not done.any():
        _, _, term_r, trunc_r, _ = remote.step(actions)
        _, _, term_l, trunc_l, _ = local.step(actions)
        done = term_l | trunc_l
        np.testing.assert_array_equal(term_r | trunc_r, done)
    local_error = _raised(local.step, actions)
    remote_error = _raised(remote.step, actions)
    assert type(local_error) is AssertionError
    assert isinstance(remote_error, AssertionError)
    assert isinstance(remote_error, RemoteError)
    # A full reset recovers, and both agree again.
    assert_same(remote.reset(seed=5), local.reset(seed=5), "reset after error")
    assert_same(remote.step(actions), local.step(actions), "step after recovery")


# -- attributes, spaces, metadata, render ---------------------------------------------------------


@pytest.mark.parametrize("mode", MODES, ids=[mode.value for mode in MODES])
@pytest.mark.parametrize("env_id", ["CartPole-v1", DICT_TUPLE, TEXT, "Blackjack-v1"])
def test_attributes_metadata_and_spaces_match_sync(
    remote_vector: Any, make_local_vector: Any, env_id: str, mode: AutoresetMode
) -> None:
    remote = remote_vector(env_id, 5, 2, autoreset_mode=mode.value)  # the string form works too
    local = make_local_vector(env_id, 5, mode)
    assert remote.metadata["autoreset_mode"] is mode
    assert remote.autoreset_mode is mode
    assert remote.metadata == local.metadata
    assert remote.num_envs == 5
    assert remote.render_mode == local.render_mode
    assert remote.single_observation_space == local.single_observation_space
    assert remote.single_action_space == local.single_action_space
    assert remote.observation_space == batch_space(remote.single_observation_space, 5)
    assert remote.observation_space == local.observation_space
    assert remote.action_space == local.action_space


@pytest.mark.parametrize("shards", [1, 2])
def test_render_rgb_array_returns_tuple_of_frames_equal_to_sync(
    remote_vector: Any, make_local_vector: Any, shards: int
) -> None:
    remote = remote_vector("CartPole-v1", 3, shards, render_mode="rgb_array")
    local = make_local_vector("CartPole-v1", 3, render_mode="rgb_array")
    assert remote.render_mode == "rgb_array"
    remote.reset(seed=8)
    local.reset(seed=8)
    for _ in range(2):
        frames, expected = remote.render(), local.render()
        assert isinstance(frames, tuple) and len(frames) == 3
        for frame, want in zip(frames, expected, strict=True):
            assert frame.dtype == np.uint8 and frame.shape == want.shape
            np.testing.assert_array_equal(frame, want)
        remote.step(np.array([1, 0, 1]))
        local.step(np.array([1, 0, 1]))


@pytest.mark.filterwarnings("ignore:.*No render fps was declared")
def test_call_get_attr_set_attr_follow_sync_conventions(
    remote_vector: Any, make_local_vector: Any, assert_same: Any
) -> None:
    remote = remote_vector(DICT_TUPLE, 5, 2, render_mode="ansi")
    local = make_local_vector(DICT_TUPLE, 5, render_mode="ansi")
    both = (remote, local)

    assert_same(remote.get_attr("max_length"), local.get_attr("max_length"), "get_attr")
    assert remote.get_attr("max_length") == (12,) * 5
    # call on a plain attribute returns it; call on a method calls it with args and kwargs
    assert_same(remote.call("max_length"), local.call("max_length"), "call attribute")
    assert_same(remote.call("reset", seed=3), local.call("reset", seed=3), "call kwargs")
    assert_same(
        remote.call("get_wrapper_attr", "max_length"),
        local.call("get_wrapper_attr", "max_length"),
        "call args",
    )

    for env in both:
        env.set_attr("max_length", [2, 3, 4, 5, 6])  # one value per env
    assert remote.get_attr("max_length") == (2, 3, 4, 5, 6)
    assert_same(remote.reset(seed=3), local.reset(seed=3), "reset after per-env set_attr")
    assert_same(remote.call("render"), local.call("render"), "call render")
    assert isinstance(remote.call("render"), tuple)

    for env in both:
        env.set_attr("max_length", (7, 6, 5, 4, 3))  # a tuple is per-env as well
    assert remote.get_attr("max_length") == (7, 6, 5, 4, 3)

    for env in both:
        env.set_attr("max_length", 4)  # one shared value
    assert remote.get_attr("max_length") == (4,) * 5
    assert_same(remote.reset(seed=4), local.reset(seed=4), "reset after shared set_attr")


@pytest.mark.parametrize("values", [[1, 2, 3], (1, 2, 3, 4, 5, 6), []])
def test_set_attr_wrong_length_raises_value_error_like_sync(
    remote_vector: Any, make_local_vector: Any, values: Any
) -> None:
    remote = remote_vector(DICT_TUPLE, 5, 2)
    local = make_local_vector(DICT_TUPLE, 5)
    remote_error = _raised(remote.set_attr, "max_length", values)
    local_error = _raised(local.set_attr, "max_length", values)
    assert type(local_error) is ValueError
    assert isinstance(remote_error, ValueError)
    assert str(remote_error) == str(local_error)
    assert remote.get_attr("max_length") == (12,) * 5  # nothing was set


def test_get_attr_of_missing_attribute_raises_attribute_error_like_sync(
    remote_vector: Any, make_local_vector: Any
) -> None:
    remote = remote_vector("CartPole-v1", 3, 2)
    local = make_local_vector("CartPole-v1", 3)
    local_error = _raised(local.get_attr, "no_such_attribute")
    remote_error = _raised(remote.get_attr, "no_such_attribute")
    assert isinstance(local_error, AttributeError)
    assert isinstance(remote_error, AttributeError)
    remote.reset(seed=0)  # the session survives


def test_get_attr_of_array_attribute_matches_sync(
    remote_vector: Any, make_local_vector: Any, assert_same: Any
) -> None:
    remote = remote_vector("CartPole-v1", 5, 3)
    local = make_local_vector("CartPole-v1", 5)
    remote.reset(seed=31)
    local.reset(seed=31)
    assert_same(remote.get_attr("state"), local.get_attr("state"), "state")
    assert_same(remote.get_attr("gravity"), local.get_attr("gravity"), "gravity")


def test_get_attr_of_unencodable_value_raises_type_error_and_session_survives(
    remote_vector: Any, make_local_vector: Any, assert_same: Any
) -> None:
    remote = remote_vector("CartPole-v1", 4, 2)
    local = make_local_vector("CartPole-v1", 4)
    with pytest.raises(TypeError, match="cannot encode"):
        remote.get_attr("action_space")  # a Space object has no wire form (documented)
    assert_same(remote.reset(seed=2), local.reset(seed=2), "reset after refused get_attr")


def test_close_is_idempotent_and_later_use_raises_closed_environment_error(
    remote_vector: Any,
) -> None:
    remote = remote_vector("CartPole-v1", 3, 2)
    remote.reset(seed=0)
    remote.close()
    remote.close()
    assert remote.closed
    attempts = [
        lambda: remote.reset(seed=0),
        lambda: remote.step(np.zeros(3, dtype=np.int64)),
        lambda: remote.step_async(np.zeros(3, dtype=np.int64)),
        remote.step_wait,
        remote.reset_wait,
        lambda: remote.call("render"),
        lambda: remote.get_attr("gravity"),
        lambda: remote.set_attr("gravity", 1.0),
        remote.render,
    ]
    for attempt in attempts:
        with pytest.raises(ClosedEnvironmentError):
            attempt()


def test_context_manager_closes(vector_servers: LocalProvider) -> None:
    with RemoteVectorEnv("CartPole-v1", 2, urls=vector_servers.urls[:2]) as remote:
        remote.reset(seed=0)
    assert remote.closed
    with pytest.raises(ClosedEnvironmentError):
        remote.reset(seed=0)


def test_returned_arrays_are_fresh_so_caller_mutation_changes_nothing(
    remote_vector: Any, make_local_vector: Any, assert_same: Any
) -> None:
    for shards in (1, 3):
        remote = remote_vector("CartPole-v1", 7, shards)
        local = make_local_vector("CartPole-v1", 7)
        obs, _ = remote.reset(seed=6)
        local.reset(seed=6)
        obs[:] = 99.0  # a user scribbling over the returned batch
        actions = np.ones(7, dtype=np.int64)
        first = remote.step(actions)
        assert_same(first, local.step(actions), f"{shards} shards: step after mutating reset obs")
        for array in first[:4]:
            array[...] = 0
        # A partial reset joins the untouched envs' last observations: they must be intact.
        mask = np.array([True, False, False, False, False, False, False])
        assert_same(
            remote.reset(seed=1, options={"reset_mask": mask}),
            local.reset(seed=1, options={"reset_mask": mask}),
            f"{shards} shards: partial reset after mutating step outputs",
        )


def test_fewer_envs_than_urls_uses_one_shard_per_env(
    vector_servers: LocalProvider, make_local_vector: Any, assert_same: Any
) -> None:
    with RemoteVectorEnv(DICT_TUPLE, 2, urls=vector_servers.urls) as remote:
        local = make_local_vector(DICT_TUPLE, 2)
        assert remote.urls == vector_servers.urls[:2]
        assert_same(remote.reset(seed=0), local.reset(seed=0), "reset")
        for t in range(30):
            actions = np.array([t % 3 - 1, (t + 1) % 3 - 1])
            assert_same(remote.step(actions), local.step(actions), f"step {t}")


def test_np_random_seed_returns_sub_env_seeds_like_sync(
    remote_vector: Any, make_local_vector: Any
) -> None:
    remote = remote_vector("CartPole-v1", 3, 2)
    local = make_local_vector("CartPole-v1", 3)
    remote.reset(seed=42)
    local.reset(seed=42)
    assert local.np_random_seed == (42, 43, 44)
    assert remote.get_attr("np_random_seed") == (42, 43, 44)
    assert remote.np_random_seed == local.np_random_seed


def test_step_before_reset_raises_reset_needed_like_sync(
    remote_vector: Any, make_local_vector: Any
) -> None:
    remote = remote_vector("CartPole-v1", 3, 2)
    local = make_local_vector("CartPole-v1", 3)
    actions = np.zeros(3, dtype=np.int64)
    local_error = _raised(local.step, actions)
    remote_error = _raised(remote.step, actions)
    assert type(local_error) is gymnasium.error.ResetNeeded
    assert isinstance(remote_error, gymnasium.error.ResetNeeded)
    assert isinstance(remote_error, RemoteError)
    remote.reset(seed=0)
    remote.step(actions)


def test_step_out_of_range_action_raises_assertion_error_like_sync(
    remote_vector: Any, make_local_vector: Any
) -> None:
    remote = remote_vector("CartPole-v1", 4, 2)
    local = make_local_vector("CartPole-v1", 4)
    remote.reset(seed=0)
    local.reset(seed=0)
    actions = np.array([0, 1, 5, 0])  # right shape, value outside Discrete(2)
    local_error = _raised(local.step, actions)
    remote_error = _raised(remote.step, actions)
    assert type(local_error) is AssertionError
    assert isinstance(remote_error, AssertionError)
    assert "5" in str(remote_error)


def test_step_accepts_python_list_actions_like_sync(
    remote_vector: Any, make_local_vector: Any, assert_same: Any
) -> None:
    remote = remote_vector("CartPole-v1", 4, 2)
    local = make_local_vector("CartPole-v1", 4)
    assert_same(remote.reset(seed=5), local.reset(seed=5), "reset")
    for t in range(20):
        actions = [(t + i) % 2 for i in range(4)]
        assert_same(remote.step(actions), local.step(actions), f"step {t}")


@pytest.mark.parametrize("num_envs", [0, -1])
def test_num_envs_below_one_raises_value_error(
    vector_servers: LocalProvider, num_envs: int
) -> None:
    with pytest.raises(ValueError, match="num_envs"):
        RemoteVectorEnv("CartPole-v1", num_envs, urls=vector_servers.urls[:1])


# -- split-phase calls ----------------------------------------------------------------------------


def test_split_phase_calls_return_what_blocking_calls_return(
    remote_vector: Any, make_local_vector: Any, assert_same: Any
) -> None:
    local = make_local_vector(DICT_TUPLE, 5, AutoresetMode.SAME_STEP)
    remote = remote_vector(DICT_TUPLE, 5, 3, autoreset_mode=AutoresetMode.SAME_STEP)
    remote.reset_async(seed=21)
    assert_same(remote.reset_wait(), local.reset(seed=21), "reset")
    mask = np.array([False, True, False, False, True])
    remote.reset_async(seed=[None, 4, None, None, 5], options={"reset_mask": mask})
    assert_same(
        remote.reset_wait(timeout=30.0),
        local.reset(seed=[None, 4, None, None, 5], options={"reset_mask": mask}),
        "partial reset",
    )
    for t in range(40):
        actions = np.array([(t + i) % 3 - 1 for i in range(5)])
        remote.step_async(actions)
        assert_same(remote.step_wait(timeout=30.0), local.step(actions), f"step {t}")
    remote.call_async("get_wrapper_attr", "max_length")
    assert remote.call_wait() == local.call("get_wrapper_attr", "max_length")


def test_step_async_twice_raises_already_pending_and_keeps_first_step(
    remote_vector: Any, make_local_vector: Any, assert_same: Any
) -> None:
    remote = remote_vector("CartPole-v1", 4, 2)
    local = make_local_vector("CartPole-v1", 4)
    remote.reset(seed=3)
    local.reset(seed=3)
    first, second = np.array([0, 1, 0, 1]), np.array([1, 1, 1, 1])
    remote.step_async(first)
    with pytest.raises(AlreadyPendingCallError) as excinfo:
        remote.step_async(second)
    assert excinfo.value.name == "step"
    for refused in (
        lambda: remote.reset_async(seed=0),
        lambda: remote.reset(seed=0),
        lambda: remote.call_async("render"),
        lambda: remote.get_attr("gravity"),
        lambda: remote.set_attr("gravity", 1.0),
        remote.render,
    ):
        with pytest.raises(AlreadyPendingCallError):
            refused()
    assert_same(remote.step_wait(), local.step(first), "the pending step")
    assert_same(remote.step(second), local.step(second), "the next step")


def test_wait_without_async_call_raises_no_async_call_error(
    remote_vector: Any, make_local_vector: Any, assert_same: Any
) -> None:
    remote = remote_vector("CartPole-v1", 4, 2)
    local = make_local_vector("CartPole-v1", 4)
    for wait in (remote.step_wait, remote.reset_wait, remote.call_wait):
        with pytest.raises(NoAsyncCallError):
            wait()
    remote.reset_async(seed=1)
    # Waiting for the wrong kind of call is refused and keeps the reset pending.
    for wait in (remote.step_wait, remote.call_wait):
        with pytest.raises(NoAsyncCallError):
            wait()
    assert_same(remote.reset_wait(), local.reset(seed=1), "the pending reset")
    with pytest.raises(NoAsyncCallError):
        remote.reset_wait()  # consumed


def test_closing_with_a_pending_step_then_waiting_raises_closed_environment_error(
    remote_vector: Any,
) -> None:
    remote = remote_vector("CartPole-v1", 4, 2)
    remote.reset(seed=0)
    remote.step_async(np.zeros(4, dtype=np.int64))
    remote.close()
    with pytest.raises(ClosedEnvironmentError):
        remote.step_wait()


# -- invalid actions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env_id", "actions", "expected_shape"),
    [
        ("CartPole-v1", np.zeros(3, dtype=np.int64), (4,)),
        ("CartPole-v1", np.zeros((4, 1), dtype=np.int64), (4,)),
        ("CartPole-v1", 0, (4,)),
        (MULTI_DISCRETE, np.ones(4, dtype=np.int64), (4, 2)),
        ("Pendulum-v1", np.zeros((4, 2), dtype=np.float32), (4, 1)),
    ],
    ids=["short", "extra-axis", "scalar", "multidiscrete-flat", "box-wide"],
)
def test_step_wrong_action_shape_raises_invalid_action_error_naming_both_shapes(
    remote_vector: Any,
    make_local_vector: Any,
    assert_same: Any,
    env_id: str,
    actions: Any,
    expected_shape: tuple[int, ...],
) -> None:
    remote = remote_vector(env_id, 4, 2)
    local = make_local_vector(env_id, 4)
    remote.reset(seed=0)
    local.reset(seed=0)
    with pytest.raises(InvalidActionError) as excinfo:
        remote.step(actions)
    assert isinstance(excinfo.value, ValueError)
    message = str(excinfo.value)
    assert str(expected_shape) in message
    assert str(np.shape(actions)) in message
    with pytest.raises(InvalidActionError):
        remote.step_async(actions)
    # Nothing was sent or left pending: the env steps on in lockstep with SyncVectorEnv.
    valid = local.action_space.sample()
    assert_same(remote.step(valid), local.step(valid), "step after invalid action")


# -- gymnasium.make_vec ---------------------------------------------------------------------------


def _balance(obs: np.ndarray) -> np.ndarray:
    return (obs[:, 2] + obs[:, 3] > 0).astype(np.int64)


def test_make_vec_vector_entry_point_builds_remote_vector_env_matching_sync(
    assert_same: Any,
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        envs = gymnasium.make_vec(
            "openenv/CartPole-v1", num_envs=4, vectorization_mode="vector_entry_point"
        )
    try:
        assert not [w for w in caught if "autoreset" in str(w.message).lower()]
        assert isinstance(envs, RemoteVectorEnv)
        assert envs.num_envs == 4
        assert envs.metadata["autoreset_mode"] is AutoresetMode.NEXT_STEP
        local = gymnasium.make_vec("CartPole-v1", num_envs=4, vectorization_mode="sync")
        assert envs.observation_space == local.observation_space
        assert envs.action_space == local.action_space
        assert_same(envs.reset(seed=12), local.reset(seed=12), "reset")
        local.action_space.seed(12)
        for t in range(100):
            actions = local.action_space.sample()
            assert_same(envs.step(actions), local.step(actions), f"step {t}")
        local.close()
    finally:
        envs.close()


def test_make_vec_max_episode_steps_truncates_at_that_step_and_spec_recreates_env() -> None:
    envs = gymnasium.make_vec(
        "openenv/CartPole-v1",
        num_envs=3,
        vectorization_mode="vector_entry_point",
        max_episode_steps=20,
        autoreset_mode=AutoresetMode.SAME_STEP,
    )
    try:
        obs, _ = envs.reset(seed=0)
        for _ in range(19):
            obs, _, terminated, truncated, _ = envs.step(_balance(obs))
            assert not terminated.any() and not truncated.any()
        obs, _, terminated, truncated, info = envs.step(_balance(obs))
        np.testing.assert_array_equal(truncated, [True, True, True])
        assert not terminated.any()
        np.testing.assert_array_equal(info["_final_obs"], [True, True, True])

        spec = envs.spec
        assert spec is not None
        again = gymnasium.make_vec(spec)
    finally:
        envs.close()
    try:
        assert isinstance(again, RemoteVectorEnv)
        assert again.num_envs == 3
        assert again.single_observation_space == envs.single_observation_space
        assert again.single_action_space == envs.single_action_space
        assert again.observation_space == envs.observation_space
        assert again.autoreset_mode is AutoresetMode.SAME_STEP
        obs, _ = again.reset(seed=0)
        for _ in range(19):
            obs, _, _, truncated, _ = again.step(_balance(obs))
            assert not truncated.any()
        _, _, _, truncated, _ = again.step(_balance(obs))
        assert truncated.all()  # the time limit came along with the spec
    finally:
        again.close()


def test_make_vec_with_urls_uses_running_servers(
    vector_servers: LocalProvider, make_local_vector: Any, assert_same: Any
) -> None:
    envs = gymnasium.make_vec(
        "openenv/Taxi-v4",
        num_envs=5,
        vectorization_mode="vector_entry_point",
        urls=vector_servers.urls,
    )
    try:
        assert envs.urls == vector_servers.urls
        local = make_local_vector("Taxi-v4", 5)
        assert_same(envs.reset(seed=1), local.reset(seed=1), "reset")
        local.action_space.seed(1)
        for t in range(50):
            actions = local.action_space.sample()
            assert_same(envs.step(actions), local.step(actions), f"step {t}")
    finally:
        envs.close()


def test_remote_vector_env_repr_names_env_and_urls(remote_vector: Any) -> None:
    remote = remote_vector("CartPole-v1", 2, 2)
    text = repr(remote)
    assert re.search(r"CartPole-v1.*num_envs=2", text)
    assert all(url in text for url in remote.urls)
