"""Shared tools of the attacks: results, targets, a good client, memory and HTTP probes.

Every wait here is bounded by a deadline, every loop by a count, and only loopback is
addressed.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import os
import resource
import socket
import statistics
import threading
import time
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from openenv_gym.testing.rawws import raw_connection

__all__ = [
    "MIB",
    "AttackResult",
    "GoodClient",
    "Target",
    "closed_by_server",
    "enough_descriptors",
    "failed",
    "free_port",
    "http_status",
    "in_flight",
    "not_runnable",
    "peak_rss_mib",
    "result",
    "server_holds",
    "wait_for",
    "wait_listening",
]

MIB = 1 << 20

Figure = float | int | str | bool | None


@dataclasses.dataclass(frozen=True)
class Target:
    """A live server under attack.

    Attributes:
        url: its ``ws://127.0.0.1:PORT`` URL.
        pid: its process id, for attacks that read ``/proc/<pid>`` (memory, descriptors).
        token: the token a legitimate client presents, if the server requires one.
        mcp_url: ``http://127.0.0.1:PORT/mcp`` of its MCP port, if it serves one.
        env_id: the spec a good client builds on it.

    """

    url: str
    pid: int | None = None
    token: str | None = None
    mcp_url: str | None = None
    env_id: str = "CartPole-v1"


@dataclasses.dataclass(frozen=True)
class AttackResult:
    """What one attack found.

    Attributes:
        name: the attack.
        passed: whether the server withstood it (``False`` also when it could not be run).
        figures: measurements, e.g. ``peak_rss_mib`` or ``good_client_p50_ms``.
        detail: what happened, in words.
        runnable: ``False`` when the attack could not be run (e.g. a server flag is missing).

    """

    name: str
    passed: bool
    figures: Mapping[str, Figure] = dataclasses.field(
        default_factory=lambda: types.MappingProxyType({})
    )
    detail: str = ""
    runnable: bool = True

    def __str__(self) -> str:
        verdict = "pass" if self.passed else ("FAIL" if self.runnable else "not runnable")
        shown = ", ".join(f"{key}={_show(value)}" for key, value in self.figures.items())
        return f"{self.name}: {verdict} [{shown}] {self.detail}".rstrip()


def _show(value: Figure) -> str:
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def result(name: str, checks: Mapping[str, bool], figures: Mapping[str, Figure]) -> AttackResult:
    """Build a result that passes when every named check holds; the detail lists failed ones."""
    broken = [what for what, ok in checks.items() if not ok]
    detail = "failed: " + "; ".join(broken) if broken else "; ".join(checks)
    return AttackResult(name, not broken, types.MappingProxyType(dict(figures)), detail)


def failed(
    name: str, exc: BaseException, figures: Mapping[str, Figure] | None = None
) -> AttackResult:
    """Return the result of an attack that broke off with ``exc`` (a failure, not a crash)."""
    text = (f"{type(exc).__name__}: {exc}".splitlines() or [""])[0][:300]
    return AttackResult(name, False, types.MappingProxyType(dict(figures or {})), f"error: {text}")


def not_runnable(name: str, why: str) -> AttackResult:
    """Return the result of an attack this server cannot take part in."""
    return AttackResult(name, False, detail=f"not runnable: {why}", runnable=False)


def wait_for(condition: Callable[[], bool], timeout: float, *, poll: float = 0.05) -> float | None:
    """Poll ``condition`` until true; return the seconds it took, ``None`` after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            return None
        time.sleep(poll)
    return time.monotonic() - started


def _status_field(pid: int, field: str) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise LookupError(f"no {field} for pid {pid}")


def peak_rss_mib(pid: int) -> float:
    """Return a process's peak resident memory so far (``VmHWM``) in MiB."""
    return _status_field(pid, "VmHWM")


def closed_by_server(sock: socket.socket) -> bool:
    """Tell, without blocking, whether the server closed or reset ``sock``."""
    sock.setblocking(False)
    try:
        return sock.recv(1 << 16) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def server_holds(pid: int, peer_port: int) -> bool:
    """Tell whether process ``pid`` still holds a TCP socket to local port ``peer_port``.

    Read from ``/proc/net/tcp{,6}`` and ``/proc/<pid>/fd`` (Linux): a socket the process
    closed may linger in the kernel with unsent data, but no longer in its descriptor table.
    """
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            next(lines, None)
            for line in lines:
                fields = line.split()
                if int(fields[2].rpartition(":")[2], 16) == peer_port and fields[9] != "0":
                    inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return False
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                return True
    return False


def _tcp_entries() -> Iterator[list[str]]:
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            next(lines, None)
            yield from (line.split() for line in lines)


def in_flight(sock: socket.socket) -> int:
    """Return the bytes sent on ``sock`` that the (local) server has not read yet.

    Counts what is still in this socket's send queue and what waits in the peer socket's
    receive queue (``/proc/net/tcp{,6}``, Linux). Zero means the server has read everything:
    waiting for it to be zero after each write makes each write a read of its own.
    """
    port = sock.getsockname()[1]
    pending = 0
    for fields in _tcp_entries():
        tx, rx = (int(part, 16) for part in fields[4].split(":"))
        if int(fields[1].rpartition(":")[2], 16) == port:
            pending += tx
        elif int(fields[2].rpartition(":")[2], 16) == port:
            pending += rx
    return pending


def enough_descriptors(wanted: int) -> int:
    """Raise this process's soft limit of open files to ``wanted`` if the hard limit allows.

    Returns:
        The soft limit now in force.

    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    return soft


def http_status(
    url: str,
    *,
    path: str = "/",
    headers: Sequence[tuple[str, str]] = (),
    host: str = "127.0.0.1",
    upgrade: bool = True,
    timeout: float = 5.0,
) -> tuple[int, bytes]:
    """Send one (upgrade) request with exactly ``headers`` and return its status and head.

    Returns:
        ``(0, b"")`` when the server closes the connection without any reply.

    """
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}"]
    if upgrade:
        key = base64.b64encode(os.urandom(16)).decode()
        lines += ["Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}"]
        lines += ["Sec-WebSocket-Version: 13"]
    lines += [f"{name}: {value}" for name, value in headers]
    sock = raw_connection(url, timeout)
    try:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head, deadline = b"", time.monotonic() + timeout
        while b"\r\n" not in head and time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                break
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                break
            head += chunk
    finally:
        sock.close()
    parts = head.split(b" ", 2)
    code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    return code, head[:300]


class GoodClient:
    """A legitimate client stepping CartPole on its own thread while an attack runs.

    Use as a context manager; :meth:`window` marks the attack, and :meth:`figures` reports the
    latency of the steps that overlapped it (a step stalled by the attack counts in full).

    Args:
        target: the server (its ``url``, ``token`` and ``env_id``).
        max_steps: a bound on the steps taken.

    """

    def __init__(self, target: Target, *, max_steps: int = 200_000) -> None:
        self.target = target
        self.max_steps = max_steps
        self.steps: list[tuple[float, float]] = []
        self.error: str | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="good-client", daemon=True)
        self._start = self._end = 0.0

    def _run(self) -> None:
        from openenv_gym.client.env import RemoteEnv

        try:
            with RemoteEnv(
                self.target.env_id, url=self.target.url, token=self.target.token, call_timeout=30
            ) as env:
                env.reset(seed=0)
                self._ready.set()
                for _ in range(self.max_steps):
                    if self._stop.is_set():
                        break
                    started = time.monotonic()
                    _, _, terminated, truncated, _ = env.step(env.action_space.sample())
                    if terminated or truncated:
                        env.reset()
                    self.steps.append((started, time.monotonic()))
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        finally:
            self._ready.set()

    def __enter__(self) -> GoodClient:
        self._thread.start()
        if not self._ready.wait(30):
            self.error = "the good client did not get in within 30 s"
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(35)

    @contextlib.contextmanager
    def window(self) -> Iterator[None]:
        """Mark the attack: the steps that overlap this block are the ones measured."""
        self._start = time.monotonic()
        try:
            yield
        finally:
            self._end = time.monotonic()
            # Let a step stalled by the attack finish, so that its latency is counted.
            count = len(self.steps)
            wait_for(lambda: len(self.steps) > count or self._thread.is_alive() is False, 30)

    def figures(self) -> dict[str, Any]:
        """Return the step count and the p50/max latency (ms) over the attack window."""
        steps = list(self.steps)
        during = [
            (end - start) * 1000
            for start, end in steps
            if end >= self._start and start <= self._end
        ]
        after = [(end - start) * 1000 for start, end in steps if end >= self._start][:1]
        latencies = during or after
        return {
            "good_client_steps": len(during),
            "good_client_p50_ms": statistics.median(latencies) if latencies else None,
            "good_client_max_ms": max(latencies) if latencies else None,
            "good_client_error": self.error,
        }

    def ok(self, p50_ms: float = 200.0) -> bool:
        """Tell whether the good client was served throughout, with a p50 under ``p50_ms``."""
        p50 = self.figures()["good_client_p50_ms"]
        return self.error is None and p50 is not None and p50 < p50_ms


def free_port() -> int:
    """Return a loopback port that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_listening(port: int, timeout: float) -> None:
    """Return once ``127.0.0.1:port`` accepts TCP connections.

    Raises:
        TimeoutError: it does not within ``timeout`` seconds.

    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError as exc:
            if time.monotonic() > deadline:
                what = f"nothing listens on 127.0.0.1:{port} after {timeout} s"
                raise TimeoutError(what) from exc
            time.sleep(0.05)
