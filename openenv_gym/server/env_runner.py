"""Where one env of a pool session runs: in the server process, or in a child it can kill.

A thread cannot be killed in Python, so a step stuck in a thread can only be abandoned (and
accounted for, see ``server/pool_host.py``). With ``step_isolation = "process"`` each env runs
in its own forked child process instead: a step that outlives its deadline gets the child
killed (SIGKILL to its process group: the env and what it started), the caller a
:class:`~openenv_gym.errors.StepTimeoutError`, and the env a fresh child at its next reset.
Children die with the server (``PR_SET_PDEATHSIG``), hold none of its sockets (every other
descriptor is closed after the fork), and exchange requests and results with it over a pipe
in this package's own wire codec (no pickle).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import resource
import signal
import sys
import time
from typing import Any, Protocol

from gymnasium import Env

from openenv_gym.errors import StepTimeoutError
from openenv_gym.protocol import codec
from openenv_gym.protocol.spaces import space_to_data
from openenv_gym.server.catalog import EnvFactory

__all__ = ["EnvRunner", "InProcessRunner", "ProcessRunner", "describe_env"]

logger = logging.getLogger("openenv_gym.server")

_PR_SET_PDEATHSIG = 1
_KILL_WAIT = 2.0
"""Seconds to wait for a killed child to be reaped."""
_CLOSE_GRACE = 2.0
"""Seconds a child has to close its env once its pipe is closed, before it is killed."""


def describe_env(env: Env[Any, Any]) -> dict[str, Any]:
    """Return the ``MakeReply`` fields of one env (see ``EnvHost.describe``)."""
    from openenv_gym.server.host import _portable_metadata

    spec = env.spec
    return {
        "observation_space": space_to_data(env.observation_space),
        "action_space": space_to_data(env.action_space),
        "metadata": _portable_metadata(env.metadata),
        "render_mode": env.render_mode,
        "max_episode_steps": None if spec is None else spec.max_episode_steps,
        "reward_threshold": None if spec is None else spec.reward_threshold,
        "nondeterministic": False if spec is None else spec.nondeterministic,
    }


class EnvRunner(Protocol):
    """One env: reset, step, close. ``timeout`` is enforced only by runners that can."""

    def describe(self) -> dict[str, Any]:
        """Return the env's ``MakeReply`` fields."""

    def reset(self, seed: int | None, options: dict[str, Any] | None, timeout: float | None) -> Any:
        """Reset and return ``(obs, info)``."""

    def step(self, action: Any, timeout: float | None) -> Any:
        """Step and return ``(obs, reward, terminated, truncated, info)``."""

    def close(self) -> None:
        """Close the env; idempotent."""


class InProcessRunner:
    """An env in the server process; deadlines are the caller's watchdog's business.

    Args:
        factory: builds the env.

    """

    def __init__(self, factory: EnvFactory) -> None:
        self.env: Env[Any, Any] | None = factory()

    def describe(self) -> dict[str, Any]:
        """Return the env's ``MakeReply`` fields."""
        assert self.env is not None
        return describe_env(self.env)

    def reset(self, seed: int | None, options: dict[str, Any] | None, timeout: float | None) -> Any:
        """Reset and return ``(obs, info)``."""
        assert self.env is not None
        return self.env.reset(seed=seed, options=options)

    def step(self, action: Any, timeout: float | None) -> Any:
        """Step and return ``(obs, reward, terminated, truncated, info)``."""
        assert self.env is not None
        return self.env.step(action)

    def close(self) -> None:
        """Close the env; idempotent."""
        env, self.env = self.env, None
        if env is not None:
            env.close()


class EnvProcessError(RuntimeError):
    """An env's child process died or failed to build the env."""


def _close_inherited(keep: int) -> None:
    """Close every descriptor but stdio and ``keep``: the server's sockets stay the server's."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    top = soft if 0 < soft < (1 << 20) else (1 << 16)
    os.closerange(3, keep)
    os.closerange(keep + 1, top)


def _child_main(factory: EnvFactory, conn: multiprocessing.connection.Connection) -> None:
    """Serve one env over ``conn`` until the parent closes it (runs in the forked child)."""
    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)  # a group of its own: a kill takes what the env started too
    _close_inherited(conn.fileno())
    try:
        env = factory()
        reply: list[Any] = [True, describe_env(env)]
    except Exception as exc:
        conn.send_bytes(codec.encode([False, _error(exc)]))
        return
    conn.send_bytes(codec.encode(reply))
    try:
        while True:
            try:
                op, payload = codec.decode(conn.recv_bytes(), max_bytes=None)
            except EOFError:
                return
            try:
                if op == "reset":
                    result = list(env.reset(seed=payload[0], options=payload[1]))
                else:
                    result = list(env.step(payload))
                frame = codec.encode([True, result])
            except Exception as exc:
                frame = codec.encode([False, _error(exc)])
            conn.send_bytes(frame)
    finally:
        env.close()


def _error(exc: BaseException) -> dict[str, str]:
    cls = type(exc)
    name = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__name__}"
    return {"type": name, "message": str(exc)}


class ChildError(Exception):
    """An exception the env raised in its child, rebuilt by type name and message."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(type_name, message)
        self.type_name = type_name
        self.message = message

    def __str__(self) -> str:
        return self.message


class ProcessRunner:
    """An env in a forked child process, killed when a call outlives its deadline.

    Args:
        factory: builds the env (in the child).
        env_index: the env's index in its session (for error messages).
        start_timeout: seconds the child has to build the env.

    Raises:
        EnvProcessError: the child died before it reported its env.
        ChildError: the env constructor raised in the child.

    """

    def __init__(self, factory: EnvFactory, env_index: int, start_timeout: float = 60.0) -> None:
        self.env_index = env_index
        # A bare fork, not multiprocessing.Process: the child closes every inherited descriptor,
        # multiprocessing's exit sentinel too, and is reaped here with waitpid.
        parent, child = multiprocessing.Pipe(duplex=True)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 0
            try:
                parent.close()
                _child_main(factory, child)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        child.close()
        self._conn = parent
        self._pid: int | None = pid
        self._exitcode: int | None = None
        self._describe = self._receive(start_timeout, "start")

    @property
    def pid(self) -> int | None:
        """The child's process id (``None`` once closed)."""
        return self._pid

    def describe(self) -> dict[str, Any]:
        """Return the env's ``MakeReply`` fields (reported by the child once built)."""
        return dict(self._describe)

    def reset(self, seed: int | None, options: dict[str, Any] | None, timeout: float | None) -> Any:
        """Reset in the child and return ``(obs, info)``.

        Raises:
            StepTimeoutError: no result within ``timeout`` (the child was killed).
            ChildError: the env raised.
            EnvProcessError: the child died.

        """
        return tuple(self._call("reset", [seed, options], timeout))

    def step(self, action: Any, timeout: float | None) -> Any:
        """Step in the child and return ``(obs, reward, terminated, truncated, info)``.

        Raises:
            StepTimeoutError: no result within ``timeout`` (the child was killed).
            ChildError: the env raised.
            EnvProcessError: the child died.

        """
        return tuple(self._call("step", action, timeout))

    def _call(self, op: str, payload: Any, timeout: float | None) -> Any:
        if self._pid is None:
            raise EnvProcessError(f"env {self.env_index}: its process is closed")
        try:
            self._conn.send_bytes(codec.encode([op, payload]))
        except (OSError, ValueError) as exc:
            raise self._died() from exc
        return self._receive(timeout, op)

    def _receive(self, timeout: float | None, op: str) -> Any:
        start = time.monotonic()
        try:
            ready = timeout is None or self._conn.poll(timeout)
        except (OSError, EOFError) as exc:
            raise self._died() from exc
        if not ready:
            elapsed = time.monotonic() - start
            self.close(graceful=False)
            assert timeout is not None
            raise StepTimeoutError(self.env_index, elapsed, timeout, action=op)
        try:
            ok, payload = codec.decode(self._conn.recv_bytes(), max_bytes=None)
        except (OSError, EOFError) as exc:
            raise self._died() from exc
        if not ok:
            raise ChildError(payload["type"], payload["message"])
        return payload

    def _died(self) -> EnvProcessError:
        self.close(graceful=False)
        code = self._exitcode
        return EnvProcessError(f"env {self.env_index}: its process died (exit status {code})")

    def close(self, *, graceful: bool = True) -> None:
        """Stop the child and what its env started, and reap it; idempotent.

        Args:
            graceful: let the child close its env first (end of pipe, up to 2 s); else (a
                deadline passed) kill it at once.

        """
        pid, self._pid = self._pid, None
        if pid is None:
            return
        with contextlib.suppress(OSError):
            self._conn.close()
        if graceful:
            self._reap(pid, _CLOSE_GRACE)
        # The whole group, even after a graceful exit: what the env started and left behind.
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
        if self._exitcode is None:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            if not self._reap(pid, _KILL_WAIT):  # pragma: no cover - SIGKILL is not refused
                logger.error("env %d: child %d survived SIGKILL", self.env_index, pid)

    def _reap(self, pid: int, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the child to exit and reap it; tell if it did."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                self._exitcode = -1
                return True
            if done:
                self._exitcode = status
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)  # polling the kernel for the child's exit, bounded by the deadline
