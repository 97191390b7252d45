"""Contract checks of what surrounds the episodes: render modes, ``state()``, vector semantics.

Each opens sessions of its own on the target; the vector checks diff a
:class:`~openenv_gym.client.vector_env.RemoteVectorEnv` against ``SyncVectorEnv`` of the
in-process env in every autoreset mode.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from openenv_gym.testing.validate.results import (
    CheckResult,
    failed,
    from_problems,
    passed,
    skipped,
)
from openenv_gym.testing.validate.rollout import SEED_BASE, difference, show
from openenv_gym.testing.validate.target import OpenedTarget

__all__ = ["VECTOR_ENVS", "check_render_modes", "check_state", "check_vector"]

VECTOR_ENVS = 3
VECTOR_STEPS = 64


def _frame_problem(mode: str, frame: Any) -> str | None:
    """Return how ``frame`` is not what ``render_mode=mode`` promises, or ``None``."""
    if mode == "rgb_array":
        ok = isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim == 3
        ok = ok and frame.shape[2] == 3
        return None if ok else f"expected an (H, W, 3) uint8 array, got {show(frame)}"
    if mode == "ansi":
        return None if isinstance(frame, str) else f"expected a str, got {show(frame)}"
    if mode == "depth_array":
        ok = isinstance(frame, np.ndarray) and frame.ndim == 2
        return None if ok else f"expected an (H, W) array, got {show(frame)}"
    if mode.endswith("_list"):
        return None if isinstance(frame, list) else f"expected a list, got {show(frame)}"
    return None


def _rendered(make: Any, mode: str) -> tuple[Any, str | None]:
    env = make(render_mode=mode)
    try:
        if env.render_mode != mode:
            return None, f"render_mode is {env.render_mode!r}, expected {mode!r}"
        env.reset(seed=SEED_BASE)
        return env.render(), None
    finally:
        env.close()


def check_render_modes(target: OpenedTarget, *, compare: bool = True) -> CheckResult:
    """Check that every declared render mode (but ``human``) renders what it promises.

    Args:
        target: the opened target.
        compare: also compare each frame with the in-process env's (its shape and dtype; an
            ``ansi`` text in full); off for a spec marked nondeterministic.

    """
    name = "contract.render_modes"
    if target.kind == "openenv":
        return skipped(name, "OpenEnv servers do not render")
    env = target.remote()
    modes = [m for m in env.metadata.get("render_modes", []) if m != "human"]
    env.close()
    if not modes:
        return passed(name, "no render modes to check (human needs a display)")
    problems = []
    for mode in modes:
        try:
            frame, problem = _rendered(target.remote, mode)
        except Exception as exc:
            problems.append(f"remote, render_mode={mode!r}: {type(exc).__name__}: {exc}"[:300])
            continue
        problem = problem or _frame_problem(mode, frame)
        if problem:
            problems.append(f"remote, render_mode={mode!r}: {problem}")
        elif compare and target.local is not None:
            local, _ = _rendered(target.local, mode)
            if isinstance(local, np.ndarray) and isinstance(frame, np.ndarray):
                if (local.shape, local.dtype) != (frame.shape, frame.dtype):
                    problems.append(
                        f"remote, render_mode={mode!r}: expected {show(local)}, "
                        f"got {show(frame)} (expected: in-process)"
                    )
            elif mode == "ansi" and local != frame:
                problems.append(f"remote, render_mode={mode!r}: expected {local!r}, got {frame!r}")
    return from_problems(name, problems, f"render modes {', '.join(modes)} as declared")


def check_state(target: OpenedTarget, steps: int = 3) -> CheckResult:
    """``state()`` is a dict with a fresh ``episode_id`` per episode and a true ``step_count``."""
    name = "contract.state"
    if target.kind == "openenv":
        return skipped(name, "OpenEnv's state is checked through its own protocol")
    env: Any = target.remote()
    problems: list[str] = []
    try:
        env.reset(seed=SEED_BASE)
        first = env.unwrapped.state()
        taken = 0
        for _ in range(steps):
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            taken += 1
            if terminated or truncated:
                break
        later = env.unwrapped.state()
        env.reset(seed=SEED_BASE + 1)
        fresh = env.unwrapped.state()
    except Exception as exc:
        return failed(name, f"remote: state() raised {type(exc).__name__}: {exc}"[:300])
    finally:
        env.close()
    for where, state, count in (("after reset", first, 0), (f"after {taken} steps", later, taken)):
        if not isinstance(state, dict):
            problems.append(f"{where}: expected a dict, got {show(state)}")
            continue
        if not isinstance(state.get("episode_id"), str) or not state["episode_id"]:
            problems.append(
                f"{where}: expected a str episode_id, got {show(state.get('episode_id'))}"
            )
        if state.get("step_count") != count:
            problems.append(
                f"{where}: expected step_count {count}, got {state.get('step_count')!r}"
            )
    if (
        isinstance(first, dict)
        and isinstance(fresh, dict)
        and (first.get("episode_id") == fresh.get("episode_id"))
    ):
        problems.append("a new reset kept episode_id (expected a new one)")
    return from_problems(name, problems, "episode_id and step_count well formed")


def _vector_trace(envs: Any, mode: AutoresetMode, steps: int) -> list[Any]:
    """Reset with a seed and step with seeded actions; return everything returned."""
    space = envs.action_space
    space.seed(SEED_BASE)
    trace: list[Any] = [envs.reset(seed=SEED_BASE)]
    for _ in range(steps):
        result = envs.step(space.sample())
        trace.append(result)
        done = np.logical_or(result[2], result[3])
        if mode is AutoresetMode.DISABLED and done.any():
            trace.append(envs.reset(options={"reset_mask": done}))
    return trace


def check_vector(target: OpenedTarget, mode: AutoresetMode) -> CheckResult:
    """Check that a remote vector env equals ``SyncVectorEnv`` of the in-process env in ``mode``."""
    name = f"contract.vector_{mode.name.lower()}"
    if target.kind == "openenv":
        return skipped(name, "OpenEnv servers hold one env per session")
    from openenv_gym.client.vector_env import RemoteVectorEnv

    try:
        remote = RemoteVectorEnv(
            target.env_id,
            VECTOR_ENVS,
            urls=[target.url],
            token=target.token,
            autoreset_mode=mode,
            call_timeout=30,
        )
    except Exception as exc:
        return failed(name, f"remote: cannot open {VECTOR_ENVS} envs: {type(exc).__name__}: {exc}")
    try:
        actual = _vector_trace(remote, mode, VECTOR_STEPS)
    except Exception as exc:
        return failed(name, f"remote: {type(exc).__name__}: {exc}"[:300])
    finally:
        remote.close()
    if target.local is None:
        return _vector_shapes(name, remote, actual)
    make = target.local
    local = SyncVectorEnv([make for _ in range(VECTOR_ENVS)], autoreset_mode=mode)
    try:
        expected = _vector_trace(local, mode, VECTOR_STEPS)
    except Exception as exc:
        return failed(name, f"in-process: {type(exc).__name__}: {exc}"[:300])
    finally:
        local.close()
    fields = ("obs", "rewards", "terminations", "truncations", "infos")
    for index, (a, b) in enumerate(zip(expected, actual, strict=False)):
        for field, x, y in zip(fields, a, b, strict=False):
            found = difference(x, y, field)
            if found:
                env = _env_index(x, y)
                where = f"call {index} (0 = reset)" + ("" if env is None else f", env {env}")
                return failed(name, f"{where}: {found} (expected: SyncVectorEnv)")
    if len(expected) != len(actual):
        return failed(name, f"expected {len(expected)} calls, got {len(actual)}")
    return passed(name, f"{VECTOR_ENVS} envs, {VECTOR_STEPS} steps equal to SyncVectorEnv")


def _env_index(expected: Any, actual: Any) -> int | None:
    """Return the first sub-env index at which two batched values differ, if it can be told."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in expected.keys() & actual.keys():
            found = _env_index(expected[key], actual[key])
            if found is not None:
                return found
        return None
    if isinstance(expected, tuple) and isinstance(actual, tuple):
        indices = [_env_index(a, b) for a, b in zip(expected, actual, strict=False)]
        return min((i for i in indices if i is not None), default=None)
    batched = isinstance(expected, np.ndarray) and isinstance(actual, np.ndarray)
    if not (batched and expected.ndim and actual.ndim and len(expected) == len(actual)):
        return None
    for index in range(len(expected)):
        if difference(expected[index], actual[index]) is not None:
            return index
    return None


def _vector_shapes(name: str, envs: Any, trace: list[Any]) -> CheckResult:
    problems = []
    for index, result in enumerate(trace[1:], 1):
        if len(result) != 5:
            continue
        obs, rewards, terminations, truncations, _ = result
        if not envs.observation_space.contains(obs):
            problems.append(f"step {index}: observations outside {envs.observation_space}")
        if getattr(rewards, "shape", None) != (VECTOR_ENVS,):
            problems.append(
                f"step {index}: expected rewards of shape ({VECTOR_ENVS},), got {show(rewards)}"
            )
        for what, flags in (("terminations", terminations), ("truncations", truncations)):
            if getattr(flags, "dtype", None) != np.bool_:
                problems.append(f"step {index}: expected bool {what}, got {show(flags)}")
    return from_problems(name, problems, "shapes and dtypes (no in-process env to diff)")


def vector_checks(target: OpenedTarget) -> list[CheckResult]:
    """Run the vector check in each autoreset mode."""
    return [check_vector(target, mode) for mode in AutoresetMode]
