"""Nothing a client does holds a server's connections, memory or workers: the attacks, refused.

Each test reproduces one attack on a live server (raw sockets on loopback) and checks, within a
deadline, that the server reaped or refused it and still serves a good client. ``pytest -s``
prints the measured times and memory.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import struct
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

import openenv_gym
from openenv_gym.errors import CapacityError
from openenv_gym.protocol import codec
from openenv_gym.protocol.messages import PROTOCOL_VERSION, Op, Status
from openenv_gym.providers.local import LocalProvider
from openenv_gym.server.limits import ConnectionTable, Limits
from openenv_gym.testing.compliance._support import closed_by_server, wait_for
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

CARTPOLE = "CartPole-v1"
SLOW = "openenv_gym.testing.envs:SlowEnv"
HELLO = client_frame(codec.encode([int(Op.HELLO), 1, {"protocol_version": PROTOCOL_VERSION}]))
FLOOD = 1100


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``condition`` until true; return the seconds it took (fail after ``timeout``)."""
    took = wait_for(condition, timeout)
    assert took is not None, f"{what} not within {timeout} s"
    return took


def _hello(sock: socket.socket) -> int:
    sock.sendall(HELLO)
    return int(codec.decode(read_frames(sock, 1, 5.0)[0][1])[0])


@pytest.fixture(scope="module", autouse=True)
def _enough_descriptors() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * FLOOD
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.fail(f"the flood tests need {wanted} file descriptors, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


@contextlib.contextmanager
def _sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    try:
        yield opened
    finally:
        for sock in opened:
            with contextlib.suppress(OSError):
                abort(sock)


# ------------------------------------------------------------------ the table itself


def test_connection_table_evicts_the_oldest_handshaking_connection_for_a_newcomer() -> None:
    table: ConnectionTable[str] = ConnectionTable(Limits(max_sessions=1, max_connections=3))
    assert table.open("session", "10.0.0.1") == []
    table.established("session")
    assert table.open("old", "10.0.0.2") == []
    assert table.open("young", "10.0.0.2") == []
    assert table.open("new", "10.0.0.3") == ["old"]  # never the established session
    assert (len(table), table.count("10.0.0.2")) == (3, 1)


def test_connection_table_refuses_when_every_slot_is_past_its_handshake() -> None:
    limits = Limits(max_sessions=2, max_connections=4, max_connections_per_peer=2)
    table: ConnectionTable[int] = ConnectionTable(limits)
    for connection in (1, 2):
        table.open(connection, "10.0.0.1")
        table.established(connection)
    with pytest.raises(CapacityError, match=r"at capacity: 2/2 connections from this address"):
        table.open(3, "10.0.0.1")
    assert table.open(3, "10.0.0.2") == []  # another address still gets in
    table.close(1)
    table.close(1)  # idempotent
    assert table.open(4, "10.0.0.1") == []


def test_limits_refuse_fewer_connections_than_sessions() -> None:
    with pytest.raises(ValueError, match="max_connections must be at least max_sessions=256"):
        Limits(max_connections=100).check()


# ------------------------------------------------------------------ slots held forever


def test_server_admits_a_good_client_within_seconds_of_a_half_open_upgrade_flood() -> None:
    with (
        LocalProvider([CARTPOLE], extra_args=["--handshake-timeout", "3"]) as provider,
        _sockets() as flood,
    ):
        url, pid = provider.urls[0], provider.pids[0]
        partial = opening_handshake()[:-2]  # all but the blank line that ends the request
        for _ in range(FLOOD):
            sock = raw_connection(url, 5.0)
            sock.sendall(partial)
            flood.append(sock)
        started = time.monotonic()
        with openenv_gym.RemoteEnv(CARTPOLE, url=url, call_timeout=5) as env:
            assert env.reset(seed=0)[0].shape == (4,)
        admitted = time.monotonic() - started
        print(f"\ngood client served {admitted:.3f} s after {FLOOD} half-open upgrades")
        assert admitted < 2.0
        reaped = _wait_for(
            lambda: all(closed_by_server(s) for s in flood), 10.0, "every flood connection closed"
        )
        print(f"all {FLOOD} flood connections closed {reaped:.1f} s later (handshake timeout 3 s)")
        _wait_for(lambda: open_fds(pid) < 64, 5.0, "the server's descriptors released")


def test_server_answers_503_when_every_slot_holds_a_session() -> None:
    args = ["--max-sessions", "2", "--max-connections", "2", "--max-connections-per-peer", "2"]
    with LocalProvider([CARTPOLE], extra_args=args) as provider, _sockets() as held:
        url = provider.urls[0]
        for _ in range(2):
            held.append(upgraded_connection(url, 5.0))
            assert _hello(held[-1]) == Status.OK
        sock = raw_connection(url, 5.0)
        held.append(sock)
        sock.sendall(opening_handshake())
        reply, _ = read_until_eof(sock, 5.0)
        assert reply.startswith(b"HTTP/1.1 503"), reply[:80]
        assert b"at capacity: 2/2 connections from this address" in reply


def test_server_aborts_connections_that_send_no_hello_within_the_handshake_timeout() -> None:
    with (
        LocalProvider([CARTPOLE], extra_args=["--handshake-timeout", "1"]) as provider,
        _sockets() as opened,
    ):
        url = provider.urls[0]
        good = upgraded_connection(url, 5.0)
        opened.append(good)
        assert _hello(good) == Status.OK
        silent = raw_connection(url, 5.0)  # not even the upgrade request
        upgraded = upgraded_connection(url, 5.0)  # upgraded, but no HELLO
        opened += [silent, upgraded]
        took = _wait_for(
            lambda: closed_by_server(silent) and closed_by_server(upgraded), 5.0, "aborted"
        )
        assert 0.5 < took < 3.0
        good.setblocking(True)
        make = [int(Op.MAKE), 2, {"env_id": CARTPOLE}]
        good.sendall(client_frame(codec.encode(make)))  # older than both, and still served
        assert codec.decode(read_frames(good, 1, 5.0)[0][1])[0] == Status.OK


def test_server_aborts_a_client_that_stops_reading_after_the_close_timeout() -> None:
    args = ["--idle-timeout", "1", "--close-timeout", "1", "--set-attr-allow", "blob"]
    with LocalProvider([CARTPOLE], extra_args=args) as provider:
        url, pid = provider.urls[0], provider.pids[0]
        sock = upgraded_connection(url, 5.0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            blob = {"name": "blob", "values": np.ones(2**17), "per_env": False}
            setup = [[int(Op.HELLO), 1, {"protocol_version": PROTOCOL_VERSION}]]
            setup += [[int(Op.MAKE), 2, {"env_id": CARTPOLE}], [int(Op.SET_ATTR), 3, blob]]
            sock.sendall(b"".join(client_frame(codec.encode(request)) for request in setup))
            assert len(read_frames(sock, 3, 5.0)) == 3
            held = open_fds(pid)
            get = [int(Op.GET_ATTR), 4, {"name": "blob"}]
            sock.sendall(b"".join(client_frame(codec.encode(get)) for _ in range(40)))
            # Never read again: the server's writes pause, the idle sweep starts a closing
            # handshake that cannot complete, and the close timeout must end it.
            took = _wait_for(lambda: open_fds(pid) < held, 8.0, "the connection dropped")
            print(f"\nunread connection dropped {took:.1f} s after it stopped reading")
            assert took > 1.0  # idle timeout (1 s), then the close timeout (1 s)
        finally:
            abort(sock)


# ------------------------------------------------------------------ memory


def test_threaded_server_buffers_one_request_while_an_env_runs() -> None:
    args = ["--threads", "--env-kwargs-allow", "delay"]
    with LocalProvider([SLOW], extra_args=args) as provider:
        url, pid = provider.urls[0], provider.pids[0]
        sock = upgraded_connection(url, 5.0)
        try:
            make = [int(Op.MAKE), 2, {"env_id": SLOW, "kwargs": {"delay": 4.0}}]
            sock.sendall(HELLO + client_frame(codec.encode(make)))
            assert len(read_frames(sock, 2, 5.0)) == 2
            reset = [int(Op.RESET), 3, {"seed": 0}]
            sock.sendall(client_frame(codec.encode(reset)))
            assert len(read_frames(sock, 1, 5.0)) == 1
            baseline = rss_mib(pid)
            step = [int(Op.STEP), 4, {"actions": np.zeros(1, dtype=np.int64)}]
            sock.sendall(client_frame(codec.encode(step)))  # sleeps 4 s on its thread
            junk = client_frame(os.urandom(1 << 20))
            sock.setblocking(False)
            sent, deadline = 0, time.monotonic() + 2.0
            while time.monotonic() < deadline and sent < 768 << 20:
                try:
                    sent += sock.send(junk)
                except BlockingIOError:
                    time.sleep(0.01)  # the kernel's buffers are full: the server stopped reading
            growth = rss_mib(pid) - baseline
            print(
                f"\n--threads: {sent / 2**20:.0f} MiB accepted while a step ran, RSS +{growth:.0f}"
            )
            assert sent < 64 << 20, f"the server read {sent / 2**20:.0f} MiB while busy"
            assert growth < 64, f"server RSS grew {growth:.0f} MiB"
        finally:
            abort(sock)


def test_server_closes_1009_on_endless_empty_continuation_frames() -> None:
    with LocalProvider([CARTPOLE]) as provider:
        sock = upgraded_connection(provider.urls[0], 5.0)
        try:
            assert _hello(sock) == Status.OK
            empty = client_frame(b"", opcode=0x0, fin=False)
            sock.sendall(client_frame(b"\x91", fin=False) + empty * 20_000)
            frames = read_frames(sock, 1, 5.0)
            assert frames[0][0] == 0x8, frames
            assert struct.unpack("!H", frames[0][1][:2])[0] == 1009
        finally:
            abort(sock)


def test_server_tracks_frames_sent_with_the_upgrade_request() -> None:
    """A frame header in the upgrade's read, its payload later: the payload is no request."""
    inner = client_frame(codec.encode([int(Op.HELLO), 77, {"protocol_version": PROTOCOL_VERSION}]))
    assert len(inner) < 126
    outer_header = bytes((0x82, 0x80 | len(inner))) + b"\0\0\0\0"  # zero mask: payload as is
    with LocalProvider([CARTPOLE]) as provider:
        sock = raw_connection(provider.urls[0], 5.0)
        try:
            sock.sendall(opening_handshake() + HELLO + outer_header)  # one segment
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(4096)
            assert head.startswith(b"HTTP/1.1 101")
            rest = head.partition(b"\r\n\r\n")[2]
            if not rest:
                assert codec.decode(read_frames(sock, 1, 5.0)[0][1])[0] == Status.OK
            sock.sendall(inner)  # bytes that happen to form a whole frame
            status, request_id, _ = codec.decode(read_frames(sock, 1, 5.0)[-1][1])
            assert (status, request_id) == (Status.ERROR, 0), "the payload was served as a request"
        finally:
            abort(sock)


# ------------------------------------------------------------------ --workers


def _children(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
                if int(fields[1]) == pid and fields[0] != "Z":
                    found.add(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc to find the workers")
def test_workers_are_replaced_when_killed_and_die_with_their_supervisor() -> None:
    provider = LocalProvider([CARTPOLE], extra_args=["--workers", "2"])
    try:
        supervisor = provider.pids[0]
        _wait_for(lambda: len(_children(supervisor)) == 2, 10.0, "two workers")
        first = _children(supervisor)
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        took = _wait_for(
            lambda: len(_children(supervisor) - first) == 1 and len(_children(supervisor)) == 2,
            10.0,
            "the killed worker replaced",
        )
        print(f"\nkilled worker replaced in {took:.2f} s")
        for _ in range(4):
            with openenv_gym.RemoteEnv(CARTPOLE, url=provider.urls[0], call_timeout=5) as env:
                assert env.reset(seed=0)[0].shape == (4,)
        workers = _children(supervisor)
        os.kill(supervisor, signal.SIGKILL)
        _wait_for(lambda: not any(_alive(w) for w in workers), 10.0, "workers gone with it")
    finally:
        provider.close()
