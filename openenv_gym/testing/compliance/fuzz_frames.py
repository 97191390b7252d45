"""Fuzz checks below the WebSocket client: raw frames, TCP segments, HTTP garbage, sizes.

These speak on plain sockets (:mod:`openenv_gym.testing.rawws`). Segmentation is made, not
hoped for: after each write the check waits (with a deadline) until the server has read every
byte sent (:func:`~openenv_gym.testing.compliance._support.in_flight`), so each write is a read
of its own on the server's side.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from typing import Any

import numpy as np

from openenv_gym.protocol import codec
from openenv_gym.protocol.messages import PROTOCOL_VERSION, Op, Status
from openenv_gym.testing.compliance._support import in_flight, wait_for
from openenv_gym.testing.compliance.fuzz import (
    ANSWER_TIMEOUT,
    CLEAN_CLOSE_CODES,
    DECODE,
    SMALL_LIMIT,
    Fuzzer,
    cuts,
    expect,
    request,
)
from openenv_gym.testing.compliance.fuzz_inputs import DICT_TUPLE
from openenv_gym.testing.rawws import (
    abort,
    client_frame,
    close_frame,
    healthz,
    opening_handshake,
    raw_connection,
    read_frames,
    read_until_eof,
    split_server_frames,
    upgraded_connection,
    ws_connection,
)

__all__ = ["SESSION_REQUESTS", "FrameChecks", "send_segment"]

SESSION_REQUESTS: list[list[Any]] = [
    [int(Op.HELLO), 1, {"protocol_version": PROTOCOL_VERSION}],
    [int(Op.MAKE), 2, {"env_id": DICT_TUPLE, "num_envs": 2, "autoreset_mode": "NextStep"}],
    [int(Op.RESET), 3, {"seed": 0}],
    [int(Op.STEP), 4, np.array([1, -1])],
    [int(Op.STATE), 5, None],
    [int(Op.SET_ATTR), 6, {"name": "blob", "values": np.arange(12_000.0), "per_env": False}],
    [int(Op.STEP), 7, np.array([0, 0])],
]
"""A whole session, every request answered OK; its stream is cut for the segment checks."""


def send_segment(sock: socket.socket, data: bytes, timeout: float = ANSWER_TIMEOUT) -> None:
    """Send ``data`` and wait until the server has read all of it (a read of its own).

    Raises:
        TimeoutError: the server left bytes unread for ``timeout`` seconds.

    """
    sock.sendall(data)
    if wait_for(lambda: in_flight(sock) == 0, timeout, poll=0.001) is None:
        raise TimeoutError(f"the server left {in_flight(sock)} bytes unread for {timeout} s")


class FrameChecks:
    """The raw-socket checks of a :class:`Fuzzer` (its servers, tally and reply checks)."""

    def __init__(self, fuzzer: Fuzzer) -> None:
        self.fuzzer = fuzzer

    def _eof(self, sock: socket.socket) -> bytes:
        """Everything the server sends until it closes (a reset counts as an outcome)."""
        try:
            received, reset = read_until_eof(sock, ANSWER_TIMEOUT)
        except TimeoutError as exc:
            raise AssertionError(str(exc)) from exc
        if reset:
            self.fuzzer.tally.outcomes["closed (reset)"] += 1
        return received

    def server_frames(self, data: bytes) -> None:
        """Every complete frame the server sent is a valid reply, a pong or a clean close."""
        frames, _ = split_server_frames(data)
        for opcode, payload in frames:
            if opcode == 0x2:
                self.fuzzer.check_reply(payload)
            elif opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                expect(code is None or code in CLEAN_CLOSE_CODES, (code, payload[2:]))
                self.fuzzer.tally.outcomes[f"closed ({code or 'no code'})"] += 1
            else:
                expect(opcode == 0xA, f"unexpected server frame opcode {opcode}")

    def check_segments(self, positions: list[int], key: bytes) -> None:
        """Check that a session cut across TCP segments anywhere is served, in order."""
        self.fuzzer.tally.tried["frames split across TCP segments"] += 1
        stream = b"".join(client_frame(codec.encode(r), key=key) for r in SESSION_REQUESTS)
        sock = upgraded_connection(self.fuzzer.url, ANSWER_TIMEOUT)
        try:
            for segment in cuts(stream, positions):
                send_segment(sock, segment)
            frames = read_frames(sock, len(SESSION_REQUESTS), ANSWER_TIMEOUT)
            replies = [self.fuzzer.check_reply(p) for opcode, p in frames if opcode == 0x2]
            wanted = [(Status.OK, request_id) for _, request_id, _ in SESSION_REQUESTS]
            expect([(r.status, r.request_id) for r in replies] == wanted, replies)
            sock.sendall(close_frame())
            self.server_frames(self._eof(sock))
        finally:
            sock.close()

    def check_raw_frames(self, frames: list[bytes], unmasked: bool) -> None:
        """Frames breaking the rules, then a close and EOF: only clean closes come back."""
        self.fuzzer.tally.tried["raw frame sequences"] += 1
        sock = upgraded_connection(self.fuzzer.url, ANSWER_TIMEOUT)
        try:
            with contextlib.suppress(OSError):  # the server may close part-way
                for frame in frames:
                    sock.sendall(frame)
                if unmasked:
                    sock.sendall(client_frame(b"x", key=None))  # an unmasked client frame: 1002
                sock.sendall(close_frame())
                sock.shutdown(socket.SHUT_WR)  # a frame may still await bytes: EOF ends it
            self.server_frames(self._eof(sock))
        finally:
            sock.close()

    def check_http(self, prefix: bytes, garbage: bytes, fin: bool) -> None:
        """HTTP garbage before the handshake gets an HTTP/1.1 response or EOF."""
        self.fuzzer.tally.tried["HTTP garbage before the handshake"] += 1
        sock = raw_connection(self.fuzzer.url, ANSWER_TIMEOUT)
        try:
            with contextlib.suppress(OSError):  # the server may refuse and close part-way
                sock.sendall(prefix + garbage)
                if not fin:
                    sock.sendall(b"\r\n\r\n")
                sock.shutdown(socket.SHUT_WR)
            response = self._eof(sock)
            expect(response == b"" or response.startswith(b"HTTP/1.1 "), response[:80])
            self.fuzzer.tally.outcomes[f"HTTP {response[9:12].decode() or 'EOF'}"] += 1
        finally:
            sock.close()

    def check_abrupt(self, cut: int, how: str) -> None:
        """Check that a session cut at any byte (RST or FIN) leaves the server healthy."""
        self.fuzzer.tally.tried["abrupt disconnects mid-request"] += 1
        requests = b"".join(client_frame(codec.encode(r)) for r in SESSION_REQUESTS)
        stream = opening_handshake() + requests
        sock = raw_connection(self.fuzzer.url, ANSWER_TIMEOUT)
        try:
            sock.sendall(stream[: cut % (len(stream) + 1)])
            if how == "reset":
                abort(sock)
            else:
                with contextlib.suppress(OSError):  # the server may have closed already
                    if how == "garbage then fin":
                        sock.sendall(os.urandom(32))
                    sock.shutdown(socket.SHUT_WR)
                self._eof(sock)  # the server notices the EOF and closes its side
        finally:
            sock.close()
        expect(healthz(self.fuzzer.url, ANSWER_TIMEOUT) == 200, "/healthz stopped answering")

    def _small(self) -> str:
        url = self.fuzzer.small_url
        assert url is not None, "this check needs the small server (Fuzzer(small_url=...))"
        return url

    def check_oversize(self, size: int, parts: int) -> None:
        """Over the small server's limit: close 1009; at or under it: a DecodeError reply."""
        self.fuzzer.tally.tried["oversized messages (limit 64 KiB)"] += 1
        data = b"\x00" * size  # msgpack 0 and trailing bytes: refused if it is ever decoded
        fragments = cuts(data, [size * i // parts for i in range(1, parts)])
        with ws_connection(self._small(), ANSWER_TIMEOUT) as ws:
            self.fuzzer.open(ws, "open")
            outcome = self.fuzzer.send(ws, fragments)
            if size <= SMALL_LIMIT:
                expect((outcome.status, outcome.request_id) == (Status.ERROR, 0), outcome)
                expect(outcome.error_type == DECODE, outcome)
            else:
                expect(outcome.closed and outcome.close_code in (1009, None), outcome)

    def check_reply_over_limit(self) -> None:
        """Check that a reply over the limit is a MessageTooLargeError; the session carries on."""
        self.fuzzer.tally.tried["replies over the limit"] += 1
        url = self._small()
        with ws_connection(url, ANSWER_TIMEOUT) as ws:
            self.fuzzer.open(ws, "open")
            make = {"env_id": "CartPole-v1", "num_envs": 2, "autoreset_mode": "NextStep"}
            self.fuzzer.expect_ok(ws, Op.MAKE, 2, make)
            blob = np.zeros(5000)  # 40 kB in, the same value for both envs: 80 kB out
            body = {"name": "blob", "values": blob, "per_env": False}
            self.fuzzer.expect_ok(ws, Op.SET_ATTR, 3, body)
            outcome = self.fuzzer.send(ws, request(Op.GET_ATTR, 4, {"name": "blob"}))
            expect((outcome.status, outcome.request_id) == (Status.ERROR, 4), outcome)
            expect(outcome.error_type == "openenv_gym.errors.MessageTooLargeError", outcome)
            expect(f"over the limit of {SMALL_LIMIT} bytes" in outcome.body["message"], outcome)
            self.fuzzer.carries_on(ws, outcome, None)
        expect(healthz(url, ANSWER_TIMEOUT) == 200, "/healthz stopped answering")
