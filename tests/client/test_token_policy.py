"""A client sends its token only over TLS or to loopback, unless it opts in."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from openenv_gym.client.connection import (
    ALLOW_INSECURE_TOKEN_ENV,
    Connection,
    probe,
    token_allowed,
)
from openenv_gym.errors import AuthenticationError, ConnectError, InsecureTokenError
from openenv_gym.providers.local import LocalProvider

TOKEN = "s3cret"
REMOTE = "ws://10.0.0.1:9"


@pytest.mark.parametrize(
    "url",
    [
        "ws://127.0.0.1:8765",
        "ws://127.8.9.10:1/path",
        "ws://[::1]:8765",
        "ws://[::ffff:127.0.0.1]:8765",
        "ws://localhost:8765",
        "ws://LocalHost:8765",
        "wss://10.0.0.1:8765",
        "wss://envs.example.com",
    ],
)
def test_token_allowed_over_tls_or_to_loopback(url: str) -> None:
    assert token_allowed(url)


@pytest.mark.parametrize(
    "url",
    [
        REMOTE,
        "ws://envs.example.com:8765",
        "ws://localhost.example.com:8765",  # a name is not resolved, nor trusted by its prefix
        "ws://0.0.0.0:8765",
        "ws://[::ffff:10.0.0.1]:8765",
        "ws://[2001:db8::1]:8765",
        "http://127.0.0.1:8765",  # not a WebSocket URL at all
        "not a url",
    ],
)
def test_token_not_allowed_in_clear_text_elsewhere(url: str) -> None:
    assert not token_allowed(url)


@pytest.fixture
def dials(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[object, ...]]]:
    """Record every attempt to open a TCP connection, and fail it without touching the network."""
    attempts: list[tuple[object, ...]] = []

    def refuse(address: tuple[str, int], *args: object, **kwargs: object) -> socket.socket:
        attempts.append(address)
        raise OSError("dialling is disabled in this test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.delenv("OPENENV_GYM_TOKEN", raising=False)
    monkeypatch.delenv(ALLOW_INSECURE_TOKEN_ENV, raising=False)
    yield attempts


def test_connection_refuses_a_clear_text_token_before_dialling(
    dials: list[tuple[object, ...]],
) -> None:
    with pytest.raises(InsecureTokenError) as excinfo:
        Connection(REMOTE, token=TOKEN)
    assert excinfo.value.url == REMOTE
    assert "allow_insecure_token=True" in str(excinfo.value) and TOKEN not in str(excinfo.value)
    assert isinstance(excinfo.value, ConnectError)
    assert dials == []


def test_connection_refuses_the_environment_token_too(
    dials: list[tuple[object, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENENV_GYM_TOKEN", TOKEN)
    with pytest.raises(InsecureTokenError):
        probe(REMOTE, timeout=1)
    assert dials == []


def test_connection_opt_in_dials_with_a_clear_text_token(
    dials: list[tuple[object, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConnectError, match="dialling is disabled") as excinfo:
        Connection(REMOTE, token=TOKEN, allow_insecure_token=True)
    assert not isinstance(excinfo.value, InsecureTokenError)
    monkeypatch.setenv(ALLOW_INSECURE_TOKEN_ENV, "1")
    with pytest.raises(ConnectError, match="dialling is disabled"):
        Connection(REMOTE, token=TOKEN)
    assert dials == [("10.0.0.1", 9), ("10.0.0.1", 9)]


def test_connection_without_a_token_or_over_tls_is_not_refused(
    dials: list[tuple[object, ...]],
) -> None:
    with pytest.raises(ConnectError, match="dialling is disabled"):
        Connection(REMOTE)
    with pytest.raises(ConnectError, match="dialling is disabled"):
        Connection("wss://10.0.0.1:9", token=TOKEN)
    assert dials == [("10.0.0.1", 9), ("10.0.0.1", 9)]


def test_connection_with_a_token_and_an_invalid_url_says_so(
    dials: list[tuple[object, ...]],
) -> None:
    with pytest.raises(ConnectError, match="invalid url") as excinfo:
        Connection("http://127.0.0.1:1", token=TOKEN)
    assert not isinstance(excinfo.value, InsecureTokenError)
    assert dials == []


@pytest.fixture(scope="module")
def guarded() -> Iterator[LocalProvider]:
    with LocalProvider(["CartPole-v1"], token=TOKEN) as provider:
        yield provider


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_connection_sends_the_token_to_a_loopback_server(guarded: LocalProvider, host: str) -> None:
    url = guarded.urls[0].replace("127.0.0.1", host)
    connection = Connection(url, token=TOKEN)
    try:
        assert "CartPole-v1" in connection.hello.specs
    finally:
        connection.close()
    with pytest.raises(AuthenticationError):
        probe(url, token="guess")
