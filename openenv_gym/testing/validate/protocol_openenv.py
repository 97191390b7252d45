"""The protocol level for OpenEnv servers (``openenv+ws://``): their JSON protocol on ``/ws``.

OpenEnv's wire format: JSON text frames ``{"type": "reset" | "step" | "state" | "close",
"data": {...}}`` answered by ``{"type": "observation" | "state" | "error", "data": {...}}``, one
env per connection, and HTTP ``/health`` and ``/schema``. The checks mirror the binary
protocol's: the handshake, each message type, typed error replies to misuse, malformed input
that never kills the server, and sessions that survive other clients vanishing.
"""

from __future__ import annotations

import json
import os
import random
import socket
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from openenv_gym.interop.openenv.urls import endpoints
from openenv_gym.testing.validate.results import CheckResult, failed, from_problems, passed, skipped
from openenv_gym.testing.validate.target import OpenedTarget

__all__ = ["openenv_protocol_checks"]

TIMEOUT = 5.0
MALFORMED_INPUTS = 40


@contextmanager
def _session(target: OpenedTarget) -> Iterator[ClientConnection]:
    with connect(
        endpoints(target.url)[1],
        open_timeout=TIMEOUT,
        close_timeout=2,
        max_size=1 << 24,
        ping_interval=None,
        compression=None,
        proxy=None,
    ) as ws:
        yield ws


def _exchange(ws: ClientConnection, message: str | bytes) -> tuple[str, Any]:
    """Send ``message``; return ``("reply", data)`` or ``("closed", code)``.

    Raises:
        AssertionError: neither a JSON object reply nor a close came within ``TIMEOUT``.

    """
    try:
        ws.send(message)
        frame = ws.recv(timeout=TIMEOUT)
    except ConnectionClosed as exc:
        return "closed", exc.rcvd.code if exc.rcvd is not None else None
    except TimeoutError:
        raise AssertionError(f"no reply and no close within {TIMEOUT} s") from None
    try:
        reply = json.loads(frame)
    except (TypeError, ValueError):
        raise AssertionError(f"a reply that is not JSON: {frame[:80]!r}") from None
    if not (isinstance(reply, dict) and isinstance(reply.get("type"), str)):
        raise AssertionError(f"a reply without a type: {str(reply)[:80]}")
    return "reply", reply


def _request(kind: str, data: Any = None) -> str:
    """Encode a request; ``data`` is left out when ``None`` (``state`` and ``close`` take none)."""
    return json.dumps({"type": kind} if data is None else {"type": kind, "data": data})


def _accepts(target: OpenedTarget) -> bool:
    parts = urllib.parse.urlsplit(endpoints(target.url)[0])
    try:
        socket.create_connection((parts.hostname, parts.port or 80), timeout=TIMEOUT).close()
        return True
    except OSError:
        return False


def _get(target: OpenedTarget, path: str) -> tuple[int, Any]:
    url = endpoints(target.url)[0] + path
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            body = response.read()
            return response.status, json.loads(body) if body else None
    except urllib.error.HTTPError as exc:
        return exc.code, None


def check_handshake(target: OpenedTarget) -> CheckResult:
    """Check ``/health`` and ``/schema`` answer, and a ``/ws`` session's reset is observed."""
    problems = []
    status, _ = _get(target, "/health")
    if status != 200:
        problems.append(f"GET /health: expected 200, got {status}")
    status, schema = _get(target, "/schema")
    if status != 200 or not (isinstance(schema, dict) and {"action", "observation"} <= set(schema)):
        problems.append(f"GET /schema: expected 200 with action and observation, got {status}")
    with _session(target) as ws:
        kind, reply = _exchange(ws, _request("reset", {"seed": 0}))
        if kind != "reply" or reply["type"] != "observation":
            problems.append(f"reset: expected an observation reply, got {kind} {reply}")
    return from_problems("protocol.handshake", problems, "/health, /schema and reset answered")


def check_messages(target: OpenedTarget) -> CheckResult:
    """Check that reset, state and close are each answered (close may end the connection)."""
    problems = []
    with _session(target) as ws:
        for kind, wanted in (("reset", "observation"), ("state", None), ("close", None)):
            outcome, reply = _exchange(ws, _request(kind, {"seed": 0} if kind == "reset" else None))
            if kind == "close":
                continue  # answered or closed: both end the session
            if (
                outcome != "reply"
                or reply["type"] == "error"
                or (wanted and reply["type"] != wanted)
            ):
                problems.append(f"{kind}: expected a {wanted or 'non-error'} reply, got {reply}")
    return from_problems("protocol.messages", problems, "reset, state and close answered")


def check_error_replies(target: OpenedTarget) -> CheckResult:
    """Check that misuse gets an ``error`` reply with a message, and the session carries on."""
    cases = [
        ("an unknown message type", _request("no_such_type_validate")),
        ("a step without an action", _request("step", {})),
    ]
    problems = []
    with _session(target) as ws:
        _exchange(ws, _request("reset", {"seed": 0}))
        for what, message in cases:
            kind, reply = _exchange(ws, message)
            data = reply.get("data") if kind == "reply" else None
            if (
                kind != "reply"
                or reply["type"] != "error"
                or not isinstance(data, dict)
                or (not data.get("message"))
            ):
                problems.append(
                    f"{what}: expected an error reply with a message, got {kind} {reply}"
                )
        kind, reply = _exchange(ws, _request("reset", {"seed": 1}))
        if kind != "reply" or reply["type"] != "observation":
            problems.append(f"reset after the errors: expected an observation, got {kind} {reply}")
    return from_problems("protocol.error_replies", problems, f"{len(cases)} misuses refused")


def _malformed(rng: random.Random) -> tuple[str, str | bytes]:
    choice = rng.randrange(5)
    if choice == 0:
        return "random bytes", os.urandom(rng.randrange(1, 64))
    if choice == 1:
        return "text that is not JSON", "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(20))
    if choice == 2:
        return "JSON that is not an object", json.dumps(rng.choice([[1, 2], 3, "x", None]))
    if choice == 3:
        return "a type of the wrong kind", json.dumps({"type": rng.choice([1, None, [], {}])})
    return "data of the wrong kind", json.dumps({"type": "reset", "data": rng.choice([1, [], "x"])})


def check_malformed(target: OpenedTarget, count: int = MALFORMED_INPUTS) -> CheckResult:
    """Check that malformed frames get a reply or a close in time, and never kill the server."""
    rng = random.Random(17)
    problems: list[str] = []
    for index in range(count):
        what, message = _malformed(rng)
        try:
            with _session(target) as ws:
                _exchange(ws, message)
        except Exception as exc:
            problems.append(f"input {index} ({what}): {type(exc).__name__}: {exc}"[:300])
        if not _accepts(target):
            problems.insert(
                0,
                f"input {index} ({what}): the server died (expected an error "
                "reply or a close; it no longer accepts connections)",
            )
            break
    return from_problems("protocol.malformed_input", problems, f"{count} malformed inputs handled")


def check_reconnect(target: OpenedTarget) -> CheckResult:
    """Check that a session survives another client vanishing, and a new one resets alike."""
    first: Any = target.remote()
    try:
        obs, _ = first.reset(seed=3)
        with _session(target) as ws:
            ws.socket.close()  # gone without a close frame
        first.reset(seed=3)
    except Exception as exc:
        return failed("protocol.reconnect", f"after another client vanished: {exc}"[:300])
    finally:
        first.close()
    from openenv_gym.testing.validate.rollout import difference

    again: Any = target.remote()
    try:
        found = difference(obs, again.reset(seed=3)[0], "reset obs")
    finally:
        again.close()
    if found:
        return failed("protocol.reconnect", f"a new session, seed 3: {found}")
    return passed("protocol.reconnect", "served across disconnects; seed 3 reproduced")


def openenv_protocol_checks(
    target: OpenedTarget, *, advance: Callable[[], None]
) -> list[CheckResult]:
    """Run the OpenEnv protocol checks against ``target``, the destructive one last."""
    runs: list[tuple[str, Callable[[], CheckResult]]] = [
        ("protocol.handshake", lambda: check_handshake(target)),
        ("protocol.messages", lambda: check_messages(target)),
        ("protocol.error_replies", lambda: check_error_replies(target)),
        ("protocol.reconnect", lambda: check_reconnect(target)),
        ("protocol.malformed_input", lambda: check_malformed(target)),
    ]
    results = [
        skipped("protocol.limits", "OpenEnv's protocol declares no limits to probe"),
        skipped("protocol.origin", "OpenEnv servers do not check Origin"),
    ]
    for name, run in runs:
        if not _accepts(target):
            results.append(failed(name, "the server no longer accepts connections"))
        else:
            try:
                results.append(run())
            except Exception as exc:
                results.append(failed(name, f"{type(exc).__name__}: {exc}"[:300]))
        advance()
    return results
