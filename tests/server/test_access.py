"""One access check (token, Origin, Host) on every surface of the main port, refusals answered."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from http import HTTPStatus

import pytest

from openenv_gym.protocol import codec
from openenv_gym.protocol.messages import PROTOCOL_VERSION, Op, Status
from openenv_gym.providers.local import LocalProvider
from openenv_gym.server.access import AccessPolicy
from openenv_gym.testing.rawws import (
    client_frame,
    raw_connection,
    read_frames,
    read_until_eof,
)

TOKEN = "s3cret"
BEARER = ("Authorization", f"Bearer {TOKEN}")
EVIL = ("Origin", "https://evil.example")
APP = "https://app.example"
SURFACES = ["/", "/ws", "/health", "/schema", "/metadata"]


@pytest.fixture(scope="module")
def guarded() -> Iterator[LocalProvider]:
    args = ["--allow-origin", APP, "--allow-host", "env.internal"]
    with LocalProvider(["CartPole-v1"], extra_args=args, token=TOKEN) as provider:
        yield provider


@pytest.fixture(scope="module")
def open_server() -> Iterator[LocalProvider]:
    with LocalProvider(["CartPole-v1"]) as provider:
        yield provider


def _request(
    url: str, path: str, headers: list[tuple[str, str]], *, host: str = "127.0.0.1"
) -> tuple[int, bytes, bytes]:
    """Send one upgrade request by hand; return the status, body and anything after the head."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in headers),
    ]
    sock = raw_connection(url, 5.0)
    try:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(4096)
            assert chunk, f"the server closed without a reply: {received!r}"
            received += chunk
        if not received.startswith(b"HTTP/1.1 101"):  # refusals and HTTP replies end in EOF
            received += read_until_eof(sock, 5.0)[0]
    finally:
        sock.close()
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split()[1]), body, head


# ------------------------------------------------------------------ the policy itself


def test_access_policy_refuses_two_authorization_headers_with_400() -> None:
    policy = AccessPolicy.from_options(TOKEN)
    refusal = policy.check([("Host", "127.0.0.1"), BEARER, BEARER])
    assert refusal is not None and refusal.status is HTTPStatus.BAD_REQUEST
    assert "more than one authorization header" in refusal.reason.lower()


def test_access_policy_refuses_unlisted_origins_and_admits_listed_ones() -> None:
    policy = AccessPolicy.from_options(None, [APP + "/"])
    refusal = policy.check([("Host", "localhost:8765"), EVIL])
    assert refusal is not None and refusal.status is HTTPStatus.FORBIDDEN
    assert "'https://evil.example' is not allowed; allowed: https://app.example" in refusal.reason
    assert policy.check([("Host", "localhost:8765"), ("Origin", APP)]) is None


def test_access_policy_refuses_rebound_hosts_unless_a_token_guards_the_server() -> None:
    refusal = AccessPolicy.from_options(None).check([("Host", "attacker.example:8765")])
    assert refusal is not None and refusal.status is HTTPStatus.FORBIDDEN
    assert AccessPolicy.from_options(None).check([("Host", "[::1]:8765")]) is None
    assert AccessPolicy.from_options(TOKEN).check([("Host", "envs.example"), BEARER]) is None


def test_access_policy_probe_needs_no_token_but_still_checks_origin() -> None:
    policy = AccessPolicy.from_options(TOKEN)
    assert policy.check([("Host", "127.0.0.1")], require_token=False) is None
    refusal = policy.check([("Host", "127.0.0.1"), EVIL], require_token=False)
    assert refusal is not None and refusal.status is HTTPStatus.FORBIDDEN


# ------------------------------------------------------------------ a live server


def test_server_answers_two_authorization_headers_with_400_not_a_dropped_connection(
    guarded: LocalProvider,
) -> None:
    status, body, _ = _request(guarded.urls[0], "/", [BEARER, BEARER])
    assert status == 400
    assert b"more than one Authorization header" in body


@pytest.mark.parametrize("path", SURFACES)
def test_server_refuses_a_foreign_origin_on_every_surface_with_403(
    guarded: LocalProvider, path: str
) -> None:
    status, body, _ = _request(guarded.urls[0], path, [BEARER, EVIL])
    assert status == 403, body
    assert b"origin 'https://evil.example' is not allowed" in body


@pytest.mark.parametrize("path", SURFACES)
def test_server_refuses_a_missing_token_on_every_surface_with_401(
    guarded: LocalProvider, path: str
) -> None:
    status, body, _ = _request(guarded.urls[0], path, [])
    assert status == 401, body
    assert b"invalid or missing token" in body


def test_server_admits_a_listed_origin_and_serves_it(guarded: LocalProvider) -> None:
    sock = raw_connection(guarded.urls[0], 5.0)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            (
                "GET / HTTP/1.1\r\nHost: env.internal:8765\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nOrigin: {APP}\r\n"
                f"Authorization: Bearer {TOKEN}\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 101"), head
        hello = [int(Op.HELLO), 1, {"protocol_version": PROTOCOL_VERSION}]
        sock.sendall(client_frame(codec.encode(hello)))
        assert codec.decode(read_frames(sock, 1, 5.0)[0][1])[0] == Status.OK
    finally:
        sock.close()


def test_server_healthz_answers_probes_without_token_but_not_foreign_origins(
    guarded: LocalProvider,
) -> None:
    status, body, _ = _request(guarded.urls[0], "/healthz", [])
    assert (status, body) == (200, b"ok\n")  # Docker's HEALTHCHECK carries no token
    status, _, _ = _request(guarded.urls[0], "/healthz", [EVIL])
    assert status == 403


def test_server_without_token_refuses_a_rebound_host_with_403(open_server: LocalProvider) -> None:
    status, body, _ = _request(open_server.urls[0], "/", [], host="attacker.example:8765")
    assert status == 403
    assert b"host 'attacker.example' is not allowed" in body
    status, _, _ = _request(open_server.urls[0], "/", [], host="localhost:8765")
    assert status == 101
