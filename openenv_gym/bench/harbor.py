"""``openenv-gym bench --harbor``: Harbor tasks as envs, measured.

* start-to-ready of a task container: ``reset`` of :class:`HarborEnv` (image cached), in-process
  and through a local server, and the container's own create-to-first-command time;
* steps/s of a terminal episode: a stream of short commands (``true``), in-process and remote;
* reward parity: the oracle and a do-nothing agent on each sample task, scored by our env, and
  (where the runner image exists or ``--harbor-runner`` builds it) by Harbor's own runner
  (``harbor run -a oracle|nop`` on :class:`OpenEnvGymEnvironment`).

Results go to ``OUT/harbor.json`` and ``OUT/harbor.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "measure"]


def _reset_times(env: Any, task: str, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.monotonic()
        env.reset(options={"task": task})
        times.append(time.monotonic() - started)
    return times


def _steps_per_second(env: Any, task: str, steps: int) -> float:
    env.reset(options={"task": task})
    started = time.monotonic()
    for _ in range(steps):
        env.step("true")
    return steps / (time.monotonic() - started)


def _scores(env: Any, tasks: Sequence[str]) -> dict[str, dict[str, float]]:
    scores = {}
    for task in tasks:
        env.reset(options={"task": task})
        nothing = float(env.step("submit")[1])
        env.reset(options={"task": task})
        env.step("oracle")
        scores[task] = {"oracle": float(env.step("submit")[1]), "nop": nothing}
    return scores


def _hosting(path: Path, tasks_dir: Path) -> str:
    path.write_text(
        f'[[env]]\nspec = "harbor:{tasks_dir}"\nkwargs = {{ oracle = true, sandbox_api = true, '
        "max_steps = 100000 }\n"
    )
    return str(path)


def _harbor_rewards(url: str, env_id: str, tasks_dir: Path, build: bool) -> dict[str, Any]:
    from openenv_gym.bench import harbor_runner

    try:
        image = (
            harbor_runner.build_runner_image(progress=lambda line: None)
            if build
            else harbor_runner.RUNNER_IMAGE
        )
        started = time.monotonic()
        rewards = {
            agent: harbor_runner.run_harbor(
                tasks_dir, url=url, env_id=env_id, agent=agent, image=image
            )
            for agent in ("oracle", "nop")
        }
    except Exception as exc:  # reported in the results, the rest of the run stands
        return {"skipped": f"{type(exc).__name__}: {str(exc)[:400]}"}
    return {"rewards": rewards, "seconds": time.monotonic() - started}


def measure(
    *, repeats: int = 5, steps: int = 100, harbor_runner: bool | None = None
) -> dict[str, Any]:
    """Measure the sample tasks (module docstring); return the report.

    Args:
        repeats: resets timed per path.
        steps: commands per steps/s measurement.
        harbor_runner: build the Harbor runner image if missing (``True``), use it only if it
            exists (``None``), or skip Harbor's side (``False``).

    """
    from openenv_gym import RemoteEnv
    from openenv_gym.interop.harbor.env import HarborEnv
    from openenv_gym.interop.harbor.task import TaskDir
    from openenv_gym.providers.local import LocalProvider
    from openenv_gym.testing.harbor_tasks import TASKS_DIR

    names = sorted(TaskDir(TASKS_DIR))
    env_id = "harbor:harbor_tasks"
    report: dict[str, Any] = {"tasks": names}
    with HarborEnv(TASKS_DIR, oracle=True, max_steps=steps + 1) as env:
        env.reset(options={"task": names[0]})  # builds (or finds) the image
        local = _reset_times(env, names[0], repeats)
        report["container_start_seconds"] = env.reset(options={"task": names[0]})[1][
            "start_seconds"
        ]
        report["steps_per_second"] = {"in-process": _steps_per_second(env, names[0], steps)}
        report["ours"] = _scores(env, names)
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalProvider(
            [], extra_args=["--hosting", _hosting(Path(tmp) / "hosting.toml", TASKS_DIR)]
        ) as provider,
    ):
        url = provider.urls[0]
        with RemoteEnv(env_id, url=url, call_timeout=600) as remote:
            remote_times = _reset_times(remote, names[0], repeats)
            report["steps_per_second"]["remote"] = _steps_per_second(remote, names[0], steps)
        report["start_to_ready_seconds"] = {
            "in-process median": statistics.median(local),
            "remote median": statistics.median(remote_times),
        }
        if harbor_runner is False:
            report["harbor"] = {"skipped": "not requested"}
        else:
            report["harbor"] = _harbor_rewards(url, env_id, TASKS_DIR, bool(harbor_runner))
    harbor = report["harbor"].get("rewards")
    if harbor is not None:
        report["parity"] = all(
            isinstance(harbor[agent].get(task), dict)
            and harbor[agent][task].get("reward") == report["ours"][task][agent]
            for task in names
            for agent in ("oracle", "nop")
        )
    return report


def _reward(trial: Any) -> str:
    return str(trial.get("reward")) if isinstance(trial, dict) else f"error: {str(trial)[:40]}"


def _markdown(report: dict[str, Any]) -> str:
    start = report["start_to_ready_seconds"]
    rate = report["steps_per_second"]
    lines = [
        "| Harbor sample tasks | value |",
        "|---|---:|",
        f"| reset (start to ready), in-process, median | {start['in-process median']:.2f} s |",
        f"| reset through a local server, median | {start['remote median']:.2f} s |",
        f"| container create to first command | {report['container_start_seconds']:.2f} s |",
        f"| terminal steps/s in-process (`true`) | {rate['in-process']:.1f} |",
        f"| terminal steps/s remote (`true`) | {rate['remote']:.1f} |",
    ]
    for task, score in report["ours"].items():
        theirs = report["harbor"].get("rewards")
        harbor = (
            " / ".join(_reward(theirs[agent].get(task)) for agent in ("oracle", "nop"))
            if theirs
            else report["harbor"].get("skipped", "")[:60]
        )
        lines.append(f"| {task}: oracle / nop reward, ours | {score['oracle']} / {score['nop']} |")
        lines.append(f"| {task}: oracle / nop reward, Harbor's runner | {harbor} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the Harbor measurements; print and write them; return an exit status."""
    parser = argparse.ArgumentParser(prog="openenv-gym bench --harbor")
    parser.add_argument("--harbor", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument(
        "--harbor-runner",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="build Harbor's runner image (trixie + harbor) if missing / never run Harbor",
    )
    parser.add_argument("--out", default="benchmarks/results")
    args, _ = parser.parse_known_args(argv)
    report = measure(repeats=args.repeats, steps=args.steps, harbor_runner=args.harbor_runner)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report["command"] = "openenv-gym bench --harbor " + " ".join(
        a for a in (argv or []) if a != "--harbor"
    )
    (out / "harbor.json").write_text(json.dumps(report, indent=2))
    markdown = _markdown(report)
    (out / "harbor.md").write_text(markdown)
    print(markdown)
    return 0 if report.get("parity", True) else 1
