"""Local server processes on loopback: the embedded default, no Docker needed.

Each server is ``python -m openenv_gym serve SPEC... --port 0``: it binds a free loopback port
itself (no free-port race) and prints its URL on stdout; the provider then completes a protocol
handshake with it (readiness is a handshake, never a sleep). Servers are stopped by
:meth:`LocalProvider.close`, at interpreter exit, and by the kernel if this process dies.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import select
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Sequence
from typing import IO

from openenv_gym.client.connection import probe
from openenv_gym.errors import OpenEnvError, ServerStartError

__all__ = ["LocalProvider"]

logger = logging.getLogger("openenv_gym.providers")

READY_PREFIX = "openenv-gym ready "
"""What a server started with ``--announce`` prints, followed by its URL."""

_live: weakref.WeakSet[LocalProvider] = weakref.WeakSet()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask Linux to SIGTERM the server when the process that started it dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class _Process:
    """One server subprocess, from launch to ready URL."""

    def __init__(self, args: list[str], token: str | None) -> None:
        self.args = args
        self.token = token
        self.stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        self.url: str | None = None

    def wait_ready(self, deadline: float) -> str:
        """Read the announced URL, then handshake with it, before ``deadline``."""
        stdout = self.popen.stdout
        assert stdout is not None
        while self.url is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._failure("did not announce its address in time")
            readable, _, _ = select.select([stdout], [], [], remaining)
            if not readable:
                continue
            line = stdout.readline().decode(errors="replace")
            if not line:
                raise self._failure(f"exited with code {self.popen.wait()} before it was ready")
            if line.startswith(READY_PREFIX):
                self.url = line[len(READY_PREFIX) :].strip()
        try:
            probe(self.url, timeout=max(0.1, deadline - time.monotonic()), token=self.token)
        except OpenEnvError as exc:
            raise self._failure(f"failed its handshake: {exc}") from exc
        return self.url

    def _failure(self, what: str) -> ServerStartError:
        self.terminate()
        if self.popen.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(5.0)
        self.stderr.seek(0)
        tail = self.stderr.read().decode(errors="replace").strip().splitlines()[-20:]
        self.stop()
        output = "\n".join(tail) or "(no output)"
        return ServerStartError(
            f"local server ({' '.join(self.args[3:])}) {what}; its stderr:\n{output}"
        )

    def terminate(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()

    def stop(self, timeout: float = 5.0) -> None:
        self.terminate()
        if self.popen.poll() is None:
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        self.stderr.close()


class LocalProvider:
    """Start ``num_servers`` local server processes hosting ``specs``, in parallel.

    Args:
        specs: env ids / ``module:attr`` entry points the servers host.
        num_servers: how many server processes.
        startup_timeout: seconds for all of them to become ready.
        extra_args: more ``openenv-gym serve`` options (e.g. ``["--debug"]``).
        token: a shared secret the servers require (and the readiness handshake presents).

    Attributes:
        urls: the ready servers' URLs, one per server.

    Raises:
        ServerStartError: a server failed to start; the text holds its stderr.

    """

    def __init__(
        self,
        specs: Sequence[str],
        *,
        num_servers: int = 1,
        startup_timeout: float = 60.0,
        extra_args: Sequence[str] = (),
        token: str | None = None,
    ) -> None:
        args = [sys.executable, "-m", "openenv_gym", "serve", *specs]
        args += ["--host", "127.0.0.1", "--port", "0", "--announce", *extra_args]
        if token:
            args += ["--token", token]
        self._processes = [_Process(args, token) for _ in range(num_servers)]
        _live.add(self)
        deadline = time.monotonic() + startup_timeout
        try:
            self.urls = [process.wait_ready(deadline) for process in self._processes]
        except BaseException:
            self.close()
            raise
        logger.debug("local servers ready: %s", self.urls)

    def restart(self, index: int, *, startup_timeout: float = 60.0) -> str:
        """Replace server ``index`` (e.g. after it died) with a new process; return its URL.

        Raises:
            ServerStartError: the new server failed to start.

        """
        old = self._processes[index]
        old.stop()
        new = _Process(old.args, old.token)
        self._processes[index] = new
        self.urls[index] = new.wait_ready(time.monotonic() + startup_timeout)
        return self.urls[index]

    @property
    def pids(self) -> list[int]:
        """Process ids of the servers."""
        return [process.popen.pid for process in self._processes]

    def close(self) -> None:
        """Stop every server (SIGTERM, then SIGKILL after 5 s); idempotent."""
        processes, self._processes = self._processes, []
        for process in processes:
            process.terminate()  # all at once, then wait for each
        for process in processes:
            process.stop()
        _live.discard(self)

    def __enter__(self) -> LocalProvider:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@atexit.register
def _close_all() -> None:
    for provider in list(_live):
        provider.close()
