"""RemoteEnv against real servers on loopback, diffed against the in-process env."""

from __future__ import annotations

import os
import pickle
import signal
import warnings
from collections.abc import Iterator

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.utils.env_match import check_environments_match

import openenv_gym
from openenv_gym.errors import (
    AuthenticationError,
    CallTimeoutError,
    ConnectError,
    ConnectionLostError,
    OpenEnvError,
    RemoteError,
    UnknownEnvError,
)
from openenv_gym.providers.local import LocalProvider

TOY_AND_CLASSIC = [
    env_id
    for env_id, spec in gymnasium.registry.items()
    if isinstance(spec.entry_point, str)
    and spec.entry_point.startswith(("gymnasium.envs.classic_control", "gymnasium.envs.toy_text"))
]
TEST_ENVS = [
    "openenv_gym.testing.envs:DictTupleEnv",
    "openenv_gym.testing.envs:TextEnv",
    "openenv_gym.testing.envs:MultiDiscreteEnv",
]


@pytest.fixture(scope="module")
def server() -> Iterator[LocalProvider]:
    args = ["--allow-any-id", "--set-attr-allow", "gravity"]
    with LocalProvider(TEST_ENVS, extra_args=args) as provider:
        yield provider


def _local(env_id: str, **kwargs: object) -> gymnasium.Env:
    if ":" in env_id:
        spec = gymnasium.envs.registration.EnvSpec(id=env_id, entry_point=env_id)
        return gymnasium.make(spec, **kwargs)
    return gymnasium.make(env_id, **kwargs)


def _checker_warnings(env: gymnasium.Env) -> set[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, skip_render_check=True)
    return {str(w.message) for w in caught}


@pytest.mark.parametrize(
    "env_id",
    ["CartPole-v1", "Pendulum-v1", "FrozenLake-v1", "Taxi-v4", "Blackjack-v1", *TEST_ENVS],
)
def test_remote_env_passes_check_env_with_no_extra_warning(
    server: LocalProvider, env_id: str
) -> None:
    with openenv_gym.RemoteEnv(env_id, url=server.urls[0]) as remote:
        remote_warnings = _checker_warnings(remote)
    local_warnings = _checker_warnings(_local(env_id).unwrapped)
    assert remote_warnings <= local_warnings


@pytest.mark.parametrize("env_id", TOY_AND_CLASSIC + TEST_ENVS)
def test_remote_env_matches_local_for_1000_steps(server: LocalProvider, env_id: str) -> None:
    local = _local(env_id)
    with openenv_gym.RemoteEnv(env_id, url=server.urls[0]) as remote:
        check_environments_match(remote, local, num_steps=1000, skip_render=True)
        # check_environments_match compares values; types and dtypes must match as well.
        obs_r, _ = remote.reset(seed=5)
        obs_l, _ = local.reset(seed=5)
        assert type(obs_r) is type(obs_l)
        action = local.action_space.sample()
        step_r, step_l = remote.step(action), local.step(action)
        assert [type(x) for x in step_r] == [type(x) for x in step_l]
        if isinstance(obs_l, np.ndarray):
            assert obs_r.dtype == obs_l.dtype
    local.close()


def test_make_openenv_id_runs_remotely_with_truthful_time_limit() -> None:
    env = gymnasium.make("openenv/CartPole-v1")
    try:
        assert isinstance(env.unwrapped, openenv_gym.RemoteEnv)
        assert env.spec is not None and env.spec.max_episode_steps == 500
        obs, _ = env.reset(seed=0)
        # A balancing policy (it balances past 500 steps in-process from seed 0) reaches the
        # limit: the episode is truncated, not terminated, at exactly 500 steps.
        steps, done = 0, False
        while not done and steps < 1000:
            action = int(0.5 * obs[0] + obs[1] + 10 * obs[2] + 2 * obs[3] > 0)
            obs, _, terminated, truncated, _ = env.step(action)
            steps += 1
            done = terminated or truncated
        assert (steps, terminated, truncated) == (500, False, True)
    finally:
        env.close()


def test_make_with_module_prefix_and_render_mode() -> None:
    env = gymnasium.make("openenv_gym:openenv/CartPole-v1", render_mode="rgb_array")
    try:
        env.reset(seed=0)
        frame = env.render()
        local = gymnasium.make("CartPole-v1", render_mode="rgb_array")
        local.reset(seed=0)
        np.testing.assert_array_equal(frame, local.render())
        assert env.render_mode == "rgb_array"
    finally:
        env.close()


def test_make_max_episode_steps_kwarg_is_applied_once_on_the_server() -> None:
    env = gymnasium.make("openenv/CartPole-v1", max_episode_steps=7)
    try:
        env.reset(seed=0)
        results = [env.step(i % 2) for i in range(7)]
        assert results[-1][3] is True
        assert not any(r[3] for r in results[:-1])
        assert env.spec is not None and env.spec.max_episode_steps == 7
    finally:
        env.close()


def test_remote_v0_takes_env_id_and_url(server: LocalProvider) -> None:
    env = gymnasium.make("openenv/Remote-v0", env_id="Acrobot-v1", url=server.urls[0])
    try:
        obs, _ = env.reset(seed=1)
        assert obs.shape == (6,)
    finally:
        env.close()


def test_remote_env_returns_fresh_writable_arrays(server: LocalProvider) -> None:
    with openenv_gym.RemoteEnv("CartPole-v1", url=server.urls[0]) as env:
        first, _ = env.reset(seed=0)
        second = env.step(0)[0]
        assert first.flags.writeable and second.flags.writeable
        assert not np.shares_memory(first, second)


def test_remote_env_state_tracks_episode(server: LocalProvider) -> None:
    with openenv_gym.RemoteEnv("CartPole-v1", url=server.urls[0]) as env:
        env.reset(seed=0)
        first = env.state()
        env.step(0)
        env.step(1)
        state = env.state()
        assert state["step_count"] == 2
        assert state["episode_id"] == first["episode_id"]
        np.testing.assert_allclose(state["state"], env.get_attr("state"))
        env.reset()
        assert env.state()["episode_id"] != first["episode_id"]


def test_remote_env_call_get_set_attr(server: LocalProvider) -> None:
    with openenv_gym.RemoteEnv("CartPole-v1", url=server.urls[0]) as env:
        env.set_attr("gravity", 1.5)
        assert env.get_attr("gravity") == 1.5
        assert env.call("get_wrapper_attr", "gravity") == 1.5  # a method, with an argument
        with pytest.raises(RemoteError, match="private"):
            env.get_attr("_np_random")


def test_remote_env_pickles_into_a_new_session(server: LocalProvider) -> None:
    with openenv_gym.RemoteEnv("CartPole-v1", url=server.urls[0]) as env:
        obs, _ = env.reset(seed=3)
        clone = pickle.loads(pickle.dumps(env))
        try:
            clone_obs, _ = clone.reset(seed=3)
            np.testing.assert_array_equal(obs, clone_obs)
            assert clone.state()["episode_id"] != env.state()["episode_id"]
        finally:
            clone.close()


def test_remote_env_close_is_idempotent(server: LocalProvider) -> None:
    env = openenv_gym.RemoteEnv("CartPole-v1", url=server.urls[0])
    env.close()
    env.close()
    with pytest.raises(ConnectionLostError, match=server.urls[0]):
        env.step(0)


def test_remote_env_error_inside_env_keeps_session(server: LocalProvider) -> None:
    with openenv_gym.RemoteEnv("CartPole-v1", url=server.urls[0]) as env:
        env.reset(seed=0)
        with pytest.raises(AssertionError) as excinfo:
            env.step(7)  # outside Discrete(2): CartPole asserts
        assert isinstance(excinfo.value, RemoteError)
        assert server.urls[0] in str(excinfo.value)
        assert env.step(1)[0].shape == (4,)


def test_unknown_env_id_is_a_typed_error_naming_what_is_hosted(server: LocalProvider) -> None:
    with pytest.raises(UnknownEnvError) as excinfo:
        openenv_gym.RemoteEnv("NoSuchEnv-v0", url=server.urls[0])
    assert "NoSuchEnv-v0" in str(excinfo.value)
    assert "DictTupleEnv" in str(excinfo.value)


def test_unlisted_entry_point_is_refused(server: LocalProvider) -> None:
    with pytest.raises(UnknownEnvError):
        openenv_gym.RemoteEnv("os:system", url=server.urls[0])


def test_connect_to_nothing_is_a_typed_error_naming_the_url() -> None:
    with LocalProvider(["CartPole-v1"]) as provider:
        url = provider.urls[0]
    with pytest.raises(ConnectError, match=url):
        openenv_gym.RemoteEnv("CartPole-v1", url=url, connect_timeout=2)


def test_server_killed_mid_episode_is_a_typed_error_naming_the_url() -> None:
    with LocalProvider(["CartPole-v1"]) as provider:
        env = openenv_gym.RemoteEnv("CartPole-v1", url=provider.urls[0])
        env.reset(seed=0)
        os.kill(provider.pids[0], signal.SIGKILL)
        with pytest.raises(ConnectionLostError, match=provider.urls[0]):
            for _ in range(10):
                env.step(0)
        env.close()


def test_server_hung_is_a_call_timeout_naming_the_url() -> None:
    with LocalProvider(["CartPole-v1"]) as provider:
        env = openenv_gym.RemoteEnv("CartPole-v1", url=provider.urls[0], call_timeout=0.5)
        env.reset(seed=0)
        os.kill(provider.pids[0], signal.SIGSTOP)
        try:
            with pytest.raises(CallTimeoutError, match=provider.urls[0]):
                env.step(0)
        finally:
            os.kill(provider.pids[0], signal.SIGCONT)
        env.close()


def test_embedded_server_failure_reports_its_stderr() -> None:
    with pytest.raises(OpenEnvError, match="NoSuchEnv-v0"):
        openenv_gym.RemoteEnv("NoSuchEnv-v0")


def test_embedded_server_serves_only_its_own_client() -> None:
    env = gymnasium.make("openenv_gym:openenv/CartPole-v1", sutton_barto_reward=True)
    try:
        url = env.unwrapped.url  # type: ignore[attr-defined]
        with pytest.raises(AuthenticationError, match="HTTP 401"):
            openenv_gym.RemoteEnv("CartPole-v1", url=url)
        env.reset(seed=0)
        env.unwrapped.set_attr("gravity", 2.0)  # type: ignore[attr-defined]
        assert env.unwrapped.get_attr("gravity") == 2.0  # type: ignore[attr-defined]
    finally:
        env.close()
