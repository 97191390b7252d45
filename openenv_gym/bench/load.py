"""The load section of the reliability report: churning vector-env sessions from two processes.

``--sessions`` concurrent ``RemoteVectorEnv`` sessions of ``--envs`` CartPole envs each, spread
over the load servers and driven by two client processes (a client process pipelines its
sessions with ``step_async``), for ``--duration`` seconds; each session lives a random number
of steps, then closes and is replaced. Counts sessions and steps served, errors and wrong results.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import itertools
import multiprocessing
import time
from typing import Any

import numpy as np

from openenv_gym import RemoteVectorEnv
from openenv_gym.bench.report import Report
from openenv_gym.errors import OpenEnvError
from openenv_gym.testing.rawws import healthz

__all__ = ["run_load"]

CARTPOLE = "CartPole-v1"
ANSWER_TIMEOUT = 5.0


@dataclasses.dataclass
class _LoadSession:
    env: RemoteVectorEnv
    lifetime: int
    steps: int = 0
    broken: bool = False


def _load_client(
    index: int,
    urls: list[str],
    sessions: int,
    envs: int,
    duration: float,
    call_timeout: float,
    queue: Any,
) -> None:
    """One client process: ``sessions`` vector envs stepped in lockstep, churned, for a while."""
    rng = np.random.default_rng(index)
    errors: collections.Counter[str] = collections.Counter()
    stats: collections.Counter[str] = collections.Counter()
    round_ms: list[float] = []
    ids = itertools.count(index * 1_000_000)
    deadline = time.monotonic() + duration

    def open_one() -> _LoadSession | None:
        number = next(ids)
        try:
            env = RemoteVectorEnv(
                CARTPOLE,
                envs,
                urls=[urls[number % len(urls)]],
                call_timeout=call_timeout,
                connect_timeout=call_timeout,
            )
            env.reset(seed=number)
        except OpenEnvError as exc:
            errors[f"open: {type(exc).__name__}"] += 1
            return None
        stats["sessions opened"] += 1
        return _LoadSession(env, lifetime=int(rng.integers(20, 400)))

    def retire(session: _LoadSession) -> None:
        session.env.close()
        if not session.broken:
            stats["sessions served"] += 1

    live = [s for s in (open_one() for _ in range(sessions)) if s is not None]
    while time.monotonic() < deadline and live:
        started = time.perf_counter()
        sent = []
        for session in live:
            try:
                session.env.step_async(rng.integers(0, 2, envs))
                sent.append(session)
            except OpenEnvError as exc:
                errors[f"step_async: {type(exc).__name__}"] += 1
                session.broken = True
        for session in sent:
            try:
                obs, rewards, terminated, truncated, _ = session.env.step_wait()
            except OpenEnvError as exc:
                errors[f"step_wait: {type(exc).__name__}"] += 1
                session.broken = True
                continue
            if not (
                obs.shape == (envs, 4)
                and obs.dtype == np.float32
                and rewards.dtype == np.float64
                and rewards.shape == (envs,)
                and set(np.unique(rewards)) <= {0.0, 1.0}
                and terminated.dtype == np.bool_
                and truncated.dtype == np.bool_
            ):
                stats["wrong results"] += 1
            session.steps += 1
            stats["vector steps"] += 1
            stats["env steps"] += envs
        round_ms.append((time.perf_counter() - started) * 1000)
        kept: list[_LoadSession | None] = []
        for session in live:
            if session.broken or session.steps >= session.lifetime:
                retire(session)
                kept.append(open_one())
            else:
                kept.append(session)
        live = [session for session in kept if session is not None]
    for session in live:
        retire(session)
    queue.put(
        {
            "stats": dict(stats),
            "errors": dict(errors),
            "round_ms": round_ms[-200_000:],
        }
    )


def run_load(report: Report, urls: list[str], args: argparse.Namespace) -> None:
    """Run the load section on ``urls`` and record its figures and checks."""
    print(f"(a) load: {args.sessions} sessions x {args.envs} envs for {args.duration:g} s ...")
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    clients = min(2, args.sessions)
    shares = [len(part) for part in np.array_split(np.arange(args.sessions), clients)]
    processes = [
        context.Process(
            target=_load_client,
            args=(i, urls, share, args.envs, args.duration, args.call_timeout, queue),
            daemon=True,
        )
        for i, share in enumerate(shares)
    ]
    started = time.monotonic()
    for process in processes:
        process.start()
    results, hung = [], 0
    for _ in processes:
        try:
            results.append(queue.get(timeout=args.duration + 120))
        except Exception:
            hung += 1
    for process in processes:
        process.join(timeout=10)
        if process.is_alive():
            hung += 1
            process.kill()  # ours, by pid
            process.join(timeout=5)
    elapsed = time.monotonic() - started
    stats: collections.Counter[str] = collections.Counter()
    errors: collections.Counter[str] = collections.Counter()
    rounds: list[float] = []
    for result in results:
        stats.update(result["stats"])
        errors.update(result["errors"])
        rounds.extend(result["round_ms"])
    report.put(
        "load",
        servers=len(urls),
        client_processes=clients,
        concurrent_sessions=args.sessions,
        envs_per_session=args.envs,
        duration_s=elapsed,
        sessions_opened=stats["sessions opened"],
        sessions_served=stats["sessions served"],
        vector_steps_served=stats["vector steps"],
        env_steps_served=stats["env steps"],
        env_steps_per_s=stats["env steps"] / max(elapsed, 1e-9),
        round_ms_p50=float(np.percentile(rounds, 50)) if rounds else float("nan"),
        round_ms_p99=float(np.percentile(rounds, 99)) if rounds else float("nan"),
        errors=sum(errors.values()),
        errors_by_type=dict(errors),
        wrong_results=stats["wrong results"],
    )
    report.check("load: client processes finished in time", hung == 0, f"{hung} hung")
    report.check("load: no errors", not errors, str(dict(errors)))
    report.check("load: no wrong results", stats["wrong results"] == 0)
    report.check(
        "load: every session served",
        stats["sessions served"] >= args.sessions and stats["vector steps"] > 0,
        f"{stats['sessions served']} served",
    )
    report.check(
        "load: servers healthy afterwards", all(healthz(url, ANSWER_TIMEOUT) == 200 for url in urls)
    )
