"""ClientOptions: one frozen object for how clients connect, equal to the keyword arguments."""

from __future__ import annotations

import dataclasses
import inspect
import pickle
import socket
import ssl
from collections.abc import Callable, Iterator
from typing import Any

import gymnasium
import pytest

from openenv_gym.client.connection import Connection
from openenv_gym.client.env import RemoteEnv
from openenv_gym.client.options import UNSET, ClientOptions
from openenv_gym.client.shards import check_spaces
from openenv_gym.client.vector_env import RemoteVectorEnv
from openenv_gym.errors import ConnectError, InsecureTokenError, ShardMismatchError
from openenv_gym.protocol.messages import MakeReply
from openenv_gym.protocol.spaces import space_to_data
from openenv_gym.providers.local import LocalProvider

OPTION_KWARGS = (
    "token",
    "ssl_context",
    "connect_timeout",
    "call_timeout",
    "compression",
    "busy_wait",
)


@pytest.fixture(scope="module")
def server() -> Iterator[LocalProvider]:
    with LocalProvider(["CartPole-v1"]) as provider:
        yield provider


def test_options_defaults_are_connections_and_written_nowhere_else() -> None:
    defaults = ClientOptions()
    connection = inspect.signature(Connection).parameters
    for field in dataclasses.fields(ClientOptions):
        assert getattr(defaults, field.name) == connection[field.name].default, field.name
    for public in (RemoteEnv, RemoteVectorEnv):
        parameters = inspect.signature(public).parameters
        assert parameters["options"].default is None
        for name in OPTION_KWARGS:  # a keyword argument leaves the field alone unless given
            assert parameters[name].default is UNSET, f"{public.__name__}({name}=...)"


def test_options_are_frozen_and_hide_the_token() -> None:
    options = ClientOptions(token="s3cret")
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.call_timeout = 1.0  # type: ignore[misc]
    assert "s3cret" not in repr(options)
    assert pickle.loads(pickle.dumps(options)) == options


def test_options_resolve_overrides_only_the_given_fields() -> None:
    base = ClientOptions(call_timeout=3.0, token="t")
    resolved = ClientOptions.resolve(base, call_timeout=None, token=UNSET)
    assert resolved == ClientOptions(call_timeout=None, token="t")
    assert ClientOptions.resolve(None, connect_timeout=UNSET) == ClientOptions()
    with pytest.raises(TypeError):
        ClientOptions.resolve(None, timeout=1.0)


def test_options_owned_servers_token_fills_in_only_a_missing_one() -> None:
    assert ClientOptions().with_default_token("owned").token == "owned"
    assert ClientOptions(token="mine").with_default_token("owned").token == "mine"
    assert ClientOptions().with_default_token(None).token is None


@pytest.mark.parametrize(
    "make",
    [
        lambda url, **kw: RemoteEnv("CartPole-v1", url=url, **kw),
        lambda url, **kw: RemoteVectorEnv("CartPole-v1", 2, urls=[url], **kw),
    ],
    ids=["RemoteEnv", "RemoteVectorEnv"],
)
def test_options_object_and_keyword_arguments_are_equivalent(
    server: LocalProvider, make: Callable[..., Any]
) -> None:
    url = server.urls[0]
    options = ClientOptions(call_timeout=7.0, connect_timeout=4.0)
    with (
        make(url, call_timeout=7.0, connect_timeout=4.0) as by_kwargs,
        make(url, options=options) as by_object,
        make(
            url, options=dataclasses.replace(options, call_timeout=1.0), call_timeout=7.0
        ) as overridden,
    ):
        assert by_kwargs.options == by_object.options == overridden.options == options


def test_options_pickled_remote_env_keeps_options_but_not_the_ssl_context(
    server: LocalProvider,
) -> None:
    options = ClientOptions(call_timeout=9.0, ssl_context=ssl.create_default_context())
    with RemoteEnv("CartPole-v1", url=server.urls[0], options=options) as env:
        clone = pickle.loads(pickle.dumps(env))
        try:
            assert clone.options == dataclasses.replace(options, ssl_context=None)
            clone.reset(seed=0)
        finally:
            clone.close()


def test_options_allow_insecure_token_reaches_the_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(address: tuple[str, int], *args: object, **kwargs: object) -> socket.socket:
        raise OSError("dialling is disabled in this test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    remote = "ws://10.0.0.1:9"
    with pytest.raises(InsecureTokenError):
        RemoteEnv("CartPole-v1", url=remote, token="t")
    with pytest.raises(ConnectError, match="dialling is disabled") as excinfo:
        RemoteEnv(
            "CartPole-v1", url=remote, options=ClientOptions(allow_insecure_token=True), token="t"
        )
    assert not isinstance(excinfo.value, InsecureTokenError)


def _reply(
    observation_space: gymnasium.Space[Any], action_space: gymnasium.Space[Any]
) -> MakeReply:
    return MakeReply(
        observation_space=space_to_data(observation_space),
        action_space=space_to_data(action_space),
        metadata={},
        render_mode=None,
        max_episode_steps=None,
        reward_threshold=None,
        nondeterministic=False,
    )


def test_shard_mismatch_error_names_both_urls_and_expected_vs_actual() -> None:
    obs, act = gymnasium.spaces.Discrete(4), gymnasium.spaces.Discrete(2)
    check_spaces("ws://a:1", "ws://b:2", (obs, act), _reply(obs, act))  # equal: no error
    with pytest.raises(ValueError) as excinfo:  # also a ValueError, and raised locally
        check_spaces("ws://a:1", "ws://b:2", (obs, act), _reply(obs, gymnasium.spaces.Discrete(3)))
    error = excinfo.value
    assert isinstance(error, ShardMismatchError)
    assert (error.url, error.first_url, error.what) == ("ws://b:2", "ws://a:1", "action_space")
    text = str(error)
    assert "ws://a:1" in text and "ws://b:2" in text
    assert "Discrete(2)" in text and "Discrete(3)" in text
    assert pickle.loads(pickle.dumps(error)).expected == "Discrete(2)"
