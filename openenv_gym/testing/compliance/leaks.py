"""Leak checks: connect/disconnect cycles of every kind, then count what the server still admits.

:func:`check_leaks` runs cycles (clean closes, resets without a close frame, half-closes,
disconnects mid-request) against a server with small capacity limits, then compares its open
descriptors and RSS with a baseline and asks :func:`probe_capacity` whether exactly its limits
of sessions and envs are admitted again (so none leaked).
"""

from __future__ import annotations

import collections
import dataclasses
import socket
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from openenv_gym.protocol import codec
from openenv_gym.protocol.messages import PROTOCOL_VERSION, Op, Status, parse_reply
from openenv_gym.testing.compliance._support import wait_for
from openenv_gym.testing.rawws import (
    abort,
    client_frame,
    open_fds,
    opening_handshake,
    raw_connection,
    read_frames,
    read_until_eof,
    rss_mib,
    upgraded_connection,
)

__all__ = [
    "CYCLES",
    "Capacity",
    "LeakReport",
    "check_leaks",
    "cycle",
    "probe_capacity",
    "settle_fds",
]

CARTPOLE = "CartPole-v1"
TIMEOUT = 5.0
CYCLES = (
    "clean",
    "reset without close frame",
    "clean vector",
    "reset mid-request",
    "half-close",
    "reset with requests unanswered",
    "handshake only",
)


def frame(op: Op, request_id: int, body: Any) -> bytes:
    """Return one masked client frame carrying a request."""
    return client_frame(codec.encode([int(op), request_id, body]))


HELLO = frame(Op.HELLO, 1, {"protocol_version": PROTOCOL_VERSION})


def replies(sock: socket.socket, count: int) -> list[tuple[Status, int, Any]]:
    """Read ``count`` reply frames and parse them."""
    frames = read_frames(sock, count, TIMEOUT)[:count]
    return [parse_reply(codec.decode(payload, max_bytes=None)) for _, payload in frames]


def cycle(url: str, kind: str) -> None:
    """Run one connect/disconnect cycle of ``kind`` (one of :data:`CYCLES`)."""
    from openenv_gym.client.env import RemoteEnv
    from openenv_gym.client.vector_env import RemoteVectorEnv

    if kind == "clean":
        with RemoteEnv(CARTPOLE, url=url, call_timeout=TIMEOUT) as env:
            env.reset(seed=0)
            env.step(np.int64(0))
        return
    if kind == "clean vector":
        with RemoteVectorEnv(CARTPOLE, 4, urls=[url], call_timeout=TIMEOUT) as envs:
            envs.reset(seed=0)
            envs.step(np.zeros(4, dtype=np.int64))
        return
    if kind == "handshake only":
        sock = raw_connection(url, TIMEOUT)
        sock.sendall(opening_handshake()[:20])
        abort(sock)
        return
    sock = upgraded_connection(url, TIMEOUT)
    make = frame(Op.MAKE, 2, {"env_id": CARTPOLE, "num_envs": 4, "autoreset_mode": "NextStep"})
    if kind == "half-close":
        sock.sendall(HELLO)
        replies(sock, 1)
        sock.shutdown(socket.SHUT_WR)
        read_until_eof(sock, TIMEOUT)
        sock.close()
        return
    sock.sendall(HELLO + make)
    if kind != "reset with requests unanswered":
        replies(sock, 2)
    if kind == "reset mid-request":
        sock.sendall(frame(Op.STEP, 3, np.zeros(4, dtype=np.int64)))
    abort(sock)


@dataclasses.dataclass(frozen=True)
class Capacity:
    """What a server admits: sessions until refused, then envs in the first of them.

    Attributes:
        sessions: sessions admitted before one was refused.
        session_refusal: the refusal's message (``""`` if none came within the bound).
        envs_admitted: a MAKE of all the envs still free succeeded.
        envs_in_use: the ``current`` figure of that MAKE's refusal (``0`` if it succeeded).
        envs_refusal: the message refusing one more env once those are built (``""``: none).

    """

    sessions: int
    session_refusal: str
    envs_admitted: bool
    envs_in_use: int
    envs_refusal: str


def probe_capacity(url: str, *, max_sessions: int, max_envs: int, held_envs: int = 0) -> Capacity:
    """Open sessions until one is refused; in the first build the ``max_envs - held_envs`` free.

    Then one more env is asked for in the second session (it must be refused). Every session
    opened here is closed before returning.
    """
    opened: list[socket.socket] = []
    refusal = ""
    try:
        for _ in range(max_sessions + 1):
            sock = upgraded_connection(url, TIMEOUT)
            sock.sendall(HELLO)
            status, _, body = replies(sock, 1)[0]
            if status is not Status.OK:
                refusal = str(body["message"])
                sock.close()
                break
            opened.append(sock)
        if not opened:
            return Capacity(0, refusal, False, -1, "")
        batch = {"env_id": CARTPOLE, "num_envs": max_envs - held_envs, "autoreset_mode": "Disabled"}
        opened[0].sendall(frame(Op.MAKE, 2, batch))
        status, _, body = replies(opened[0], 1)[0]
        if status is not Status.OK:
            in_use = int((body.get("details") or {}).get("current", -1))
            return Capacity(len(opened), refusal, False, in_use, str(body["message"]))
        more = ""
        if len(opened) > 1:
            opened[1].sendall(frame(Op.MAKE, 2, {"env_id": CARTPOLE}))
            status, _, body = replies(opened[1], 1)[0]
            more = "" if status is Status.OK else str(body["message"])
        return Capacity(len(opened), refusal, True, 0, more)
    finally:
        for sock in opened:
            sock.close()


def settle_fds(pid: int, target: int, timeout: float = 5.0) -> int:
    """Wait for the server to close what it is closing (down to ``target``); return its count."""
    wait_for(lambda: open_fds(pid) <= target, timeout)
    return open_fds(pid)


@dataclasses.dataclass(frozen=True)
class LeakReport:
    """Figures of a leak check and its invariants (name -> whether it held, and a detail)."""

    figures: Mapping[str, Any]
    checks: Mapping[str, tuple[bool, str]]
    cycle_errors: Mapping[str, int]


def check_leaks(
    url: str, pid: int, *, cycles: int, max_sessions: int, max_envs: int, warmup: int = 5
) -> LeakReport:
    """Run ``cycles`` cycles on a server started with these ``--max-sessions``/``--max-envs``.

    Returns:
        Figures (cycles/s, fds and RSS before/after, leaked sessions and envs) and the checks
        "every cycle completed", "no sessions leaked", "no envs leaked", "no fd growth" and
        "RSS growth under 32 MiB".

    """
    for kind in CYCLES * warmup:  # warm up lazy imports and caches before the baseline
        cycle(url, kind)
    time.sleep(0.3)  # a baseline, not a synchronisation: the warm-up's closes finish
    fds_before = open_fds(pid)
    rss_before = rss_mib(pid)
    errors: collections.Counter[str] = collections.Counter()
    started = time.monotonic()
    for number in range(cycles):
        kind = CYCLES[number % len(CYCLES)]
        try:
            cycle(url, kind)
        except Exception as exc:  # a refused or failed cycle is counted, not fatal
            errors[f"{kind}: {type(exc).__name__}"] += 1
    elapsed = time.monotonic() - started
    fds_after = settle_fds(pid, fds_before)
    rss_after = rss_mib(pid)
    capacity: Capacity | None = None
    for _ in range(10):  # connection teardown is asynchronous: wait, bounded, for the last ones
        capacity = probe_capacity(url, max_sessions=max_sessions, max_envs=max_envs)
        if capacity.sessions == max_sessions and capacity.envs_admitted:
            break
        time.sleep(0.1)
    assert capacity is not None
    leaked_sessions = max_sessions - capacity.sessions
    leaked_envs = capacity.envs_in_use if not capacity.envs_admitted else 0
    note = capacity.session_refusal if "at capacity" not in capacity.session_refusal else ""
    figures = {
        "cycles": cycles,
        "cycles_per_s": cycles / max(elapsed, 1e-9),
        "cycle_errors": dict(errors),
        "fds_before_after": f"{fds_before} -> {fds_after}",
        "fd_growth": fds_after - fds_before,
        "rss_mib_before_after": f"{rss_before:.1f} -> {rss_after:.1f}",
        "rss_growth_mib": rss_after - rss_before,
        "leaked_sessions": leaked_sessions,
        "leaked_envs": leaked_envs,
    }
    checks = {
        "every cycle completed": (not errors, str(dict(errors))),
        "no sessions leaked": (leaked_sessions == 0, f"{leaked_sessions} {note}".strip()),
        "no envs leaked": (leaked_envs == 0, f"{leaked_envs} {capacity.envs_refusal}".strip()),
        "no fd growth": (fds_after <= fds_before, str(fds_after - fds_before)),
        "RSS growth under 32 MiB": (
            rss_after - rss_before < 32,
            f"{rss_after - rss_before:.1f} MiB",
        ),
    }
    return LeakReport(figures, checks, dict(errors))
