"""Envs whose steps take time: heavy-tailed step times, and steps that hang.

``HeavyTailEnv`` waits a seeded, log-uniform time (1-200 ms by default) in every step, as an
agentic env waits on a shell command or a model; its trajectory (observations, rewards, episode
ends, infos) comes from ``np_random`` alone, so a run is diffed against the same env in-process
under the same seed and actions, whatever the timing. ``HangEnv`` hangs in a child process
(``sleep``) on action 1: the deadline tests check it is stopped and leaves nothing behind.
Host them with ``openenv-gym serve openenv_gym.testing.slow_envs:HeavyTailEnv``.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

__all__ = ["HEAVY_TAIL_ID", "HangEnv", "HeavyTailEnv", "log_uniform_delays"]


def log_uniform_delays(
    rng: np.random.Generator, count: int, low: float = 0.001, high: float = 0.2
) -> np.ndarray[Any, Any]:
    """Draw ``count`` step times (seconds), log-uniform on ``[low, high]``: a heavy tail.

    The mean of 1-200 ms is ``(high - low) / ln(high / low)`` = 37.6 ms; the slowest of 64
    draws is near 200 ms, so a batch that waits for all its envs waits ~5x the mean.
    """
    return np.exp(rng.uniform(np.log(low), np.log(high), count))


class HeavyTailEnv(gymnasium.Env[Any, Any]):
    """A random walk whose every step first waits a heavy-tailed time.

    Args:
        min_delay, max_delay: the step-time range, in seconds (log-uniform between them).
        max_length: the longest episode (lengths are drawn in ``[5, max_length]``).
        delay_seed: seeds the step times (not the trajectory); default: each reset's seed.

    Attributes:
        waited: seconds this env has waited in steps so far (the env's own time).

    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        min_delay: float = 0.001,
        max_delay: float = 0.2,
        max_length: int = 50,
        delay_seed: int | None = None,
    ) -> None:
        self.min_delay, self.max_delay = min_delay, max_delay
        self.max_length = max_length
        self.observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = spaces.Discrete(3)
        self._delays = np.random.default_rng(delay_seed)
        self._delay_seeded = delay_seed is not None
        self._position = 0.0
        self._t = 0
        self._length = 5
        self.waited = 0.0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray[Any, Any], dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None and not self._delay_seeded:
            self._delays = np.random.default_rng(seed + 104729)
        self._t = 0
        self._length = int(self.np_random.integers(5, self.max_length + 1))
        self._position = float(self.np_random.normal())
        return self._obs(), {"length": self._length}

    def _obs(self) -> np.ndarray[Any, Any]:
        return np.array([self._position, self._t], dtype=np.float32)

    def step(self, action: Any) -> tuple[np.ndarray[Any, Any], float, bool, bool, dict[str, Any]]:
        assert self.action_space.contains(action), f"invalid action {action!r}"
        delay = float(log_uniform_delays(self._delays, 1, self.min_delay, self.max_delay)[0])
        time.sleep(delay)  # waiting on the outside world, not computing: threads overlap it
        self.waited += delay
        self._t += 1
        self._position += (int(action) - 1) * 0.1 + float(self.np_random.normal(0, 0.05))
        reward = float(-abs(self._position))
        done = self._t >= self._length
        terminated = done and abs(self._position) < 0.5
        info: dict[str, Any] = {"delay": delay}  # the env's own time, for the benchmark's ideal
        if self._t % 3 == 0:
            info["third"] = self._t // 3
        return self._obs(), reward, terminated, done and not terminated, info


HEAVY_TAIL_ID = "SlowBench/HeavyTail-v0"
"""``HeavyTailEnv`` as a gymnasium id (registered on import), for code that takes ids only
(``gymnasium.make("openenv_gym.testing.slow_envs:SlowBench/HeavyTail-v0")``)."""

if HEAVY_TAIL_ID not in gymnasium.registry:
    gymnasium.register(HEAVY_TAIL_ID, entry_point=f"{__name__}:HeavyTailEnv")


class HangEnv(gymnasium.Env[Any, Any]):
    """Steps at once on action 0; on action 1 runs ``sleep hang`` (a child process) and waits.

    Args:
        hang: seconds action 1's command sleeps.

    """

    metadata = {"render_modes": []}

    def __init__(self, hang: float = 60.0) -> None:
        self.hang = hang
        self.observation_space = spaces.Box(0, 1_000_000, (1,), np.int64)
        self.action_space = spaces.Discrete(2)
        self._t = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray[Any, Any], dict[str, Any]]:
        super().reset(seed=seed)
        self._t = 0
        return np.array([self._t], dtype=np.int64), {}

    def step(self, action: Any) -> tuple[np.ndarray[Any, Any], float, bool, bool, dict[str, Any]]:
        if int(action) == 1:
            subprocess.run(["sleep", f"{self.hang:g}"], check=False)
        self._t += 1
        return np.array([self._t], dtype=np.int64), 1.0, False, False, {}
