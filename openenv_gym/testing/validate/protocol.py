"""The protocol level: the compliance suite's checks against whatever server TARGET names.

The malformed-input checks are the fuzz campaign's own (:class:`~openenv_gym.testing.
compliance.fuzz.Fuzzer`: every answer a well-formed reply with a typed error, or a clean
close, in bounded time), thrown in the session states that need no particular env; the
handshake, message, error-reply, limit and reconnect checks drive the target's own spec, and
the origin check is the campaign's attack. After every input the server must still accept a
connection: a server that dies on a malformed frame fails ``protocol.malformed_input``.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from openenv_gym.protocol.messages import PROTOCOL_VERSION, Op, Status
from openenv_gym.testing.compliance._support import Target
from openenv_gym.testing.compliance.attacks import attack_origin_and_host
from openenv_gym.testing.compliance.fuzz import ANSWER_TIMEOUT, Fuzzer, Outcome, request
from openenv_gym.testing.compliance.fuzz_inputs import (
    gen_bytes,
    gen_envelope,
    gen_fragments,
    gen_hello,
    gen_msgpack,
    gen_text,
)
from openenv_gym.testing.rawws import (
    abort,
    client_frame,
    opening_handshake,
    port_of,
    raw_connection,
    read_frames,
    ws_connection,
)
from openenv_gym.testing.validate.results import (
    CheckResult,
    failed,
    from_problems,
    passed,
    skipped,
)
from openenv_gym.testing.validate.target import OpenedTarget

__all__ = ["MALFORMED_INPUTS", "protocol_checks"]

MALFORMED_INPUTS = 60
"""How many malformed inputs ``protocol.malformed_input`` throws (seeded, bounded)."""
_KINDS = ("new", "open")  # the session states that need no particular env
_GENERATORS: dict[str, Callable[[random.Random], tuple[Any, ...]]] = {
    "bytes": lambda rng: (rng.choice(_KINDS), gen_bytes(rng)[1]),
    "msgpack": lambda rng: (rng.choice(_KINDS), gen_msgpack(rng)[1]),
    "envelope": lambda rng: (rng.choice(_KINDS), *gen_envelope(rng)[1:]),
    "text": lambda rng: (rng.choice(_KINDS), gen_text(rng)[1]),
    "hello": gen_hello,
    "fragments": gen_fragments,
}


def _accepts(url: str, timeout: float = ANSWER_TIMEOUT) -> bool:
    """Tell whether the server still accepts a TCP connection (it did not die)."""
    try:
        socket.create_connection(
            ("127.0.0.1" if "127.0.0.1" in url else _host(url), port_of(url)), timeout=timeout
        ).close()
        return True
    except OSError:
        return False


def _host(url: str) -> str:
    return url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")


def _sample_action(target: OpenedTarget) -> Any:
    env = target.remote()
    try:
        space = env.action_space
        space.seed(0)
        return space.sample()
    finally:
        env.close()


def _ok(fuzzer: Fuzzer, ws: Any, op: Op, request_id: int, body: Any) -> Outcome:
    outcome = fuzzer.send(ws, request(op, request_id, body))
    if outcome.request_id != request_id or outcome.closed:
        raise AssertionError(
            f"{op.name} (id {request_id}): expected a reply with id {request_id}, got {outcome}"
        )
    return outcome


def check_handshake(target: OpenedTarget, fuzzer: Fuzzer) -> CheckResult:
    """Check that HELLO is answered, and a wrong version refused with its typed error."""
    name = "protocol.handshake"
    problems = []
    with ws_connection(target.url, ANSWER_TIMEOUT, token=target.token) as ws:
        hello = _ok(fuzzer, ws, Op.HELLO, 1, {"protocol_version": PROTOCOL_VERSION})
        if hello.status is not Status.OK or hello.body.get("protocol_version") != PROTOCOL_VERSION:
            problems.append(
                f"HELLO: expected an OK reply with version {PROTOCOL_VERSION}, got {hello}"
            )
    with ws_connection(target.url, ANSWER_TIMEOUT, token=target.token) as ws:
        wrong = fuzzer.send(ws, request(Op.HELLO, 1, {"protocol_version": PROTOCOL_VERSION + 99}))
        if wrong.error_type != "openenv_gym.errors.VersionMismatchError":
            problems.append(
                f"HELLO with version {PROTOCOL_VERSION + 99}: expected a "
                f"VersionMismatchError reply, got {wrong}"
            )
    return from_problems(name, problems, "HELLO answered; a wrong version refused by name")


def check_messages(target: OpenedTarget, fuzzer: Fuzzer, action: Any) -> CheckResult:
    """Every message type is answered with its request id: OK, or a typed error reply."""
    name = "protocol.messages"
    sequence: list[tuple[Op, Any, bool]] = [
        (Op.HELLO, {"protocol_version": PROTOCOL_VERSION}, True),
        (Op.MAKE, {"env_id": target.env_id}, True),
        (Op.RESET, {"seed": 0}, True),
        (Op.STEP, action, True),
        (Op.STATE, None, True),
        (Op.RENDER, None, False),
        (Op.GET_ATTR, {"name": "metadata"}, False),
        (Op.CALL, {"name": "render", "args": [], "kwargs": {}}, False),
        (Op.SET_ATTR, {"name": "validate_probe", "values": 1, "per_env": False}, False),
        (Op.CLOSE, None, True),
    ]
    problems = []
    with ws_connection(target.url, ANSWER_TIMEOUT, token=target.token) as ws:
        for request_id, (op, body, must_succeed) in enumerate(sequence, 1):
            outcome = _ok(fuzzer, ws, op, request_id, body)
            if must_succeed and outcome.status is not Status.OK:
                problems.append(f"{op.name} (id {request_id}): expected OK, got {outcome}")
            if (
                op is Op.STEP
                and outcome.status is Status.OK
                and not (isinstance(outcome.body, list) and len(outcome.body) == 5)
            ):
                problems.append(f"STEP: expected a 5-list, got {outcome.body!r}"[:300])
    return from_problems(name, problems, f"{len(sequence)} message types answered")


def check_error_replies(target: OpenedTarget, fuzzer: Fuzzer) -> CheckResult:
    """Misuse gets the typed error that names it, and the session carries on."""
    name = "protocol.error_replies"
    hello = {"protocol_version": PROTOCOL_VERSION}
    cases: list[tuple[str, Op, Any, str]] = [
        ("STEP before MAKE", Op.STEP, np.int64(0), "SessionStateError"),
        (
            "MAKE of a spec not hosted",
            Op.MAKE,
            {"env_id": "NoSuchEnv-v0-validate"},
            "UnknownEnvError",
        ),
        ("MAKE with a field of the wrong type", Op.MAKE, {"env_id": 7}, "DecodeError"),
        ("RESET before MAKE", Op.RESET, {"seed": 0}, "SessionStateError"),
    ]
    problems = []
    with ws_connection(target.url, ANSWER_TIMEOUT, token=target.token) as ws:
        _ok(fuzzer, ws, Op.HELLO, 1, hello)
        for request_id, (what, op, body, expected) in enumerate(cases, 2):
            outcome = fuzzer.send(ws, request(op, request_id, body))
            if not outcome.error_type.endswith("." + expected):
                problems.append(f"{what}: expected a {expected} reply, got {outcome}")
        probe = _ok(fuzzer, ws, Op.CLOSE, 99, None)
        if probe.status is not Status.OK:
            problems.append(f"CLOSE after the errors: expected OK, got {probe}")
    return from_problems(name, problems, f"{len(cases)} misuses refused by type")


def check_limits(target: OpenedTarget, fuzzer: Fuzzer) -> CheckResult:
    """Check that a MAKE of 2**31 envs is refused at once with a ``CapacityError``."""
    name = "protocol.limits"
    with ws_connection(target.url, ANSWER_TIMEOUT, token=target.token) as ws:
        _ok(fuzzer, ws, Op.HELLO, 1, {"protocol_version": PROTOCOL_VERSION})
        started = time.monotonic()
        make = {"env_id": target.env_id, "num_envs": 2**31, "autoreset_mode": "NextStep"}
        outcome = fuzzer.send(ws, request(Op.MAKE, 2, make))
        seconds = time.monotonic() - started
    if not outcome.error_type.endswith(".CapacityError"):
        return failed(name, f"MAKE of 2**31 envs: expected a CapacityError, got {outcome}")
    if seconds > 2.0:
        return failed(name, f"MAKE of 2**31 envs: refused after {seconds:.1f} s (expected < 2 s)")
    return passed(
        name,
        f"a huge MAKE refused in {seconds * 1000:.0f} ms",
        seconds=seconds,
        message=outcome.body.get("message"),
    )


def check_malformed(target: OpenedTarget, fuzzer: Fuzzer, count: int) -> CheckResult:
    """Check that malformed inputs get a typed error reply or a clean close, and kill nothing.

    The inputs: random bytes, msgpack values, envelopes, text frames, HELLOs, fragments.
    """
    name = "protocol.malformed_input"
    rng = random.Random(17)
    problems: list[str] = []
    kinds = list(_GENERATORS)
    for index in range(count):
        kind = kinds[index % len(kinds)]
        args = _GENERATORS[kind](rng)
        try:
            getattr(fuzzer, f"check_{kind}")(*args)
        except Exception as exc:
            problems.append(f"input {index} ({kind}): {type(exc).__name__}: {exc}"[:300])
        if not _accepts(target.url):
            problems.insert(
                0,
                f"input {index} ({kind} {_brief(args)}): the server died "
                "(expected an error reply or a clean close; it no longer "
                "accepts connections)",
            )
            break
    return from_problems(
        name,
        problems,
        f"{count} malformed inputs handled",
        inputs=count,
        outcomes=dict(fuzzer.tally.outcomes),
    )


def _brief(args: tuple[Any, ...]) -> str:
    return repr(args)[:60]


def _vanish(target: OpenedTarget) -> None:
    """Open a session (HELLO, MAKE), send a RESET, and drop the connection with an RST.

    By hand on a raw socket: the session is gone without a close frame or FIN.
    """
    sock = raw_connection(target.url, ANSWER_TIMEOUT)
    try:
        head = opening_handshake()
        if target.token:
            head = head[:-2] + f"Authorization: Bearer {target.token}\r\n\r\n".encode()
        sock.sendall(head)
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"EOF during the opening handshake: {response[:60]!r}")
            response += chunk
        if not response.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"handshake refused: {response[:60]!r}")
        hello = request(Op.HELLO, 1, {"protocol_version": PROTOCOL_VERSION})
        make = request(Op.MAKE, 2, {"env_id": target.env_id})
        sock.sendall(client_frame(hello) + client_frame(make))
        read_frames(sock, 2, ANSWER_TIMEOUT)
        sock.sendall(client_frame(request(Op.RESET, 3, {"seed": 0})))  # gone before the reply
    finally:
        abort(sock)


def check_reconnect(target: OpenedTarget) -> CheckResult:
    """Check that sessions survive a client vanishing; a new one reproduces a seeded reset."""
    name = "protocol.reconnect"
    first: Any = target.remote()
    try:
        obs, _ = first.reset(seed=3)
        _vanish(target)
        first.step(first.action_space.sample())
    except Exception as exc:
        return failed(name, f"a session after another vanished: {type(exc).__name__}: {exc}")
    finally:
        first.close()
    again: Any = target.remote()
    try:
        obs_again, _ = again.reset(seed=3)
    except Exception as exc:
        return failed(name, f"a new session: {type(exc).__name__}: {exc}")
    finally:
        again.close()
    from openenv_gym.testing.validate.rollout import difference

    found = difference(obs, obs_again, "reset obs")
    if found:
        return failed(name, f"a new session, seed 3: {found} (expected the first session's)")
    return passed(name, "served across disconnects; a new session reproduces seed 3")


def check_origin(target: OpenedTarget) -> CheckResult:
    """Run the compliance attack: upgrades from a foreign ``Origin`` or ``Host`` are refused."""
    name = "protocol.origin"
    if target.token is not None or "127.0.0.1" not in target.url:
        return skipped(name, "needs a tokenless loopback server")
    outcome = attack_origin_and_host(Target(url=target.url, env_id=target.env_id))
    return (passed if outcome.passed else failed)(name, outcome.detail)


def protocol_checks(
    target: OpenedTarget, *, inputs: int = MALFORMED_INPUTS, advance: Callable[[], None]
) -> list[CheckResult]:
    """Run every protocol check against ``target``, destructive ones last.

    Args:
        target: the opened target.
        inputs: how many malformed inputs to throw.
        advance: called after each check (the progress bar).

    Returns:
        One result per check; a check that breaks off is a failure naming why.

    """
    if target.kind == "openenv":
        from openenv_gym.testing.validate.protocol_openenv import openenv_protocol_checks

        return openenv_protocol_checks(target, advance=advance)
    fuzzer = Fuzzer(target.url, token=target.token)
    results: list[CheckResult] = []
    action: Any = None
    try:
        action = _sample_action(target)
    except Exception as exc:
        results.append(failed("protocol.messages", f"cannot open a session: {exc}"))
    runs: list[tuple[str, Callable[[], CheckResult]]] = [
        ("protocol.handshake", lambda: check_handshake(target, fuzzer)),
        ("protocol.messages", lambda: check_messages(target, fuzzer, action)),
        ("protocol.error_replies", lambda: check_error_replies(target, fuzzer)),
        ("protocol.limits", lambda: check_limits(target, fuzzer)),
        ("protocol.reconnect", lambda: check_reconnect(target)),
        ("protocol.origin", lambda: check_origin(target)),
        ("protocol.malformed_input", lambda: check_malformed(target, fuzzer, inputs)),
    ]
    for name, run in runs:
        if not _accepts(target.url):
            results.append(failed(name, "the server no longer accepts connections"))
        else:
            try:
                results.append(run())
            except Exception as exc:  # a check that breaks off: the server misbehaved
                results.append(failed(name, f"{type(exc).__name__}: {exc}"[:300]))
        advance()
    return results
