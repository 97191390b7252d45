"""Bugs the fuzz campaign found, pinned as checks: each raises ``FuzzFailure`` if it is back.

Tiny frames decoding to huge arrays, a request hidden in another frame's payload, unbounded
buffering of unread replies, and envs leaked by a disconnect during MAKE with ``--threads``.
Sequencing is explicit: a check that needs the server to have read some bytes waits until it
has (``send_segment``); a check that needs a request to be running waits for its reply to the
one before.
"""

from __future__ import annotations

import socket
import struct

import msgpack
import numpy as np

from openenv_gym.protocol.messages import PROTOCOL_VERSION, Op, Status
from openenv_gym.testing.compliance._support import wait_for
from openenv_gym.testing.compliance.fuzz import (
    ANSWER_TIMEOUT,
    DECODE,
    Fuzzer,
    Outcome,
    expect,
    request,
)
from openenv_gym.testing.compliance.fuzz_frames import send_segment
from openenv_gym.testing.rawws import (
    abort,
    client_frame,
    read_frames,
    rss_mib,
    upgraded_connection,
    ws_connection,
)

__all__ = [
    "THREADED_MAKE_ARGS",
    "check_envs_released_after_disconnect_during_make",
    "check_hidden_frame_not_served",
    "check_tiny_frame_huge_array",
    "check_unread_replies_bounded",
]

CARTPOLE = "CartPole-v1"
HELLO = request(Op.HELLO, 1, {"protocol_version": PROTOCOL_VERSION})
THREADED_MAKE_ARGS = ("--workers", "1", "--threads", "--max-envs", "2048")
"""The server :func:`check_envs_released_after_disconnect_during_make` needs (hosting CartPole)."""


def check_tiny_frame_huge_array(fuzzer: Fuzzer) -> None:
    """Check that a 60-byte SET_ATTR whose ``|S0`` array claims 4 Mi items is a DecodeError."""
    fuzzer.tally.tried["tiny frames decoding to huge arrays"] += 1
    dtype = b"|S0"
    header = bytes((len(dtype),)) + dtype + b"\x01" + struct.pack("<q", 4 * 2**20)
    body = {"name": "blob", "values": msgpack.ExtType(1, header), "per_env": False}
    frame = msgpack.packb([int(Op.SET_ATTR), 3, body], use_bin_type=True)
    assert len(frame) < 64
    with ws_connection(fuzzer.url, ANSWER_TIMEOUT) as ws:
        fuzzer.open(ws, "open")
        fuzzer.expect_ok(ws, Op.MAKE, 2, {"env_id": CARTPOLE})
        outcome = fuzzer.send(ws, frame)
        expect(
            (outcome.status, outcome.error_type) == (Status.ERROR, DECODE),
            f"a {len(frame)}-byte frame was accepted as a 4 MiB array: {outcome}",
        )


def check_hidden_frame_not_served(fuzzer: Fuzzer) -> None:
    """Check that a payload that happens to be a whole HELLO frame is not served.

    The header is read by the server on its own before the payload is sent.
    """
    fuzzer.tally.tried["frame hidden in a payload"] += 1
    inner = client_frame(HELLO)
    assert len(inner) < 126
    sock = upgraded_connection(fuzzer.url, ANSWER_TIMEOUT)
    try:
        send_segment(sock, bytes((0x82, 0x80 | len(inner))) + b"\0\0\0\0")  # header, zero mask
        sock.sendall(inner)  # the payload: bytes that happen to form a whole frame
        reply = fuzzer.check_reply(read_frames(sock, 1, ANSWER_TIMEOUT)[0][1])
        expect(
            (reply.status, reply.request_id) == (Status.ERROR, 0),
            f"the payload was served as a request: {reply}",
        )
    finally:
        abort(sock)


def check_unread_replies_bounded(fuzzer: Fuzzer, *, requests: int = 100) -> None:
    """100 GET_ATTRs of a 1 MiB attribute, replies never read: server RSS grows < 32 MiB."""
    assert fuzzer.pid is not None, "this check reads the server's RSS: Fuzzer(pid=...)"
    pid = fuzzer.pid
    fuzzer.tally.tried["unread replies (backpressure)"] += requests
    sock = upgraded_connection(fuzzer.url, ANSWER_TIMEOUT)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        blob = {"name": "blob", "values": np.ones(2**17), "per_env": False}
        setup = [HELLO, request(Op.MAKE, 2, {"env_id": CARTPOLE}), request(Op.SET_ATTR, 3, blob)]
        sock.sendall(b"".join(client_frame(frame) for frame in setup))
        answers = [fuzzer.check_reply(p) for _, p in read_frames(sock, 3, ANSWER_TIMEOUT)[:3]]
        expect(all(a.status is Status.OK for a in answers), f"setup refused: {answers}")
        baseline = rss_mib(pid)
        get = [
            client_frame(request(Op.GET_ATTR, 10 + i, {"name": "blob"})) for i in range(requests)
        ]
        sock.sendall(b"".join(get))  # 100 x 30 bytes; never read the 100 x 1 MiB replies
        grew = wait_for(lambda: rss_mib(pid) - baseline >= 32, 2.0, poll=0.1)
        growth = rss_mib(pid) - baseline
        expect(grew is None, f"server RSS grew {growth:.0f} MiB for {requests} unread replies")
    finally:
        abort(sock)


def check_envs_released_after_disconnect_during_make(url: str, *, num_envs: int = 2048) -> None:
    """Check that a client gone while its MAKE runs on a thread leaks none of its envs.

    ``url``: a server started with :data:`THREADED_MAKE_ARGS`. The client leaves once HELLO is
    answered and the server has read the MAKE (so it is running), by RST.
    """
    fuzzer = Fuzzer(url)
    fuzzer.tally.tried["disconnects during MAKE (--threads)"] += 1
    sock = upgraded_connection(url, ANSWER_TIMEOUT)
    make = {"env_id": CARTPOLE, "num_envs": num_envs, "autoreset_mode": "NextStep"}
    sock.sendall(client_frame(HELLO))
    expect(
        fuzzer.check_reply(read_frames(sock, 1, ANSWER_TIMEOUT)[0][1]).status is Status.OK, "HELLO"
    )
    send_segment(sock, client_frame(request(Op.MAKE, 2, make)))
    abort(sock)
    outcomes: list[Outcome] = []

    def one_env_fits() -> bool:
        with ws_connection(url, ANSWER_TIMEOUT) as ws:
            fuzzer.open(ws, "open")
            one = {"env_id": CARTPOLE, "num_envs": 1, "autoreset_mode": "NextStep"}
            outcomes.append(fuzzer.send(ws, request(Op.MAKE, 2, one)))
        return outcomes[-1].status is Status.OK

    released = wait_for(one_env_fits, 5.0, poll=0.1)
    expect(released is not None, f"envs leaked: {outcomes[-1].body if outcomes else None}")
