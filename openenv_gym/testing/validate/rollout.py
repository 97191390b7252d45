"""Seeded rollouts recorded step by step, and a typed deep comparison of what they returned.

Every contract check looks at the same recorded trajectories: each episode reset with its own
seed and driven by a fixed list of actions drawn from a seeded copy of the action space, so
two envs (remote and in-process, or two sessions) that should agree are given exactly the same
inputs. Errors are recorded where they happen, not raised.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import gymnasium
import numpy as np

__all__ = ["Episode", "Step", "actions_for", "difference", "record", "show"]

SEED_BASE = 1234


@dataclasses.dataclass
class Step:
    """What one ``step`` returned, and how long it took (seconds)."""

    obs: Any
    reward: Any
    terminated: Any
    truncated: Any
    info: Any
    seconds: float = 0.0


@dataclasses.dataclass
class Episode:
    """One seeded episode: the reset, the steps, and the error that ended it early, if any."""

    seed: int | None
    obs: Any = None
    info: Any = None
    steps: list[Step] = dataclasses.field(default_factory=list)
    error: str | None = None
    reset_seconds: float = 0.0

    @property
    def done(self) -> bool:
        """True when the last step ended the episode."""
        return bool(self.steps) and bool(self.steps[-1].terminated or self.steps[-1].truncated)

    @property
    def total_reward(self) -> float:
        """The sum of the rewards (NaN if one is not a number)."""
        try:
            return float(sum(float(s.reward) for s in self.steps))
        except (TypeError, ValueError):
            return float("nan")


def actions_for(space: gymnasium.Space[Any], count: int, seed: int) -> list[Any]:
    """Draw ``count`` actions from a copy of ``space`` seeded with ``seed``."""
    space = copy.deepcopy(space)
    space.seed(seed)
    return [space.sample() for _ in range(count)]


def record(
    env: gymnasium.Env[Any, Any], seed: int | None, actions: list[Any], *, policy: Any = None
) -> Episode:
    """Reset ``env`` with ``seed`` and step it until done or out of actions.

    Args:
        env: the env to drive.
        seed: the reset seed.
        actions: the actions, in order (ignored where ``policy`` is given, which also bounds
            the episode at ``len(actions)`` steps).
        policy: a function ``(obs) -> action``, if the env is driven by a policy.

    Returns:
        The episode; an exception is recorded in ``error`` (``step N: Type: message``).

    """
    episode = Episode(seed)
    started = time.perf_counter()
    try:
        episode.obs, episode.info = env.reset(seed=seed)
    except Exception as exc:
        episode.error = f"reset: {_exc(exc)}"
        return episode
    episode.reset_seconds = time.perf_counter() - started
    obs = episode.obs
    for index, action in enumerate(actions):
        try:
            chosen = policy(obs) if policy is not None else action
            started = time.perf_counter()
            obs, reward, terminated, truncated, info = env.step(chosen)
        except Exception as exc:
            episode.error = f"step {index + 1}: {_exc(exc)}"
            return episode
        step = Step(obs, reward, terminated, truncated, info, time.perf_counter() - started)
        episode.steps.append(step)
        if terminated or truncated:
            break
    return episode


def _exc(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


def show(value: Any) -> str:
    """Return a short text for ``value`` with its type (and dtype for arrays)."""
    if isinstance(value, np.ndarray):
        text = np.array2string(value, threshold=8, edgeitems=2)
        return f"{text} ({value.dtype}, shape {value.shape})"
    text = repr(value)
    text = text if len(text) <= 80 else text[:77] + "..."
    kind = type(value)
    numpy = kind.__module__.startswith("numpy")  # np.bool_ prints as True, like bool
    return f"{text} ({'numpy.' if numpy else ''}{kind.__name__})"


def difference(expected: Any, actual: Any, path: str = "") -> str | None:
    """Return where ``actual`` differs from ``expected`` in value or type, or ``None``.

    Arrays must agree in dtype, shape and values (NaN equal to NaN); Python and numpy scalars
    in type and value; dicts in keys (and their order) and values; tuples and lists item by
    item.
    """
    where = path or "value"
    if isinstance(expected, np.ndarray) or isinstance(actual, np.ndarray):
        if not (isinstance(expected, np.ndarray) and isinstance(actual, np.ndarray)):
            return f"{where}: expected {show(expected)}, got {show(actual)}"
        if expected.dtype != actual.dtype or expected.shape != actual.shape:
            return f"{where}: expected {show(expected)}, got {show(actual)}"
        if expected.dtype == object:
            for index, (a, b) in enumerate(zip(expected.ravel(), actual.ravel(), strict=True)):
                found = difference(a, b, f"{where}[{index}]")
                if found:
                    return found
            return None
        same = np.array_equal(expected, actual, equal_nan=expected.dtype.kind in "fc")
        return None if same else f"{where}: expected {show(expected)}, got {show(actual)}"
    if type(expected) is not type(actual):
        return f"{where}: expected {show(expected)}, got {show(actual)}"
    if isinstance(expected, Mapping):
        if list(expected) != list(actual):
            return f"{where}: expected keys {list(expected)}, got {list(actual)}"
        for key in expected:
            found = difference(expected[key], actual[key], f"{where}[{key!r}]")
            if found:
                return found
        return None
    if isinstance(expected, list | tuple):
        if len(expected) != len(actual):
            return f"{where}: expected {len(expected)} items, got {len(actual)}"
        for index, (a, b) in enumerate(zip(expected, actual, strict=True)):
            found = difference(a, b, f"{where}[{index}]")
            if found:
                return found
        return None
    if hasattr(expected, "__dict__") and not isinstance(expected, type):  # e.g. GraphInstance
        return difference(vars(expected), vars(actual), where)
    try:
        same = bool(expected == actual) or (expected != expected and actual != actual)
    except Exception:
        same = repr(expected) == repr(actual)
    return None if same else f"{where}: expected {show(expected)}, got {show(actual)}"


def episode_difference(expected: Episode, actual: Episode) -> str | None:
    """Return the first place where two recorded episodes differ, or ``None``."""
    found = difference(expected.obs, actual.obs, "reset obs") or difference(
        expected.info, actual.info, "reset info"
    )
    if found:
        return found
    for index, (a, b) in enumerate(zip(expected.steps, actual.steps, strict=False)):
        for field in ("obs", "reward", "terminated", "truncated", "info"):
            found = difference(getattr(a, field), getattr(b, field), f"step {index + 1} {field}")
            if found:
                return found
    if len(expected.steps) != len(actual.steps):
        return f"episode length: expected {len(expected.steps)} steps, got {len(actual.steps)}"
    if expected.error != actual.error:
        return f"error: expected {expected.error}, got {actual.error}"
    return None
