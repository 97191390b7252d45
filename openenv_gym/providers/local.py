"""Local server processes on loopback: the embedded default, no Docker needed.

Each server is ``python -m openenv_gym serve SPEC... --port 0``: it binds a free loopback port
itself (no free-port race) and prints its URL on stdout; the provider then completes a protocol
handshake with it (readiness is a handshake, never a sleep). Servers are stopped by
:meth:`LocalProvider.close`, at interpreter exit, and by the kernel if this process dies.

A token reaches the server through an inherited pipe (``serve --token-fd N``), never its
argv (``/proc/PID/cmdline`` is readable by every local user) nor its environment, and no file
holds it.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Sequence
from typing import IO

from openenv_gym.errors import OpenEnvError, ServerStartError
from openenv_gym.ws.handshake import probe

__all__ = ["LOCAL_BUSY_WAIT", "LocalProvider", "read_token_fd"]

logger = logging.getLogger("openenv_gym.providers")

READY_PREFIX = "openenv-gym ready "
"""What a server started with ``--announce`` prints, followed by its URL."""

LOCAL_BUSY_WAIT = 0.002
"""``--busy-wait`` of local servers that have a core each (see ``ws/awake.py``)."""

_MAX_TOKEN_BYTES = 4096
_TOKEN_ENV = "OPENENV_GYM_TOKEN"

_live: weakref.WeakSet[LocalProvider] = weakref.WeakSet()


def read_token_fd(fd: str) -> str:
    """Read a token from inherited file descriptor ``fd`` to its end, and close it.

    The ``type`` of ``openenv-gym serve --token-fd``: the provider writes the token into a pipe
    whose read end the server inherits, so it appears in no argv, environment or file.

    Args:
        fd: the descriptor number, as given on the command line.

    Returns:
        The token, surrounding whitespace stripped.

    Raises:
        argparse.ArgumentTypeError: ``fd`` is not an open descriptor, or gives no token or one
            over 4096 bytes.

    """
    try:
        with os.fdopen(int(fd), "rb") as pipe:
            data = pipe.read(_MAX_TOKEN_BYTES + 1)
    except (ValueError, OSError) as exc:
        raise argparse.ArgumentTypeError(f"cannot read a token from fd {fd}: {exc}") from exc
    token = data.decode(errors="replace").strip()
    if not token or len(data) > _MAX_TOKEN_BYTES:
        size = f"{len(data)} bytes" if data else "nothing"
        raise argparse.ArgumentTypeError(
            f"fd {fd} must give a token of 1 to {_MAX_TOKEN_BYTES} bytes, gave {size}"
        )
    return token


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask Linux to SIGTERM the server when the process that started it dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _token_pipe(token: str) -> int:
    """Return the read end of a pipe that holds ``token`` and then ends."""
    data = token.encode()
    if len(data) > _MAX_TOKEN_BYTES:
        raise ValueError(f"token must be at most {_MAX_TOKEN_BYTES} bytes, got {len(data)}")
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, data)  # far below the pipe's buffer: never blocks
    finally:
        os.close(write_end)
    return read_end


class _Process:
    """One server subprocess, from launch to ready URL."""

    def __init__(self, args: list[str], token: str | None) -> None:
        self.args = args
        self.token = token
        self.stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        pass_fds: tuple[int, ...] = ()
        env = None
        if token:
            pass_fds = (_token_pipe(token),)
            args = [*args, "--token-fd", str(pass_fds[0])]
            env = {name: value for name, value in os.environ.items() if name != _TOKEN_ENV}
        try:
            self.popen = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=self.stderr,
                pass_fds=pass_fds,
                env=env,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        except BaseException:
            self.stderr.close()
            raise
        finally:
            for fd in pass_fds:
                os.close(fd)  # the child holds its own copy
        self.url: str | None = None

    def wait_ready(self, deadline: float, *, allow_insecure_token: bool = False) -> str:
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
            probe(
                self.url,
                timeout=max(0.1, deadline - time.monotonic()),
                token=self.token,
                allow_insecure_token=allow_insecure_token,
            )
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
        extra_args: more ``openenv-gym serve`` options (e.g. ``["--debug"]``). Unless they
            say ``--busy-wait``, servers fewer than this process's cores get
            ``--busy-wait`` :data:`LOCAL_BUSY_WAIT` (each has a core to itself; more would
            take cores from each other).
        token: a shared secret the servers require (and the readiness handshake presents);
            handed over through a pipe, out of the servers' argv and environment.

    Attributes:
        urls: the ready servers' URLs, one per server.

    Raises:
        ServerStartError: a server failed to start; the text holds its stderr.
        ValueError: ``token`` is over 4096 bytes.

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
        if num_servers < len(os.sched_getaffinity(0)) and not any(
            arg.split("=")[0] == "--busy-wait" for arg in extra_args
        ):
            args += ["--busy-wait", str(LOCAL_BUSY_WAIT)]
        self.token = token
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
