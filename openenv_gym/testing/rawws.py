"""A raw WebSocket client on a plain socket, for tests and reports that must break the rules.

The compliance suite (fuzz, leaks, attacks) speaks to live servers below any client library: they
send malformed or partial frames, abort connections, and read whatever comes back. These are
its tools. Every wait is bounded by a timeout; only loopback is ever addressed.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import socket
import struct
import time
import urllib.parse
from collections.abc import Iterator

from websockets.sync.client import ClientConnection, connect

from openenv_gym.ws.frames import apply_mask

__all__ = [
    "DEFAULT_KEY",
    "abort",
    "client_frame",
    "close_frame",
    "healthz",
    "open_fds",
    "opening_handshake",
    "port_of",
    "raw_connection",
    "read_frames",
    "read_until_eof",
    "rss_mib",
    "split_server_frames",
    "upgraded_connection",
    "ws_connection",
]

DEFAULT_KEY = b"\x5a\x17\xc3\x01"
"""The masking key of :func:`client_frame` (fixed, so frames are reproducible)."""


def port_of(url: str) -> int:
    """Return the port of a ``ws://127.0.0.1:PORT`` URL."""
    port = urllib.parse.urlparse(url).port
    assert port is not None, url
    return port


def opening_handshake() -> bytes:
    """Return an HTTP/1.1 upgrade request with a fresh key."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def raw_connection(url: str, timeout: float) -> socket.socket:
    """Open a TCP connection to the server of ``url`` (loopback), nothing sent yet."""
    sock = socket.create_connection(("127.0.0.1", port_of(url)), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def upgraded_connection(url: str, timeout: float) -> socket.socket:
    """Open a connection and complete the opening handshake by hand.

    Raises:
        ConnectionError: EOF during the handshake, or a status other than 101.

    """
    sock = raw_connection(url, timeout)
    sock.sendall(opening_handshake())
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"EOF during the opening handshake: {response!r}")
        response += chunk
    if not response.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(f"handshake refused: {response[:60]!r}")
    return sock


def client_frame(
    payload: bytes,
    *,
    opcode: int = 0x2,
    fin: bool = True,
    rsv: int = 0,
    key: bytes | None = DEFAULT_KEY,
) -> bytes:
    """Build one client frame by hand, so that it may break the rules (``key=None``: unmasked)."""
    head = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if key is not None else 0
    n = len(payload)
    if n < 126:
        header = bytes((head, mask_bit | n))
    elif n < 65536:
        header = bytes((head, mask_bit | 126)) + struct.pack("!H", n)
    else:
        header = bytes((head, mask_bit | 127)) + struct.pack("!Q", n)
    return header + payload if key is None else header + key + apply_mask(payload, key)


def close_frame(code: int = 1000) -> bytes:
    """Return a masked close frame with ``code``."""
    return client_frame(struct.pack("!H", code), opcode=0x8)


def split_server_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Split unmasked server frames into ``(opcode, payload)``; return them and the rest."""
    frames, offset = [], 0
    while len(data) - offset >= 2:
        opcode, length = data[offset] & 0x0F, data[offset + 1] & 0x7F
        start = offset + 2
        if length == 126:
            if len(data) - offset < 4:
                break
            (length,) = struct.unpack_from("!H", data, start)
            start += 2
        elif length == 127:
            if len(data) - offset < 10:
                break
            (length,) = struct.unpack_from("!Q", data, start)
            start += 8
        if len(data) < start + length:
            break
        frames.append((opcode, data[start : start + length]))
        offset = start + length
    return frames, data[offset:]


def read_frames(sock: socket.socket, count: int, timeout: float) -> list[tuple[int, bytes]]:
    """Read until ``count`` server frames have arrived; return them (and any more).

    Raises:
        TimeoutError: fewer within ``timeout`` seconds.
        ConnectionError: EOF first.

    """
    deadline, data = time.monotonic() + timeout, b""
    while True:
        frames, _ = split_server_frames(data)
        if len(frames) >= count:
            return frames
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"{len(frames)} of {count} frames within {timeout} s")
        sock.settimeout(remaining)
        with contextlib.suppress(TimeoutError):
            chunk = sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError(f"EOF after {len(frames)} of {count} frames")
            data += chunk


def read_until_eof(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """Return everything the server sends until it closes, and whether it reset the connection.

    Raises:
        TimeoutError: the server did not close within ``timeout`` seconds.

    """
    deadline, received = time.monotonic() + timeout, b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"the server did not close within {timeout} s")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(1 << 16)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return received, True
        if not chunk:
            return received, False
        received += chunk


def abort(sock: socket.socket) -> None:
    """Close without a close frame or FIN: the kernel sends RST."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def healthz(url: str, timeout: float) -> int:
    """Return the status of ``GET /healthz`` on the server of ``url`` (0: no answer)."""
    conn = http.client.HTTPConnection("127.0.0.1", port_of(url), timeout=timeout)
    try:
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return 0
    finally:
        conn.close()


@contextlib.contextmanager
def ws_connection(
    url: str, timeout: float, *, token: str | None = None
) -> Iterator[ClientConnection]:
    """Open a ``websockets`` client connection with no compression, proxy, size limit or pings.

    With ``token``, the handshake carries ``Authorization: Bearer <token>``.
    """
    with connect(
        url,
        additional_headers={"Authorization": f"Bearer {token}"} if token else None,
        compression=None,
        proxy=None,
        max_size=None,
        open_timeout=timeout,
        close_timeout=2,
        ping_interval=None,
    ) as ws:
        yield ws


def rss_mib(pid: int) -> float:
    """Return a process's resident memory in MiB (from ``/proc``)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise LookupError(f"no VmRSS for pid {pid}")


def open_fds(pid: int) -> int:
    """Return how many file descriptors a process has open (from ``/proc``)."""
    return len(os.listdir(f"/proc/{pid}/fd"))
