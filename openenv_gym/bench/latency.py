"""Single-env step latency: ``RemoteEnv.step`` against a bare WebSocket echo round trip.

Both go over loopback to a server in another process, with the same client library
(``websockets.sync``) and the same server stack (``websockets.asyncio``), measured in the same
run, so the ratio shows what the protocol and the env add to the transport floor.

    python -m openenv_gym.bench.latency [--env CartPole-v1] [--steps 5000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import time
from typing import Any

import numpy as np
from websockets.asyncio.server import ServerConnection, serve
from websockets.sync.client import connect

from openenv_gym import RemoteEnv


async def _echo_main(port_queue: Any) -> None:
    async def echo(connection: ServerConnection) -> None:
        async for message in connection:
            await connection.send(message)

    async with serve(echo, "127.0.0.1", 0, compression=None) as server:
        port_queue.put(server.sockets[0].getsockname()[1])
        await asyncio.Future()


def _echo_server(port_queue: Any) -> None:
    asyncio.run(_echo_main(port_queue))


def echo_round_trips(payload: bytes, count: int) -> list[float]:
    """Round-trip times (s) of ``payload`` to an echo server in another process."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_echo_server, args=(queue,), daemon=True)
    process.start()
    try:
        port = queue.get(timeout=30)
        with connect(f"ws://127.0.0.1:{port}", compression=None, proxy=None) as ws:
            for _ in range(200):  # warm-up
                ws.send(payload)
                ws.recv()
            times = []
            for _ in range(count):
                started = time.perf_counter()
                ws.send(payload)
                ws.recv()
                times.append(time.perf_counter() - started)
        return times
    finally:
        process.terminate()
        process.join()


def remote_step_times(env_id: str, count: int) -> list[float]:
    """Time (s) each ``RemoteEnv.step`` on an embedded local server, resetting when done."""
    with RemoteEnv(env_id) as env:
        env.reset(seed=0)
        action = env.action_space.sample()
        for _ in range(200):
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()
        times = []
        for _ in range(count):
            started = time.perf_counter()
            _, _, terminated, truncated, _ = env.step(action)
            times.append(time.perf_counter() - started)
            if terminated or truncated:
                env.reset()
        return times


def _percentiles(times: list[float]) -> dict[str, float]:
    micros = np.asarray(times) * 1e6
    return {"p50_us": float(np.percentile(micros, 50)), "p99_us": float(np.percentile(micros, 99))}


def run(env_id: str, steps: int, repeats: int) -> dict[str, Any]:
    """Measure both, ``repeats`` times interleaved; report medians over repeats."""
    # An echo payload the size of a CartPole step request, to keep the comparison fair.
    payload = os.urandom(48)
    echo, remote = [], []
    for _ in range(repeats):
        echo.append(_percentiles(echo_round_trips(payload, steps)))
        remote.append(_percentiles(remote_step_times(env_id, steps)))
    result: dict[str, Any] = {
        "env_id": env_id,
        "steps": steps,
        "repeats": repeats,
        "cores": os.cpu_count(),
        "echo_p50_us": statistics.median(r["p50_us"] for r in echo),
        "echo_p99_us": statistics.median(r["p99_us"] for r in echo),
        "remote_step_p50_us": statistics.median(r["p50_us"] for r in remote),
        "remote_step_p99_us": statistics.median(r["p99_us"] for r in remote),
    }
    result["ratio_p50"] = result["remote_step_p50_us"] / result["echo_p50_us"]
    return result


def main() -> None:
    """Run from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args()
    result = run(args.env, args.steps, args.repeats)
    print(
        f"{args.env}: RemoteEnv.step p50 {result['remote_step_p50_us']:.0f} us "
        f"(p99 {result['remote_step_p99_us']:.0f}), websocket echo p50 "
        f"{result['echo_p50_us']:.0f} us (p99 {result['echo_p99_us']:.0f}); "
        f"ratio {result['ratio_p50']:.2f}x on {result['cores']} cores"
    )
    if args.json:
        with open(args.json, "w") as file:
            json.dump(result, file, indent=2)


if __name__ == "__main__":
    main()
