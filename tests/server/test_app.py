"""The WebSocket server as a separate process: health, many clients, misbehaving clients."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.parse
from collections.abc import Iterator

import numpy as np
import pytest
from websockets.sync.client import connect

import openenv_gym
from openenv_gym.protocol import codec
from openenv_gym.protocol.messages import PROTOCOL_VERSION, Op, Status
from openenv_gym.providers.local import LocalProvider


@pytest.fixture(scope="module")
def server() -> Iterator[LocalProvider]:
    args = ["--workers", "2", "--set-attr-allow", "payload"]
    with LocalProvider(["CartPole-v1", "FrozenLake-v1"], extra_args=args) as p:
        yield p


def _http_get(url: str, path: str) -> tuple[int, bytes]:
    parts = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_server_answers_healthz_over_plain_http(server: LocalProvider) -> None:
    assert _http_get(server.urls[0], "/healthz") == (200, b"ok\n")


def test_server_serves_clients_in_other_processes(server: LocalProvider) -> None:
    script = textwrap.dedent(
        f"""
        import numpy as np, openenv_gym
        with openenv_gym.RemoteEnv("FrozenLake-v1", url="{server.urls[0]}") as env:
            obs, _ = env.reset(seed=1)
            print(type(obs).__name__, env.step(np.int64(1))[0])
        """
    )
    runs = [
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        for _ in range(3)
    ]
    assert all(run.returncode == 0 for run in runs), [run.stderr for run in runs]
    assert len({run.stdout for run in runs}) == 1  # same seed, same episode, any worker


def test_server_survives_a_client_killed_mid_episode(server: LocalProvider) -> None:
    script = textwrap.dedent(
        f"""
        import sys, openenv_gym
        env = openenv_gym.RemoteEnv("CartPole-v1", url="{server.urls[0]}")
        env.reset(seed=0)
        env.step(0)
        print("stepping", flush=True)
        sys.stdin.read()
        """
    )
    victim = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert victim.stdout is not None and victim.stdout.readline() == "stepping\n"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    for _ in range(4):  # both workers keep serving
        with openenv_gym.RemoteEnv("CartPole-v1", url=server.urls[0]) as env:
            env.reset(seed=0)
            assert env.step(1)[0].shape == (4,)


def test_server_answers_garbage_with_error_and_keeps_other_sessions(
    server: LocalProvider,
) -> None:
    with openenv_gym.RemoteEnv("CartPole-v1", url=server.urls[0]) as bystander:
        bystander.reset(seed=0)
        with connect(server.urls[0], compression=None, proxy=None) as ws:
            ws.send(b"\xc1\xc1 not msgpack")
            status, _, body = codec.decode(ws.recv(timeout=5))
            assert status == Status.ERROR and "malformed" in body["message"]
            ws.send("a text frame")
            status, _, body = codec.decode(ws.recv(timeout=5))
            assert status == Status.ERROR
            ws.send(codec.encode([int(Op.HELLO), 1, {"protocol_version": PROTOCOL_VERSION}]))
            assert codec.decode(ws.recv(timeout=5))[0] == Status.OK
        assert bystander.step(0)[0].shape == (4,)


def test_server_sigterm_closes_clients_with_going_away() -> None:
    provider = LocalProvider(["CartPole-v1"])
    env = openenv_gym.RemoteEnv("CartPole-v1", url=provider.urls[0])
    env.reset(seed=0)
    os.kill(provider.pids[0], signal.SIGTERM)
    with pytest.raises(openenv_gym.errors.ConnectionLostError, match="1001"):
        for _ in range(50):
            env.step(np.int64(0))
    env.close()
    provider.close()


def test_server_serves_fragmented_and_large_messages(server: LocalProvider) -> None:
    with connect(server.urls[0], compression=None, proxy=None, max_size=None) as ws:
        hello = codec.encode([int(Op.HELLO), 1, {"protocol_version": PROTOCOL_VERSION}])
        ws.send([hello[:3], hello[3:]])  # a fragmented message takes the general parser
        assert codec.decode(ws.recv(timeout=5))[0] == Status.OK
        ws.ping()
        make = codec.encode([int(Op.MAKE), 2, {"env_id": "CartPole-v1"}])
        ws.send(make)
        assert codec.decode(ws.recv(timeout=5))[0] == Status.OK
        big = np.arange(1_000_000, dtype=np.float64)  # 8 MB: many reads on both ends
        body = {"name": "payload", "values": big, "per_env": False}
        ws.send(codec.encode([int(Op.SET_ATTR), 3, body]))
        assert codec.decode(ws.recv(timeout=30))[0] == Status.OK
        ws.send(codec.encode([int(Op.GET_ATTR), 4, {"name": "payload"}]))
        status, _, echoed = codec.decode(ws.recv(timeout=30))
        assert status == Status.OK
        np.testing.assert_array_equal(echoed, big)


def test_remote_env_moves_large_arrays_both_ways(server: LocalProvider) -> None:
    with openenv_gym.RemoteEnv("CartPole-v1", url=server.urls[0]) as env:
        big = np.random.default_rng(0).random((512, 1024))  # 4 MB
        env.set_attr("payload", big)
        np.testing.assert_array_equal(env.get_attr("payload"), big)


def test_large_replies_a_slow_reader_leaves_in_the_socket_arrive_whole_and_in_order(
    server: LocalProvider,
) -> None:
    # A reply with a 4 MB array is one gathering write of views; a client that reads slowly
    # (a 4 KiB receive buffer, two requests in flight) leaves most of it to the transport.
    from openenv_gym.testing.rawws import (
        client_frame,
        opening_handshake,
        port_of,
        read_frames,
        split_server_frames,
    )

    big = np.random.default_rng(1).random((512, 1024))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port_of(server.urls[0])))
    try:
        sock.sendall(opening_handshake())
        response = b""
        while b"\r\n\r\n" not in response:
            response += sock.recv(1)
        assert response.startswith(b"HTTP/1.1 101")
        requests = [
            (Op.HELLO, {"protocol_version": PROTOCOL_VERSION}),
            (Op.MAKE, {"env_id": "CartPole-v1"}),
            (Op.SET_ATTR, {"name": "payload", "values": big}),
        ]
        for request_id, (op, body) in enumerate(requests, 1):
            sock.sendall(client_frame(codec.encode([int(op), request_id, body])))
            assert codec.decode(read_frames(sock, 1, 30)[0][1])[0] == Status.OK
        for request_id in (10, 11):  # both in flight before the first reply is read
            sock.sendall(
                client_frame(codec.encode([int(Op.GET_ATTR), request_id, {"name": "payload"}]))
            )
        time.sleep(0.5)  # the server has written what the socket takes and buffered the rest
        expected = 2 * (len(codec.encode([int(Status.OK), 10, big])) + 10)  # two frames
        chunks, received = [], 0
        while received < expected:
            chunk = sock.recv(1 << 16)
            assert chunk, f"EOF after {received} of {expected} bytes"
            chunks.append(chunk)
            received += len(chunk)
        frames, rest = split_server_frames(b"".join(chunks))
        assert rest == b"" and len(frames) == 2
        replies = [codec.decode(payload, max_bytes=None) for _, payload in frames]
    finally:
        sock.close()
    assert [reply[:2] for reply in replies] == [[Status.OK, 10], [Status.OK, 11]]
    for reply in replies:
        np.testing.assert_array_equal(reply[2], big)
