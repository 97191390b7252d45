"""``--workers N``: N serving processes under one supervisor that does nothing else.

The supervisor forks the workers (they share its listening socket), waits, and replaces a worker
that dies (killed, out of memory, crashed) — at once if it had served a while, with a delay
doubling up to a minute if it keeps dying young, so that a crash loop cannot spin. A worker dies
with its supervisor: Linux delivers SIGTERM on the supervisor's death (``PR_SET_PDEATHSIG``),
and a watchdog thread in every worker notices a new parent process id (any system), asks for a
graceful stop, and exits outright if the worker's event loop is stuck in an env.

The supervisor holds no client connection, so forking a replacement while serving copies
nothing a client depends on.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType

from openenv_gym.errors import ServerStartError

__all__ = ["supervise"]

logger = logging.getLogger("openenv_gym.server")

_PR_SET_PDEATHSIG = 1
_WATCH_INTERVAL = 0.5
"""Seconds between a worker's checks that its supervisor still lives (the non-Linux path)."""
_STABLE_AFTER = 10.0
"""A worker that served this many seconds before dying is replaced at once."""
_MAX_RESPAWN_DELAY = 60.0

Target = Callable[[int, Callable[[], None]], None]
"""A worker's body: ``target(slot, on_started)`` serves until SIGTERM."""


@dataclasses.dataclass
class _Slot:
    """One worker position: its current process and how soon it may be replaced."""

    index: int
    process: multiprocessing.process.BaseProcess | None = None
    ready: multiprocessing.connection.Connection | None = None
    started_at: float = 0.0
    delay: float = 0.0
    respawn_at: float | None = None


def _die_with(parent: int, grace: float) -> None:
    """Make this worker stop when process ``parent`` dies (see the module docstring)."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_WATCH_INTERVAL)  # polling the kernel, not synchronising with a peer
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace)
        os._exit(1)  # still alive: the event loop is stuck; no graceful exit is coming

    threading.Thread(target=watch, name="openenv-gym-parent-watch", daemon=True).start()


def _worker_main(
    parent: int,
    grace: float,
    slot: int,
    target: Target,
    ready: multiprocessing.connection.Connection,
    wakeup: socket.socket,
) -> None:
    wakeup.close()  # the supervisor's; signals here must not wake it
    inherited = signal.set_wakeup_fd(-1)
    if inherited >= 0:
        os.close(inherited)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)
    _die_with(parent, grace)

    def started() -> None:
        with contextlib.suppress(OSError):
            ready.send_bytes(b"ready")
            ready.close()

    target(slot, started)


class _Supervisor:
    def __init__(self, count: int, target: Target, grace: float) -> None:
        self._target = target
        self._grace = grace
        self._context = multiprocessing.get_context("fork")
        self._slots = [_Slot(index) for index in range(count)]
        self._wakeup, self._wakeup_w = socket.socketpair()
        self._wakeup.setblocking(False)
        self._wakeup_w.setblocking(False)
        self.stopping = False

    def _spawn(self, slot: _Slot) -> None:
        ready, ready_w = self._context.Pipe(duplex=False)
        args = (os.getpid(), self._grace, slot.index, self._target, ready_w, self._wakeup)
        process = self._context.Process(
            target=_worker_main, args=args, name=f"openenv-gym-worker-{slot.index}", daemon=True
        )
        process.start()
        ready_w.close()
        slot.process, slot.ready, slot.started_at, slot.respawn_at = (
            process,
            ready,
            time.monotonic(),
            None,
        )

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def wait_ready(self) -> None:
        """Wait until every worker serves.

        Raises:
            ServerStartError: a worker exited first.

        """
        for slot in self._slots:
            assert slot.process is not None and slot.ready is not None
            while not self.stopping:
                if multiprocessing.connection.wait([slot.ready, slot.process.sentinel], 1.0):
                    break
            with contextlib.suppress(EOFError, OSError):
                if slot.ready.poll() and slot.ready.recv_bytes() == b"ready":
                    continue
            if not self.stopping:
                code = slot.process.exitcode
                raise ServerStartError(
                    f"worker {slot.index} exited with code {code} before serving; see its log"
                )

    def _reap(self, now: float) -> None:
        for slot in self._slots:
            if slot.process is None or slot.process.exitcode is None or slot.respawn_at:
                continue
            lived = now - slot.started_at
            slot.delay = (
                0.0 if lived >= _STABLE_AFTER else min(max(1.0, 2 * slot.delay), _MAX_RESPAWN_DELAY)
            )
            slot.respawn_at = now + slot.delay
            logger.warning(
                "worker %d (pid %d) died with exit code %s after %.1f s; replacing it in %.0f s",
                slot.index,
                slot.process.pid,
                slot.process.exitcode,
                lived,
                slot.delay,
            )
        for slot in self._slots:
            if slot.respawn_at is not None and slot.respawn_at <= now and not self.stopping:
                self._spawn(slot)
                assert slot.process is not None
                logger.info("worker %d replaced by pid %d", slot.index, slot.process.pid)

    def run(self, on_started: Callable[[], None] | None) -> None:
        previous = {s: signal.signal(s, self._stop) for s in (signal.SIGTERM, signal.SIGINT)}
        old_wakeup = signal.set_wakeup_fd(self._wakeup_w.fileno())
        try:
            for slot in self._slots:
                self._spawn(slot)
            self.wait_ready()
            if on_started is not None and not self.stopping:
                on_started()
            while not self.stopping:
                waits: list[object] = [self._wakeup]
                waits += [
                    s.process.sentinel for s in self._slots if s.process and s.process.is_alive()
                ]
                pending = [s.respawn_at for s in self._slots if s.respawn_at is not None]
                timeout = max(0.0, min(pending) - time.monotonic()) if pending else None
                multiprocessing.connection.wait(waits, timeout)  # type: ignore[arg-type]
                with contextlib.suppress(BlockingIOError):
                    self._wakeup.recv(4096)
                self._reap(time.monotonic())
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self._shutdown()

    def _shutdown(self) -> None:
        processes = [s.process for s in self._slots if s.process is not None]
        for process in processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: each worker closes its sessions gracefully
        deadline = time.monotonic() + self._grace
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(1.0)
        self._wakeup.close()
        self._wakeup_w.close()


def supervise(
    count: int,
    target: Target,
    *,
    grace: float,
    on_started: Callable[[], None] | None = None,
) -> None:
    """Run ``count`` worker processes until SIGTERM or SIGINT, replacing those that die.

    Call from the main thread (it installs signal handlers), after binding the socket the
    workers serve.

    Args:
        count: how many workers.
        target: a worker's body, ``target(slot, on_started)``; it serves until SIGTERM and
            calls ``on_started`` once it accepts connections.
        grace: seconds workers get to stop after SIGTERM before SIGKILL.
        on_started: called once every worker serves.

    Raises:
        ServerStartError: a worker exited before it served.

    """
    _Supervisor(count, target, grace).run(on_started)
