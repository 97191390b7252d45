"""Hosting an OpenEnv ``Environment``: openenv-gym's batched server vs OpenEnv's own server.

The same class, ``openenv_gym.testing.openenv_echo:WordGuessEnv`` (an OpenEnv text env:
pydantic ``GuessAction``/``GuessObservation``), is hosted three ways on loopback:

* **openenv-gym, N servers**: ``openenv-gym serve <entry point>`` processes (1 and 2), driven by
  ``openenv_gym.RemoteVectorEnv(<entry point>, 64, urls=...)``: one batched session per server,
  envs split in shards, next-step autoreset (the reset step counts as an env-step).
* **OpenEnv (own server + client)**: OpenEnv's ``create_app(WordGuessEnv, GuessAction,
  GuessObservation)`` under uvicorn in another process (what an OpenEnv author deploys), driven
  by 64 concurrent ``GenericEnvClient`` sessions (OpenEnv's own client, one WebSocket and one
  server-side env each) on one event loop; after ``done`` the client calls ``reset()``, a round
  trip counted as an env-step, as in ``openenv_gym/bench/openenv_peer.py``.
* **OpenEnv client -> openenv-gym server** (extra row): the same 64 ``GenericEnvClient``
  sessions against openenv-gym's server at ``/envs/<entry point>``, OpenEnv's protocol.

Every env ``i`` (session ``i``) always guesses ``WORDS[i % 5]``: an episode ends after one
guess when that is the hidden word, else after six. Figures: env-steps/s, the median of
``--repeats`` runs of ``--duration`` seconds after a warm-up, backends interleaved per repeat.
Usage::

    python benchmarks/openenv_hosting.py                 # table
    python benchmarks/openenv_hosting.py --json          # JSON on stdout
    python benchmarks/openenv_hosting.py --json out.json --duration 1 --repeats 1

Needs OpenEnv: ``openenv`` >= 0.10 or ``openenv-core`` 0.3 (and uvicorn, which it brings).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from openenv_gym.bench.openenv_peer import distribution, drive, serve_process
from openenv_gym.bench.throughput import measure

SPEC = "openenv_gym.testing.openenv_echo:WordGuessEnv"
WORDS = ("cab", "bad", "dab", "add", "bed")
MAX_SESSIONS = 1024
SERVE_FLAG = "--serve-openenv-fd"  # internal: run OpenEnv's server on an inherited socket


def _serve_openenv(fd: int, max_sessions: int) -> None:
    """Child process: OpenEnv's ``create_app`` for WordGuessEnv under uvicorn on socket ``fd``."""
    import uvicorn
    from openenv.core.env_server import create_app

    from openenv_gym.testing.openenv_echo import GuessAction, GuessObservation, WordGuessEnv

    app = create_app(WordGuessEnv, GuessAction, GuessObservation, max_concurrent_envs=max_sessions)
    sock = socket.socket(fileno=fd)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


@contextmanager
def openenv_server(startup_timeout: float = 90.0) -> Iterator[str]:
    """Run OpenEnv's own server for WordGuessEnv in a subprocess; yield its ``http://`` URL."""
    with serve_process(
        lambda fd: [sys.executable, "-m", "openenv_gym.bench.openenv_hosting", SERVE_FLAG, str(fd)],
        startup_timeout=startup_timeout,
        what="OpenEnv server for WordGuessEnv",
    ) as url:
        yield url


# -- OpenEnv's client: N concurrent sessions ------------------------------------------------


async def _sessions_rate(base_url: str, num_sessions: int, duration: float, warmup: int) -> float:
    from openenv.core.generic_client import GenericEnvClient

    clients = [GenericEnvClient(base_url=base_url) for _ in range(num_sessions)]
    guesses = [WORDS[i % len(WORDS)] for i in range(num_sessions)]
    try:
        await asyncio.gather(*(c.connect() for c in clients))
        await asyncio.gather(*(c.reset(seed=i) for i, c in enumerate(clients)))
        for _ in range(warmup):
            await asyncio.gather(*(_step_once(c, g) for c, g in zip(clients, guesses, strict=True)))
        started = time.perf_counter()
        deadline = started + duration
        calls = await asyncio.gather(
            *(drive(c, {"guess": g}, deadline) for c, g in zip(clients, guesses, strict=True))
        )
        return sum(calls) / (time.perf_counter() - started)
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


async def _step_once(client: Any, guess: str) -> None:
    result = await client.step({"guess": guess})
    if result.done:
        await client.reset()


def openenv_clients_rate(base_url: str, num_sessions: int, duration: float) -> float:
    """Env-steps/s of ``num_sessions`` concurrent ``GenericEnvClient`` sessions at ``base_url``."""
    return asyncio.run(_sessions_rate(base_url, num_sessions, duration, warmup=20))


# -- openenv-gym: RemoteVectorEnv -------------------------------------------------------------


def remote_vector_rate(urls: Sequence[str], num_envs: int, duration: float) -> float:
    """Env-steps/s of ``RemoteVectorEnv(SPEC, num_envs, urls=urls)`` with fixed guesses."""
    import openenv_gym

    envs = openenv_gym.RemoteVectorEnv(SPEC, num_envs, urls=list(urls))
    try:
        actions = {"guess": tuple(WORDS[i % len(WORDS)] for i in range(num_envs))}
        return measure(envs, duration, actions=actions)
    finally:
        envs.close()


# -- the run ----------------------------------------------------------------------------------


def run(
    num_envs: int,
    servers: Sequence[int],
    duration: float,
    repeats: int,
    progress: Callable[[str], None],
    *,
    our_server_openenv_row: bool = True,
) -> dict[str, Any]:
    """Start every server once, measure every backend ``repeats`` times (interleaved)."""
    from openenv_gym.providers import LocalProvider

    started = time.perf_counter()
    samples: dict[str, list[float]] = {}
    with LocalProvider([SPEC], num_servers=max(servers)) as provider, openenv_server() as oe_url:
        progress(f"servers ready in {time.perf_counter() - started:.1f} s")
        ours_base = provider.urls[0].replace("ws://", "http://", 1)
        ours_openenv_url = f"{ours_base}/envs/{urllib.parse.quote(SPEC, safe='')}"
        backends: list[tuple[str, Callable[[], float]]] = [
            (
                f"openenv-gym RemoteVectorEnv ({count} server{'s' * (count > 1)})",
                lambda count=count: remote_vector_rate(provider.urls[:count], num_envs, duration),  # type: ignore[misc]
            )
            for count in servers
        ]
        backends.append(
            (
                "OpenEnv server + GenericEnvClient",
                lambda: openenv_clients_rate(oe_url, num_envs, duration),
            )
        )
        if our_server_openenv_row:
            backends.append(
                (
                    "GenericEnvClient -> openenv-gym server",
                    lambda: openenv_clients_rate(ours_openenv_url, num_envs, duration),
                )
            )
        for repeat in range(repeats):
            for name, measure in backends:
                samples.setdefault(name, []).append(measure())
                progress(f"repeat {repeat + 1}/{repeats}: {name}: {samples[name][-1]:,.0f}/s")
    rows: list[dict[str, Any]] = [
        {
            "backend": name,
            "num_envs": num_envs,
            "steps_per_second": statistics.median(rates),
            "repeats": rates,
        }
        for name, rates in samples.items()
    ]
    openenv_rate = samples["OpenEnv server + GenericEnvClient"]
    ratios = {
        row["backend"]: row["steps_per_second"] / statistics.median(openenv_rate) for row in rows
    }
    return {
        "env": SPEC,
        "num_envs": num_envs,
        "duration_s": duration,
        "repeats": repeats,
        "results": rows,
        "ratio_vs_openenv": ratios,
        "openenv": " ".join(distribution() or ("openenv", "?")),
        "python": platform.python_version(),
        "cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "seconds": time.perf_counter() - started,
    }


def table(result: dict[str, Any]) -> str:
    """Format ``run``'s result as a Markdown table."""
    lines = [
        f"{result['env']}, {result['num_envs']} envs/sessions, median of {result['repeats']} x "
        f"{result['duration_s']:g} s, {result['cores']} cores, "
        f"{result['openenv']}",
        "",
        "| backend | env-steps/s | vs OpenEnv | repeats |",
        "|---|---:|---:|---|",
    ]
    for row in result["results"]:
        ratio = result["ratio_vs_openenv"][row["backend"]]
        runs = ", ".join(f"{r:,.0f}" for r in row["repeats"])
        lines.append(
            f"| {row['backend']} | {row['steps_per_second']:,.0f} | {ratio:.2f}x | {runs} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse options, run, print the table (or JSON); return the result."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-envs", type=int, default=64, help="envs / concurrent sessions")
    p.add_argument("--servers", type=int, nargs="+", default=[1, 2], help="openenv-gym servers")
    p.add_argument("--duration", type=float, default=2.0, help="seconds per measurement")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--no-openenv-client-on-ours",
        dest="our_server_openenv_row",
        action="store_false",
        help="skip the GenericEnvClient -> openenv-gym server row",
    )
    p.add_argument(
        "--json",
        nargs="?",
        const="-",
        default=None,
        metavar="PATH",
        help="write the result as JSON to PATH (default: stdout, instead of the table)",
    )
    args = p.parse_args(argv)
    to_stdout = args.json == "-"

    def progress(text: str) -> None:
        print(text, file=sys.stderr if to_stdout else sys.stdout, flush=True)

    result = run(
        args.num_envs,
        args.servers,
        args.duration,
        args.repeats,
        progress,
        our_server_openenv_row=args.our_server_openenv_row,
    )
    if to_stdout:
        print(json.dumps(result, indent=2))
    else:
        print(table(result))
        if args.json:
            with open(args.json, "w") as out:
                json.dump(result, out, indent=2)
    return result


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == SERVE_FLAG:
        _serve_openenv(int(sys.argv[2]), MAX_SESSIONS)
    else:
        main()
