"""``openenv-gym bench --ray``: servers placed by Ray against local-process servers, one run.

The same ``RemoteVectorEnv`` steps ``N`` servers (1, 2, 4 by default) started two ways on this
machine: as local processes (``LocalProvider``) and as Ray actors in a placement group on a local
Ray (``RayProvider``). Both sets run while Ray is up, and rows are interleaved within each
repeat (``throughput.run_throughput``), so the ratio ``ray / local`` at each ``N`` is the
overhead of Ray placement itself, not of the machine's load. Writes ``ray.json`` and ``ray.md``
to the results folder.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from openenv_gym.bench import throughput
from openenv_gym.providers.local import LocalProvider

__all__ = ["main", "run"]

LOCAL = "local processes"
RAY = "ray actors"


def _row_name(kind: str, count: int) -> str:
    return f"RemoteVectorEnv ({count} server{'s' * (count > 1)}, {kind})"


def run(
    env_id: str,
    num_envs: Sequence[int],
    servers: Sequence[int],
    *,
    duration: float,
    repeats: int,
    num_cpus: float,
) -> dict[str, Any]:
    """Measure both kinds of servers at every count and ``num_envs``; return the report.

    Raises:
        ImportError: Ray is not installed (extra ``ray``).
        ServerStartError: a server did not come up.

    """
    import ray

    from openenv_gym.providers.ray import RayProvider

    most = max(servers)
    owns_ray = not ray.is_initialized()
    if owns_ray:  # a new local Ray; logical CPUs: room for every server on a small machine
        cpus = max(1, math.ceil(most * num_cpus))
        for attempt in (1, 2):  # Ray gives its raylet 30 s to register: a loaded machine
            try:
                ray.init(
                    address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False
                )
                break
            except Exception:
                ray.shutdown()
                if attempt == 2:
                    raise
    local = ray_servers = None
    try:
        local = LocalProvider([env_id], num_servers=most, token="bench-local-token")
        ray_servers = RayProvider([env_id], num_servers=most, num_cpus=num_cpus)
        backends = []
        for count in servers:
            for kind, servers_of in ((LOCAL, local), (RAY, ray_servers)):
                make = throughput._make_remote(servers_of.urls[:count], servers_of.token)
                backends.append(throughput.Backend(_row_name(kind, count), make))
        results = throughput.run_throughput(
            env_id, num_envs, backends, duration=duration, repeats=repeats
        )
    finally:
        for started in (ray_servers, local):
            if started is not None:
                started.close()
        if owns_ray:
            ray.shutdown()
    samples = {(r.backend, r.num_envs): r.repeats for r in results}
    ratios = {}
    for count in servers:
        for n in num_envs:
            # Paired by repeat: each ray row ran right after its local row, so the machine's
            # drift (other load) cancels in each pair; the median pair is the figure.
            ray_rates = samples[(_row_name(RAY, count), n)]
            local_rates = samples[(_row_name(LOCAL, count), n)]
            label = f"ray / local @ {count} server{'s' * (count > 1)}, {n} envs"
            ratios[label] = statistics.median(
                a / b for a, b in zip(ray_rates, local_rates, strict=True)
            )
    return {
        "env_id": env_id,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cores": throughput.cores(),
        "python": platform.python_version(),
        "ray": ray.__version__,
        "num_envs": list(num_envs),
        "servers": list(servers),
        "throughput": [vars(r) for r in results],
        "ratios": ratios,
    }


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# openenv-gym bench --ray: {report['env_id']}",
        "",
        f"{report['date']}, {report['cores']} cores, Python {report['python']}, Ray "
        f"{report['ray']}; command: `{report['command']}`",
        "",
        "| servers | " + " | ".join(f"{n} envs" for n in report["num_envs"]) + " |",
        "|---|" + "---:|" * len(report["num_envs"]),
    ]
    by_backend: dict[str, dict[int, float]] = {}
    for row in report["throughput"]:
        by_backend.setdefault(row["backend"], {})[row["num_envs"]] = row["steps_per_second"]
    for backend, rates in by_backend.items():
        cells = [f"{rates[n]:,.0f}" if n in rates else "-" for n in report["num_envs"]]
        lines.append(f"| {backend} | " + " | ".join(cells) + " |")
    lines += ["", "Ray-placed against local servers, same run (median of per-repeat ratios):", ""]
    lines += [f"- {name}: **{value:.3f}x**" for name, value in report["ratios"].items()]
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="openenv-gym bench --ray", description=__doc__)
    parser.add_argument("--env", default="CartPole-v1", help="gymnasium env id")
    parser.add_argument("--num-envs", type=int, nargs="+", default=[256], help="num_envs values")
    parser.add_argument("--servers", type=int, nargs="+", default=[1, 2, 4], help="server counts")
    parser.add_argument("--num-cpus", type=float, default=0.5, help="CPUs each ray server reserves")
    parser.add_argument("--duration", type=float, help="seconds per measurement")
    parser.add_argument("--repeats", type=int, help="repeats per measurement (median kept)")
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--out", default="benchmarks/results", help="results folder")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the Ray scaling benchmark; print its table; return an exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    report = run(
        args.env,
        args.num_envs,
        args.servers,
        duration=args.duration or (0.5 if args.quick else 2.0),
        repeats=args.repeats or (1 if args.quick else 5),
        num_cpus=args.num_cpus,
    )
    report["command"] = "openenv-gym bench --ray " + " ".join(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ray.json").write_text(json.dumps(report, indent=2))
    markdown = _markdown(report)
    (out / "ray.md").write_text(markdown)
    print(markdown)
    print(f"results in {out}/ (ray.json, ray.md)")
    return 0
