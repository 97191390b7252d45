"""Slot attacks: connections or sessions held so that a good client cannot get in.

Figures are times: how long a good client waited to be admitted, how long the server took to
reap what the attacker held.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
import urllib.parse

import numpy as np
from websockets.exceptions import ConnectionClosed

from openenv_gym.client.env import RemoteEnv
from openenv_gym.errors import OpenEnvError
from openenv_gym.protocol import codec
from openenv_gym.protocol.messages import PROTOCOL_VERSION, Op
from openenv_gym.testing.compliance._support import (
    AttackResult,
    Target,
    closed_by_server,
    enough_descriptors,
    failed,
    not_runnable,
    result,
    server_holds,
    wait_for,
)
from openenv_gym.testing.rawws import (
    abort,
    client_frame,
    opening_handshake,
    raw_connection,
    read_frames,
    upgraded_connection,
    ws_connection,
)

__all__ = [
    "FAILING",
    "attack_failing_constructor_slots",
    "attack_half_open_flood",
    "attack_unread_close",
]

FAILING = "openenv_gym.testing.envs:FailingEnv"


def attack_half_open_flood(
    target: Target, *, count: int = 1100, handshake_timeout: float = 1.0
) -> AttackResult:
    """Hold ``count`` half-sent upgrades open; a good client must still get in within seconds.

    The target runs with ``--handshake-timeout`` ``handshake_timeout``: the half-open
    connections must be closed by the server soon after it. Raises this process's soft limit of
    open files if ``count`` needs it.
    """
    name = "half_open_flood"
    limit = enough_descriptors(count + 512)
    if limit < count + 64:
        return not_runnable(name, f"{count} sockets need more than the {limit} files allowed")
    flood: list[socket.socket] = []
    try:
        partial = opening_handshake()[:-2]  # all but the blank line that ends the request
        for _ in range(count):
            sock = raw_connection(target.url, 5.0)
            flood.append(sock)
            with contextlib.suppress(OSError):
                sock.sendall(partial)
        started = time.monotonic()
        with RemoteEnv(target.env_id, url=target.url, token=target.token, call_timeout=10) as env:
            env.reset(seed=0)
        admitted = time.monotonic() - started
        held = list(flood)

        def reaped() -> bool:
            held[:] = [sock for sock in held if not closed_by_server(sock)]
            return not held

        took = wait_for(reaped, handshake_timeout + 10.0, poll=0.1)
        seconds_to_reap = None if took is None else admitted + took
    except (OSError, OpenEnvError) as exc:
        return failed(name, exc, {"opened": len(flood)})
    finally:
        for sock in flood:
            with contextlib.suppress(OSError):
                abort(sock)
    return result(
        name,
        {
            "a good client got in within 3 s": admitted < 3.0,
            f"every half-open connection reaped within {handshake_timeout + 10:.0f} s": (
                took is not None
            ),
        },
        {
            "half_open": len(flood),
            "seconds_to_admit": admitted,
            "seconds_to_reap": seconds_to_reap,
            "still_open": len(held),
        },
    )


def attack_unread_close(
    target: Target, *, idle_timeout: float = 0.5, close_timeout: float = 1.0
) -> AttackResult:
    """Stop reading while replies pile up: the idle close must abort after its close timeout.

    The target runs with ``--idle-timeout`` ``idle_timeout``, ``--close-timeout``
    ``close_timeout`` and ``--set-attr-allow blob`` (a large attribute fills the buffers).
    Linux only (the server's sockets are read from ``/proc``).
    """
    name = "unread_close"
    if target.pid is None:
        return not_runnable(name, "needs the server's pid to read its sockets")
    sock = upgraded_connection(target.url, 5.0)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        blob = {"name": "blob", "values": np.ones(2**17), "per_env": False}
        setup = [[int(Op.HELLO), 1, {"protocol_version": PROTOCOL_VERSION}]]
        setup += [[int(Op.MAKE), 2, {"env_id": target.env_id}], [int(Op.SET_ATTR), 3, blob]]
        sock.sendall(b"".join(client_frame(codec.encode(request)) for request in setup))
        replies = [codec.decode(payload) for _, payload in read_frames(sock, 3, 10.0)]
        errors = [reply[2] for reply in replies if reply[0]]
        if errors:
            return failed(name, RuntimeError(f"setup refused: {errors[0]}"))
        get = [int(Op.GET_ATTR), 4, {"name": "blob"}]
        sock.sendall(b"".join(client_frame(codec.encode(get)) for _ in range(40)))
        # Never read again: the server's writes stall and its idle close cannot complete. Its
        # descriptor table tells when it gave up, without reading a byte here.
        pid, port = target.pid, sock.getsockname()[1]
        held = server_holds(pid, port)  # else the check below could not fail
        took = wait_for(lambda: not server_holds(pid, port), 10.0 + idle_timeout)
    except (OSError, OpenEnvError) as exc:
        return failed(name, exc)
    finally:
        abort(sock)
    bound = idle_timeout + close_timeout + 3.0
    return result(
        name,
        {
            "the server held the connection at first": held,
            f"the unread connection dropped within {bound:.1f} s": took is not None
            and took < bound,
        },
        {"seconds_to_drop": took},
    )


def _reset(url: str) -> tuple[str, str]:
    """Reset a fresh ``/ws`` session at ``url``; return the reply's type and code."""
    with ws_connection(url, 30) as ws:
        ws.send(json.dumps({"type": "reset", "data": {"seed": 0}}))
        try:
            reply = json.loads(ws.recv(30))
        except ConnectionClosed as exc:
            return "closed", str(exc.rcvd.code if exc.rcvd else None)
    data = reply.get("data") if isinstance(reply, dict) else None
    code = str(data.get("code", "")) if isinstance(data, dict) else ""
    return str(reply.get("type")), code


def attack_failing_constructor_slots(target: Target, *, failures: int = 3) -> AttackResult:
    """Reset ``/ws`` sessions of an env whose constructor raises; capacity must stay free.

    The target hosts :data:`FAILING` beside ``target.env_id`` with ``--max-sessions 2``:
    after ``failures`` (more than the limit) failed constructions, two good sessions still fit.
    """
    name = "failing_constructor_slots"
    failing_url = f"{target.url}/envs/{urllib.parse.quote(FAILING, safe='')}/ws"
    good_url = f"{target.url}/envs/{urllib.parse.quote(target.env_id, safe='')}/ws"
    try:
        failed_replies = [_reset(failing_url) for _ in range(failures)]
        with ws_connection(good_url, 30) as first, ws_connection(good_url, 30) as second:
            kinds = []
            for ws in (first, second):
                ws.send(json.dumps({"type": "reset", "data": {"seed": 0}}))
                kinds.append(json.loads(ws.recv(30)).get("type"))
    except (OSError, ConnectionClosed, ValueError) as exc:
        return failed(name, exc)
    return result(
        name,
        {
            "each failing constructor answered an error": all(
                kind == "error" for kind, _ in failed_replies
            ),
            "two good sessions still admitted": kinds == ["observation", "observation"],
        },
        {
            "failing_codes": ",".join(code for _, code in failed_replies),
            "good_replies": ",".join(str(kind) for kind in kinds),
        },
    )
