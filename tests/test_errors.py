"""The exception tree: remote errors keep their type, pickle, and survive being rebuilt."""

from __future__ import annotations

import builtins
import pickle
from collections.abc import Callable, Iterator
from typing import Any

import gymnasium
import numpy as np
import pytest

from openenv_gym import errors
from openenv_gym.errors import (
    InsecureTokenError,
    KwargNotAllowedError,
    OpenEnvError,
    RemoteAssertionError,
    RemoteError,
    RemoteGymnasiumError,
    RemoteKeyError,
    RemoteLookupError,
    RemoteTypeError,
    RemoteValueError,
    remote_error,
)
from openenv_gym.providers.local import LocalProvider

URL = "ws://127.0.0.1:8765"
TRACEBACK = 'Traceback (most recent call last):\n  File "env.py", line 1\nValueError: bad\n'

REMOTE_TYPES = sorted(errors._CLASSES)


def _fields(error: RemoteError) -> tuple[object, ...]:
    return (type(error), error.url, error.remote_type, error.message, error.remote_traceback)


@pytest.mark.parametrize("remote_type", REMOTE_TYPES)
def test_remote_error_pickles_with_every_field(remote_type: str) -> None:
    error = remote_error(URL, remote_type, "it broke: 'x'", TRACEBACK)
    error.env_index = 3  # type: ignore[attr-defined]  # state a consumer attached
    clone = pickle.loads(pickle.dumps(error))
    assert _fields(clone) == _fields(error)
    assert str(clone) == str(error)
    assert clone.env_index == 3


@pytest.mark.parametrize("remote_type", REMOTE_TYPES)
def test_remote_error_rebuilds_from_its_own_text(remote_type: str) -> None:
    error = remote_error(URL, remote_type, "it broke", TRACEBACK)
    rebuilt = type(error)(str(error))
    assert _fields(rebuilt) == _fields(error)
    assert str(rebuilt) == str(error)


@pytest.mark.parametrize("remote_type", REMOTE_TYPES)
def test_remote_error_is_an_instance_of_the_type_it_stands_for(remote_type: str) -> None:
    error = remote_error(URL, remote_type, "it broke")
    module, _, name = remote_type.rpartition(".")
    namespace = {
        "": vars(builtins),
        "gymnasium.error": vars(gymnasium.error),
        "openenv_gym.errors": vars(errors),
    }
    assert isinstance(error, namespace[module][name])
    assert isinstance(error, RemoteError) and type(error).__module__ == "openenv_gym.errors"
    assert getattr(errors, type(error).__qualname__) is type(error)


def test_remote_error_message_rewrite_keeps_url_and_type() -> None:
    # gymnasium.make does this to a TypeError from the env creator; TorchRL's GymEnv reads it.
    error = remote_error(URL, "TypeError", "got an unexpected keyword argument 'bogus'")
    with pytest.raises(TypeError) as excinfo:
        try:
            raise error
        except TypeError as exc:
            raise type(exc)(f"{exc} was raised from the environment creator") from exc
    rewritten = excinfo.value
    assert isinstance(rewritten, RemoteTypeError)
    assert rewritten.url == URL and rewritten.remote_type == "TypeError"
    expected = "got an unexpected keyword argument 'bogus' was raised from the environment creator"
    assert rewritten.message == expected
    assert str(rewritten).count("got an unexpected keyword argument") == 1
    assert str(rewritten).count(URL) == 1


def test_remote_error_rebuilt_from_an_instance_copies_it() -> None:
    # AsyncVectorEnv's parent does `raise exctype(value)` with the worker's exception.
    error = remote_error(URL, "AssertionError", "2 (<class 'int'>) invalid", TRACEBACK)
    rebuilt = type(error)(error)
    assert _fields(rebuilt) == _fields(error)


def test_remote_error_from_plain_text_has_the_text_and_no_url() -> None:
    error = RemoteValueError("amount must be in 0..4, got 9")
    assert str(error) == "amount must be in 0..4, got 9"
    assert (error.url, error.remote_type) == ("", "ValueError")
    assert str(type(error)(str(error))) == str(error)
    assert str(RemoteKeyError()) == "" and isinstance(RemoteKeyError(), KeyError)


def test_remote_error_from_a_foreign_builtin_type_is_caught_as_it() -> None:
    with pytest.raises(ValueError, match="bad seed"):
        raise remote_error(URL, "ValueError", "bad seed")
    with pytest.raises(KeyError):
        raise remote_error(URL, "builtins.KeyError", "'x'")
    assert isinstance(remote_error(URL, "KeyError", "'x'"), RemoteLookupError)
    assert type(remote_error(URL, "gymnasium.error.Error", "x")) is RemoteGymnasiumError


def test_remote_error_of_a_server_policy_error_is_a_type_error() -> None:
    error = remote_error(
        URL,
        "openenv_gym.server.catalog.KwargNotAllowedError",
        "env 'CartPole-v1' got an unexpected keyword argument 'bogus'",
    )
    assert isinstance(error, RemoteTypeError) and isinstance(error, KwargNotAllowedError)
    assert "'bogus'" in str(type(error)(f"{error}, retrying"))


@pytest.mark.parametrize(
    "remote_type",
    [
        "ConnectionResetError",  # would pass for this library's own connection errors
        "TimeoutError",
        "StopIteration",  # control flow
        "SystemExit",  # must not stop the client
        "KeyboardInterrupt",
        "mylib.CustomError",
        "VALIDATION_ERROR",
    ],
)
def test_remote_error_of_an_unmixable_type_is_a_plain_remote_error(remote_type: str) -> None:
    error = remote_error(URL, remote_type, "x")
    assert type(error) is RemoteError
    assert not isinstance(error, OSError)
    assert _fields(pickle.loads(pickle.dumps(error))) == _fields(error)


def test_remote_error_built_directly_keeps_three_argument_form() -> None:
    error = RemoteError(URL, "acme.ShardError", "shards disagree")
    assert str(error) == f"{URL}: acme.ShardError: shards disagree"
    assert _fields(type(error)(str(error))) == _fields(error)


def _every_error_class() -> list[type[BaseException]]:
    found = {value for value in vars(errors).values() if isinstance(value, type)}
    return sorted(
        (cls for cls in found if issubclass(cls, OpenEnvError)), key=lambda cls: cls.__name__
    )


SAMPLES: dict[str, tuple[object, ...]] = {
    "MessageTooLargeError": (10, 5),
    "VersionMismatchError": (URL, 1, 2),
    "EndpointError": (URL, "x"),
    "ConnectError": (URL, "x"),
    "AuthenticationError": (URL, "x"),
    "InsecureTokenError": (URL,),
    "ConnectionLostError": (URL, "x"),
    "CallTimeoutError": (URL, "step", 1.5),
    "UnknownEnvError": ("X-v0", ["CartPole-v1"], False),
    "CapacityError": ("sessions", 2, 2),
    "KwargNotAllowedError": ("CartPole-v1", "bogus", ["render_mode"]),
    "AttributeNotAllowedError": ("CartPole-v1", "_x", "read", []),
    "RestartUnsupportedError": ("DockerProvider", 1),
    "ShardMismatchError": (URL, "ws://127.0.0.1:2", "action_space", "Discrete(2)", "Discrete(3)"),
    "SandboxUnavailableError": ("uid", {"uid": "not root"}),
}


@pytest.mark.parametrize("cls", _every_error_class(), ids=lambda cls: cls.__name__)
def test_every_error_class_pickles(cls: type[BaseException]) -> None:
    args = SAMPLES.get(cls.__name__)
    if args is None:
        args = (URL, "ValueError", "x") if issubclass(cls, RemoteError) else ("x",)
    error = cls(*args)
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is cls and str(clone) == str(error)


def test_insecure_token_error_names_the_url_and_the_opt_in() -> None:
    text = str(InsecureTokenError("ws://10.0.0.1:8765"))
    assert text.startswith("ws://10.0.0.1:8765: ")
    assert "wss://" in text and "allow_insecure_token=True" in text
    assert isinstance(InsecureTokenError("ws://h:1"), errors.ConnectError)


def test_remote_assertion_error_is_an_assertion_error() -> None:
    with pytest.raises(AssertionError, match=r"invalid"):
        raise RemoteAssertionError(URL, "AssertionError", "7 (<class 'int'>) invalid")


# --- errors through real consumers: gymnasium.make and AsyncVectorEnv over a live server ---


@pytest.fixture(scope="module")
def cartpole_url() -> Iterator[str]:
    with LocalProvider(["CartPole-v1"]) as provider:
        yield provider.urls[0]


def _make_cartpole(url: str) -> Callable[[], gymnasium.Env[Any, Any]]:
    return lambda: gymnasium.make("openenv_gym:openenv/CartPole-v1", url=url)


def _assert_remote_invalid_action(error: BaseException, url: str) -> None:
    assert isinstance(error, RemoteAssertionError)
    assert error.url == url and error.remote_type == "AssertionError"
    assert "invalid" in error.message


@pytest.mark.timeout(60)
def test_async_vector_env_raises_the_remote_error_instead_of_hanging(cartpole_url: str) -> None:
    envs = gymnasium.vector.AsyncVectorEnv([_make_cartpole(cartpole_url)] * 2)
    try:
        envs.reset(seed=0)
        with pytest.raises(AssertionError) as excinfo:
            envs.step(np.array([0, 7]))  # 7 is outside Discrete(2): CartPole asserts
        _assert_remote_invalid_action(excinfo.value, cartpole_url)
    finally:
        envs.close(terminate=True)


@pytest.mark.timeout(60)
def test_make_vec_async_raises_the_remote_error_instead_of_hanging(cartpole_url: str) -> None:
    envs = gymnasium.make_vec(
        "openenv_gym:openenv/CartPole-v1", 2, vectorization_mode="async", url=cartpole_url
    )
    try:
        envs.reset(seed=0)
        with pytest.raises(AssertionError) as excinfo:
            envs.step(np.array([7, 0]))
        _assert_remote_invalid_action(excinfo.value, cartpole_url)
    finally:
        envs.close()


def test_gymnasium_make_with_an_unknown_kwarg_is_a_remote_type_error(cartpole_url: str) -> None:
    with pytest.raises(TypeError) as excinfo:
        gymnasium.make("openenv_gym:openenv/CartPole-v1", url=cartpole_url, bogus=1)
    error = excinfo.value
    assert isinstance(error, RemoteTypeError)
    assert "'bogus'" in error.message and error.url == cartpole_url
    # gymnasium.make re-raised it with its own text appended; the remote text is not doubled.
    assert str(error).startswith(f"{cartpole_url}: ") and "was raised from" in error.message
    assert str(error).count("unexpected keyword argument 'bogus'") == 1
    # TorchRL's GymEnv re-raises with its own text the same way.
    retried = type(error)(f"{error} (retried without frameskip)")
    assert isinstance(retried, RemoteTypeError) and retried.url == cartpole_url
    assert "'bogus'" in str(retried)


def test_error_tree_holds_the_errors_of_every_layer() -> None:
    assert issubclass(errors.SessionStateError, errors.ProtocolError)
    assert issubclass(errors.ImageBuildError, errors.ServerStartError)
    assert issubclass(errors.TransportError, errors.OpenEnvError)
    assert issubclass(errors.ShardMismatchError, ValueError)
    assert issubclass(errors.RestartUnsupportedError, NotImplementedError)
    assert issubclass(errors.SandboxUnavailableError, PermissionError)
    for name in ("SessionStateError", "ImageBuildError", "TransportError", "ShardMismatchError"):
        assert name in (errors.__doc__ or ""), name


def test_shard_mismatch_error_names_both_servers_and_the_difference() -> None:
    text = str(
        errors.ShardMismatchError(
            URL, "ws://127.0.0.1:2", "action_space", "Discrete(2)", "Discrete(3)"
        )
    )
    assert URL in text and "ws://127.0.0.1:2" in text and "action_space" in text
    assert "Discrete(2)" in text and "Discrete(3)" in text
