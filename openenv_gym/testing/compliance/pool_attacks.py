"""Attacks on pool sessions (POOL_SEND, POOL_RESET, their timeouts, the operator's knobs).

Each runs against a server hosting CartPole and ``HeavyTailEnv`` with pool sessions on
threads (see ``campaign.py``), and checks what a hostile client can and cannot make it do:
a million env ids, timeouts that are negative, NaN or huge, sends flooded without reading a
reply, and MAKE kwargs naming the operator's pool settings.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from openenv_gym.client.connection import Connection
from openenv_gym.errors import OpenEnvError
from openenv_gym.protocol import codec
from openenv_gym.protocol.messages import PROTOCOL_VERSION, Op
from openenv_gym.testing import rawws
from openenv_gym.testing.compliance._support import (
    AttackResult,
    Target,
    failed,
    peak_rss_mib,
    result,
)

__all__ = [
    "HEAVY",
    "attack_pool_bad_timeouts",
    "attack_pool_million_env_ids",
    "attack_pool_operator_knobs",
    "attack_pool_unread_sends",
]

HEAVY = "openenv_gym.testing.slow_envs:HeavyTailEnv"


def _pool(target: Target, num_envs: int = 4) -> Connection:
    connection = Connection(target.url, token=target.token, call_timeout=30)
    body = {"env_id": HEAVY, "num_envs": num_envs, "pool": True}
    connection.request(Op.MAKE, body)
    return connection


def _error_type(connection: Connection, op: Op, body: Any) -> str:
    """Send one request; return the type of the error it got (``"ok"`` if none)."""
    try:
        connection.request(op, body, timeout=10)
    except OpenEnvError as exc:
        return str(getattr(exc, "remote_type", type(exc).__name__))
    return "ok"


def _good_client_steps(target: Target) -> bool:
    from openenv_gym.client.env import RemoteEnv

    with RemoteEnv(target.env_id, url=target.url, token=target.token, call_timeout=10) as env:
        env.reset(seed=0)
        env.step(env.action_space.sample())
    return True


def attack_pool_million_env_ids(target: Target) -> AttackResult:
    """POOL_SEND and POOL_RESET naming a million env ids (an array) or 60 000 (a list)."""
    name = "pool_million_env_ids"
    try:
        connection = _pool(target)
        try:
            before = peak_rss_mib(target.pid) if target.pid else 0.0
            started = time.perf_counter()
            replies = [
                _error_type(
                    connection, Op.POOL_SEND, {"env_ids": np.arange(10**6), "actions": [1]}
                ),
                _error_type(connection, Op.POOL_RESET, {"env_ids": np.arange(10**6)}),
                _error_type(
                    connection, Op.POOL_SEND, {"env_ids": list(range(60_000)), "actions": [1]}
                ),
            ]
            seconds = time.perf_counter() - started
            growth = (peak_rss_mib(target.pid) - before) if target.pid else 0.0
        finally:
            connection.close()
        good = _good_client_steps(target)
    except OpenEnvError as exc:
        return failed(name, exc)
    return result(
        name,
        {
            "each answered with an error, nothing started": all(r != "ok" for r in replies),
            "answered within 5 s": seconds < 5.0,
            "peak memory grew under 200 MiB": growth < 200.0,
            "a good client still steps": good,
        },
        {"replies": ", ".join(replies), "seconds": round(seconds, 3), "rss_growth_mib": growth},
    )


def attack_pool_bad_timeouts(target: Target) -> AttackResult:
    """POOL_SEND with timeouts that are negative, zero, NaN, infinite, huge or not numbers."""
    name = "pool_bad_timeouts"
    bad: list[Any] = [-1.0, 0.0, float("nan"), float("inf"), 1e12, "10", True, [1.0]]
    try:
        connection = _pool(target)
        try:
            connection.request(Op.POOL_RESET, None)
            replies = [
                _error_type(
                    connection, Op.POOL_SEND, {"env_ids": [0], "actions": [1], "timeout": t}
                )
                for t in bad
            ]
            state = connection.request(Op.STATE, None, timeout=10)
        finally:
            connection.close()
    except OpenEnvError as exc:
        return failed(name, exc)
    refused = all(r.endswith("DecodeError") for r in replies)
    nothing_started = all(s["step_count"] == 0 for s in state)
    return result(
        name,
        {"every bad timeout refused (DecodeError)": refused, "no step ran": nothing_started},
        {"replies": ", ".join(sorted(set(replies)))},
    )


def attack_pool_unread_sends(target: Target, *, seconds: float = 3.0) -> AttackResult:
    """Flood POOL_SENDs for the same envs without reading a reply: bounded memory, no stall."""
    name = "pool_unread_sends"
    assert target.pid is not None
    try:
        sock = rawws.upgraded_connection(target.url, timeout=5.0)
    except OSError as exc:
        return failed(name, exc)
    before = peak_rss_mib(target.pid)
    sent = 0

    def frame(op: Op, request_id: int, body: Any) -> bytes:
        return rawws.client_frame(codec.encode([int(op), request_id, body]))

    try:
        sock.sendall(frame(Op.HELLO, 1, {"protocol_version": PROTOCOL_VERSION}))
        sock.sendall(frame(Op.MAKE, 2, {"env_id": HEAVY, "num_envs": 4, "pool": True}))
        sock.sendall(frame(Op.POOL_RESET, 3, None))
        send = frame(Op.POOL_SEND, 4, {"env_ids": np.arange(4), "actions": np.ones(4, np.int64)})
        sock.settimeout(0.5)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and sent < 200_000:
            try:
                sock.sendall(send)  # the same request id: only the first can be accepted
            except TimeoutError:
                break  # the server stopped reading: TCP pushes back
            sent += 1
        growth = peak_rss_mib(target.pid) - before
        good = _good_client_steps(target)
    except (OSError, OpenEnvError) as exc:
        return failed(name, exc)
    finally:
        rawws.abort(sock)
    return result(
        name,
        {"peak memory grew under 100 MiB": growth < 100.0, "a good client still steps": good},
        {"sends": sent, "rss_growth_mib": round(growth, 1)},
    )


def attack_pool_operator_knobs(target: Target) -> AttackResult:
    """MAKE a pool naming the operator's settings as kwargs: refused, nothing built."""
    name = "pool_operator_knobs"
    replies = []
    for kwargs in (
        {"concurrent_steps": 1000},
        {"step_timeout": 1e9},
        {"step_isolation": "none"},
    ):
        connection = Connection(target.url, token=target.token, call_timeout=30)
        try:
            body = {"env_id": HEAVY, "num_envs": 2, "pool": True, "kwargs": kwargs}
            replies.append(_error_type(connection, Op.MAKE, body))
        finally:
            connection.close()
    return result(
        name,
        {"every knob refused as a kwarg": all(r.endswith("KwargNotAllowedError") for r in replies)},
        {"replies": ", ".join(replies)},
    )
