"""The quality level: what an env teaches, and what it costs, measured on the remote env.

Episodes run under a random policy (seeded) and, where the env declares one, under its
reference policy: the ``reference_policy`` hook (see :func:`reference_policy`). Figures:
reward range and variance, episode lengths, the reference-minus-random gap, reset and step
latency percentiles, throughput, and the server's memory growth over the episodes. Concerns
(a constant reward, no gap, memory that keeps growing) are warnings, never failures.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from openenv_gym.testing.validate.results import CheckResult, passed, skipped, warned
from openenv_gym.testing.validate.rollout import SEED_BASE, Episode, actions_for, record
from openenv_gym.testing.validate.target import OpenedTarget

__all__ = ["QUALITY_STEPS", "quality_checks", "reference_policy"]

QUALITY_STEPS = 1000
"""The most steps one quality episode runs."""
MEMORY_GROWTH_MIB = 64.0
"""Server memory growth over the episodes above which a warning is given."""


def reference_policy(env: Any) -> Callable[[Any], Any] | None:
    """Return the policy an env declares for itself, or ``None``.

    The hook: an env class (the unwrapped in-process env) may define
    ``reference_policy(self, observation) -> action``, a policy that does better than random
    (a task's oracle, a hand-written controller). It is called in-process with the remote
    env's observations, so it must depend on the observation only.
    """
    hook = getattr(getattr(env, "unwrapped", env), "reference_policy", None)
    return hook if callable(hook) else None


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p99_ms": None}
    array = np.asarray(values) * 1000
    return {"p50_ms": float(np.percentile(array, 50)), "p99_ms": float(np.percentile(array, 99))}


def _rss_mib(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _run(
    target: OpenedTarget,
    episodes: int,
    policy: Callable[[Any], Any] | None,
    advance: Callable[[], None],
) -> tuple[list[Episode], float]:
    env = target.remote()
    recorded = []
    started = time.perf_counter()
    try:
        for k in range(episodes):
            actions = actions_for(env.action_space, QUALITY_STEPS, SEED_BASE + k)
            recorded.append(record(env, SEED_BASE + k, actions, policy=policy))
            advance()
    finally:
        env.close()
    return recorded, time.perf_counter() - started


def _summary(episodes: list[Episode]) -> dict[str, Any]:
    returns = [e.total_reward for e in episodes]
    lengths = [len(e.steps) for e in episodes]
    rewards = [float(s.reward) for e in episodes for s in e.steps]
    return {
        "episodes": len(episodes),
        "returns": returns,
        "lengths": lengths,
        "return_mean": statistics.fmean(returns) if returns else None,
        "return_std": statistics.pstdev(returns) if returns else None,
        "reward_min": min(rewards) if rewards else None,
        "reward_max": max(rewards) if rewards else None,
        "reward_variance": statistics.pvariance(rewards) if len(rewards) > 1 else 0.0,
        "length_mean": statistics.fmean(lengths) if lengths else None,
        "length_min": min(lengths) if lengths else None,
        "length_max": max(lengths) if lengths else None,
        "errors": [e.error for e in episodes if e.error],
    }


def quality_checks(
    target: OpenedTarget, *, episodes: int, advance: Callable[[], None]
) -> tuple[list[CheckResult], dict[str, Any]]:
    """Measure the target under the random and the reference policy.

    Args:
        target: the opened target.
        episodes: episodes per policy.
        advance: called after each episode (the progress bar).

    Returns:
        The quality results (passes and warnings) and every figure, for the report and plots.

    """
    rss_before = _rss_mib(target.pid)
    random_episodes, seconds = _run(target, episodes, None, advance)
    rss_after = _rss_mib(target.pid)
    steps = [s.seconds for e in random_episodes for s in e.steps]
    resets = [e.reset_seconds for e in random_episodes if not e.error]
    figures: dict[str, Any] = {"random": _summary(random_episodes)}
    figures["step_latency"] = _percentiles(steps)
    figures["reset_latency"] = _percentiles(resets)
    figures["step_seconds"] = steps
    busy = sum(steps) + sum(resets)  # time in reset and step calls: drawing actions excluded
    figures["steps_per_second"] = len(steps) / busy if busy > 0 else None
    figures["seconds"] = seconds
    growth = None if rss_before is None or rss_after is None else rss_after - rss_before
    figures["server_rss_mib"] = {"before": rss_before, "after": rss_after, "growth": growth}
    random_summary = figures["random"]
    results = [_reward_result(random_summary), _length_result(random_summary)]
    results.append(
        passed(
            "quality.latency",
            f"step p50 {_ms(figures['step_latency']['p50_ms'])}, p99 "
            f"{_ms(figures['step_latency']['p99_ms'])}; reset p50 "
            f"{_ms(figures['reset_latency']['p50_ms'])}",
            step=figures["step_latency"],
            reset=figures["reset_latency"],
        )
    )
    results.append(
        passed(
            "quality.throughput",
            f"{figures['steps_per_second'] or 0:.0f} steps/s, one env, random policy",
            steps_per_second=figures["steps_per_second"],
        )
    )
    results.append(_memory_result(growth, episodes))
    local = target.local() if target.local is not None else None
    try:
        policy = None if local is None else reference_policy(local)
        if policy is None:
            results.append(skipped("quality.reference_gap", "the env declares no reference_policy"))
        else:
            reference, _ = _run(target, episodes, policy, advance)
            figures["reference"] = _summary(reference)
            results.append(_gap_result(random_summary, figures["reference"]))
    finally:
        if local is not None:
            local.close()
    return results, figures


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f} ms"


def _reward_result(summary: dict[str, Any]) -> CheckResult:
    name = "quality.reward"
    text = (
        (
            f"reward in [{summary['reward_min']}, {summary['reward_max']}], variance "
            f"{summary['reward_variance']:.4g}; return {summary['return_mean']:.4g} "
            f"± {summary['return_std']:.4g}"
        )
        if summary["reward_min"] is not None
        else "no steps"
    )
    if summary["reward_variance"] == 0 and summary["return_std"] == 0:
        return warned(
            name,
            text + ": every random episode got the same rewards (no signal "
            "for a random policy to learn from)",
        )
    return passed(name, text)


def _length_result(summary: dict[str, Any]) -> CheckResult:
    text = (
        f"episode length {summary['length_mean']:.1f} mean, {summary['length_min']}.."
        f"{summary['length_max']}"
    )
    if summary["errors"]:
        return warned("quality.episode_length", text + f"; errors: {summary['errors'][0]}")
    return passed("quality.episode_length", text)


def _memory_result(growth: float | None, episodes: int) -> CheckResult:
    name = "quality.memory_growth"
    if growth is None:
        return skipped(name, "the server's memory is not readable from here")
    text = f"server RSS grew {growth:.1f} MiB over {episodes} episodes"
    return warned(name, text) if growth > MEMORY_GROWTH_MIB else passed(name, text)


def _gap_result(random: dict[str, Any], reference: dict[str, Any]) -> CheckResult:
    gap = reference["return_mean"] - random["return_mean"]
    text = (
        f"reference {reference['return_mean']:.4g} - random {random['return_mean']:.4g} = {gap:.4g}"
    )
    if gap <= 0:
        return warned("quality.reference_gap", text + ": no better than random", gap=gap)
    return passed("quality.reference_gap", text, gap=gap)
