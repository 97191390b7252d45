"""The fuzz campaign: whatever a client throws at a server, it answers or closes, in bounded time.

A :class:`Fuzzer` holds a live server (and, for oversized messages, a second one with a small
``--max-message-bytes``) and one ``check_<kind>`` per kind of malformed input: random bytes,
msgpack values, envelopes with random ops, ids and bodies in every session state, invalid
HELLO/MAKE/RESET fields, bad actions, text frames, fragments, frames split across TCP segments,
invalid frame sequences, HTTP garbage, oversized messages and abrupt disconnects. The inputs
come from :mod:`.fuzz_inputs`.

For every input the server must send a well-formed reply (an error reply carries a typed error
body, no traceback) or close cleanly (a close frame with a non-error code, or EOF) within
``ANSWER_TIMEOUT`` seconds; where the session should carry on, a follow-up request must be
answered. A check raises :class:`FuzzFailure` (an ``AssertionError``) otherwise.
Frame-level checks live in :mod:`.fuzz_frames`, the pinned bugs in :mod:`.fuzz_regressions`,
and :mod:`.fuzz_campaign` throws random inputs of every kind for a while, with a bystander.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import os
import time
from typing import Any

import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from openenv_gym.protocol import codec
from openenv_gym.protocol.messages import (
    PROTOCOL_VERSION,
    ErrorBody,
    Op,
    Status,
    parse_body,
    parse_reply,
)
from openenv_gym.testing.compliance.fuzz_inputs import MAX_ENVS, SESSION_KINDS, SPECS
from openenv_gym.testing.rawws import ws_connection

__all__ = [
    "ANSWER_TIMEOUT",
    "FUZZ_SERVER_ARGS",
    "SMALL_LIMIT",
    "SMALL_SERVER_ARGS",
    "FuzzFailure",
    "Fuzzer",
    "Outcome",
]

MAX_SESSIONS = 32  # small limits make leaked sessions and envs countable exactly
MAX_ENVS_PER_SESSION = 4096  # the server's default
SMALL_LIMIT = 65536
OPS = frozenset(int(op) for op in Op)  # every op of the protocol: an envelope naming one is valid
_LIMITS = ("--max-sessions", str(MAX_SESSIONS), "--max-envs", str(MAX_ENVS))
_BLOB = ("--set-attr-allow", "blob")  # the attribute the size checks set and get
FUZZ_SERVER_ARGS = ("--workers", "1", *_LIMITS, *_BLOB)
SMALL_SERVER_ARGS = ("--workers", "1", "--max-message-bytes", str(SMALL_LIMIT), *_BLOB)
"""How the fuzz servers are started (``openenv-gym serve`` flags), hosting :data:`SPECS`."""
ANSWER_TIMEOUT = 5.0
PROBE_ID = 2**40
CLEAN_CLOSE_CODES = frozenset({1000, 1001, 1002, 1007, 1009})  # plus EOF; never 1011
DECODE = "openenv_gym.errors.DecodeError"
CAPACITY = "openenv_gym.errors.CapacityError"


class FuzzFailure(AssertionError):
    """A bad outcome: the server hung, sent garbage, closed uncleanly or answered wrongly."""


def expect(condition: object, what: object) -> None:
    """Raise :class:`FuzzFailure` with ``what`` unless ``condition`` holds."""
    if not condition:
        raise FuzzFailure(str(what))


@dataclasses.dataclass(frozen=True)
class Outcome:
    """A reply (``status`` set) or a closed connection (``closed``)."""

    status: Status | None = None
    request_id: int | None = None
    body: Any = None
    closed: bool = False
    close_code: int | None = None

    @property
    def error_type(self) -> str:
        """The error type of an error reply, else ``""``."""
        return str(self.body["type"]) if self.status is Status.ERROR else ""


@dataclasses.dataclass
class Tally:
    """Inputs thrown, per kind, and what the server did with them."""

    tried: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    outcomes: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)


def request(op: Op | int, request_id: Any, body: Any) -> bytes:
    """Encode one request envelope."""
    return codec.encode([int(op), request_id, body])


def request_header(frame: bytes | None) -> tuple[Any, Any]:
    """Return the (op, request id) of a frame that decodes to a 3-array, else (None, None)."""
    with contextlib.suppress(Exception):
        value = codec.decode(frame, max_bytes=None) if frame is not None else None
        if isinstance(value, list) and len(value) == 3:
            return value[0], value[1]
    return None, None


class Fuzzer:
    """Checks of malformed inputs against a live server; each raises :class:`FuzzFailure`.

    Args:
        url: the server, started with :data:`FUZZ_SERVER_ARGS` hosting :data:`SPECS`.
        small_url: a server started with :data:`SMALL_SERVER_ARGS`, for oversized messages.
        pid: the server's process id (memory checks read ``/proc/<pid>``).
        tally: where inputs and outcomes are counted.
        token: the token the server requires, if any.

    """

    def __init__(
        self,
        url: str,
        *,
        small_url: str | None = None,
        pid: int | None = None,
        tally: Tally | None = None,
        token: str | None = None,
    ) -> None:
        self.url, self.small_url, self.pid = url, small_url, pid
        self.token = token
        self.tally = tally if tally is not None else Tally()

    # ---- answers

    def closed(self, exc: ConnectionClosed) -> Outcome:
        """Return the outcome of a close; fail if it was not clean."""
        code = exc.rcvd.code if exc.rcvd is not None else None
        expect(code is None or code in CLEAN_CLOSE_CODES, f"unclean close: {exc.rcvd}")
        self.tally.outcomes[f"closed ({code or 'EOF'})"] += 1
        return Outcome(closed=True, close_code=code)

    def check_reply(self, frame: bytes | str) -> Outcome:
        """Return a reply frame's outcome; fail unless it is a well-formed reply."""
        expect(isinstance(frame, bytes), f"the server sent a text frame: {frame[:80]!r}")
        assert isinstance(frame, bytes)
        try:
            status, request_id, body = parse_reply(codec.decode(frame, max_bytes=None))
        except Exception as exc:
            raise FuzzFailure(f"malformed reply: {exc}") from exc
        if status is Status.ERROR:
            error = parse_body(ErrorBody, body)  # exactly the four keys, typed
            expect(error.type and isinstance(error.message, str), body)
            expect(error.traceback is None, "a traceback without --debug")
            self.tally.outcomes[f"error reply {error.type.rpartition('.')[2]}"] += 1
        else:
            self.tally.outcomes["ok reply"] += 1
        return Outcome(status, request_id, body)

    def answer(self, ws: ClientConnection) -> Outcome:
        """Return the server's next reply, or how it closed; fail if neither comes in time."""
        try:
            frame = ws.recv(timeout=ANSWER_TIMEOUT)
        except TimeoutError:
            raise FuzzFailure(f"no reply and no close within {ANSWER_TIMEOUT} s") from None
        except ConnectionClosed as exc:
            return self.closed(exc)
        return self.check_reply(frame)

    def send(self, ws: ClientConnection, data: Any, *, text: bool | None = None) -> Outcome:
        """Send one message (or fragments) and return the answer."""
        with contextlib.suppress(ConnectionClosed):  # the server closed first: recv() says how
            ws.send(data, text=text)
        return self.answer(ws)

    def expect_ok(self, ws: ClientConnection, op: Op, request_id: int, body: Any) -> Any:
        """Send a request that must succeed; return its reply body."""
        outcome = self.send(ws, request(op, request_id, body))
        expect((outcome.status, outcome.request_id) == (Status.OK, request_id), outcome)
        return outcome.body

    def open(self, ws: ClientConnection, kind: str) -> None:
        """Bring a fresh connection's session to ``kind`` (request ids 1, 2, 3)."""
        if kind == "new":
            return
        self.expect_ok(ws, Op.HELLO, 1, {"protocol_version": PROTOCOL_VERSION})
        make = SESSION_KINDS[kind]
        if make is not None:
            self.expect_ok(ws, Op.MAKE, 2, make)
            self.expect_ok(ws, Op.RESET, 3, {"seed": 0})

    def carries_on(self, ws: ClientConnection, first: Outcome, sent: bytes | None) -> None:
        """After ``first``, the session must answer one more request, unless it ended."""
        op, _ = request_header(sent)
        op = op if type(op) is int else None
        ended = (
            first.closed
            or (first.status is Status.OK and op == Op.CLOSE)
            or (first.error_type == CAPACITY and op == Op.HELLO)
        )
        probe = self.send(ws, request(Op.CLOSE, PROBE_ID, None))
        if ended:
            expect(probe.closed, f"a session that ended answered {probe}")
        else:
            expect((probe.status, probe.request_id) == (Status.OK, PROBE_ID), (first, probe))

    def message(self, kind: str, data: bytes) -> Outcome:
        """Send ``data`` in a session of ``kind``: answered with a fitting id, or closed."""
        with ws_connection(self.url, ANSWER_TIMEOUT, token=self.token) as ws:
            self.open(ws, kind)
            outcome = self.send(ws, data)
            _, request_id = request_header(data)
            ids = (0, request_id) if type(request_id) is int else (0,)
            expect(outcome.closed or outcome.request_id in ids, outcome)
            self.carries_on(ws, outcome, data)
        return outcome

    # ---- checks, one per input kind (arguments as fuzz_inputs.gen_<kind> returns them)

    def check_bytes(self, kind: str, data: bytes) -> None:
        """Random bytes as one binary message."""
        self.tally.tried["random bytes frames"] += 1
        self.message(kind, data)

    def check_msgpack(self, kind: str, value: Any) -> None:
        """Check that a random msgpack value, extension types included."""
        import msgpack

        self.tally.tried["random msgpack values"] += 1
        self.message(kind, msgpack.packb(value, use_bin_type=True))

    def check_envelope(self, kind: str, op: Any, request_id: Any, body: Any) -> None:
        """Check that an envelope is answered: its id if valid, else a DecodeError."""
        self.tally.tried["envelopes with random op/id/body"] += 1
        frame = codec.encode([op, request_id, body])
        with ws_connection(self.url, ANSWER_TIMEOUT, token=self.token) as ws:
            self.open(ws, kind)
            outcome = self.send(ws, frame)
            expect(not outcome.closed, "an envelope never closes the connection")
            valid = type(op) is int and op in OPS and type(request_id) is int and request_id >= 1
            if valid:
                expect(outcome.request_id == request_id, outcome)
            else:
                expect((outcome.status, outcome.request_id) == (Status.ERROR, 0), outcome)
                expect(outcome.error_type == DECODE, outcome)
            self.carries_on(ws, outcome, frame)

    def check_hello(self, body: Any) -> None:
        """HELLO with random fields gets exactly the error its fields call for."""
        self.tally.tried["HELLO with random fields"] += 1
        with ws_connection(self.url, ANSWER_TIMEOUT, token=self.token) as ws:
            frame = request(Op.HELLO, 1, body)
            outcome = self.send(ws, frame)
            expected = hello_expectation(body)
            expect(outcome.request_id == 1, outcome)
            expect(outcome.error_type == expected, (body, outcome))
            if expected == "openenv_gym.errors.VersionMismatchError":
                details = {
                    "client_version": body["protocol_version"],
                    "server_version": PROTOCOL_VERSION,
                }
                expect(outcome.body["details"] == details, outcome)
            self.carries_on(ws, outcome, frame)

    def check_make(self, body: Any) -> None:
        """MAKE with random fields gets exactly the error its fields call for."""
        self.tally.tried["MAKE with random fields"] += 1
        with ws_connection(self.url, ANSWER_TIMEOUT, token=self.token) as ws:
            self.open(ws, "open")
            frame = request(Op.MAKE, 2, body)
            outcome = self.send(ws, frame)
            expected = make_expectation(body)
            expect(outcome.request_id == 2, outcome)
            if expected is not None:
                expect(outcome.error_type == expected, (body, outcome))
            if expected == CAPACITY:
                message = outcome.body["message"]
                expect("the limit is" in message or "at capacity" in message, outcome)
            self.carries_on(ws, outcome, frame)

    def check_huge_make(self, env_id: str, num_envs: int) -> None:
        """Check that a huge ``num_envs`` is refused at once by the per-session limit."""
        from openenv_gym.testing.rawws import rss_mib

        self.tally.tried["MAKE with a huge num_envs"] += 1
        rss = rss_mib(self.pid) if self.pid is not None else 0.0
        with ws_connection(self.url, ANSWER_TIMEOUT, token=self.token) as ws:
            self.open(ws, "open")
            started = time.monotonic()
            make = {"env_id": env_id, "num_envs": num_envs, "autoreset_mode": "NextStep"}
            outcome = self.send(ws, request(Op.MAKE, 2, make))
            expect(time.monotonic() - started < 2.0, "a refusal that took 2 s")
            expect(outcome.error_type == CAPACITY, outcome)
            wanted = f"asked for {num_envs} envs per session, the limit is {MAX_ENVS_PER_SESSION}"
            expect(outcome.body["message"] == wanted, outcome)
            expect(outcome.body["details"]["limit"] == "envs per session", outcome)
            self.carries_on(ws, outcome, None)
        if self.pid is not None:
            growth = rss_mib(self.pid) - rss
            expect(growth < 20, f"RSS grew {growth:.0f} MiB for a refused MAKE")

    def check_actions(self, kind: str, actions: list[Any]) -> None:
        """Each STEP is answered with its id (an OK step is a 5-list); the session carries on."""
        with ws_connection(self.url, ANSWER_TIMEOUT, token=self.token) as ws:
            self.open(ws, kind)
            for index, action in enumerate(actions):
                self.tally.tried["STEP with random actions"] += 1
                request_id = 10 + index
                outcome = self.send(ws, request(Op.STEP, request_id, action))
                expect(outcome.request_id == request_id, outcome)
                if outcome.status is Status.OK:
                    expect(isinstance(outcome.body, list) and len(outcome.body) == 5, outcome)
            self.carries_on(ws, Outcome(Status.OK, 0), None)

    def check_reset(self, kind: str, seed: Any, options: Any) -> None:
        """Invalid seeds/options are DecodeErrors; whatever happened, the session resets again."""
        self.tally.tried["RESET with random seeds/options"] += 1
        with ws_connection(self.url, ANSWER_TIMEOUT, token=self.token) as ws:
            self.open(ws, kind)
            outcome = self.send(ws, request(Op.RESET, 10, {"seed": seed, "options": options}))
            expect(outcome.request_id == 10, outcome)
            options_ok = options is None or (
                isinstance(options, dict) and all(type(k) is str for k in options)
            )
            if not (seed_is_valid(seed) and options_ok):
                expect(outcome.error_type == DECODE, outcome)
            self.expect_ok(ws, Op.RESET, 11, {"seed": 1})
            make = SESSION_KINDS[kind] or {}
            action: Any = np.int64(0)
            if make.get("autoreset_mode"):
                action = np.zeros(make["num_envs"], dtype=np.int64)
            self.expect_ok(ws, Op.STEP, 12, action)

    def check_text(self, kind: str, text: str) -> None:
        """Check that a text frame is refused with a DecodeError; the session carries on."""
        self.tally.tried["text frames"] += 1
        with ws_connection(self.url, ANSWER_TIMEOUT, token=self.token) as ws:
            self.open(ws, kind)
            outcome = self.send(ws, text)
            expect((outcome.status, outcome.request_id) == (Status.ERROR, 0), outcome)
            expect(outcome.error_type == DECODE, outcome)
            expect("text frames are refused" in outcome.body["message"], outcome)
            self.carries_on(ws, outcome, None)

    def check_invalid_utf8_text(self) -> None:
        """Check that invalid UTF-8 text is refused undecoded, or fails the connection (1007)."""
        self.tally.tried["text frames"] += 1
        with ws_connection(self.url, ANSWER_TIMEOUT, token=self.token) as ws:
            outcome = self.send(ws, b"\xff\xfe not utf-8", text=True)
            if outcome.closed:  # RFC 6455 8.1 allows failing the connection with 1007
                expect(outcome.close_code in (1007, None), outcome)
            else:  # refused without decoding them (docs/protocol.md 1)
                expect((outcome.status, outcome.request_id) == (Status.ERROR, 0), outcome)
                expect("text frames are refused" in outcome.body["message"], outcome)
                self.carries_on(ws, outcome, None)

    def check_fragments(self, which: str, positions: list[int], empty: bool) -> None:
        """Check that a fragmented HELLO is served; fragmented garbage is a DecodeError."""
        self.tally.tried["fragmented messages"] += 1
        data = request(Op.HELLO, 1, {"protocol_version": PROTOCOL_VERSION})
        if which != "hello":
            data = b"\xc1" + os.urandom(40)
        fragments = cuts(data, positions) + ([b""] if empty else [])
        with ws_connection(self.url, ANSWER_TIMEOUT, token=self.token) as ws:
            outcome = self.send(ws, fragments)
            if which == "hello":
                expect((outcome.status, outcome.request_id) == (Status.OK, 1), outcome)
            else:
                expect(outcome.error_type == DECODE, outcome)
            self.carries_on(ws, outcome, None)


def cuts(data: bytes, positions: list[int]) -> list[bytes]:
    """Cut ``data`` at ``positions`` (modulo its length); never an empty list."""
    bounds = sorted({0, len(data), *(p % (len(data) + 1) for p in positions)})
    return [data[a:b] for a, b in itertools.pairwise(bounds)] or [data]


def hello_expectation(body: Any) -> str:
    """Return the error type a HELLO with ``body`` must get (``""``: none)."""
    body = {} if body is None else body
    if not isinstance(body, dict) or set(body) - {"protocol_version", "client"}:
        return DECODE
    version = body.get("protocol_version")
    if type(version) is not int or type(body.get("client", "")) is not str:
        return DECODE
    return "" if version == PROTOCOL_VERSION else "openenv_gym.errors.VersionMismatchError"


def make_expectation(body: Any) -> str | None:
    """Return the error type a MAKE must get; ``None``: OK or whatever the env raises."""
    body = {} if body is None else body
    if not isinstance(body, dict) or set(body) - {"env_id", "num_envs", "kwargs", "autoreset_mode"}:
        return DECODE
    env_id, num_envs = body.get("env_id"), body.get("num_envs", 1)
    kwargs, mode = body.get("kwargs", {}), body.get("autoreset_mode")
    if type(env_id) is not str or not 1 <= len(env_id) <= 512:
        return DECODE
    if type(num_envs) is not int or num_envs < 1:
        return DECODE
    if type(kwargs) is not dict or any(type(key) is not str for key in kwargs):
        return DECODE
    if mode is not None and mode not in ("NextStep", "SameStep", "Disabled"):
        return DECODE
    if env_id not in SPECS:
        return "openenv_gym.errors.UnknownEnvError"
    if num_envs > MAX_ENVS:
        return CAPACITY
    if mode is None and num_envs != 1:
        return "ValueError"
    return None


def seed_is_valid(seed: Any) -> bool:
    """Tell whether ``seed`` is a RESET seed the protocol accepts."""
    if seed is None or type(seed) is int:
        return True
    return type(seed) is list and all(s is None or type(s) is int for s in seed)
