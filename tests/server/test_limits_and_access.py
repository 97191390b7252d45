"""Access control, capacity limits, idle timeout and session threads, on live servers."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

import openenv_gym
from openenv_gym.errors import AuthenticationError, CallTimeoutError, CapacityError
from openenv_gym.protocol import codec
from openenv_gym.protocol.messages import PROTOCOL_VERSION, Op, Status
from openenv_gym.providers.local import READY_PREFIX, LocalProvider

SLOW = "openenv_gym.testing.envs:SlowEnv"


@pytest.fixture(scope="module")
def guarded() -> Iterator[LocalProvider]:
    args = ["--max-sessions", "2", "--max-envs-per-session", "8", "--max-envs", "10"]
    with LocalProvider(["CartPole-v1"], extra_args=args, token="s3cret") as provider:
        yield provider


@pytest.fixture
def with_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENENV_GYM_TOKEN", "s3cret")


def test_token_missing_or_wrong_is_refused_before_any_session(guarded: LocalProvider) -> None:
    with pytest.raises(AuthenticationError, match=guarded.urls[0]):
        openenv_gym.RemoteEnv("CartPole-v1", url=guarded.urls[0])
    with pytest.raises(AuthenticationError, match="HTTP 401"):
        openenv_gym.RemoteEnv("CartPole-v1", url=guarded.urls[0], token="guess")
    with openenv_gym.RemoteEnv("CartPole-v1", url=guarded.urls[0], token="s3cret") as env:
        assert env.reset(seed=0)[0].shape == (4,)


def test_token_from_the_environment(guarded: LocalProvider, with_token: None) -> None:
    with openenv_gym.RemoteEnv("CartPole-v1", url=guarded.urls[0]) as env:
        assert env.reset(seed=0)[0].shape == (4,)


def test_session_limit_is_a_typed_error_that_names_it(
    guarded: LocalProvider, with_token: None
) -> None:
    first = openenv_gym.RemoteEnv("CartPole-v1", url=guarded.urls[0])
    second = openenv_gym.RemoteEnv("CartPole-v1", url=guarded.urls[0])
    try:
        with pytest.raises(CapacityError, match=r"at capacity: 2/2 sessions"):
            openenv_gym.RemoteEnv("CartPole-v1", url=guarded.urls[0])
    finally:
        first.close()
        second.close()
    with openenv_gym.RemoteEnv("CartPole-v1", url=guarded.urls[0]) as again:  # counts returned
        assert again.reset(seed=0)[0].shape == (4,)


def test_env_limits_are_typed_errors_that_name_them(
    guarded: LocalProvider, with_token: None
) -> None:
    with pytest.raises(CapacityError, match="asked for 9 envs per session, the limit is 8"):
        openenv_gym.RemoteVectorEnv("CartPole-v1", 9, urls=guarded.urls)
    with (
        openenv_gym.RemoteVectorEnv("CartPole-v1", 6, urls=guarded.urls),
        pytest.raises(CapacityError, match=r"at capacity: 6/10 envs \(asked for 6 more\)"),
    ):
        openenv_gym.RemoteVectorEnv("CartPole-v1", 6, urls=guarded.urls)
    with openenv_gym.RemoteVectorEnv("CartPole-v1", 8, urls=guarded.urls) as envs:
        assert envs.reset(seed=0)[0].shape == (8, 4)


def test_idle_sessions_are_closed_with_going_away() -> None:
    with (
        LocalProvider(["CartPole-v1"], extra_args=["--idle-timeout", "0.5"]) as provider,
        connect(provider.urls[0], compression=None, proxy=None) as ws,
    ):
        ws.send(codec.encode([int(Op.HELLO), 1, {"protocol_version": PROTOCOL_VERSION}]))
        assert codec.decode(ws.recv(timeout=5))[0] == Status.OK
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)  # nothing more is sent: the server closes the session
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        assert closed.value.rcvd.reason == "idle timeout"


def test_threads_keep_other_sessions_served_while_an_env_hangs() -> None:
    with LocalProvider(
        ["CartPole-v1", SLOW], extra_args=["--threads", "--env-kwargs-allow", "delay"]
    ) as provider:
        hung = openenv_gym.RemoteEnv(SLOW, url=provider.urls[0], delay=3.0, call_timeout=0.5)
        hung.reset(seed=0)
        with pytest.raises(CallTimeoutError, match=provider.urls[0]):
            hung.step(0)
        with openenv_gym.RemoteEnv("CartPole-v1", url=provider.urls[0], call_timeout=2) as env:
            env.reset(seed=0)
            for _ in range(20):  # answered while the other session's step still sleeps
                assert env.step(np.int64(1))[0].shape == (4,)
        hung.close()


def test_serving_beyond_loopback_without_token_warns_loudly() -> None:
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "openenv_gym",
            "serve",
            "CartPole-v1",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--announce",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().startswith(READY_PREFIX)
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=10)
    assert "WITHOUT A TOKEN" in stderr
