"""Where one native remote step goes: ``openenv-gym bench --native --profile``.

One CartPole-v1 step at ``num_envs`` envs, taken apart in one process run:

* **env**: the engine's own ``step`` in-process (gymnasium's ``CartPoleVectorEnv``);
* **server codec + bookkeeping**: a server ``Session`` answering the STEP frame in-process (no
  socket), less the env: decode the actions, episode bookkeeping, encode the reply;
* **client codec**: encode the actions, decode the reply;
* **syscalls + wire**: a raw TCP round trip of the same request and reply sizes between two
  processes (send, wake-up, receive on both sides): the floor of any remote step here;
* **framing, event loop, scheduling**: what the measured remote step spends beyond those
  (WebSocket framing and masking, asyncio's loop, the client's reads, cross-process wake-ups).

Each figure is the median of ``repeats`` timed batches.
"""

from __future__ import annotations

import os
import socket
import statistics
import time
from collections.abc import Callable
from typing import Any, Final

import gymnasium
import numpy as np

from openenv_gym.client.vector_env import RemoteVectorEnv
from openenv_gym.protocol import codec
from openenv_gym.protocol.messages import PROTOCOL_VERSION, Op
from openenv_gym.providers.local import LocalProvider
from openenv_gym.server.catalog import EnvCatalog
from openenv_gym.server.session import Session

__all__ = ["profile_step", "tcp_round_trip"]

NATIVE: Final = "vector_entry_point"


def _per_call(call: Callable[[], Any], count: int, repeats: int) -> float:
    """Median seconds per call over ``repeats`` batches of ``count`` calls."""
    for _ in range(max(1, count // 10)):
        call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(count):
            call()
        times.append((time.perf_counter() - started) / count)
    return statistics.median(times)


def _receive(sock: socket.socket, buffer: bytearray) -> None:
    view, got = memoryview(buffer), 0
    while got < len(buffer):
        count = sock.recv_into(view[got:])
        if not count:
            raise ConnectionError("peer closed")
        got += count


def tcp_round_trip(request_bytes: int, reply_bytes: int, *, count: int, repeats: int) -> float:
    """Median seconds of a raw loopback TCP round trip of these sizes between two processes."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(30)  # the echo side never waits for ever
    address = listener.getsockname()[:2]
    total = count * (repeats + 1)
    pid = os.fork()
    if pid == 0:  # the echo side: a bounded number of round trips, then exit
        try:
            peer, _ = listener.accept()
            peer.settimeout(30)
            peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            request, reply = bytearray(request_bytes), bytes(reply_bytes)
            for _ in range(total):
                _receive(peer, request)
                peer.sendall(reply)
        finally:
            os._exit(0)
    listener.close()
    try:
        with socket.create_connection(address, timeout=30) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            message, answer = bytes(request_bytes), bytearray(reply_bytes)

            def trip() -> None:
                sock.sendall(message)
                _receive(sock, answer)

            times = []
            for index in range(repeats + 1):
                started = time.perf_counter()
                for _ in range(count):
                    trip()
                if index:  # the first batch warms up
                    times.append((time.perf_counter() - started) / count)
    finally:
        os.waitpid(pid, 0)
    return statistics.median(times)


def _session(num_envs: int) -> Session:
    session = Session(EnvCatalog(["CartPole-v1"]))
    for op, body in (
        (Op.HELLO, {"protocol_version": PROTOCOL_VERSION}),
        (Op.MAKE, {"env_id": "CartPole-v1", "num_envs": num_envs, "server_vectorization": NATIVE}),
        (Op.RESET, {"seed": 0}),
    ):
        session.handle(codec.encode([int(op), 1, body]))
    return session


def profile_step(num_envs: int = 4096, *, count: int = 300, repeats: int = 5) -> dict[str, float]:
    """Return the parts of one native remote step, in microseconds (see the module doc)."""
    actions = np.random.default_rng(0).integers(0, 2, size=num_envs)
    engine = gymnasium.make_vec("CartPole-v1", num_envs, vectorization_mode=NATIVE)
    engine.reset(seed=0)
    env_s = _per_call(lambda: engine.step(actions), count, repeats)
    request = codec.encode([int(Op.STEP), 2, actions])
    session = _session(num_envs)
    server_s = _per_call(lambda: session.handle(request), count, repeats)
    reply = session.handle(request)
    session.close()
    engine.close()
    client_s = _per_call(lambda: codec.encode([4, 2, actions]), count, repeats)
    client_s += _per_call(lambda: codec.decode(reply, max_bytes=None), count, repeats)
    wire_s = tcp_round_trip(len(request), len(reply), count=count, repeats=repeats)
    with LocalProvider(["CartPole-v1"]) as provider:
        remote = RemoteVectorEnv(
            "CartPole-v1",
            num_envs,
            urls=provider.urls,
            token=provider.token,
            server_vectorization=NATIVE,
        )
        remote.reset(seed=0)
        remote_s = _per_call(lambda: remote.step(actions), count, repeats)
        remote.close()
    parts = {
        "env": env_s,
        "server codec + bookkeeping": server_s - env_s,
        "client codec": client_s,
        "syscalls + wire (raw TCP round trip)": wire_s,
    }
    parts["framing, event loop, scheduling"] = remote_s - sum(parts.values())
    figures = {name: seconds * 1e6 for name, seconds in parts.items()}
    figures["remote step (measured)"] = remote_s * 1e6
    figures["request bytes"] = float(len(request))
    figures["reply bytes"] = float(len(reply))
    return figures
