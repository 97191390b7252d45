"""Vector throughput (env-steps/s): RemoteVectorEnv against in-process vector envs, one run.

Every backend steps the same env with the same fixed batch of actions for a fixed time after a
warm-up; backends are interleaved within each repeat so machine noise hits them alike, and the
figure reported is the median over repeats.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import gymnasium
from gymnasium.vector import VectorEnv

from openenv_gym.client.vector_env import RemoteVectorEnv
from openenv_gym.providers import Provider, start_servers
from openenv_gym.providers.local import LocalProvider

__all__ = ["Backend", "ThroughputResult", "backends", "measure", "run_throughput"]

ASYNC_MAX_ENVS = 16
"""AsyncVectorEnv runs a process per env; beyond this on a small machine it measures thrashing."""


@dataclasses.dataclass(frozen=True)
class Backend:
    """A way to build a vector env: ``make(env_id, num_envs)``."""

    name: str
    make: Callable[[str, int], VectorEnv[Any, Any, Any]]
    max_envs: int | None = None


@dataclasses.dataclass
class ThroughputResult:
    """Median env-steps/s of one backend at one ``num_envs`` (all repeats kept)."""

    backend: str
    num_envs: int
    steps_per_second: float
    repeats: list[float]


def measure(
    env: VectorEnv[Any, Any, Any],
    duration: float,
    warmup_steps: int = 20,
    *,
    actions: Any = None,
) -> float:
    """Step ``env`` for ``duration`` seconds after a warm-up; return env-steps per second.

    Every step uses the same batch of ``actions`` (default: one seeded sample of the space).
    """
    env.reset(seed=0)
    if actions is None:
        env.action_space.seed(0)
        actions = env.action_space.sample()
    for _ in range(warmup_steps):
        env.step(actions)
    steps = 0
    started = time.perf_counter()
    deadline = started + duration
    while True:
        env.step(actions)
        steps += 1
        now = time.perf_counter()
        if now >= deadline:
            return steps * env.num_envs / (now - started)


@contextmanager
def backends(
    env_id: str,
    servers: Sequence[int],
    names: Sequence[str],
    *,
    docker_image: str | None = None,
) -> Iterator[list[Backend]]:
    """Yield the requested backends; servers are started once and shared by runs.

    ``docker`` needs ``docker_image`` (a built server image and a running engine).
    """
    providers: list[Provider] = []
    chosen: list[Backend] = []
    try:
        if "sync" in names:
            chosen.append(Backend("SyncVectorEnv", _make_sync))
        if "async" in names:
            chosen.append(Backend("AsyncVectorEnv", _make_async, max_envs=ASYNC_MAX_ENVS))
        if "remote" in names and servers:
            provider = LocalProvider([env_id], num_servers=max(servers))
            providers.append(provider)
            for count in servers:
                chosen.append(
                    Backend(
                        f"RemoteVectorEnv ({count} server{'s' * (count > 1)})",
                        _make_remote(provider.urls[:count], provider.token),
                    )
                )
        if "docker" in names and servers and docker_image:
            containers = start_servers(
                [env_id], num_servers=max(servers), docker_image=docker_image
            )
            providers.append(containers)
            for count in servers:
                chosen.append(
                    Backend(
                        f"RemoteVectorEnv ({count} container{'s' * (count > 1)})",
                        _make_remote(containers.urls[:count], containers.token),
                    )
                )
        yield chosen
    finally:
        for started in providers:
            started.close()


def _make_sync(env_id: str, num_envs: int) -> VectorEnv[Any, Any, Any]:
    return gymnasium.make_vec(env_id, num_envs, vectorization_mode="sync")


def _make_async(env_id: str, num_envs: int) -> VectorEnv[Any, Any, Any]:
    return gymnasium.make_vec(env_id, num_envs, vectorization_mode="async")


def _make_remote(
    urls: list[str], token: str | None
) -> Callable[[str, int], VectorEnv[Any, Any, Any]]:
    def make(env_id: str, num_envs: int) -> VectorEnv[Any, Any, Any]:
        shards = urls[: max(1, min(len(urls), num_envs))]
        return RemoteVectorEnv(env_id, num_envs, urls=shards, token=token)

    return make


def run_throughput(
    env_id: str,
    num_envs_list: Sequence[int],
    backend_list: Sequence[Backend],
    *,
    duration: float,
    repeats: int,
    progress: Callable[[str], None] | None = None,
) -> list[ThroughputResult]:
    """Measure every backend at every ``num_envs``, interleaved, ``repeats`` times."""
    samples: dict[tuple[str, int], list[float]] = {}
    for repeat in range(repeats):
        for num_envs in num_envs_list:
            for backend in backend_list:
                if backend.max_envs is not None and num_envs > backend.max_envs:
                    continue
                env = backend.make(env_id, num_envs)
                try:
                    rate = measure(env, duration)
                finally:
                    env.close()
                samples.setdefault((backend.name, num_envs), []).append(rate)
                if progress is not None:
                    progress(f"repeat {repeat + 1}/{repeats}: {backend.name} x{num_envs}")
    return [
        ThroughputResult(name, num_envs, statistics.median(rates), rates)
        for (name, num_envs), rates in samples.items()
    ]


def start_to_ready(
    env_id: str, *, repeats: int, docker_image: str | None = None
) -> dict[str, float]:
    """Median seconds from starting one server to a completed handshake (process or container)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        provider = start_servers([env_id], docker_image=docker_image)
        times.append(time.perf_counter() - started)
        provider.close()
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}


def cores() -> int:
    """CPU cores available to this process."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
