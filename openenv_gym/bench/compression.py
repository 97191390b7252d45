"""``openenv-gym bench --compression``: bytes per env-step and throughput, with and without.

Each engine runs on one local server; the client steps it with compression off, with zstd and
with lz4 (asked for explicitly: on loopback the default is off), in the same run. Reported per
engine and batch size: env-steps/s, wire bytes per env-step (request plus reply, as sent), the
ratio of bytes saved and the throughput cost against compression off, and the engine
in-process for reference.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import gymnasium
import numpy as np

__all__ = ["ENGINES", "Engine", "run"]

MODES: tuple[str | None, ...] = (None, "zstd", "lz4")


@dataclasses.dataclass(frozen=True)
class Engine:
    """One engine to measure: what the server hosts and how to build it in-process.

    Attributes:
        label: its name in the report.
        spec: what the server hosts (a gymnasium id, ``module:attr``, or an engine spec).
        server_vectorization: how the server batches it (``RemoteVectorEnv``'s argument).
        in_process: ``num_envs -> VectorEnv``, the same engine in this process.
        needs: a module whose absence skips the engine (with the reason in the report).

    """

    label: str
    spec: str
    server_vectorization: str
    in_process: Callable[[int], gymnasium.vector.VectorEnv[Any, Any, Any]]
    needs: str | None = None


def _frames(num_envs: int) -> gymnasium.vector.VectorEnv[Any, Any, Any]:
    from openenv_gym.testing.image_envs import FramesEnv

    return gymnasium.vector.SyncVectorEnv([FramesEnv for _ in range(num_envs)])


def _pong(num_envs: int) -> gymnasium.vector.VectorEnv[Any, Any, Any]:
    from ale_py.vector_env import AtariVectorEnv

    return AtariVectorEnv("pong", num_envs=num_envs)


ENGINES = (
    Engine(
        "Pong (AtariVectorEnv, 84x84x4)", "ale:pong", "vector_entry_point", _pong, needs="ale_py"
    ),
    Engine(
        "FramesEnv (SyncVectorEnv, 84x84x4)",
        "openenv_gym.testing.image_envs:FramesEnv",
        "sync",
        _frames,
    ),
)


@contextmanager
def _server(spec: str) -> Iterator[str]:
    from openenv_gym.providers.local import LocalProvider

    with LocalProvider([spec], num_servers=1) as provider:
        yield provider.urls[0]


def _steps(envs: Any, duration: float, seed: int = 0) -> tuple[float, int]:
    """Step reset ``envs`` with seeded random actions for ``duration`` s: (env-steps/s, steps)."""
    rng = np.random.default_rng(seed)
    space = envs.action_space
    actions = [np.asarray(rng.integers(0, space.nvec[0], envs.num_envs)) for _ in range(64)]
    steps, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < duration or steps < 5:
        envs.step(actions[steps % len(actions)])
        steps += 1
    return steps * envs.num_envs / elapsed, steps


def _remote_row(
    url: str, engine: Engine, num_envs: int, mode: str | None, duration: float
) -> dict[str, Any]:
    from openenv_gym.client.vector_env import RemoteVectorEnv

    with RemoteVectorEnv(
        engine.spec,
        num_envs,
        urls=[url],
        compression=mode,  # type: ignore[arg-type]
        server_vectorization=engine.server_vectorization,  # type: ignore[arg-type]
    ) as envs:
        connection = envs._shards[0].connection  # the shard's wire, for its byte counts
        envs.reset(seed=0)
        before = connection.bytes_sent + connection.bytes_received
        rate, steps = _steps(envs, duration)
        wire = connection.bytes_sent + connection.bytes_received - before
        agreed = connection.compression
    return {
        "compression": agreed or "off",
        "steps_per_second": rate,
        "bytes_per_env_step": wire / (steps * num_envs),
    }


def measure(
    engine: Engine, num_envs: int, *, url: str, duration: float, repeats: int
) -> dict[str, Any]:
    """Measure ``engine`` at ``num_envs``: in-process, then remote for each of :data:`MODES`.

    Modes are interleaved across repeats (each repeat runs them all) and the median kept, so a
    slow phase of a shared machine hits every mode alike.
    """
    samples: dict[str, list[dict[str, Any]]] = {}
    local = []
    for _ in range(repeats):
        envs = engine.in_process(num_envs)
        try:
            envs.reset(seed=0)
            local.append(_steps(envs, duration)[0])
        finally:
            envs.close()
        for mode in MODES:
            row = _remote_row(url, engine, num_envs, mode, duration)
            samples.setdefault(row["compression"], []).append(row)
    rows = {
        mode: {
            "steps_per_second": statistics.median(r["steps_per_second"] for r in runs),
            "bytes_per_env_step": statistics.median(r["bytes_per_env_step"] for r in runs),
        }
        for mode, runs in samples.items()
    }
    plain = rows["off"]
    for row in rows.values():
        row["bytes_saved"] = plain["bytes_per_env_step"] / row["bytes_per_env_step"]
        row["throughput_cost"] = 1.0 - row["steps_per_second"] / plain["steps_per_second"]
        row["vs_in_process"] = row["steps_per_second"] / statistics.median(local)
    return {
        "engine": engine.label,
        "num_envs": num_envs,
        "in_process_steps_per_second": statistics.median(local),
        "modes": rows,
    }


def run(
    num_envs: Sequence[int] = (16, 64),
    *,
    duration: float = 2.0,
    repeats: int = 3,
    engines: Sequence[Engine] = ENGINES,
    progress: Callable[[str], None] = lambda label: None,
) -> dict[str, Any]:
    """Run every engine at every batch size; return the report (rows and skipped engines)."""
    import importlib.util

    rows, skipped = [], {}
    for engine in engines:
        if engine.needs and importlib.util.find_spec(engine.needs) is None:
            skipped[engine.label] = f"{engine.needs} is not installed"
            continue
        with _server(engine.spec) as url:
            for n in num_envs:
                rows.append(measure(engine, n, url=url, duration=duration, repeats=repeats))
                progress(f"{engine.label} x{n}")
    return {"rows": rows, "skipped": skipped}


def markdown(report: dict[str, Any]) -> str:
    """Return the report as a Markdown table."""
    lines = [
        "| engine | envs | compression | env-steps/s | bytes/env-step | bytes saved "
        "| throughput cost | vs in-process |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in report["rows"]:
        for mode, figures in row["modes"].items():
            lines.append(
                f"| {row['engine']} | {row['num_envs']} | {mode} "
                f"| {figures['steps_per_second']:,.0f} | {figures['bytes_per_env_step']:,.0f} "
                f"| {figures['bytes_saved']:.1f}x | {figures['throughput_cost']:+.1%} "
                f"| {figures['vs_in_process']:.2f}x |"
            )
    lines += [f"\n{label} skipped: {why}" for label, why in report["skipped"].items()]
    return "\n".join(lines) + "\n"
