"""Where a threaded engine's step goes: ``openenv-gym bench --native --cpu``.

Pong's engines (ale-py's ``AtariVectorEnv``, envpool) step their envs on threads of their own,
which take every core of a small machine. Stepped remote, each step adds a serial part (the
client's and the server's Python, the wire) during which those threads wait for actions. This
counts, over a timed run of the same engine in-process and remote (one local server), the CPU
time each thread used per step (``psutil``'s per-thread times, from ``/proc``; Linux):

* **wall**: milliseconds per step;
* **engine threads**: the CPU of the threads other than the stepping one (in-process: of this
  process; remote: of the server's), and how busy they were: CPU / (wall * threads);
* **engine wait**: how long each engine thread, on average, was ready to run but had no core
  (its run-queue wait, ``/proc/<pid>/task/<tid>/schedstat``; ``None`` where the kernel keeps
  none): a woken engine thread queued behind another while a core sits idle shows here;
* **stepping thread**: the thread that calls ``step`` (this one; remote: the client's);
* **server main thread**: the server's event loop, codec and the engine's Python (remote only);
* of the last two, the **kernel** share (system time: syscalls, the loopback's copies).

Only threads that used CPU during the run count as the engine's (an idle watchdog does not).
The kernel counts thread time in ticks (10 ms), so runs of a few seconds are the useful ones.

:func:`gap_cost` measures what the serial part costs the engine beyond its own length: the
same engine in-process, its step timed alone, back to back and after a gap between steps in
which the stepping thread sleeps or computes (a remote step's gap is the client's and the
server's work). On a machine whose cores the engine's threads fill, a busy gap delays the
step after it (its woken threads queue behind the busy one); that delay is the part of the
remote gap no faster codec or wire removes.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gymnasium.vector import VectorEnv

__all__ = ["CpuPerStep", "GapCost", "cpu_per_step", "gap_cost"]

_BUSY_SHARE = 0.01
"""A thread counts as the engine's if its CPU grew by this share of the run's wall time."""


@dataclasses.dataclass(frozen=True)
class CpuPerStep:
    """CPU milliseconds per step of each kind of thread, over one timed run of one env."""

    steps: int
    wall_ms: float
    engine_ms: float
    engine_threads: int
    engine_wait_ms: float | None
    stepping_ms: float
    stepping_kernel_ms: float
    server_main_ms: float | None = None
    server_main_kernel_ms: float | None = None

    @property
    def engine_busy(self) -> float:
        """The engine threads' CPU / (wall * their number): 1.0 is never waiting."""
        return self.engine_ms / (self.wall_ms * self.engine_threads) if self.engine_threads else 0.0


def _psutil() -> Any:
    try:
        import psutil
    except ImportError as exc:
        raise ImportError(
            f"per-thread CPU times need psutil: pip install 'openenv-gym[bench]' ({exc})"
        ) from exc
    return psutil


def _thread_seconds(pid: int) -> dict[int, tuple[float, float]]:
    """Return the CPU seconds (user, system) of every thread of process ``pid``."""
    threads = _psutil().Process(pid).threads()
    return {thread.id: (thread.user_time, thread.system_time) for thread in threads}


def _run_queue_waits(pid: int) -> dict[int, float] | None:
    """Return the seconds every thread of process ``pid`` has waited on a run queue.

    ``None`` where ``/proc`` keeps no scheduler statistics (not Linux, or a kernel without).
    """
    waits = {}
    for tid in (thread.id for thread in _psutil().Process(pid).threads()):
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
        except OSError:  # no schedstat here, or a thread that ended meanwhile
            continue
        waits[tid] = int(fields[1]) / 1e9
    return waits or None


def _grown(
    before: dict[int, tuple[float, float]], after: dict[int, tuple[float, float]]
) -> dict[int, tuple[float, float]]:
    """Each thread's (user, system) seconds from ``before`` to ``after`` (new threads: all)."""
    return {
        tid: (user - before.get(tid, (0.0, 0.0))[0], system - before.get(tid, (0.0, 0.0))[1])
        for tid, (user, system) in after.items()
    }


def cpu_per_step(
    env: VectorEnv[Any, Any, Any],
    duration: float,
    *,
    server_pid: int | None = None,
    warmup_steps: int = 20,
) -> CpuPerStep:
    """Step ``env`` for ``duration`` seconds; return each kind of thread's CPU per step.

    Args:
        env: the vector env; reset with seed 0 and stepped with one seeded sample of its action
            space, as :func:`openenv_gym.bench.throughput.measure` does.
        duration: seconds of timed stepping (at least one step).
        server_pid: the process of the server ``env`` is stepped on (its engine threads and
            main thread are counted); ``None``: the engine is in this process.
        warmup_steps: untimed steps before.

    """
    env.reset(seed=0)
    env.action_space.seed(0)
    actions = env.action_space.sample()
    for _ in range(warmup_steps):
        env.step(actions)
    client, stepping = os.getpid(), threading.get_native_id()
    engine_pid = client if server_pid is None else server_pid
    engine_before, client_before = _thread_seconds(engine_pid), _thread_seconds(client)
    waits_before = _run_queue_waits(engine_pid)
    steps, started = 0, time.perf_counter()
    deadline = started + duration
    while time.perf_counter() < deadline or not steps:
        env.step(actions)
        steps += 1
    wall = time.perf_counter() - started
    engine = _grown(engine_before, _thread_seconds(engine_pid))
    waits_after = _run_queue_waits(engine_pid)
    user, system = _grown(client_before, _thread_seconds(client)).get(stepping, (0.0, 0.0))
    # The engine's threads: its process's busy ones but the thread that drives it, the stepping
    # one in-process or the server's main thread (on Linux a main thread's id is its pid).
    driver = stepping if server_pid is None else server_pid
    busy = _BUSY_SHARE * wall
    workers = {tid: sum(t) for tid, t in engine.items() if tid != driver and sum(t) >= busy}
    per_step = 1e3 / steps
    wait_ms = None
    if waits_before is not None and waits_after is not None:
        waited = [waits_after.get(tid, 0.0) - waits_before.get(tid, 0.0) for tid in workers]
        wait_ms = sum(waited) / len(waited) * per_step if waited else 0.0
    server_user, server_system = engine.get(driver, (0.0, 0.0))
    remote = server_pid is not None
    return CpuPerStep(
        steps=steps,
        wall_ms=wall * per_step,
        engine_ms=sum(workers.values()) * per_step,
        engine_threads=len(workers),
        engine_wait_ms=wait_ms,
        stepping_ms=(user + system) * per_step,
        stepping_kernel_ms=system * per_step,
        server_main_ms=(server_user + server_system) * per_step if remote else None,
        server_main_kernel_ms=server_system * per_step if remote else None,
    )


@dataclasses.dataclass(frozen=True)
class GapCost:
    """Milliseconds an engine's step takes (the gap not counted) after each kind of gap."""

    gap_ms: float
    back_to_back_ms: float
    after_sleeping_gap_ms: float
    after_busy_gap_ms: float


def gap_cost(
    env: VectorEnv[Any, Any, Any], gap: float, *, steps: int = 100, repeats: int = 3
) -> GapCost:
    """Time ``env``'s step back to back and after a ``gap``-second pause between steps.

    The pause either sleeps or keeps the stepping thread busy (a spin on the clock, as
    Python work would). Each kind is run ``steps`` steps per repeat, interleaved with the
    others within each repeat (noise hits them alike); the median repeat is kept.

    Args:
        env: the vector env, reset with seed 0 and stepped with one seeded sample of its
            action space.
        gap: seconds of each pause (> 0).
        steps: timed steps per kind and repeat (the step itself only, pauses excluded).
        repeats: repeats of the three kinds.

    """
    if not gap > 0 or steps < 1 or repeats < 1:
        raise ValueError(f"need gap > 0, steps >= 1, repeats >= 1: {gap}, {steps}, {repeats}")
    env.reset(seed=0)
    env.action_space.seed(0)
    actions = env.action_space.sample()

    def busy() -> None:
        until = time.perf_counter() + gap
        while time.perf_counter() < until:
            pass

    def sleep() -> None:
        time.sleep(gap)

    pauses: dict[str, Callable[[], None] | None] = {
        "back_to_back_ms": None,
        "after_sleeping_gap_ms": sleep,
        "after_busy_gap_ms": busy,
    }
    timed: dict[str, list[float]] = {name: [] for name in pauses}
    env.step(actions)
    for _ in range(repeats):
        for name, pause in pauses.items():
            stepping = 0.0
            for _ in range(steps):
                if pause is not None:
                    pause()
                started = time.perf_counter()
                env.step(actions)
                stepping += time.perf_counter() - started
            timed[name].append(stepping * 1e3 / steps)
    medians = {name: sorted(times)[len(times) // 2] for name, times in timed.items()}
    return GapCost(gap_ms=gap * 1e3, **medians)
