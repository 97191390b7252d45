"""OpenEnvEnv / OpenEnvVectorEnv against OpenEnv's own server, diffed against in-process CartPole.

The server is OpenEnv's ``create_app`` hosting ``openenv_peer``'s CartPole ``Environment``,
which resets gymnasium's CartPole with the reset seed, so rollouts match the in-process env
exactly. Its action model is ``action: int`` without bounds (an int64 ``Box``, whose samples
CartPole rejects), so ``check_env`` runs against the same env served with a bounded action
model (``0 <= action <= 1``: a ``Discrete(2)``). Timeouts, lost servers and capacity errors
use a small fake OpenEnv server.
"""

from __future__ import annotations

import functools
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus
from typing import Any

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.utils.passive_env_checker import env_reset_passive_checker, env_step_passive_checker
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from openenv_gym.testing.optional import require_module, unavailable

require_module("openenv", family="openenv", install="pip install 'openenv-gym[openenv]'")

from openenv_gym.bench import openenv_peer
from openenv_gym.errors import (
    CallTimeoutError,
    CapacityError,
    ConnectError,
    ConnectionLostError,
    InvalidActionError,
    RemoteError,
)
from openenv_gym.interop.openenv.env import OpenEnvEnv, reset_data
from openenv_gym.interop.openenv.urls import endpoints
from openenv_gym.interop.openenv.vector_env import OpenEnvVectorEnv

if not openenv_peer.available()[0]:
    unavailable("openenv", openenv_peer.available()[1])

NUM_ENVS = 8
STEPS = 200


@pytest.fixture(scope="module")
def peer_url() -> Iterator[str]:
    """OpenEnv's server (another process) hosting openenv_peer's CartPole env."""
    with openenv_peer.serve("CartPole-v1", max_sessions=64) as url:
        yield url


@contextmanager
def _uvicorn_in_thread(app: Any) -> Iterator[str]:
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "in-process OpenEnv server did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def bounded_url(peer_url: str) -> Iterator[str]:
    """The same CartPole env under OpenEnv's create_app, with a bounded action model."""
    import pydantic

    types = openenv_peer._types()

    class BoundedAction(types.Action):  # type: ignore[misc,name-defined]
        action: int = pydantic.Field(ge=0, le=1)

    factory = functools.partial(types.Environment, "CartPole-v1")
    app = types.server.create_app(factory, BoundedAction, types.Observation, max_concurrent_envs=8)
    with _uvicorn_in_thread(app) as url:
        yield url


# -- a fake OpenEnv server: hangs on step(0), drops the connection on step(1), "/full" is full --

FAKE_SCHEMA = {
    "action": {
        "type": "object",
        "properties": {"action": {"type": "integer", "minimum": 0, "maximum": 1}},
    },
    "observation": {"type": "object", "properties": {"x": {"type": "number"}}},
}
FAKE_OBS = {
    "type": "observation",
    "data": {"observation": {"x": 1.5}, "reward": None, "done": False},
}


def _fake_handler(ws: Any) -> None:
    if ws.request.path.startswith("/full"):
        error = {
            "message": "full",
            "code": "CAPACITY_REACHED",
            "active_sessions": 1,
            "max_sessions": 1,
        }
        ws.send(json.dumps({"type": "error", "data": error}))
        ws.close()
        return
    for raw in ws:
        message = json.loads(raw)
        if message["type"] == "reset":
            ws.send(json.dumps(FAKE_OBS))
        elif message["type"] == "step" and message["data"]["action"] == 1:
            ws.close()
            return  # step(0): never answered


def _fake_schema(connection: Any, request: Any) -> Any:
    if request.path.endswith("/schema"):
        return connection.respond(HTTPStatus.OK, json.dumps(FAKE_SCHEMA))
    return None


@pytest.fixture(scope="module")
def fake_url() -> Iterator[str]:
    from websockets.sync.server import serve

    with serve(_fake_handler, "127.0.0.1", 0, process_request=_fake_schema) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{server.socket.getsockname()[1]}"
        server.shutdown()
        thread.join(10)


# -- helpers -----------------------------------------------------------------------------------


def _cartpole() -> gymnasium.Env[Any, Any]:
    return gymnasium.make("CartPole-v1")


def _single_obs(obs: dict[str, Any]) -> np.ndarray:
    return np.asarray(obs["observation"], dtype=np.float64)


# -- OpenEnvEnv --------------------------------------------------------------------------------


def test_endpoints_accepts_every_url_form() -> None:
    expected = ("http://h:1", "ws://h:1/ws")
    for url in ("openenv+ws://h:1", "http://h:1", "http://h:1/", "ws://h:1/ws", "ws://h:1"):
        assert endpoints(url) == expected, url
    assert endpoints("openenv+wss://h:1/p") == ("https://h:1/p", "wss://h:1/p/ws")
    with pytest.raises(ValueError, match="not an OpenEnv server URL"):
        endpoints("tcp://h:1")


def test_spaces_and_passive_checks(peer_url: str) -> None:
    port = peer_url.rsplit(":", 1)[1]
    for url in (f"openenv+ws://127.0.0.1:{port}", peer_url, f"ws://127.0.0.1:{port}/ws"):
        with OpenEnvEnv(url) as env:
            assert list(env.action_space.keys()) == ["action"]  # metadata excluded
            assert list(env.observation_space.keys()) == ["observation"]  # reward/done excluded
            env_reset_passive_checker(env, seed=0)
            env_step_passive_checker(env, {"action": 1})


def test_check_env_passes(bounded_url: str) -> None:
    with OpenEnvEnv(f"openenv+ws://{bounded_url.split('://')[1]}") as env:
        assert env.action_space["action"] == gymnasium.spaces.Discrete(2)
        check_env(env, skip_render_check=True)


def test_rollout_matches_gymnasium(peer_url: str) -> None:
    rng = np.random.default_rng(0)
    local = _cartpole()
    with OpenEnvEnv(peer_url) as env:
        obs, info = env.reset(seed=5)
        local_obs, _ = local.reset(seed=5)
        assert info == {} and np.array_equal(_single_obs(obs), local_obs)
        episodes = 0
        for t in range(STEPS):
            action = int(rng.integers(2))
            obs, reward, terminated, truncated, info = env.step({"action": action})
            local_obs, local_reward, local_term, local_trunc, _ = local.step(action)
            assert obs in env.observation_space
            assert np.array_equal(_single_obs(obs), local_obs)
            assert (reward, terminated, truncated, info) == (
                local_reward,
                local_term or local_trunc,
                False,
                {},
            )
            if terminated:
                episodes += 1
                obs, _ = env.reset(seed=t)
                assert np.array_equal(_single_obs(obs), local.reset(seed=t)[0])
        assert episodes > 3


def test_state_has_step_count_and_episode_id(peer_url: str) -> None:
    with OpenEnvEnv(peer_url) as env:
        env.reset(seed=0, options={"episode_id": "ep-7"})
        for _ in range(3):
            env.step({"action": 0})
        assert env.state() == {"episode_id": "ep-7", "step_count": 3}


def test_close_is_idempotent_and_final(peer_url: str) -> None:
    env = OpenEnvEnv(peer_url)
    env.close()
    env.close()
    with pytest.raises(ConnectionLostError, match="closed"):
        env.reset()


def test_send_ahead_replies_are_read_by_the_matching_call(peer_url: str) -> None:
    local = _cartpole()
    with OpenEnvEnv(peer_url) as env:
        env.send_ahead("reset", reset_data(1, None))
        obs, _ = env.reset(seed=2)  # not the reset sent ahead: its reply is dropped, then redone
        assert np.array_equal(_single_obs(obs), local.reset(seed=2)[0])
        env.send_ahead("step", {"action": 1})
        obs, reward, terminated, _, _ = env.step({"action": 1})
        local_obs, local_reward, local_terminated, _, _ = local.step(1)
        assert np.array_equal(_single_obs(obs), local_obs)
        assert (reward, terminated) == (local_reward, local_terminated)
        env.send_ahead("step", {"action": 0})
        assert env.state()["step_count"] == 2  # state() first reads the step sent ahead


# -- OpenEnvVectorEnv --------------------------------------------------------------------------


def _assert_batch(ours: Any, ref: Any, space: gymnasium.Space[Any]) -> None:
    obs, rewards, terms, truncs, infos = ours
    ref_obs, ref_rewards, ref_terms, ref_truncs, ref_infos = ref
    assert obs in space
    assert np.array_equal(_single_obs(obs), ref_obs)
    assert rewards.dtype == np.float64 and rewards.shape == (NUM_ENVS,)
    assert terms.dtype == np.bool_ and truncs.dtype == np.bool_ and terms.shape == (NUM_ENVS,)
    assert np.array_equal(rewards, ref_rewards)
    assert np.array_equal(terms, ref_terms | ref_truncs) and not truncs.any()
    assert np.array_equal(infos.get("_final_obs"), ref_infos.get("_final_obs"))
    for i in np.flatnonzero(infos.get("_final_obs", [])):
        assert np.array_equal(_single_obs(infos["final_obs"][i]), ref_infos["final_obs"][i])


@pytest.mark.parametrize("mode", list(AutoresetMode))
def test_vector_matches_sync_vector_env(peer_url: str, mode: AutoresetMode) -> None:
    rng = np.random.default_rng(1)
    ref = SyncVectorEnv([_cartpole] * NUM_ENVS, autoreset_mode=mode)
    with OpenEnvVectorEnv(peer_url, NUM_ENVS, autoreset_mode=mode.value) as env:
        assert env.metadata["autoreset_mode"] is mode and env.autoreset_mode is mode
        obs, infos = env.reset(seed=3)
        assert infos == {} and np.array_equal(_single_obs(obs), ref.reset(seed=3)[0])
        done = np.zeros(NUM_ENVS, dtype=bool)
        for t in range(STEPS // 2):
            if mode is AutoresetMode.DISABLED and done.any():
                seeds = [100 * t + i for i in range(NUM_ENVS)]
                obs, _ = env.reset(seed=seeds, options={"reset_mask": done})
                ref_obs, _ = ref.reset(seed=seeds, options={"reset_mask": done})
                assert np.array_equal(_single_obs(obs), ref_obs)
            actions = rng.integers(0, 2, NUM_ENVS)
            result = env.step({"action": actions})
            ref_result = ref.step(actions)
            _assert_batch(result, ref_result, env.observation_space)
            done = result[2] | result[3]
    ref.close()


def test_vector_round_robin_state_and_errors(peer_url: str) -> None:
    urls = [peer_url, f"openenv+ws://{peer_url.split('://')[1]}"]
    with OpenEnvVectorEnv(urls, 3) as env:
        assert env.urls == [urls[0], urls[1], urls[0]]
        env.reset(seed=0, options={"episode_id": "v"})
        env.step({"action": np.array([0, 1, 0])})
        assert env.state() == [{"episode_id": "v", "step_count": 1}] * 3
        with pytest.raises(RemoteError) as caught:
            env.step({"action": np.array([0, 7, 0])})
        assert caught.value.remote_type == "EXECUTION_ERROR"
        assert [s["step_count"] for s in env.state()] == [2, 1, 2]  # every reply was drained


# -- errors ------------------------------------------------------------------------------------


def test_wrong_actions_give_typed_errors(peer_url: str, bounded_url: str) -> None:
    with OpenEnvEnv(bounded_url) as env:
        env.reset(seed=0)
        with pytest.raises(RemoteError) as caught:
            env.step({"action": 5})  # fails OpenEnv's pydantic validation
        assert caught.value.remote_type == "VALIDATION_ERROR" and "less_than_equal" in str(
            caught.value
        )
    with OpenEnvEnv(peer_url) as env:
        env.reset(seed=0)
        with pytest.raises(RemoteError) as caught:
            env.step({"action": 7})  # valid for the schema, rejected by CartPole
        assert caught.value.remote_type == "EXECUTION_ERROR"
        with pytest.raises(InvalidActionError):
            env.step({"action": "left"})  # not convertible to the schema's integer
        env.step({"action": 1})  # the session survives the errors


def test_dead_port_gives_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"openenv+ws://127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(ConnectError) as caught:
        OpenEnvEnv(url, connect_timeout=2)
    assert caught.value.url == url and str(caught.value).startswith(url)
    with pytest.raises(ConnectError):
        OpenEnvVectorEnv(url, 2, connect_timeout=2)


def test_timeout_lost_server_and_capacity(fake_url: str) -> None:
    with OpenEnvEnv(fake_url, call_timeout=0.3) as env:
        obs, _ = env.reset()
        assert obs == {"x": np.float64(1.5)} and obs in env.observation_space
        with pytest.raises(CallTimeoutError, match="step"):
            env.step({"action": 0})
        with pytest.raises(ConnectionLostError):  # a late reply must not answer the next call
            env.step({"action": 1})
    with OpenEnvEnv(fake_url) as env:
        env.reset()
        with pytest.raises(ConnectionLostError):
            env.step({"action": 1})
    with OpenEnvEnv(f"{fake_url}/full") as env, pytest.raises(CapacityError):
        time.sleep(0.2)  # the error and the close arrive before the first request
        env.reset()
