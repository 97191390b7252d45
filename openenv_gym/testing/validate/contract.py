"""The contract level: Gymnasium's rules, checked on the remote env and the in-process one.

Both sides (``remote``: a session on the target; ``in-process``: the same spec built here, when
it resolves) are driven through the same seeded episodes (:mod:`.rollout`). Each rule is then
checked on each side, so a broken env is caught even where the server or client would hide
it (a cast, a coerced flag), and the remote side is diffed against the in-process one step by
step. Vector semantics are in :mod:`.vector`, render modes and ``state()`` in :mod:`.surface`.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from openenv_gym.testing.validate.results import (
    CheckResult,
    failed,
    from_problems,
    passed,
    skipped,
    warned,
)
from openenv_gym.testing.validate.rollout import (
    SEED_BASE,
    Episode,
    actions_for,
    episode_difference,
    record,
    show,
)

__all__ = [
    "Side",
    "check_env_warnings",
    "contract_actions",
    "episode_checks",
    "max_steps_for",
    "record_side",
]

MAX_STEPS = 1000
"""Steps per episode when the env declares no time limit."""


@dataclasses.dataclass
class Side:
    """One env (remote or in-process) and the episodes recorded on it.

    Attributes:
        name: ``remote`` or ``in-process``.
        observation_space: the env's observation space.
        action_space: the env's action space.
        max_episode_steps: the time limit the env's spec declares.
        nondeterministic: the spec declares the env nondeterministic.
        episodes: one episode per seed ``SEED_BASE + k``, all with the same actions.
        again: the first episode's seed and actions once more, on the same env.
        fresh: the first episode's seed and actions on a second instance (a new session).

    """

    name: str
    observation_space: gymnasium.Space[Any]
    action_space: gymnasium.Space[Any]
    max_episode_steps: int | None
    nondeterministic: bool
    episodes: list[Episode]
    again: Episode | None
    fresh: Episode | None = None


def max_steps_for(limit: int | None) -> int:
    """Return how many steps an episode may run: past a declared limit, to see it kept."""
    return MAX_STEPS if limit is None else min(2 * limit + 10, 2 * MAX_STEPS)


def record_side(
    name: str,
    env: gymnasium.Env[Any, Any],
    episodes: int,
    actions: list[Any],
    *,
    make: Callable[[], gymnasium.Env[Any, Any]] | None = None,
) -> Side:
    """Record ``episodes`` seeded episodes (and a repeat of the first) on ``env``.

    Args:
        name: the side's name.
        env: the env to drive.
        episodes: how many seeds.
        actions: the actions of every episode.
        make: builds a second instance, on which the first episode is repeated too.

    """
    spec = env.spec
    limit = None if spec is None else spec.max_episode_steps
    recorded = [record(env, SEED_BASE + k, actions) for k in range(episodes)]
    again = record(env, SEED_BASE, actions)
    fresh = None
    if make is not None:
        other = make()
        try:
            fresh = record(other, SEED_BASE, actions)
        finally:
            other.close()
    return Side(
        name,
        env.observation_space,
        env.action_space,
        limit,
        bool(spec is not None and spec.nondeterministic),
        recorded,
        again,
        fresh,
    )


def _each_step(side: Side) -> list[tuple[str, Any, Any]]:
    """Return ``(where, obs, info)`` for every reset and step recorded on ``side``."""
    found = []
    for e, episode in enumerate(side.episodes):
        if episode.error and episode.error.startswith("reset"):
            continue
        found.append(
            (f"{side.name}, episode {e} (seed {episode.seed}) reset", episode.obs, episode.info)
        )
        for t, step in enumerate(episode.steps):
            found.append(
                (
                    f"{side.name}, episode {e} (seed {episode.seed}) step {t + 1}",
                    step.obs,
                    step.info,
                )
            )
    return found


def _steps(side: Side) -> list[tuple[str, Any]]:
    return [
        (f"{side.name}, episode {e} (seed {episode.seed}) step {t + 1}", step)
        for e, episode in enumerate(side.episodes)
        for t, step in enumerate(episode.steps)
    ]


# ---------------------------------------------------------------- observation types


def _scalar_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _array_of(space: Any, value: Any) -> str | None:
    if not isinstance(value, np.ndarray):
        return f"expected an ndarray of {space.dtype}, got {show(value)}"
    if value.dtype != space.dtype or value.shape != space.shape:
        return f"expected dtype {space.dtype} shape {space.shape}, got {show(value)}"
    return None


def _typed_as(space: gymnasium.Space[Any], value: Any) -> str | None:
    """Return how ``value`` fails to have the exact Python/numpy type ``space`` samples have."""
    if isinstance(space, spaces.Box | spaces.MultiDiscrete | spaces.MultiBinary):
        return _array_of(space, value)
    if isinstance(space, spaces.Discrete):
        return None if _scalar_int(value) else f"expected an integer, got {show(value)}"
    if isinstance(space, spaces.Text):
        return None if isinstance(value, str) else f"expected a str, got {show(value)}"
    if isinstance(space, spaces.Dict):
        if not isinstance(value, dict):
            return f"expected a dict, got {show(value)}"
        for key, sub in space.spaces.items():
            found = _typed_as(sub, value.get(key)) if key in value else f"missing key {key!r}"
            if found:
                return f"[{key!r}] {found}"
        return None
    if isinstance(space, spaces.Tuple):
        if not isinstance(value, tuple) or len(value) != len(space.spaces):
            return f"expected a tuple of {len(space.spaces)}, got {show(value)}"
        for index, (sub, item) in enumerate(zip(space.spaces, value, strict=True)):
            found = _typed_as(sub, item)
            if found:
                return f"[{index}] {found}"
    return None


def _is_reward(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def _is_flag(value: Any) -> bool:
    return type(value) in (bool, np.bool_)


# ---------------------------------------------------------------- the checks


def check_errors(side: Side) -> CheckResult:
    """Check that the env does not raise under valid actions of its own action space."""
    problems = [
        f"{side.name}, episode {e} (seed {episode.seed}): {episode.error}"
        for e, episode in enumerate(side.episodes)
        if episode.error
    ]
    return from_problems("contract.no_errors", problems, "reset and step never raised")


def check_obs_in_space(side: Side) -> CheckResult:
    """Every observation (resets included) is in the observation space."""
    space = side.observation_space
    problems = [
        f"{where}: expected an observation in {space}, got {show(obs)}"
        for where, obs, _ in _each_step(side)
        if not space.contains(obs)
    ]
    return from_problems("contract.obs_in_space", problems, f"every observation in {space}")


def check_obs_dtype(side: Side) -> CheckResult:
    """Observations have the space's exact dtype and Python type (an ndarray of Box's dtype)."""
    problems = []
    for where, obs, _ in _each_step(side):
        found = _typed_as(side.observation_space, obs)
        if found:
            problems.append(f"{where}: {found}")
    return from_problems("contract.obs_dtype", problems, "observations of the space's dtypes")


def check_reward_scalar(side: Side) -> CheckResult:
    """Rewards are Python or numpy numbers (not arrays, bools or None)."""
    problems = [
        f"{where}: expected a float or int reward, got {show(step.reward)}"
        for where, step in _steps(side)
        if not _is_reward(step.reward)
    ]
    return from_problems("contract.reward_scalar", problems, "rewards are numbers")


def check_flags_bool(side: Side) -> CheckResult:
    """``terminated`` and ``truncated`` are ``bool`` or ``np.bool_``."""
    problems = [
        f"{where}: expected {name} to be a bool, got {show(value)}"
        for where, step in _steps(side)
        for name, value in (("terminated", step.terminated), ("truncated", step.truncated))
        if not _is_flag(value)
    ]
    return from_problems("contract.flags_bool", problems, "terminated and truncated are bools")


def check_info_dict(side: Side) -> CheckResult:
    """Every info (resets included) is a dict."""
    problems = [
        f"{where}: expected info to be a dict, got {show(info)}"
        for where, _, info in _each_step(side)
        if not isinstance(info, dict)
    ]
    return from_problems("contract.info_dict", problems, "every info is a dict")


def _fixed_truncation(side: Side) -> int | None:
    """Return the step at which every episode was truncated, if all were (two or more)."""
    ends = {len(e.steps) for e in side.episodes if e.done and e.steps[-1].truncated and not e.error}
    truncated = sum(bool(e.done and e.steps[-1].truncated) for e in side.episodes)
    if truncated == len(side.episodes) >= 2 and len(ends) == 1:
        return ends.pop()
    return None


def check_time_limit(side: Side) -> CheckResult:
    """Check that the declared ``max_episode_steps`` is the limit the env keeps.

    No episode may run longer; one that reaches the limit must end there; and an env that
    truncates every episode at one fixed step must declare that step (a different declared
    limit fails, an undeclared one warns).
    """
    name = "contract.time_limit"
    limit = side.max_episode_steps
    fixed = _fixed_truncation(side)
    if limit is None:
        if fixed is not None:
            return warned(
                name,
                f"{side.name}: every episode truncated at step {fixed}, but the spec "
                "declares no max_episode_steps",
            )
        return passed(name, f"{side.name}: no time limit declared")
    problems = []
    for e, episode in enumerate(side.episodes):
        length = len(episode.steps)
        where = f"{side.name}, episode {e} (seed {episode.seed})"
        if length > limit:
            problems.append(
                f"{where}: declares max_episode_steps={limit} but ran {length} steps "
                f"{'before ending' if episode.done else 'without ending'}"
            )
        elif length == limit and not episode.done:
            problems.append(f"{where}: expected the episode to end at step {limit}, it did not")
    if not problems and fixed is not None and fixed != limit:
        problems.append(
            f"{side.name}: declares max_episode_steps={limit} but truncates every episode at "
            f"step {fixed}"
        )
    return from_problems(name, problems, f"{side.name}: max_episode_steps={limit} kept")


def _differs(a: Episode, b: Episode) -> bool:
    return episode_difference(a, b) is not None


def check_determinism(side: Side, reference: Side | None = None) -> CheckResult:
    """Check that a seed gives one trajectory, and different seeds different ones.

    Args:
        side: the env's recorded episodes.
        reference: the in-process side, when ``side`` is the remote one: if different seeds
            give the same trajectory in-process too, the env is deterministic by design.

    """
    name = "contract.seed_determinism"
    first, again = side.episodes[0], side.again
    assert again is not None
    found = episode_difference(first, again)
    what = "twice with the same actions"
    if not found and side.fresh is not None:
        found = episode_difference(first, side.fresh)
        what = "on a second instance with the same actions"
    if found:
        text = f"{side.name}: seed {first.seed} {what}: {found}"
        return (
            warned(name, text + " (the spec says nondeterministic)")
            if (side.nondeterministic)
            else failed(name, text)
        )
    if len(side.episodes) < 2:
        return passed(name, f"{side.name}: same seed, same trajectory")
    if any(_differs(first, other) for other in side.episodes[1:]):
        return passed(name, f"{side.name}: same seed same trajectory, other seeds differ")
    seeds = ", ".join(str(e.seed) for e in side.episodes)
    if reference is not None and not any(
        _differs(reference.episodes[0], other) for other in reference.episodes[1:]
    ):
        return passed(
            name, f"{side.name}: deterministic by design (seeds {seeds} alike in-process too)"
        )
    if side.name == "in-process":  # the env itself: a seed that changes nothing is its design
        return passed(name, f"in-process: seeds {seeds} alike under these actions")
    text = f"{side.name}: seeds {seeds} gave identical trajectories (expected them to differ)"
    return warned(name, text) if reference is None else failed(name, text)


def check_matches(remote: Side, local: Side) -> CheckResult:
    """Check that the remote env returns what the in-process one does, typed, every step."""
    problems = []
    for e, (a, b) in enumerate(
        zip([*local.episodes, local.again], [*remote.episodes, remote.again], strict=True)
    ):
        assert a is not None and b is not None
        found = episode_difference(a, b)
        if found:
            problems.append(f"episode {e} (seed {a.seed}): {found} (expected: in-process)")
    steps = sum(len(e.steps) for e in remote.episodes)
    return from_problems(
        "contract.matches_in_process", problems, f"{steps} steps identical", steps=steps
    )


def check_spaces_match(remote: Side, local: Side) -> CheckResult:
    """Check that the remote env declares the in-process env's spaces and time limit."""
    problems = []
    for what in ("observation_space", "action_space", "max_episode_steps"):
        expected, actual = getattr(local, what), getattr(remote, what)
        if expected != actual:
            problems.append(f"{what}: expected {expected}, got {actual}")
    return from_problems("contract.spaces_match", problems, "spaces and time limit agree")


def episode_checks(remote: Side, local: Side | None) -> list[CheckResult]:
    """Run every per-episode rule on each side, then the diffs; the worst result per rule."""
    rules: list[Callable[[Side], CheckResult]] = [
        check_errors,
        check_obs_in_space,
        check_obs_dtype,
        check_reward_scalar,
        check_flags_bool,
        check_info_dict,
        check_time_limit,
    ]
    results = []
    for rule in rules:
        results.append(_worst([rule(side) for side in (local, remote) if side is not None]))
    determinism = [check_determinism(local)] if local is not None else []
    results.append(_worst([*determinism, check_determinism(remote, local)]))
    if local is None:
        results.append(skipped("contract.spaces_match", "the spec does not resolve in-process"))
        results.append(skipped("contract.matches_in_process", "no in-process env to diff"))
    else:
        results.append(check_spaces_match(remote, local))
        results.append(check_matches(remote, local))
    return results


_RANK = {"fail": 3, "warn": 2, "pass": 1, "skip": 0}


def _worst(results: list[CheckResult]) -> CheckResult:
    """Merge one rule's results for both sides: the worst status, the details joined."""
    worst = max(results, key=lambda r: _RANK[r.status])
    same = [r for r in results if r.status == worst.status]
    detail = "; ".join(dict.fromkeys(r.detail for r in same if r.detail))
    return dataclasses.replace(worst, detail=detail)


def check_env_warnings(
    remote: Callable[[], gymnasium.Env[Any, Any]],
    local: Callable[[], gymnasium.Env[Any, Any]] | None,
) -> CheckResult:
    """Gymnasium's ``check_env`` on the remote env warns no more than on the in-process one."""
    from gymnasium.utils.env_checker import check_env

    def run(make: Callable[[], gymnasium.Env[Any, Any]]) -> tuple[set[str], str | None]:
        env = make()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    check_env(env.unwrapped, skip_render_check=True)
                    error = None
                except Exception as exc:
                    error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            return {str(w.message).splitlines()[0] for w in caught}, error
        finally:
            env.close()

    name = "contract.check_env"
    remote_warnings, remote_error = run(remote)
    if local is None:
        if remote_error:
            return failed(name, f"remote: check_env raised {remote_error}")
        shown = "; ".join(sorted(remote_warnings))
        return warned(name, f"remote: {shown}") if remote_warnings else passed(name, "no warnings")
    local_warnings, local_error = run(local)
    problems = []
    if local_error:
        problems.append(f"in-process: check_env raised {local_error}")
    if remote_error and remote_error != local_error:
        problems.append(f"remote: check_env raised {remote_error} (in-process: {local_error})")
    extra = sorted(remote_warnings - local_warnings)
    problems += [f"remote: a warning the in-process env does not give: {w}" for w in extra]
    return from_problems(name, problems, f"{len(local_warnings)} warning(s), as in-process")


def contract_actions(space: gymnasium.Space[Any], limit: int | None) -> list[Any]:
    """Return the actions every contract episode is driven with."""
    return actions_for(space, max_steps_for(limit), SEED_BASE)
