"""``openenv-gym bench --slow``: slow, uneven envs, stepped by a pool, a vector env and OpenEnv.

64 ``HeavyTailEnv`` envs (``openenv_gym/testing/slow_envs.py``: every step waits a seeded,
log-uniform 1-200 ms, as an agentic env waits on a command or a model) are driven for a fixed
time by

* ``RemoteEnvPool(batch_size=16)`` on one server stepping pool sessions on ``--workers``
  threads (``--concurrent-steps``): each ``recv`` takes the first 16 envs done, sends them
  their next actions at once;
* ``RemoteVectorEnv`` on the same server: every step waits for all 64 envs, stepped one after
  another in its session (today's batched path);
* OpenEnv's own client, one WebSocket session per env (64), all driven concurrently on one
  event loop against OpenEnv's own server (when ``openenv`` is installed).

Reported: env-steps/s of each, the pool's ratio to ``RemoteVectorEnv``, and the pool's share
of the ideal: the envs' own time (the sum of the step times they waited, from their infos)
divided by the server's workers, over the wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SlowResult", "main", "run"]

ENTRY = "openenv_gym.testing.slow_envs:HeavyTailEnv"
OPENENV_ID = "openenv_gym.testing.slow_envs:SlowBench/HeavyTail-v0"


@dataclasses.dataclass
class SlowResult:
    """One backend's run: env-steps, wall time, the envs' own time."""

    backend: str
    env_steps: int
    seconds: float
    env_seconds: float | None = None

    @property
    def rate(self) -> float:
        """Env-steps per second."""
        return self.env_steps / self.seconds


def _pool(url: str, num_envs: int, batch_size: int, duration: float, seed: int) -> SlowResult:
    from openenv_gym import RemoteEnvPool

    with RemoteEnvPool(ENTRY, num_envs, batch_size=batch_size, seed=seed, urls=[url]) as pool:
        pool.async_reset()
        for _ in range(num_envs // batch_size):  # the resets: not counted
            _, _, _, _, info = pool.recv(timeout=60)
            ids = info["env_id"]
            pool.send(np.ones(len(ids), dtype=np.int64), ids)
        steps, env_seconds = 0, 0.0
        start = time.perf_counter()
        while time.perf_counter() - start < duration:
            _, _, _, _, info = pool.recv(timeout=60)
            ids = info["env_id"]
            steps += len(ids)
            if "delay" in info:
                env_seconds += float(info["delay"][info["_delay"]].sum())
            pool.send(np.ones(len(ids), dtype=np.int64), ids)
        seconds = time.perf_counter() - start
    return SlowResult(f"RemoteEnvPool(batch_size={batch_size})", steps, seconds, env_seconds)


def _vector(url: str, num_envs: int, duration: float, seed: int) -> SlowResult:
    from openenv_gym import RemoteVectorEnv

    with RemoteVectorEnv(ENTRY, num_envs, urls=[url]) as envs:
        envs.reset(seed=seed)
        actions = np.ones(num_envs, dtype=np.int64)
        steps, env_seconds = 0, 0.0
        start = time.perf_counter()
        while time.perf_counter() - start < duration:
            _, _, _, _, infos = envs.step(actions)
            steps += num_envs
            if "delay" in infos:
                env_seconds += float(infos["delay"][infos["_delay"]].sum())
        seconds = time.perf_counter() - start
    return SlowResult("RemoteVectorEnv", steps, seconds, env_seconds)


def _openenv(num_envs: int, duration: float) -> SlowResult | str:
    from openenv_gym.bench import openenv_peer

    ok, why = openenv_peer.available()
    if not ok:
        return why
    with openenv_peer.serve(OPENENV_ID, max_sessions=num_envs) as url:
        rate = asyncio.run(openenv_peer._aggregate_rate(url, num_envs, duration, warmup_steps=1))
    return SlowResult(f"OpenEnv ({num_envs} sessions)", round(rate * duration), duration)


def run(
    *,
    num_envs: int = 64,
    batch_size: int = 16,
    workers: int = 16,
    duration: float = 10.0,
    seed: int = 0,
    openenv: bool = True,
    isolation: str = "none",
) -> dict[str, Any]:
    """Run every backend for ``duration`` seconds; return the rows and the ratios.

    Raises:
        ServerStartError: the server did not start.

    """
    from openenv_gym.providers.local import LocalProvider

    rows: list[SlowResult] = []
    notes: list[str] = []
    args = ["--concurrent-steps", str(workers), "--step-isolation", isolation]
    with LocalProvider([ENTRY], extra_args=args) as server:
        url = server.urls[0]
        rows.append(_pool(url, num_envs, batch_size, duration, seed))
        rows.append(_vector(url, num_envs, duration, seed))
    if openenv:
        peer = _openenv(num_envs, duration)
        if isinstance(peer, str):
            notes.append(f"OpenEnv not measured: {peer}")
        else:
            rows.append(peer)
    pool, vector = rows[0], rows[1]
    ideal_share = (pool.env_seconds or 0.0) / workers / pool.seconds
    ratios = {
        "RemoteEnvPool / RemoteVectorEnv": pool.rate / vector.rate,
        f"RemoteEnvPool share of ideal (env time / {workers} workers)": ideal_share,
    }
    if len(rows) > 2:
        ratios["RemoteEnvPool / OpenEnv"] = pool.rate / rows[2].rate
    return {
        "command": "openenv-gym bench --slow " + " ".join(sys.argv[2:]),
        "num_envs": num_envs,
        "batch_size": batch_size,
        "workers": workers,
        "isolation": isolation,
        "duration": duration,
        "rows": [{**dataclasses.asdict(r), "rate": r.rate} for r in rows],
        "ratios": ratios,
        "notes": notes,
    }


def _table(report: dict[str, Any]) -> str:
    lines = [
        f"{report['num_envs']} HeavyTailEnv envs (log-uniform 1-200 ms steps), "
        f"{report['workers']} server workers (step isolation {report['isolation']}), "
        f"{report['duration']:g} s each",
        "",
        "| backend | env-steps/s | env-steps | env time (s) |",
        "|---|---:|---:|---:|",
    ]
    for row in report["rows"]:
        env_time = "-" if row["env_seconds"] is None else f"{row['env_seconds']:.1f}"
        lines.append(f"| {row['backend']} | {row['rate']:,.1f} | {row['env_steps']} | {env_time} |")
    lines.append("")
    lines += [f"- {name}: **{value:.2f}**" for name, value in report["ratios"].items()]
    lines += [f"- {note}" for note in report["notes"]]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the slow-env benchmark, print its table, and write ``--out`` JSON if given."""
    parser = argparse.ArgumentParser(prog="openenv-gym bench --slow", description=__doc__)
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=16, help="server threads (pool sessions)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per backend")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--isolation", choices=["none", "process"], default="none", help="--step-isolation"
    )
    parser.add_argument("--no-openenv", dest="openenv", action="store_false")
    parser.add_argument("--out", help="write the report as JSON to this file")
    args = parser.parse_args(argv)
    report = run(
        num_envs=args.num_envs,
        batch_size=args.batch_size,
        workers=args.workers,
        duration=args.duration,
        seed=args.seed,
        openenv=args.openenv,
        isolation=args.isolation,
    )
    print(_table(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0
