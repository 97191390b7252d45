"""PoolHost: a pool session's envs, stepped asynchronously (envpool's model), no I/O here.

A pool session holds ``num_envs`` independent envs. POOL_SEND steps some of them, POOL_RESET
resets some of them; each env's result is pushed to the client as soon as it is ready (the
session turns :meth:`PoolHost.take_results` into POOL_EVENT messages, several results per
message when they finish together). Steps run

* inline, one after another inside the request (``concurrent_steps = 0``: today's latency),
* inline until a step is found slow (over 2 ms), then on up to 64 threads (the default,
  ``concurrent_steps`` unset: fast envs keep the inline path, slow ones get threads), or
* on up to ``concurrent_steps`` worker threads of the session, so that one slow env holds up
  nobody else; with ``step_isolation = "process"`` each env lives in its own child process
  (``server/env_runner.py``) and the threads only wait on pipes.

**Autoreset** is envpool's: an env whose episode ended (terminated or truncated) is reset by
the next POOL_SEND that names it instead of stepped; that action is ignored and its result is
the reset observation and info with reward 0.0 and both flags false (gymnasium's NEXT_STEP,
per env). Env ``i`` never reset cannot be stepped.

**Deadlines.** Each step (and reset) has one: the request's ``timeout``, else the operator's
``step_timeout``. Past it the client gets a ``StepTimeoutError`` result for that env, and the
env is given up: a child process is killed at once; a step on a thread cannot be killed, so
its thread is *abandoned* (replaced in the pool, counted in :attr:`PoolHost.abandoned`, the
env closed when the step returns); at most ``concurrent_steps`` may be abandoned at once, after
which the session refuses steps (the operator should use ``step_isolation = "process"``).
Either way the env needs a reset, which builds a new one. A deadline with ``concurrent_steps =
0`` runs the step on one worker thread, since the request cannot be interrupted inline.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array, iterate

from openenv_gym.errors import EnvIdError, StepTimeoutError
from openenv_gym.protocol.messages import StepIsolation
from openenv_gym.protocol.spaces import space_from_data
from openenv_gym.server.catalog import EnvFactory
from openenv_gym.server.env_runner import (
    EnvProcessError,
    EnvRunner,
    InProcessRunner,
    ProcessRunner,
)

__all__ = ["AUTO_SLOW", "AUTO_THREADS", "PoolHost", "PoolResult"]

logger = logging.getLogger("openenv_gym.server")

AUTO_SLOW = 0.002
"""Seconds of one step past which an auto session (``concurrent_steps=None``) uses threads."""
AUTO_THREADS = 64
"""The most threads an auto session starts."""

_NEW, _READY, _DONE, _BROKEN = 0, 1, 2, 3
"""Env states: never reset, steppable, episode over (next send resets), given up."""


@dataclasses.dataclass
class PoolResult:
    """One env's result: a step or reset outcome, or the error that ended it."""

    env_id: int
    obs: Any = None
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    error: BaseException | None = None


class _Workers:
    """Daemon worker threads running jobs; grows by one for each thread a stuck step holds."""

    def __init__(self, count: int, name: str) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], bool] | None] = queue.SimpleQueue()
        self._name = name
        self._lock = threading.Lock()
        self._surplus = 0
        self._threads = 0
        for _ in range(count):
            self._start()

    def _start(self) -> None:
        self._threads += 1
        name = f"{self._name}-{self._threads}"
        threading.Thread(target=self._work, name=name, daemon=True).start()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            abandoned = job()
            with self._lock:
                if abandoned and self._surplus:
                    self._surplus -= 1  # its replacement serves on; this one retires
                    self._threads -= 1
                    return

    def grow_to(self, count: int) -> None:
        """Run at least ``count`` threads (besides those held by abandoned steps)."""
        with self._lock:
            while self._threads - self._surplus < count:
                self._start()

    def submit(self, job: Callable[[], bool]) -> None:
        """Queue ``job``; it returns whether its step was abandoned meanwhile."""
        self._jobs.put(job)

    def replace_one(self) -> None:
        """Start a thread for one held by an abandoned step (that one retires when it returns)."""
        with self._lock:
            self._surplus += 1
            self._start()

    def close(self) -> None:
        """Stop the idle threads; busy ones stop after their job."""
        with self._lock:
            count = self._threads
        for _ in range(count):
            self._jobs.put(None)


class PoolHost:
    """The envs of one pool session (see the module docstring).

    Args:
        factory: builds one env.
        num_envs: envs in the session.
        concurrent_steps: worker threads stepping envs at once (0: inline); ``None``
            (auto): inline until a step takes over ``AUTO_SLOW`` s, then up to
            ``min(num_envs, AUTO_THREADS)`` threads.
        step_timeout: the operator's default deadline of one step or reset, in seconds.
        step_isolation: ``"process"``: each env in a child process (killed at its deadline).

    Raises:
        ValueError: ``num_envs`` below 1 or ``concurrent_steps`` below 0.
        Exception: what building an env raises (the envs already built are closed).

    """

    def __init__(
        self,
        factory: EnvFactory,
        *,
        num_envs: int,
        concurrent_steps: int | None = 0,
        step_timeout: float | None = None,
        step_isolation: StepIsolation = "none",
    ) -> None:
        self._auto = concurrent_steps is None
        if concurrent_steps is None:
            concurrent_steps = min(num_envs, AUTO_THREADS)
        if num_envs < 1 or concurrent_steps < 0:
            raise ValueError(
                f"num_envs must be >= 1, concurrent_steps >= 0: {num_envs}, {concurrent_steps}"
            )
        self.num_envs = num_envs
        self.concurrent_steps = concurrent_steps
        self.step_timeout = step_timeout
        self.step_isolation = step_isolation
        self._factory = factory
        self._lock = threading.Lock()
        self._state = np.full(num_envs, _NEW, dtype=np.int8)
        self._busy = np.zeros(num_envs, dtype=bool)
        self._tokens = np.zeros(num_envs, dtype=np.int64)
        self._step_counts = np.zeros(num_envs, dtype=np.int64)
        self._results: list[PoolResult] = []
        self._notify: Callable[[], None] | None = None
        self._workers: _Workers | None = None
        self._watchdog: _Watchdog | None = None
        self.abandoned = 0
        """Steps given up past their deadline whose threads still run (thread isolation)."""
        self._closed = False
        self._runners: list[EnvRunner | None] = []
        try:
            for index in range(num_envs):
                self._runners.append(self._build(index))
            self._description = self._runners[0].describe()  # type: ignore[union-attr]
        except BaseException:
            self.close()
            raise
        self._space = space_from_data(self._description["observation_space"])
        self._action_space = space_from_data(self._description["action_space"])
        self.slow = False
        """True once a step took over ``AUTO_SLOW`` seconds (auto mode moves to threads)."""
        if concurrent_steps and not self._auto:
            self._workers = _Workers(concurrent_steps, "openenv-gym-step")

    def _build(self, index: int) -> EnvRunner:
        if self.step_isolation == "process":
            return ProcessRunner(self._factory, index)
        return InProcessRunner(self._factory)

    # -- what the session asks ----------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Return the ``MakeReply`` fields, with the pool's own (concurrency, deadline)."""
        return {
            **self._description,
            "concurrent_steps": self.concurrent_steps,
            "step_timeout": self.step_timeout,
            "step_isolation": self.step_isolation,
        }

    def attach(self, notify: Callable[[], None]) -> None:
        """Call ``notify`` (from any thread) whenever results wait in :meth:`take_results`."""
        self._notify = notify

    @property
    def busy(self) -> bool:
        """True while any env has a step or reset in flight."""
        return bool(self._busy.any())

    def take_results(self) -> list[PoolResult]:
        """Return the results ready so far (each once), in the order they finished."""
        with self._lock:
            results, self._results = self._results, []
        return results

    def batch_obs(self, results: list[PoolResult]) -> Any:
        """Return the observations of ``results`` as one batch of the observation space."""
        out: Any = create_empty_array(self._space, len(results))
        return concatenate(self._space, [r.obs for r in results], out)

    def send(self, env_ids: Any, actions: Any, timeout: float | None) -> None:
        """Step (or autoreset) each env of ``env_ids`` with its action from ``actions``.

        Raises:
            EnvIdError: ids out of range, repeated, in flight, never reset or given up.
            ValueError: ``actions`` does not hold one action per id.

        """
        ids = self._check_ids(env_ids, "send", need_reset=True)
        try:
            items = list(iterate(batch_space(self._action_space, len(ids)), actions))
        except Exception as exc:
            raise ValueError(f"actions: not a batch of the action space: {exc}") from None
        if len(items) != len(ids):
            raise ValueError(f"actions: expected a batch of {len(ids)}, got {len(items)}")
        self._launch(ids, [("step", item) for item in items], timeout)

    def reset(
        self,
        env_ids: Any,
        seed: int | list[int | None] | None,
        options: dict[str, Any] | None,
        timeout: float | None,
    ) -> None:
        """Reset each env of ``env_ids`` (``None``: all); env ``ids[j]`` gets ``seed + j``.

        Raises:
            EnvIdError: ids out of range, repeated or in flight.
            ValueError: a list of seeds whose length is not the number of ids.

        """
        ids = self._check_ids(
            np.arange(self.num_envs) if env_ids is None else env_ids, "reset", need_reset=False
        )
        if seed is None or isinstance(seed, int):
            seeds = [None if seed is None else seed + j for j in range(len(ids))]
        elif len(seed) == len(ids):
            seeds = list(seed)
        else:
            raise ValueError(f"{len(seed)} seeds for {len(ids)} env ids")
        jobs = [("reset", (s, None if options is None else dict(options))) for s in seeds]
        self._launch(ids, jobs, timeout)

    def state(self) -> list[dict[str, Any]]:
        """Return each env's step count, state name and whether a step is in flight."""
        names = {_NEW: "new", _READY: "ready", _DONE: "done", _BROKEN: "needs_reset"}
        return [
            {
                "step_count": int(self._step_counts[i]),
                "state": names[int(self._state[i])],
                "in_flight": bool(self._busy[i]),
            }
            for i in range(self.num_envs)
        ]

    def close(self) -> None:
        """Close every env (kill every child process); steps in flight are dropped."""
        with self._lock:
            self._closed = True
            runners, self._runners = self._runners, []
            busy = self._busy.copy()
            self._tokens += 1  # results still to come are dropped
        if self._workers is not None:
            self._workers.close()
        if self._watchdog is not None:
            self._watchdog.close()
        for index, runner in enumerate(runners):
            if runner is None:
                continue
            if busy[index] and isinstance(runner, InProcessRunner):
                continue  # its thread closes it when the step returns (see _finish)
            try:
                if isinstance(runner, ProcessRunner):
                    runner.close(graceful=not busy[index])  # a busy child reads no end of pipe
                else:
                    runner.close()
            except Exception:
                logger.exception("closing env %d of a pool session failed", index)

    # -- plumbing ---------------------------------------------------------------------------

    def _check_ids(self, env_ids: Any, what: str, *, need_reset: bool) -> np.ndarray[Any, Any]:
        try:
            ids = np.asarray(env_ids)
        except Exception as exc:
            raise EnvIdError(f"{what}: env_ids must be an array of ints: {exc}") from None
        if ids.ndim != 1 or ids.dtype.kind not in "iu" or not 1 <= len(ids) <= self.num_envs:
            raise EnvIdError(
                f"{what}: env_ids must be 1 to {self.num_envs} ints, got shape {ids.shape} "
                f"of {ids.dtype}"
            )
        ids = ids.astype(np.int64)
        bad = ids[(ids < 0) | (ids >= self.num_envs)]
        if bad.size:
            raise EnvIdError(f"{what}: env id {int(bad[0])} out of range [0, {self.num_envs})")
        if len(np.unique(ids)) != len(ids):
            raise EnvIdError(f"{what}: env_ids repeat an id: {ids.tolist()[:16]}")
        busy = ids[self._busy[ids]]
        if busy.size:
            raise EnvIdError(f"{what}: env {int(busy[0])} already has a step in flight")
        if need_reset:
            unready = ids[(self._state[ids] == _NEW) | (self._state[ids] == _BROKEN)]
            if unready.size:
                index = int(unready[0])
                why = "never reset" if self._state[index] == _NEW else "given up (deadline)"
                raise EnvIdError(f"{what}: env {index} needs a reset first ({why})")
        if self.abandoned >= max(self.concurrent_steps, 1):
            raise EnvIdError(
                f"{what}: {self.abandoned} steps stuck past their deadline still hold threads; "
                "this spec needs step_isolation='process'"
            )
        return ids

    def _launch(
        self, ids: np.ndarray[Any, Any], jobs: list[tuple[str, Any]], timeout: float | None
    ) -> None:
        timeout = self.step_timeout if timeout is None else timeout
        with self._lock:
            if self._closed:
                raise EnvIdError("the pool session is closed")
            self._busy[ids] = True
            self._tokens[ids] += 1  # one token per job: late results and stale deadlines miss
            tokens = self._tokens[ids].copy()
        if timeout is not None:
            self._ensure_workers(1)  # a deadline needs a thread: an inline step cannot stop
        for env_id, token, job in zip(ids.tolist(), tokens.tolist(), jobs, strict=True):
            run = _Job(self, env_id, token, job, timeout)
            if self._auto and self.slow:
                self._ensure_workers(self.concurrent_steps)  # the env turned out slow
            if self._workers is None:
                run()
            else:
                self._workers.submit(run)

    def _ensure_workers(self, count: int) -> None:
        with self._lock:
            if self._workers is None:
                self._workers = _Workers(count, "openenv-gym-step")
            else:
                self._workers.grow_to(count)

    def _watch(self, run: _Job) -> None:
        """Give up ``run`` (an in-process step on a thread) ``run.timeout`` after it started."""
        assert run.timeout is not None
        with self._lock:
            if self._watchdog is None:
                self._watchdog = _Watchdog(self._expire)
            watchdog = self._watchdog
        watchdog.add(run.started + run.timeout, run.env_id, run.token, run)

    def _expire(self, env_id: int, token: int, run: _Job) -> None:
        """Give up env ``env_id``'s step, still running on its thread, at its deadline."""
        with self._lock:
            if self._closed or self._tokens[env_id] != token or not self._busy[env_id]:
                return  # finished in time
            self._tokens[env_id] += 1
            self._busy[env_id] = False
            self._state[env_id] = _BROKEN
            self._runners[env_id] = None  # its job closes it once the step returns
            run.abandoned = True
            self.abandoned += 1
            elapsed = time.monotonic() - run.started
            error = StepTimeoutError(env_id, elapsed, run.timeout or 0.0, action=run.kind)
            self._results.append(PoolResult(env_id, error=error))
        logger.warning("env %d: %s", env_id, error)
        if self._workers is not None:
            self._workers.replace_one()
        self._wake()

    def _finish(self, run: _Job, result: PoolResult, state: int | None) -> None:
        """Record ``run``'s result; ``state`` is the env's new state (``None``: unchanged)."""
        with self._lock:
            current = not self._closed and self._tokens[run.env_id] == run.token
            if current:
                self._busy[run.env_id] = False
                if state is not None:
                    self._state[run.env_id] = state
                if result.error is None:
                    self._step_counts[run.env_id] = (
                        0 if run.kind == "reset" else self._step_counts[run.env_id] + 1
                    )
                self._results.append(result)
            elif run.abandoned:
                self.abandoned -= 1
        if current:
            self._wake()
            return
        # A step given up (or a session closed) while it ran: its env is not used again.
        runner = run.runner
        if runner is not None:
            try:
                runner.close()
            except Exception:
                logger.exception("closing env %d after its late step failed", run.env_id)

    def _wake(self) -> None:
        if self._notify is not None:
            self._notify()


class _Job:
    """One env's step or reset: run on a worker thread or inline; reports through ``_finish``."""

    def __init__(
        self, host: PoolHost, env_id: int, token: int, job: tuple[str, Any], timeout: float | None
    ) -> None:
        self.host = host
        self.env_id = env_id
        self.token = token
        self.kind, self.payload = job
        self.timeout = timeout
        self.started = 0.0
        self.abandoned = False
        self.runner: EnvRunner | None = None

    def __call__(self) -> bool:
        host = self.host
        with host._lock:
            if host._closed or host._tokens[self.env_id] != self.token:
                return False  # given up before it started
            self.started = time.monotonic()
            runner = host._runners[self.env_id]
            autoreset = self.kind == "step" and host._state[self.env_id] == _DONE
        try:
            if runner is None:  # given up before: a fresh env
                runner = host._build(self.env_id)
                with host._lock:
                    host._runners[self.env_id] = runner
            self.runner = runner
            if self.timeout is not None and not isinstance(runner, ProcessRunner):
                host._watch(self)
            result = self._run(runner, autoreset)
            if time.monotonic() - self.started > AUTO_SLOW:
                host.slow = True
        except (StepTimeoutError, EnvProcessError) as exc:  # the child is gone: a fresh one
            if isinstance(exc, StepTimeoutError):
                exc.env_index = self.env_id
            self._drop_runner()
            host._finish(self, PoolResult(self.env_id, error=exc), _BROKEN)
            return self.abandoned
        except Exception as exc:  # the env raised: it stays as it was, as in-process
            host._finish(self, PoolResult(self.env_id, error=exc), None)
            return self.abandoned
        done = result.terminated or result.truncated
        host._finish(self, result, _DONE if done else _READY)
        return self.abandoned

    def _run(self, runner: EnvRunner, autoreset: bool) -> PoolResult:
        if self.kind == "reset" or autoreset:
            seed, options = self.payload if self.kind == "reset" else (None, None)
            obs, info = runner.reset(seed, options, self.timeout)
            self.kind = "reset"  # an autoreset restarts the step count too
            return PoolResult(self.env_id, obs, 0.0, False, False, dict(info))
        obs, reward, terminated, truncated, info = runner.step(self.payload, self.timeout)
        return PoolResult(
            self.env_id, obs, float(reward), bool(terminated), bool(truncated), dict(info)
        )

    def _drop_runner(self) -> None:
        """Drop a killed or dead child; the env's next reset builds a new one."""
        host = self.host
        with host._lock:
            if host._tokens[self.env_id] == self.token and host._runners:
                host._runners[self.env_id] = None
        if self.runner is not None:
            try:
                self.runner.close()
            except Exception:
                logger.exception("closing env %d after its error failed", self.env_id)
        self.runner = None


class _Watchdog:
    """One thread that gives up steps at their deadlines (earliest first)."""

    def __init__(self, expire: Callable[[int, int, _Job], None]) -> None:
        self._expire = expire
        self._heap: list[tuple[float, int, int, int, _Job]] = []
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        threading.Thread(target=self._run, name="openenv-gym-deadlines", daemon=True).start()

    def add(self, deadline: float, env_id: int, token: int, run: _Job) -> None:
        """Give up ``run`` at ``deadline`` (``time.monotonic()``) unless it finished."""
        with self._cond:
            heapq.heappush(self._heap, (deadline, next(self._counter), env_id, token, run))
            self._cond.notify()

    def close(self) -> None:
        """Stop the thread."""
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    wait = None if not self._heap else self._heap[0][0] - time.monotonic()
                    self._cond.wait(wait)
                if self._stopped:
                    return
                _, _, env_id, token, run = heapq.heappop(self._heap)
            self._expire(env_id, token, run)
