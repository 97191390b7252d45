"""``openenv-gym bench --native``: native engines remote against the same engines in-process.

CartPole-v1 at 256/4096/16384 envs: ``RemoteVectorEnv(..., server_vectorization=
"vector_entry_point")`` on 1 and 2 local servers against gymnasium's own vector env
in-process, ``SyncVectorEnv`` and envpool; Atari Pong at 16/64 envs: remote over ale-py's
``AtariVectorEnv`` (``ale:pong``) and envpool (``envpool:Pong-v5``) against the same engine
in-process, with the bytes per env-step on the wire. Backends are interleaved within each
repeat (machine noise hits them alike) and every ratio divides two rates of the same run.
Writes ``native.json`` and ``native.md`` to the results folder.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import gymnasium
import numpy as np
from gymnasium.vector import VectorEnv

from openenv_gym.bench import throughput
from openenv_gym.bench.throughput import Backend, ThroughputResult
from openenv_gym.client.vector_env import RemoteVectorEnv
from openenv_gym.protocol import codec
from openenv_gym.providers.local import LocalProvider

__all__ = ["main", "pong_cpu", "step_bytes", "wire_bytes"]

CARTPOLE_NUM_ENVS = [256, 4096, 16384]
PONG_NUM_ENVS = [16, 64]
NATIVE: Final = "vector_entry_point"
IN_PROCESS = "native in-process"
SYNC = "SyncVectorEnv"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # 64 Pong envs' frames are 1.8 MB a step; room above


def _remote(urls: list[str], token: str | None, env_id: str) -> Callable[[str, int], Any]:
    def make(_: str, num_envs: int) -> VectorEnv[Any, Any, Any]:
        return RemoteVectorEnv(
            env_id, num_envs, urls=urls, token=token, server_vectorization=NATIVE
        )

    return make


def _envpool(task: str) -> Callable[[str, int], Any]:
    def make(_: str, num_envs: int) -> VectorEnv[Any, Any, Any]:
        from openenv_gym.server.engines.envpool import EnvpoolVectorEnv

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # envpool's float32 Box bounds
            return EnvpoolVectorEnv(task, num_envs)

    return make


def _atari(_: str, num_envs: int) -> VectorEnv[Any, Any, Any]:
    from ale_py.vector_env import AtariVectorEnv

    engine: VectorEnv[Any, Any, Any] = AtariVectorEnv("pong", num_envs)
    return engine


def _cartpole_backends(single: LocalProvider, pair: LocalProvider, engines: bool) -> list[Backend]:
    chosen = [
        Backend(
            IN_PROCESS, lambda env_id, n: gymnasium.make_vec(env_id, n, vectorization_mode=NATIVE)
        ),
        Backend("native remote (1 server)", _remote(single.urls, single.token, "CartPole-v1")),
        Backend("native remote (2 servers)", _remote(pair.urls, pair.token, "CartPole-v1")),
        Backend(SYNC, lambda env_id, n: gymnasium.make_vec(env_id, n, vectorization_mode="sync")),
    ]
    if engines:
        chosen.append(Backend("envpool (in-process)", _envpool("CartPole-v1")))
    return chosen


def _pong_backends(provider: LocalProvider) -> list[Backend]:
    urls, token = provider.urls, provider.token
    return [
        Backend("AtariVectorEnv (in-process)", _atari),
        Backend("ale:pong remote (1 server)", _remote(urls[:1], token, "ale:pong")),
        Backend("envpool Pong (in-process)", _envpool("Pong-v5")),
        Backend("envpool:Pong-v5 remote (1 server)", _remote(urls[:1], token, "envpool:Pong-v5")),
    ]


def step_bytes(make: Callable[[str, int], Any], num_envs: int) -> tuple[int, int]:
    """Return the sizes of one step's request and reply as the protocol sends them."""
    env = make("", num_envs)
    try:
        env.reset(seed=0)
        env.action_space.seed(0)
        actions = env.action_space.sample()
        reply = list(env.step(actions))
    finally:
        env.close()
    return len(codec.encode([4, 1, np.asarray(actions)])), len(codec.encode([0, 1, reply]))


def wire_bytes(make: Callable[[str, int], Any], num_envs: int) -> float:
    """Return the bytes per env-step of one step (request + reply) as the protocol sends them."""
    return sum(step_bytes(make, num_envs)) / num_envs


def _ratios(results: list[ThroughputResult]) -> dict[str, float]:
    rates = {(r.backend, r.num_envs): r.steps_per_second for r in results}
    pairs = [
        ("native remote (1 server)", IN_PROCESS),
        ("native remote (2 servers)", IN_PROCESS),
        ("native remote (1 server)", SYNC),
        ("native remote (1 server)", "envpool (in-process)"),
        ("ale:pong remote (1 server)", "AtariVectorEnv (in-process)"),
        ("envpool:Pong-v5 remote (1 server)", "envpool Pong (in-process)"),
    ]
    ratios = {}
    for ours, theirs in pairs:
        for (backend, num_envs), rate in rates.items():
            baseline = rates.get((theirs, num_envs))
            if backend == ours and baseline:
                ratios[f"{ours} / {theirs} @ {num_envs}"] = rate / baseline
    return ratios


def _table(title: str, rows: list[dict[str, Any]], sizes: Sequence[int]) -> list[str]:
    lines = [f"## {title} (env-steps/s, median of repeats)", ""]
    lines += ["| backend | " + " | ".join(f"{n} envs" for n in sizes) + " |"]
    lines += ["|---|" + "---:|" * len(sizes)]
    by_backend: dict[str, dict[int, float]] = {}
    for row in rows:
        by_backend.setdefault(row["backend"], {})[row["num_envs"]] = row["steps_per_second"]
    for backend, rates in by_backend.items():
        cells = [f"{rates[n]:,.0f}" if n in rates else "-" for n in sizes]
        lines.append(f"| {backend} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        "# openenv-gym bench --native",
        "",
        f"{report['date']}, {report['cores']} cores, Python {report['python']}; "
        f"command: `{report['command']}`",
        "",
    ]
    lines += _table("CartPole-v1", report["cartpole"], report["cartpole_num_envs"])
    if report["pong"]:
        lines += _table("Atari Pong (84x84x4 frames)", report["pong"], report["pong_num_envs"])
        lines += [f"- bytes per env-step on the wire: {report['pong_wire']}", ""]
    lines += ["## Ratios of the same run", ""]
    lines += [f"- {name}: **{value:.2f}x**" for name, value in report["ratios"].items()]
    cpu = report.get("pong_cpu")
    if cpu:
        lines += ["", f"## Pong at {cpu['num_envs']} envs: CPU per step by thread (ms)", ""]
        lines += [
            "| backend | wall | engine threads (busy) | engine thread waiting for a core "
            "| stepping thread (kernel) | server main thread (kernel) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, row in cpu["backends"].items():
            server = "-"
            waiting = "-" if row["engine_wait_ms"] is None else f"{row['engine_wait_ms']:.2f}"
            if row["server_main_ms"] is not None:
                server = f"{row['server_main_ms']:.2f} ({row['server_main_kernel_ms']:.2f})"
            lines.append(
                f"| {name} | {row['wall_ms']:.2f} | {row['engine_ms']:.2f} "
                f"({row['engine_threads']} at {row['engine_busy']:.0%}) | {waiting} "
                f"| {row['stepping_ms']:.2f} ({row['stepping_kernel_ms']:.2f}) | {server} |"
            )
        lines += [
            "",
            f"- raw loopback TCP round trip of one step ({cpu['request_bytes']:,} B out, "
            f"{cpu['reply_bytes']:,} B back): {cpu['tcp_round_trip_ms']:.2f} ms",
        ]
        gap = cpu.get("gap")
        if gap:
            lines += [
                f"- AtariVectorEnv in-process, its step alone (ms): back to back "
                f"{gap['back_to_back_ms']:.2f}; after a {gap['gap_ms']:.2f} ms gap (the CPU "
                f"ale:pong remote adds a step) sleeping {gap['after_sleeping_gap_ms']:.2f}, "
                f"busy {gap['after_busy_gap_ms']:.2f}",
                f"- best remote / in-process with that serial part, spent while the engine "
                f"sleeps: {cpu['bound']:.2f}x",
            ]
    profile = report.get("profile")
    if profile:
        lines += ["", f"## One step at {profile['num_envs']} envs, taken apart (µs)", ""]
        lines += [
            f"- {name}: {value:,.0f}" for name, value in profile.items() if name != "num_envs"
        ]
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="openenv-gym bench --native", description=__doc__)
    parser.add_argument("--num-envs", type=int, nargs="+", default=CARTPOLE_NUM_ENVS)
    parser.add_argument("--pong-num-envs", type=int, nargs="+", default=PONG_NUM_ENVS)
    parser.add_argument("--no-engines", action="store_true", help="skip envpool and Pong rows")
    parser.add_argument("--duration", type=float, default=1.5, help="seconds per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="repeats (median kept)")
    parser.add_argument("--out", default="benchmarks/results", help="results folder")
    parser.add_argument(
        "--profile", type=int, metavar="N", help="also take one step at N envs apart"
    )
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="also count each thread's CPU per Pong step, in-process and remote",
    )
    return parser


def pong_cpu(provider: LocalProvider, num_envs: int, duration: float) -> dict[str, Any]:
    """Each Pong backend's CPU per step by kind of thread, and the wire's floor under them.

    Returns:
        ``backends``: by backend name, ``bench/native_cpu.py``'s figures (the remote backends
        step on ``provider``'s first server, whose process is counted); ``request_bytes`` and
        ``reply_bytes`` of one step; ``tcp_round_trip_ms``: a raw loopback round trip of those
        sizes between two processes (``bench/native_profile.py``), what any remote step pays;
        ``gap``: ``native_cpu.gap_cost`` of ``AtariVectorEnv`` in-process with a gap as long as
        the CPU the remote ``ale:pong`` step adds (client + server main thread); ``bound``: the
        ratio to in-process a remote step could reach were that CPU spent while the engine
        sleeps, ``back_to_back / (after_sleeping_gap + gap)``.

    """
    from openenv_gym.bench.native_cpu import cpu_per_step, gap_cost
    from openenv_gym.bench.native_profile import tcp_round_trip

    backends = {}
    for backend in _pong_backends(provider):
        remote = "remote" in backend.name
        env = backend.make("pong", num_envs)
        try:
            measured = cpu_per_step(env, duration, server_pid=provider.pids[0] if remote else None)
        finally:
            env.close()
        backends[backend.name] = {**vars(measured), "engine_busy": measured.engine_busy}
    request, reply = step_bytes(_atari, num_envs)
    round_trip = tcp_round_trip(request, reply, count=200, repeats=3)
    ale = backends["ale:pong remote (1 server)"]
    serial = ale["stepping_ms"] + ale["server_main_ms"]
    steps = max(20, int(duration * 1e3 / ale["wall_ms"]))
    engine = _atari("pong", num_envs)
    try:
        gap = gap_cost(engine, serial / 1e3, steps=steps)
    finally:
        engine.close()
    return {
        "backends": backends,
        "request_bytes": request,
        "reply_bytes": reply,
        "tcp_round_trip_ms": round_trip * 1e3,
        "gap": vars(gap),
        "bound": gap.back_to_back_ms / (gap.after_sleeping_gap_ms + gap.gap_ms),
    }


def main(argv: Sequence[str]) -> int:
    """Run the native benchmark; return an exit status."""
    args = _parser().parse_args(argv)
    specs = ["CartPole-v1"] if args.no_engines else ["CartPole-v1", "ale:pong", "envpool:Pong-v5"]
    most = str(2 * max([*args.num_envs, *args.pong_num_envs]))  # above the 4096 default
    server_args = ["--max-message-bytes", str(MAX_MESSAGE_BYTES)]
    server_args += ["--max-envs-per-session", most, "--max-envs", most]
    # As a user would start them: LocalProvider gives one server on this machine a core to
    # poll on (--busy-wait), and two servers on two cores none.
    with (
        LocalProvider(specs, num_servers=1, extra_args=server_args) as provider,
        LocalProvider(["CartPole-v1"], num_servers=2, extra_args=server_args) as pair,
    ):
        cartpole = throughput.run_throughput(
            "CartPole-v1",
            args.num_envs,
            _cartpole_backends(provider, pair, not args.no_engines),
            duration=args.duration,
            repeats=args.repeats,
            progress=lambda label: print(label, file=sys.stderr, flush=True),
        )
        pong: list[ThroughputResult] = []
        pong_wire: dict[str, float] = {}
        cpu: dict[str, Any] | None = None
        if not args.no_engines:
            backends = _pong_backends(provider)
            pong = throughput.run_throughput(
                "pong",
                args.pong_num_envs,
                backends,
                duration=args.duration,
                repeats=args.repeats,
                progress=lambda label: print(label, file=sys.stderr, flush=True),
            )
            size = args.pong_num_envs[0]
            pong_wire = {f"{b.name} @ {size}": wire_bytes(b.make, size) for b in backends[::2]}
            if args.cpu:
                cpu = {"num_envs": size, **pong_cpu(provider, size, max(2.0, args.duration))}
    results = cartpole + pong
    profile = None
    if args.profile:
        from openenv_gym.bench.native_profile import profile_step

        profile = {"num_envs": args.profile, **profile_step(args.profile)}
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cores": throughput.cores(),
        "python": platform.python_version(),
        "command": "openenv-gym bench --native " + " ".join(argv),
        "cartpole_num_envs": args.num_envs,
        "pong_num_envs": args.pong_num_envs,
        "cartpole": [vars(r) for r in cartpole],
        "pong": [vars(r) for r in pong],
        "pong_wire": {k: round(v, 1) for k, v in pong_wire.items()},
        "ratios": _ratios(results),
        "profile": profile,
        "pong_cpu": cpu,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "native.json").write_text(json.dumps(report, indent=2))
    markdown = _markdown(report)
    (out / "native.md").write_text(markdown)
    print(markdown)
    return 0
