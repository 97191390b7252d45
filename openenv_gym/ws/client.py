"""A blocking WebSocket client that does its I/O in the calling thread.

``websockets.sync`` reads frames in a background thread and hands each message to the caller
through a condition variable: two thread switches per reply, a large share of a loopback round
trip. Request/reply traffic does not need that thread, so this transport drives websockets'
own sans-I/O ``ClientProtocol`` (handshake, framing, ping/pong, close) directly from the
caller: ``send`` writes, ``recv`` reads until a whole message is there. Whole binary frames,
the common case, are built and parsed by ``ws.frames``.
"""

from __future__ import annotations

import math
import select
import socket
import ssl
import sys
import threading
import time
from collections import deque

from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidURI
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

from openenv_gym.errors import TransportError
from openenv_gym.ws.frames import binary_frame, large_frame_start, parse_binary_frame

__all__ = ["BlockingWebSocket", "TransportError"]

_READ_SIZE = 1 << 16  # under malloc's mmap threshold: a larger buffer costs a mapping per read
_POLLING_THREADS = 4
"""Under ``busy_wait_alone``: the most Python threads a process may have for a wait to poll."""
_CONTENDED_SHARE = 0.8
"""A poll held up for this share of ``sys.getswitchinterval()`` (5 ms) counts as held up:
``poll(0)`` takes ~1 µs, and a thread that took the GIL meanwhile keeps it for the whole
interval. Two in a row mean contention: a busy thread holds up every poll, a preemption by
the scheduler one now and then."""
_CONTENTION_BACKOFF = 1.0
"""Seconds waits sleep at once after two held-up polls in a row (under ``busy_wait_alone``)."""


class BlockingWebSocket:
    """One WebSocket connection whose reads and writes happen in the caller's thread.

    Not thread-safe: one thread uses a connection at a time.

    Args:
        url: ``ws://host:port/path``.
        open_timeout: seconds to connect and complete the opening handshake.
        max_size: largest message accepted.
        headers: extra HTTP headers of the opening handshake (e.g. ``Authorization``).
        ssl_context: TLS settings for ``wss://`` (default: the system's trusted CAs).

    Raises:
        TransportError: the URL is invalid, the server cannot be reached, or the handshake fails.

    """

    def __init__(
        self,
        url: str,
        *,
        open_timeout: float | None,
        max_size: int | None,
        headers: dict[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        deadline = None if open_timeout is None else time.monotonic() + open_timeout
        try:
            uri = parse_uri(url)
        except InvalidURI as exc:
            raise TransportError(f"invalid url: {exc}") from exc
        try:
            sock = socket.create_connection((uri.host, uri.port), timeout=open_timeout)
            if uri.secure:
                context = ssl_context or ssl.create_default_context()
                sock = context.wrap_socket(sock, server_hostname=uri.host)
        except OSError as exc:  # ssl.SSLError included
            raise TransportError(f"cannot connect: {exc}") from exc
        self._sock = sock
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.settimeout(None)  # blocking; reads are bounded with poll() instead
        self._poller = select.poll()
        self._poller.register(self._sock, select.POLLIN)
        self._max_size = max_size
        self.busy_wait = 0.0
        """Seconds each wait for a message polls before it sleeps (see ``_wait_readable``)."""
        self._quick = True  # the last wait for a message ended within busy_wait
        self.busy_wait_alone = False
        """Poll only while no other Python thread competes for the GIL (``busy_wait="auto"``):
        the process has at most a few threads, and none of them held up two polls in a row in
        the last second (see :meth:`_may_poll`)."""
        self._poll_after = 0.0  # under busy_wait_alone: monotonic time polling may resume
        self._held_up = 0  # polls held up in a row (see _CONTENDED_SHARE)
        self._protocol = ClientProtocol(uri, max_size=max_size)
        self._messages: deque[bytes | bytearray | str] = deque()
        self._fragments: list[bytes] = []
        self._large: tuple[bytearray, int] | None = None  # a large frame part received
        self._first_opcode = Opcode.BINARY
        self._response: Response | None = None
        try:
            request = self._protocol.connect()
            for name, value in (headers or {}).items():
                request.headers[name] = value
            self._protocol.send_request(request)
            self._flush()
            while self._response is None:
                self._read(deadline)
        except (TimeoutError, ConnectionClosed) as exc:
            self._sock.close()
            raise TransportError(f"opening handshake failed: {exc}") from exc
        if self._protocol.handshake_exc is not None:
            self._sock.close()
            response = getattr(self._protocol.handshake_exc, "response", None)
            raise TransportError(
                f"opening handshake refused: {self._protocol.handshake_exc}",
                status=getattr(response, "status_code", None),
            )

    def send(self, data: bytes) -> None:
        """Send one binary message.

        Raises:
            ConnectionClosed: the connection is closed or breaks.

        """
        if self._protocol.state is not State.OPEN:
            raise self._closed()
        self._write(binary_frame(data, mask=True))

    def recv(self, timeout: float | None = None) -> bytes | bytearray | str:
        """Return the next message, waiting at most ``timeout`` seconds (``None``: forever).

        Raises:
            TimeoutError: no whole message arrived in time.
            ConnectionClosed: the connection closed before a message arrived.

        """
        started = time.monotonic()
        deadline = None if timeout is None else started + timeout
        if not self._messages:
            try:
                while not self._messages:
                    self._read(deadline)
            finally:
                budget = self.busy_wait
                self._quick = budget <= 0 or time.monotonic() - started <= budget
        return self._messages.popleft()

    def fileno(self) -> int:
        """Return the socket's descriptor, to wait on several connections (``-1``: closed)."""
        return self._sock.fileno()

    def has_message(self) -> bool:
        """Tell whether a whole message (or TLS bytes) waits, so :meth:`recv` returns at once."""
        sock = self._sock
        tls = isinstance(sock, ssl.SSLSocket) and sock.fileno() >= 0 and sock.pending() > 0
        return bool(self._messages) or tls

    def close(self) -> None:
        """Start the closing handshake (best effort) and close the socket; idempotent."""
        if self._sock.fileno() < 0:
            return
        try:
            if self._protocol.state is State.OPEN:
                self._protocol.send_close()
                self._flush()
            self._sock.shutdown(socket.SHUT_RDWR)
        except (OSError, ConnectionClosed):
            pass
        finally:
            self._sock.close()

    def _flush(self) -> None:
        data = self._protocol.data_to_send()
        if data:
            self._write(b"".join(data))

    def _write(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except OSError:
            self._protocol.receive_eof()
            self._sock.close()
            raise self._closed() from None

    def _read(self, deadline: float | None) -> None:
        """Read once from the socket and process the events; raise on timeout or close."""
        if self._sock.fileno() < 0:
            raise self._closed()
        self._wait_readable(deadline)
        if self._large is not None:  # a large frame that timed out part way
            self._fill_large(deadline)
            return
        try:
            data = self._sock.recv(_READ_SIZE)
        except OSError:
            data = b""
        if data and self._simple_frames_only():
            payload = parse_binary_frame(data, masked=False, max_size=self._max_size)
            if payload is not None:
                self._messages.append(payload)
                return
            start = large_frame_start(data, max_size=self._max_size)
            if start is not None:
                offset, length = start
                message = bytearray(length)
                message[: len(data) - offset] = memoryview(data)[offset:]
                self._large = (message, len(data) - offset)
                self._fill_large(deadline)
                return
        if data:
            self._protocol.receive_data(data)
        else:
            self._protocol.receive_eof()
        for event in self._protocol.events_received():
            if isinstance(event, Response):
                self._response = event
            elif isinstance(event, Frame):
                self._on_frame(event)
        self._flush()  # pongs and close replies the protocol queued
        if not data:
            self._sock.close()
            raise self._closed()

    def _fill_large(self, deadline: float | None) -> None:
        """Receive the rest of a large binary frame straight into its one buffer.

        The message is that ``bytearray``, fresh for each message (never reused), so a decoder
        may hand out views of it. A timeout keeps what was read (the next read resumes).

        Raises:
            TimeoutError: the frame did not complete in time.
            ConnectionClosed: the connection closed mid-frame.

        """
        assert self._large is not None
        message, got = self._large
        view = memoryview(message)
        sock = self._sock
        try:
            while got < len(message):
                self._wait_readable(deadline)
                try:
                    count = sock.recv_into(view[got:])
                except OSError:
                    count = 0
                if not count:
                    self._protocol.receive_eof()
                    self._sock.close()
                    raise self._closed()
                got += count
        finally:
            self._large = None if got == len(message) else (message, got)
        self._messages.append(message)

    def _wait_readable(self, deadline: float | None) -> None:
        """Return when a read would not block (or, with no deadline, may block for ever).

        First polls without sleeping for up to :attr:`busy_wait` seconds: a process that sleeps
        waiting for a reply takes a scheduler wake-up to get it, which on a VM (an idle virtual
        CPU halts) costs ~0.1-0.2 ms, a fifth of a fast step. Only after a message that came
        within that budget: when replies take longer (a slow or multi-threaded env), polling
        would buy little and take a core the env may use, so waits sleep until one is quick
        again. The socket stays blocking; ``poll()`` bounds the wait without toggling its mode.

        Raises:
            TimeoutError: nothing to read by ``deadline``.

        """
        sock = self._sock
        if isinstance(sock, ssl.SSLSocket) and sock.pending() > 0:
            return
        poll = self._poller.poll
        if self.busy_wait > 0 and self._quick and self._may_poll():
            now = time.monotonic()
            spin_end = now + self.busy_wait
            if deadline is not None:
                spin_end = min(spin_end, deadline)
            watch = self.busy_wait_alone and threading.active_count() > 1
            held_up = _CONTENDED_SHARE * sys.getswitchinterval() if watch else math.inf
            while True:
                ready = poll(0)
                polled, now = now, time.monotonic()
                self._held_up = self._held_up + 1 if now - polled > held_up else 0
                if ready:
                    return
                if self._held_up >= 2:
                    self._held_up = 0
                    self._poll_after = now + _CONTENTION_BACKOFF
                    break
                if now >= spin_end:
                    break
        if deadline is not None:
            remaining_ms = math.ceil((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0 or not poll(remaining_ms):
                raise TimeoutError("timed out")

    def _may_poll(self) -> bool:
        """Tell whether a wait may poll now (always, unless :attr:`busy_wait_alone`).

        Under :attr:`busy_wait_alone` a polling thread must not fight other threads for the
        GIL: each poll releases it, a thread that runs Python takes it, and the reply then
        waits for that thread's switch interval. Idle threads (a watchdog, a reader blocked
        on a pipe) take nothing, so a process with a few of them polls; two polls in a row
        held up for most of a switch interval (a busy thread took the GIL) stop polling for
        :data:`_CONTENTION_BACKOFF` seconds; a process of many threads (a thread per env)
        never polls.
        """
        if not self.busy_wait_alone:
            return True
        threads = threading.active_count()
        if threads == 1:
            return True
        return threads <= _POLLING_THREADS and time.monotonic() >= self._poll_after

    def _simple_frames_only(self) -> bool:
        """Tell whether no partial frame is pending, so a whole frame may bypass the protocol."""
        return (
            self._protocol.state is State.OPEN
            and not self._fragments
            and not self._protocol.reader.buffer
        )

    def _closed(self) -> ConnectionClosed:
        rcvd, sent = self._protocol.close_rcvd, self._protocol.close_sent
        order = self._protocol.close_rcvd_then_sent if rcvd and sent else None
        return ConnectionClosed(rcvd, sent, order)

    def _on_frame(self, frame: Frame) -> None:
        if frame.opcode in (Opcode.BINARY, Opcode.TEXT):
            self._first_opcode = frame.opcode
        elif frame.opcode is not Opcode.CONT:
            return  # control frames: the protocol already answered pings and closes
        self._fragments.append(bytes(frame.data))
        if frame.fin:
            data = b"".join(self._fragments)
            self._fragments = []
            self._messages.append(data.decode() if self._first_opcode is Opcode.TEXT else data)
