"""``openenv-gym bench``: throughput, latency and wire size, side by side, in one run.

Prints a table and writes ``results.json``, ``results.md`` and (with matplotlib) ``throughput.png``
to the results folder. Ratios are taken against baselines measured in the same run.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from openenv_gym.bench import latency, openenv_peer, throughput, wire

__all__ = ["main"]

FULL_NUM_ENVS = [1, 16, 64, 256, 1024]
QUICK_NUM_ENVS = [16, 256]
FULL_OPENENV_SESSIONS = [1, 16, 64]
QUICK_OPENENV_SESSIONS = [16]


def _progress(total: int) -> Any:
    """Return ``(advance, finish)``: a tqdm bar when tqdm is installed, else stderr lines."""
    try:
        from tqdm import tqdm
    except ImportError:
        count = [0]

        def report(label: str) -> None:
            count[0] += 1
            print(f"[{count[0]}/{total}] {label}", file=sys.stderr, flush=True)

        return report, lambda: None
    bar = tqdm(total=total, unit="run", file=sys.stderr)

    def advance(label: str) -> None:
        bar.set_description(label[:60])
        bar.update()

    return advance, bar.close


def _ratios(results: list[throughput.ThroughputResult]) -> dict[str, float]:
    rates = {(r.backend, r.num_envs): r.steps_per_second for r in results}
    ratios = {}
    for (backend, num_envs), rate in rates.items():
        baseline = rates.get(("SyncVectorEnv", num_envs))
        if backend.startswith("RemoteVectorEnv") and baseline:
            ratios[f"{backend} / SyncVectorEnv @ {num_envs}"] = rate / baseline
    ours = [r.steps_per_second for r in results if r.backend.startswith("RemoteVectorEnv")]
    theirs = [r.steps_per_second for r in results if r.backend == openenv_peer.BACKEND_NAME]
    if ours and theirs:
        ratios["best RemoteVectorEnv / best OpenEnv (any N sessions)"] = max(ours) / max(theirs)
    return ratios


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# openenv-gym bench: {report['env_id']}",
        "",
        f"{report['date']}, {report['cores']} cores, Python {report['python']}; "
        f"command: `{report['command']}`",
        "",
        "## Throughput (env-steps/s, median of repeats)",
        "",
        "| backend | " + " | ".join(f"{n} envs" for n in report["num_envs"]) + " |",
        "|---|" + "---:|" * len(report["num_envs"]),
    ]
    by_backend: dict[str, dict[int, float]] = {}
    for row in report["throughput"]:
        by_backend.setdefault(row["backend"], {})[row["num_envs"]] = row["steps_per_second"]
    for backend, rates in by_backend.items():
        cells = [f"{rates[n]:,.0f}" if n in rates else "-" for n in report["num_envs"]]
        lines.append(f"| {backend} | " + " | ".join(cells) + " |")
    lines += ["", "## Ratios against baselines of the same run", ""]
    lines += [f"- {name}: **{value:.2f}x**" for name, value in report["ratios"].items()]
    peer = report.get("openenv") or {}
    if peer.get("skipped"):
        lines += ["", f"OpenEnv rows skipped: {peer['skipped']}"]
    if str(report.get("docker", "")).startswith("skipped"):
        lines += ["", f"Docker rows {report['docker']}"]
    cold = report.get("start_to_ready") or {}
    if cold:
        lines += ["", "## Start to ready (server start to completed handshake, median of 3)", ""]
        lines += [f"- {kind}: {value['median_s']:.2f} s" for kind, value in cold.items()]
    lat = report.get("latency")
    if lat:
        lines += [
            "",
            "## Single-env latency",
            "",
            f"- `RemoteEnv.step` p50 {lat['remote_step_p50_us']:.0f} µs, "
            f"p99 {lat['remote_step_p99_us']:.0f} µs",
            f"- bare websockets echo round trip p50 {lat['echo_p50_us']:.0f} µs, "
            f"p99 {lat['echo_p99_us']:.0f} µs",
        ]
        if peer.get("latency_sync"):
            theirs = peer["latency_sync"]
            lines.append(
                f"- OpenEnv client step ({peer['version']}) p50 {theirs['p50_us']:.0f} µs, "
                f"p99 {theirs['p99_us']:.0f} µs"
            )
    size = report.get("wire")
    if size:
        lines += [
            "",
            "## Wire size and codec",
            "",
            f"- step reply at {size['num_envs']} envs: {size['reply_bytes']} bytes for "
            f"{size['payload_bytes']} bytes of payload (obs + reward + 2 flags): "
            f"**{size['overhead_ratio']:.3f}x**",
            f"- codec: encode {size['encode_us']:.1f} µs, decode {size['decode_us']:.1f} µs "
            "per reply",
            f"- bytes per env-step at {size['num_envs']} envs: {size['bytes_per_env_step']:.1f}",
        ]
        if peer.get("wire"):
            lines.append(
                f"- OpenEnv bytes per env-step (request + reply on the wire, one session): "
                f"{peer['wire']['bytes_per_step']:.1f}"
            )
    return "\n".join(lines) + "\n"


def _plot(report: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    by_backend: dict[str, list[tuple[int, float]]] = {}
    for row in report["throughput"]:
        by_backend.setdefault(row["backend"], []).append((row["num_envs"], row["steps_per_second"]))
    for backend, points in by_backend.items():
        points.sort()
        ax.plot(*zip(*points, strict=True), marker="o", label=backend)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("num_envs")
    ax.set_ylabel("env-steps / s")
    ax.set_title(f"{report['env_id']} throughput ({report['cores']} cores)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _docker_status(image: str) -> tuple[bool, str]:
    """Whether Docker rows can run: an engine answers and ``image`` exists, or why not."""
    try:
        import docker

        client = docker.from_env()
        client.ping()
        client.images.get(image)
    except ImportError:
        return False, "the Docker SDK is not installed (pip install 'openenv-gym[docker]')"
    except Exception as exc:
        return False, f"no engine or no image {image!r} ({type(exc).__name__}: {exc})"
    return True, "used"


def _openenv(
    args: argparse.Namespace, duration: float, repeats: int, latency_steps: int, advance: Any
) -> dict[str, Any]:
    """OpenEnv's own server and client on the same env, or why its rows are skipped."""
    if "openenv" not in args.backends:
        return {"skipped": "not requested (--backends)"}
    ok, why = openenv_peer.available()
    if not ok:
        return {"skipped": f"{why} (pip install 'openenv-gym[openenv]')"}
    sessions = QUICK_OPENENV_SESSIONS if args.quick else FULL_OPENENV_SESSIONS
    return openenv_peer.run(
        args.env,
        sessions,
        duration=duration,
        repeats=repeats,
        latency_steps=latency_steps,
        progress=advance,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="openenv-gym bench", description=__doc__)
    parser.add_argument("--env", default="CartPole-v1", help="gymnasium env id")
    parser.add_argument("--num-envs", type=int, nargs="+", help="num_envs values")
    parser.add_argument("--servers", type=int, nargs="+", default=[1, 2], help="server counts")
    parser.add_argument(
        "--backends",
        nargs="+",
        default=["sync", "async", "remote", "docker", "openenv"],
        choices=["sync", "async", "remote", "docker", "openenv"],
    )
    parser.add_argument(
        "--docker-image", default="openenv-gym:latest", help="server image for docker rows"
    )
    parser.add_argument("--duration", type=float, help="seconds per measurement")
    parser.add_argument("--repeats", type=int, help="repeats per measurement (median kept)")
    parser.add_argument("--latency-steps", type=int, help="steps for the latency measurement")
    parser.add_argument("--quick", action="store_true", help="a short run for CI (< 1 min)")
    parser.add_argument(
        "--ray", action="store_true", help="instead: Ray-placed against local servers (1, 2, 4)"
    )
    parser.add_argument("--out", default="benchmarks/results", help="results folder")
    parser.add_argument(
        "--compression",
        action="store_true",
        help="only the compression run: Atari-sized frames with compression off, zstd, lz4",
    )
    parser.add_argument(
        "--harbor", action="store_true", help="Harbor tasks instead (openenv_gym.bench.harbor)"
    )
    return parser


def _compression(args: argparse.Namespace, out: Path) -> int:
    """Run ``--compression`` alone; write ``compression.json`` and ``compression.md``."""
    from openenv_gym.bench import compression

    num_envs = args.num_envs or [16, 64]
    advance, finish = _progress(len(num_envs) * len(compression.ENGINES))
    try:
        report = compression.run(
            num_envs,
            duration=args.duration or (0.5 if args.quick else 2.0),
            repeats=args.repeats or (1 if args.quick else 3),
            progress=advance,
        )
    finally:
        finish()
    report["command"] = "openenv-gym bench " + " ".join(sys.argv[1:])
    (out / "compression.json").write_text(json.dumps(report, indent=2))
    table = compression.markdown(report)
    (out / "compression.md").write_text(table)
    print(table)
    return 0


SUITES = {
    "--harbor": ("openenv_gym.bench.harbor", True),  # Harbor tasks: start-to-ready, parity
    "--slow": ("openenv_gym.bench.slow", False),  # slow uneven envs: RemoteEnvPool
    "--ray": ("openenv_gym.bench.ray_scaling", False),  # Ray-placed against local servers
    "--native": ("openenv_gym.bench.native", False),  # native engines: CartPole, Pong
}
"""Flags that run another suite instead: flag -> (module with ``main(argv)``, keep the flag)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suite; return an exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    for flag, (module, keep_flag) in SUITES.items():
        if flag in argv:  # a suite of its own, with its own flags and report
            suite = importlib.import_module(module)
            return int(suite.main(argv if keep_flag else [a for a in argv if a != flag]))
    args = _parser().parse_args(argv)
    num_envs = args.num_envs or (QUICK_NUM_ENVS if args.quick else FULL_NUM_ENVS)
    duration = args.duration or (0.5 if args.quick else 1.0)
    repeats = args.repeats or (1 if args.quick else 2)
    latency_steps = args.latency_steps or (1000 if args.quick else 5000)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.compression:
        return _compression(args, out)

    docker_ok, docker_why = (
        _docker_status(args.docker_image)
        if "docker" in args.backends
        else (
            False,
            "not requested (--backends)",
        )
    )
    with throughput.backends(
        args.env,
        args.servers,
        args.backends,
        docker_image=args.docker_image if docker_ok else None,
    ) as chosen:
        runs = (
            sum(1 for n in num_envs for b in chosen if b.max_envs is None or n <= b.max_envs)
            * repeats
            + 3
            + (len(QUICK_OPENENV_SESSIONS if args.quick else FULL_OPENENV_SESSIONS) * repeats + 3)
            * ("openenv" in args.backends)
        )
        advance, finish = _progress(runs)
        try:
            results = throughput.run_throughput(
                args.env, num_envs, chosen, duration=duration, repeats=repeats, progress=advance
            )
            peer = _openenv(args, duration, repeats, latency_steps, advance)
            results += peer.get("throughput", [])
            lat = latency.run(args.env, latency_steps, repeats=1 if args.quick else 3)
            advance("latency")
            size = wire.measure(args.env, num_envs=256)
            advance("wire size")
            cold = {"local process": throughput.start_to_ready(args.env, repeats=3)}
            if docker_ok:
                cold["docker container"] = throughput.start_to_ready(
                    args.env, repeats=3, docker_image=args.docker_image
                )
            advance("start-to-ready")
        finally:
            finish()
    report = {
        "env_id": args.env,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cores": throughput.cores(),
        "python": platform.python_version(),
        "command": "openenv-gym bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "num_envs": num_envs,
        "throughput": [vars(r) for r in results],
        "ratios": _ratios(results),
        "latency": lat,
        "wire": size,
        "openenv": {k: v for k, v in peer.items() if k != "throughput"},
        "start_to_ready": cold,
        "docker": "used" if docker_ok else f"skipped: {docker_why}",
    }
    report["ratios"]["RemoteEnv.step p50 / websockets echo p50"] = lat["ratio_p50"]
    report["ratios"]["wire bytes / raw payload @ 256 envs"] = size["overhead_ratio"]
    (out / "results.json").write_text(json.dumps(report, indent=2))
    markdown = _markdown(report)
    (out / "results.md").write_text(markdown)
    plotted = _plot(report, out / "throughput.png")
    print(markdown)
    print(
        f"results in {os.fspath(out)}/ (results.json, results.md"
        f"{', throughput.png' if plotted else '; pip install matplotlib for the plot'})"
    )
    return 0
