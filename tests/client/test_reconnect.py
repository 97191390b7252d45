"""RemoteVectorEnv(reconnect=True): a lost server costs fresh episodes, flagged, never a splice."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

import openenv_gym
from openenv_gym.errors import ConnectionLostError
from openenv_gym.providers.local import LocalProvider


def test_reconnect_restarts_an_owned_server_and_flags_its_envs() -> None:
    envs = openenv_gym.RemoteVectorEnv("CartPole-v1", 6, num_servers=2, reconnect=True)
    try:
        envs.reset(seed=0)
        actions = np.zeros(6, dtype=np.int64)
        envs.step(actions)
        lost_url = envs.urls[1]
        os.kill(envs._provider.pids[1], signal.SIGKILL)  # type: ignore[union-attr]
        obs, rewards, terminations, truncations, infos = envs.step(actions)
        assert envs.urls[1] != lost_url  # a replacement server
        np.testing.assert_array_equal(truncations, [False, False, False, True, True, True])
        np.testing.assert_array_equal(rewards[3:], 0.0)
        assert not terminations[3:].any()
        np.testing.assert_array_equal(infos["_reconnected"], truncations)
        assert infos["reconnected"][3:].all()
        assert np.all(np.abs(obs[3:]) <= 0.05)  # CartPole's reset observations
        for _ in range(5):  # and the env carries on normally
            _, _, _, truncations, infos = envs.step(actions)
            assert "reconnected" not in infos
    finally:
        envs.close()


def test_reconnect_to_a_server_that_stays_up_after_the_connection_drops() -> None:
    with LocalProvider(["CartPole-v1"]) as provider:
        envs = openenv_gym.RemoteVectorEnv("CartPole-v1", 3, urls=provider.urls, reconnect=True)
        envs.reset(seed=1)
        envs._shards[0].connection._ws._sock.close()  # type: ignore[union-attr]  # a dropped link
        _, _, _, truncations, infos = envs.step(np.ones(3, dtype=np.int64))
        assert truncations.all() and infos["reconnected"].all()
        assert envs.urls == provider.urls
        envs.close()


def test_without_reconnect_a_lost_server_is_a_typed_error_naming_it() -> None:
    envs = openenv_gym.RemoteVectorEnv("CartPole-v1", 4, num_servers=2)
    try:
        envs.reset(seed=0)
        os.kill(envs._provider.pids[0], signal.SIGKILL)  # type: ignore[union-attr]
        with pytest.raises(ConnectionLostError, match=envs.urls[0]):
            envs.step(np.zeros(4, dtype=np.int64))
    finally:
        envs.close()
