"""OpenEnv interop on our server: OpenEnv envs hosted batched, OpenEnv's client served."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import SyncVectorEnv

from openenv_gym.testing.optional import require_module

require_module("openenv", family="openenv", install="pip install 'openenv-gym[openenv]'")

import openenv_gym
from openenv_gym.interop.openenv.hosted import OpenEnvAsGym
from openenv_gym.providers.local import LocalProvider
from openenv_gym.testing.openenv_echo import WordGuessEnv

WORD_GAME = "openenv_gym.testing.openenv_echo:WordGuessEnv"


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with LocalProvider(["CartPole-v1", WORD_GAME]) as provider:
        yield provider.urls[0]


def _http(url: str) -> str:
    return url.replace("ws://", "http://")


def _env_base(url: str, env_id: str) -> str:
    return f"{_http(url)}/envs/{urllib.parse.quote(env_id, safe='')}"


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"] == "application/json"
        return json.loads(response.read())


def test_openenv_env_as_gym_passes_check_env() -> None:
    env = OpenEnvAsGym(WordGuessEnv)
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=1)
    assert obs in env.observation_space
    obs, reward, _, truncated, info = env.step({"guess": "cab"})
    assert isinstance(reward, float) and truncated is False and info == {"guess": "cab"}


def test_openenv_env_hosted_batched_equals_in_process(server: str) -> None:
    remote = openenv_gym.RemoteVectorEnv(WORD_GAME, 5, urls=[server, server])
    local = SyncVectorEnv([lambda: OpenEnvAsGym(WordGuessEnv)] * 5)
    try:
        assert remote.single_action_space == local.single_action_space
        assert remote.single_observation_space == local.single_observation_space
        remote.reset(seed=3)
        local.reset(seed=3)
        for t in range(12):
            guesses = tuple(("cab", "bad", "dab", "add", "bed")[(i + t) % 5] for i in range(5))
            r, lo = remote.step({"guess": guesses}), local.step({"guess": guesses})
            np.testing.assert_array_equal(r[0]["in_place"], lo[0]["in_place"])
            assert r[0]["feedback"] == lo[0]["feedback"]
            for a, b in zip(r[1:4], lo[1:4], strict=True):
                np.testing.assert_array_equal(a, b)
    finally:
        remote.close()
        local.close()


def test_openenv_generic_client_drives_a_gymnasium_env_we_host(server: str) -> None:
    from openenv.core.generic_client import GenericEnvClient

    local = gymnasium.make("CartPole-v1")
    with GenericEnvClient(base_url=_http(server)).sync() as client:
        result = client.reset(seed=7)
        obs, _ = local.reset(seed=7)
        assert result.observation["observation"] == obs.tolist()
        for _ in range(20):
            result = client.step({"action": 1})
            obs, reward, terminated, truncated, _ = local.step(1)
            assert result.observation["observation"] == obs.tolist()
            assert result.reward == reward and result.done == (terminated or truncated)
        state = client.state()
        assert state["step_count"] == 20 and state["episode_id"]


def test_openenv_generic_client_drives_an_openenv_env_we_host(server: str) -> None:
    from openenv.core.generic_client import GenericEnvClient

    with GenericEnvClient(base_url=_env_base(server, WORD_GAME)).sync() as client:
        result = client.reset(seed=1)
        assert result.observation["guesses_left"] == 6 and result.done is False
        for word in ("cab", "bad", "dab", "add", "bed"):
            result = client.step({"guess": word})
            if result.done:
                break
        assert result.done and result.reward == 1.0
        assert result.observation["feedback"] == "solved"


def test_openenv_http_endpoints(server: str) -> None:
    assert _get(f"{_http(server)}/health") == {"status": "healthy"}
    schema = _get(f"{_env_base(server, WORD_GAME)}/schema")
    assert schema["action"]["properties"]["guess"]["maxLength"] == 8
    assert set(schema) == {"action", "observation", "state"}
    metadata = _get(f"{_env_base(server, WORD_GAME)}/metadata")
    assert metadata["name"] == WORD_GAME
    cartpole = _get(f"{_http(server)}/schema")
    assert cartpole["action"]["properties"]["action"] == {
        "type": "integer",
        "minimum": 0,
        "maximum": 1,
    }


def test_openenv_client_gets_error_replies_and_the_session_lives_on(server: str) -> None:
    from openenv.core.generic_client import GenericEnvClient

    with GenericEnvClient(base_url=_env_base(server, WORD_GAME)).sync() as client:
        client.reset(seed=0)
        with pytest.raises(Exception, match=r"(?i)error"):
            client.step({"guess": "way too long a guess"})
        assert client.step({"guess": "cab"}).observation["guesses_left"] == 5


def test_openenv_session_validates_actions_and_keeps_the_env_state() -> None:
    from openenv_gym.interop.openenv.session import OpenEnvSession
    from openenv_gym.server.catalog import EnvCatalog

    session = OpenEnvSession(EnvCatalog([WORD_GAME]), "")

    def call(message: dict[str, Any]) -> Any:
        return json.loads(session.handle(json.dumps(message).encode()))

    assert call({"type": "reset", "data": {"seed": 3, "episode_id": "ep1"}})["type"] == (
        "observation"
    )
    for bad in ({}, {"guess": "cab", "bogus": 1}, {"guess": 5}):
        reply = call({"type": "step", "data": bad})
        assert reply["type"] == "error" and reply["data"]["code"] == "VALIDATION_ERROR"
    reply = call({"type": "step", "data": {"guess": "cab"}})
    assert reply["type"] == "observation"
    # OpenEnv >= 0.10's serialize_observation: metadata inside the observation and beside it
    assert reply["data"]["metadata"] == reply["data"]["observation"]["metadata"] == {"guess": "cab"}
    assert call({"type": "state"})["data"] == {"episode_id": "ep1", "step_count": 1}
    assert call({"type": "nonsense"})["data"]["code"] == "UNKNOWN_TYPE"
    session.close()
