"""Amplification attacks: one request that would cost the server gigabytes or seconds.

Each attack runs while a :class:`GoodClient` steps on the same server, and reports the server's
peak resident memory (``VmHWM``: a high-water mark since the process started, so each attack
needs a server of its own) and the good client's step latency during the attack. Passing means
a peak under :data:`PEAK_RSS_LIMIT_MIB`, a good-client p50 under 200 ms, and a clean answer
(an error reply or a close with a code) to the attacker.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from websockets.exceptions import ConnectionClosed

from openenv_gym.client.connection import Connection
from openenv_gym.errors import OpenEnvError
from openenv_gym.protocol import codec
from openenv_gym.protocol.messages import PROTOCOL_VERSION, Op
from openenv_gym.testing.compliance._support import (
    MIB,
    AttackResult,
    GoodClient,
    Target,
    failed,
    not_runnable,
    peak_rss_mib,
    result,
)
from openenv_gym.testing.rawws import (
    abort,
    client_frame,
    read_frames,
    split_server_frames,
    upgraded_connection,
    ws_connection,
)

__all__ = [
    "PEAK_RSS_LIMIT_MIB",
    "attack_compression_bombs",
    "attack_continuation_frames",
    "attack_deep_json",
    "attack_large_json",
    "attack_msgpack_maps_before_hello",
    "attack_render_1024_envs",
    "attack_unread_requests_threads",
]

PEAK_RSS_LIMIT_MIB = 300.0
"""The most a server may hold at its peak under any one amplification request."""

_HELLO = client_frame(codec.encode([int(Op.HELLO), 1, {"protocol_version": PROTOCOL_VERSION}]))

Outcome = tuple[bool, dict[str, Any]]
"""What an attack body returns: whether the attacker got a clean answer, and its figures."""


def _amplified(name: str, target: Target, body: Callable[[GoodClient], Outcome]) -> AttackResult:
    """Run ``body`` against ``target`` while a good client steps; judge memory and latency.

    ``body`` marks the attack itself with ``good.window()``: its setup (e.g. a MAKE any client
    may send) is not what is measured.
    """
    if target.pid is None:
        return not_runnable(name, "needs the server's pid to read its memory")
    try:
        with GoodClient(target) as good:
            before = peak_rss_mib(target.pid)
            answered, figures = body(good)
            figures.update(good.figures())
        peak = peak_rss_mib(target.pid)
    except (OSError, OpenEnvError) as exc:
        return failed(name, exc)
    figures.update(peak_rss_mib=peak, rss_before_mib=before)
    return result(
        name,
        {
            "the attacker got a clean answer": answered,
            f"peak RSS < {PEAK_RSS_LIMIT_MIB:.0f} MiB": peak < PEAK_RSS_LIMIT_MIB,
            "a good client kept a step p50 < 200 ms": good.ok(),
        },
        figures,
    )


def _close_code(frames: list[tuple[int, bytes]]) -> int | None:
    for opcode, payload in frames:
        if opcode == 0x8:
            return int(struct.unpack("!H", payload[:2])[0]) if len(payload) >= 2 else 1005
    return None


def _answer(sock: socket.socket, timeout: float) -> tuple[int | None, bool]:
    """Read what the server sends back; return its close code and whether a reply came."""
    deadline, data = time.monotonic() + timeout, b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(1 << 16)
        except TimeoutError:
            break
        except OSError:
            chunk = b""
        if not chunk:
            break
        data += chunk
        frames, _ = split_server_frames(data)
        if frames:
            code = _close_code(frames)
            return code, code is None
    frames, _ = split_server_frames(data)
    return _close_code(frames), any(opcode == 0x2 for opcode, _ in frames)


def _send_all(sock: socket.socket, data: bytes) -> bool:
    """Send ``data``; return ``False`` when the server closed the connection meanwhile."""
    try:
        sock.sendall(data)
    except OSError:
        return False
    return True


# ------------------------------------------------------------------ binary protocol


def attack_msgpack_maps_before_hello(target: Target, *, size: int = 32 * MIB) -> AttackResult:
    """Send ``size`` bytes of empty msgpack maps as one frame before HELLO (was 2.4 GB)."""

    def body(good: GoodClient) -> Outcome:
        sock = upgraded_connection(target.url, 10.0)
        try:
            started = time.monotonic()
            with good.window():
                sent = _send_all(sock, client_frame(b"\x80" * size))
                code, replied = _answer(sock, 30.0)
            return code is not None or replied, {
                "close_code": code,
                "error_reply": replied,
                "fully_sent": sent,
                "seconds_to_answer": time.monotonic() - started,
            }
        finally:
            abort(sock)

    return _amplified("msgpack_maps_before_hello", target, body)


def attack_render_1024_envs(target: Target, *, num_envs: int = 1024) -> AttackResult:
    """RENDER ``num_envs`` rgb_array CartPoles at once: a MessageTooLargeError (was 4.3 GB)."""

    def body(good: GoodClient) -> Outcome:
        connection = Connection(target.url, token=target.token, call_timeout=60)
        try:
            make = {
                "env_id": "CartPole-v1",
                "num_envs": num_envs,
                "kwargs": {"render_mode": "rgb_array"},
                "autoreset_mode": "NextStep",
            }
            connection.request(Op.MAKE, make)
            connection.request(Op.RESET, {"seed": 0})
            started = time.monotonic()
            with good.window():
                try:
                    connection.request(Op.RENDER, None)
                    error = "no error: the frames were sent"
                except OpenEnvError as exc:
                    error = f"{getattr(exc, 'remote_type', type(exc).__name__)}: {exc}"
            return "MessageTooLarge" in error, {
                "reply": error.splitlines()[0][:200],
                "seconds_to_answer": time.monotonic() - started,
            }
        finally:
            connection.close()

    return _amplified("render_1024_envs", target, body)


def attack_unread_requests_threads(
    target: Target, *, budget: int = 256 * MIB, seconds: float = 2.0
) -> AttackResult:
    """With ``--threads``: send requests without reading replies while a slow step runs.

    The target hosts ``openenv_gym.testing.envs:SlowEnv`` (``delay`` allowed) beside CartPole;
    at most ``budget`` bytes are sent, for at most ``seconds`` (768 MiB sent was 826 MiB RSS).
    """
    slow = "openenv_gym.testing.envs:SlowEnv"

    def body(good: GoodClient) -> Outcome:
        sock = upgraded_connection(target.url, 10.0)
        try:
            make = [int(Op.MAKE), 2, {"env_id": slow, "kwargs": {"delay": seconds}}]
            sock.sendall(_HELLO + client_frame(codec.encode(make)))
            read_frames(sock, 2, 20.0)
            sock.sendall(client_frame(codec.encode([int(Op.RESET), 3, {"seed": 0}])))
            read_frames(sock, 1, 20.0)
            step = [int(Op.STEP), 4, {"actions": np.zeros(1, dtype=np.int64)}]
            sock.sendall(client_frame(codec.encode(step)))  # sleeps on its thread
            filler = [int(Op.STEP), 5, {"actions": np.zeros(MIB // 8, dtype=np.int64)}]
            frame = client_frame(codec.encode(filler, max_bytes=None))
            sock.setblocking(False)
            with good.window():
                sent, closed = _flood(sock, frame, budget, time.monotonic() + seconds)
            return True, {"sent_mib": sent / MIB, "closed_by_server": closed}
        finally:
            abort(sock)

    return _amplified("unread_requests_threads", target, body)


def _flood(sock: socket.socket, frame: bytes, budget: int, deadline: float) -> tuple[int, bool]:
    """Send ``frame`` over and over, never reading; return bytes sent and whether it closed."""
    sent = 0
    for _ in range(budget // len(frame) * 64):  # bounded: in count, bytes and time
        if sent >= budget or time.monotonic() > deadline:
            break
        try:
            sent += sock.send(frame)
        except BlockingIOError:
            time.sleep(0.01)  # the kernel's buffers are full: the server stopped reading
        except OSError:
            return sent, True
    return sent, False


def attack_continuation_frames(target: Target, *, count: int = 1_000_000) -> AttackResult:
    """Open a fragmented message and send ``count`` empty continuation frames after it.

    Passing: the server closes with 1009 (the fragments count toward its limit), or stays
    bounded in memory while it reads them all.
    """

    def body(good: GoodClient) -> Outcome:
        sock = upgraded_connection(target.url, 10.0)
        try:
            sock.sendall(_HELLO)
            read_frames(sock, 1, 10.0)
            empty = client_frame(b"", opcode=0x0, fin=False)
            chunk, frames_sent = empty * 10_000, 0
            started = time.monotonic()
            with good.window():
                open_ = _send_all(sock, client_frame(b"\x91", fin=False))
                while open_ and frames_sent < count and time.monotonic() - started < 30:
                    open_ = _send_all(sock, chunk)
                    frames_sent += 10_000 if open_ else 0
                if open_:
                    open_ = _send_all(sock, client_frame(b"\xc0", opcode=0x0))  # fin: [nil]
                code, replied = _answer(sock, 10.0)
            return code == 1009 or replied, {
                "close_code": code,
                "frames_sent": frames_sent,
                "error_reply": replied,
                "seconds": time.monotonic() - started,
            }
        finally:
            abort(sock)

    return _amplified("continuation_frames", target, body)


# ------------------------------------------------------------------ OpenEnv /ws (JSON)


def _ws_exchange(
    target: Target, good: GoodClient, message: str, *, any_close: bool = False
) -> Outcome:
    """Send one text message on ``/ws`` after a reset; report the reply or the close.

    With ``any_close``, a close whose frame never arrived also counts as an answer: a server
    that refuses a message while its client is still sending it may close the TCP connection
    with the rest unread, and the kernel's reset then discards its close frame.
    """
    started = time.monotonic()
    with ws_connection(f"{target.url}/ws", 30) as ws:
        ws.send(json.dumps({"type": "reset", "data": {"seed": 0}}))
        ws.recv(30)
        try:
            with good.window():
                ws.send(message)
                reply: Any = json.loads(ws.recv(30))
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else None
            answered = code is not None or any_close
            return answered, {"close_code": code, "seconds": time.monotonic() - started}
        kind = reply.get("type") if isinstance(reply, dict) else None
        data = reply.get("data") if isinstance(reply, dict) else None
        text = str(data.get("message", ""))[:160] if isinstance(data, dict) else ""
        return kind == "error", {
            "reply_type": kind,
            "reply": text,
            "seconds": time.monotonic() - started,
        }


def attack_large_json(target: Target, *, size: int = 30 * MIB) -> AttackResult:
    """Send ``size`` bytes of JSON (a list of empty objects) on ``/ws`` (was 870 MB)."""
    items = size // 3
    text = '{"type":"step","data":{"action":[' + ",".join(["{}"] * items) + "]}}"

    def body(good: GoodClient) -> Outcome:
        return _ws_exchange(target, good, text, any_close=True)

    return _amplified("large_json", target, body)


def attack_deep_json(target: Target, *, depth: int = 100_000) -> AttackResult:
    """Send ``"[" * depth`` on ``/ws``: a clean error reply, no RecursionError."""
    text = "[" * depth + "]" * depth
    return _amplified("deep_json", target, lambda good: _ws_exchange(target, good, text))


# ------------------------------------------------------------------ compression


def _bombs() -> list[tuple[str, bytes]]:
    """Return zstd frames a session that agreed on zstd must refuse without inflating them."""
    import zstandard

    zeros = bytes(1 << 20)

    def stream(size: int, *, declare: bool) -> bytes:
        compressor = zstandard.ZstdCompressor(level=1, write_content_size=declare)
        packer = compressor.compressobj(size=size if declare else -1)
        return b"".join(packer.compress(zeros) for _ in range(size >> 20)) + packer.flush()

    return [
        ("1 GiB declared", stream(1 << 30, declare=True)),  # ~100 KiB on the wire
        ("64 MiB undeclared", stream(64 << 20, declare=False)),
        ("corrupt", b"\x28\xb5\x2f\xfd" + bytes(64)),
    ]


def attack_compression_bombs(target: Target) -> AttackResult:
    """Agree on zstd at HELLO, then send frames inflating to GiBs: each an error reply."""
    try:
        bombs = _bombs()
    except ImportError:
        return not_runnable("compression_bombs", "needs zstandard (extra compression)")
    hello = [int(Op.HELLO), 1, {"protocol_version": PROTOCOL_VERSION, "compression": ["zstd"]}]

    def body(good: GoodClient) -> Outcome:
        replies: dict[str, Any] = {}
        with ws_connection(target.url, 10.0) as ws:

            def exchange(frame: bytes, timeout: float) -> Any:
                ws.send(frame)
                return codec.decode(ws.recv(timeout=timeout, decode=False), max_bytes=None)

            agreed = exchange(codec.encode(hello), 10.0)[2].get("compression")
            with good.window():
                for name, bomb in bombs:
                    status, _, reply = exchange(bomb, 30.0)
                    replies[name] = reply["type"] if status == 1 else "accepted"
            # The session lives on: a plain request is still served.
            closed = exchange(codec.encode([int(Op.CLOSE), 9, None]), 10.0)[0] == 0
        refused = all(kind != "accepted" for kind in replies.values())
        return agreed == "zstd" and refused and closed, {"agreed": agreed, **replies}

    return _amplified("compression_bombs", target, body)
