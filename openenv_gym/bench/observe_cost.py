"""What counting costs: step throughput with ``--metrics`` on and off, and per request in-process.

Two measurements, both quoted in the README ("Observable servers"):

* **in-process**: one :class:`~openenv_gym.server.session.Session` answering the same encoded
  STEP request, bare and wrapped in :class:`~openenv_gym.server.metered.MeteredSession`,
  interleaved over rounds, and the wrapper alone around a replayed reply: its cost in
  microseconds per request (no network noise);
* **end to end**: two local servers, one started with ``--no-metrics``, stepped in turns by a
  ``RemoteEnv`` (one env per message) and a ``RemoteVectorEnv`` of 256 envs; the median
  steps/s of each and the ratio on/off.

Run: ``python -m openenv_gym.bench.observe_cost`` (``--quick`` for a short run).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from openenv_gym.bench.throughput import measure
from openenv_gym.client.env import RemoteEnv
from openenv_gym.client.vector_env import RemoteVectorEnv
from openenv_gym.protocol import codec
from openenv_gym.protocol.messages import PROTOCOL_VERSION, Op
from openenv_gym.providers.local import LocalProvider
from openenv_gym.server.catalog import EnvCatalog
from openenv_gym.server.metered import MeteredSession
from openenv_gym.server.session import Session
from openenv_gym.server.stats import ServerStats

__all__ = ["end_to_end", "in_process", "main"]


def _session(env_id: str, metered: bool) -> Any:
    session: Any = Session(EnvCatalog([env_id]))
    if metered:
        session = MeteredSession(session, ServerStats(specs=[env_id]))
    session.handle(codec.encode([Op.HELLO.value, 1, {"protocol_version": PROTOCOL_VERSION}]))
    session.handle(codec.encode([Op.MAKE.value, 2, {"env_id": env_id}]))
    session.handle(codec.encode([Op.RESET.value, 3, {"seed": 0}]))
    return session


def in_process(
    env_id: str = "CartPole-v1", *, requests: int = 20_000, rounds: int = 5
) -> dict[str, Any]:
    """Return the µs per STEP request of a bare and a metered session (best of interleaved rounds).

    Also ``wrapper_us``: the wrapper's own cost, around a session that replays a recorded
    reply (the figure machine load blurs least).
    """
    # Alternating pushes keep a CartPole upright for well over 20 steps; a reset every 20
    # keeps every step inside a live episode (stepping a finished one logs a slow warning).
    steps = [codec.encode([Op.STEP.value, 4, np.int64(action)]) for action in (0, 1)]
    reset = codec.encode([Op.RESET.value, 5, {"seed": 0}])
    times: dict[str, list[float]] = {"bare": [], "metered": []}
    sessions = {"bare": _session(env_id, False), "metered": _session(env_id, True)}
    for _ in range(rounds):
        for name, session in sessions.items():
            started = time.perf_counter()
            for index in range(requests):
                session.handle(reset if index % 20 == 0 else steps[index % 2])
            times[name].append((time.perf_counter() - started) / requests * 1e6)
    bare, metered = (min(times[k]) for k in ("bare", "metered"))
    return {
        "bare_us": bare,
        "metered_us": metered,
        "overhead_us": metered - bare,
        "wrapper_us": _wrapper_only(sessions["bare"], steps[0], requests, rounds),
        "rounds_us": times,
    }


class _Replay:
    """A session that answers every request with one recorded reply, at no cost."""

    text_protocol = False
    closed = False

    def __init__(self, reply: bytes) -> None:
        self.reply = reply

    def handle(self, message: bytes) -> bytes:
        return self.reply

    def refuse(self, reason: str) -> bytes:
        return self.reply

    def close(self) -> None:
        return None


def _wrapper_only(session: Session, step: bytes, requests: int, rounds: int) -> float:
    """Return the µs the wrapper itself adds per STEP (the inner session replays a reply)."""
    replay = _Replay(session.handle(step))
    counts = ServerStats(specs=["replay"])
    bare, metered = replay, MeteredSession(replay, counts)
    metered.counts.num_envs = 1
    best: dict[str, float] = {"bare": float("inf"), "metered": float("inf")}
    for _ in range(rounds):
        for name, target in (("bare", bare), ("metered", metered)):
            started = time.perf_counter()
            for _ in range(requests):
                target.handle(step)
            best[name] = min(best[name], (time.perf_counter() - started) / requests * 1e6)
    return best["metered"] - best["bare"]


def end_to_end(
    env_id: str = "CartPole-v1", *, duration: float = 2.0, rounds: int = 5, num_envs: int = 256
) -> dict[str, Any]:
    """Return median steps/s with metrics on and off, one env and ``num_envs`` per message."""
    figures: dict[str, dict[str, list[float]]] = {
        "single": {"on": [], "off": []},
        f"vector_{num_envs}": {"on": [], "off": []},
    }
    with (
        LocalProvider([env_id]) as on,
        LocalProvider([env_id], extra_args=["--no-metrics"]) as off,
    ):
        servers = {"on": on.urls[0], "off": off.urls[0]}
        singles = {k: RemoteEnv(env_id, url=url) for k, url in servers.items()}
        vectors = {k: RemoteVectorEnv(env_id, num_envs, urls=[url]) for k, url in servers.items()}
        every: list[Any] = [*singles.values(), *vectors.values()]
        try:
            for env in every:
                env.reset(seed=0)
            for _ in range(rounds):
                for key in ("on", "off"):  # interleaved: machine noise hits both alike
                    figures["single"][key].append(_single_rate(singles[key], duration))
                    figures[f"vector_{num_envs}"][key].append(measure(vectors[key], duration))
        finally:
            for env in every:
                env.close()
    result: dict[str, Any] = {}
    for name, runs in figures.items():
        on_rate, off_rate = statistics.median(runs["on"]), statistics.median(runs["off"])
        result[name] = {
            "on": on_rate,
            "off": off_rate,
            "ratio_on_off": on_rate / off_rate,
            "runs": runs,
        }
    return result


def _single_rate(env: RemoteEnv, duration: float) -> float:
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < duration:
        for index in range(100):
            _, _, terminated, truncated, _ = env.step(index % 2)
            if terminated or truncated:
                env.reset()
        steps += 100
    return steps / (time.perf_counter() - started)


def main(argv: Sequence[str] | None = None) -> int:
    """Run both measurements and print them as JSON; return an exit status."""
    parser = argparse.ArgumentParser(prog="python -m openenv_gym.bench.observe_cost")
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--quick", action="store_true", help="short rounds (~20 s in all)")
    args = parser.parse_args(argv)
    rounds = 3 if args.quick else 9  # many short interleaved rounds: load hits on and off alike
    report = {
        "env_id": args.env,
        "in_process": in_process(args.env, requests=5000 if args.quick else 20_000, rounds=rounds),
        "end_to_end": end_to_end(args.env, duration=0.5 if args.quick else 1.0, rounds=rounds),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
