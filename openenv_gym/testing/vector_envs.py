"""A small native vector env for differential tests of native server vectorization.

``CountingSameStep-v0`` (registered on import, with a ``vector_entry_point``) declares the
SAME_STEP autoreset mode, returns vector infos (``count``, ``final_obs``, ``final_info``) and
supports partial resets through ``options["reset_mask"]``: what CartPole's native vector env
does not, so a server hosting ``openenv_gym.testing.vector_envs:CountingSameStep-v0`` covers it.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

__all__ = [
    "COUNTING_SAME_STEP",
    "CountingEnv",
    "CountingSameStepVectorEnv",
    "counting_vector_env",
]

COUNTING_SAME_STEP = "CountingSameStep-v0"


class CountingEnv(gymnasium.Env[Any, Any]):
    """The single env: counts up from a seeded start; ends after ``3 + start % 3`` steps."""

    observation_space = spaces.Box(0, 1000, shape=(1,), dtype=np.int64)
    action_space = spaces.Discrete(2)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset to a seeded start."""
        super().reset(seed=seed)
        self._count = int(self.np_random.integers(0, 10))
        self._left = 3 + self._count % 3
        return np.array([self._count]), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Count up by one plus the action."""
        self._count += 1 + int(action)
        self._left -= 1
        return np.array([self._count]), float(action), self._left <= 0, False, {}


class CountingSameStepVectorEnv(VectorEnv[Any, Any, Any]):
    """``num_envs`` counters stepped as whole arrays, autoreset in the same step.

    Args:
        num_envs: how many counters.
        render_mode: unused (no rendering).

    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int = 1, render_mode: str | None = None) -> None:
        self.num_envs = num_envs
        self.render_mode = render_mode
        self.single_observation_space = CountingEnv.observation_space
        self.single_action_space = CountingEnv.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._count = np.zeros(num_envs, dtype=np.int64)
        self._left = np.zeros(num_envs, dtype=np.int64)

    def _start(self, mask: np.ndarray[Any, Any]) -> None:
        self._count[mask] = self.np_random.integers(0, 10, size=int(mask.sum()))
        self._left[mask] = 3 + self._count[mask] % 3

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset every counter, or those of ``options["reset_mask"]``."""
        super().reset(seed=seed)
        mask = (options or {}).get("reset_mask")
        self._start(np.ones(self.num_envs, dtype=bool) if mask is None else mask)
        return self._count[:, None].copy(), {}

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """Count up; a counter that ends is restarted in the same step (``final_obs``)."""
        actions = np.asarray(actions)
        self._count += 1 + actions
        self._left -= 1
        terminated = self._left <= 0
        truncated = np.zeros(self.num_envs, dtype=bool)
        infos: dict[str, Any] = {"count": self._count.copy(), "_count": np.ones_like(terminated)}
        if terminated.any():
            final_obs = np.full(self.num_envs, None, dtype=object)
            for index in np.flatnonzero(terminated):  # test engine: clarity over speed
                final_obs[index] = np.array([self._count[index]])
            infos.update(final_obs=final_obs, _final_obs=terminated.copy())
            self._start(terminated)
        return self._count[:, None].copy(), actions.astype(np.float64), terminated, truncated, infos


def counting_vector_env(
    num_envs: int, max_episode_steps: int | None = None, **kwargs: Any
) -> CountingSameStepVectorEnv:
    """Build the counting engine: a factory ``(num_envs, **kwargs) -> VectorEnv``.

    What an operator names with
    ``--vector-entry-point ID=openenv_gym.testing.vector_envs:counting_vector_env``.
    ``make_vec`` passes the id's ``max_episode_steps``; counters end within 5 steps, so it is
    never reached and not applied.
    """
    return CountingSameStepVectorEnv(num_envs, **kwargs)


if COUNTING_SAME_STEP not in gymnasium.registry:
    gymnasium.register(
        COUNTING_SAME_STEP,
        entry_point=f"{__name__}:CountingEnv",
        vector_entry_point=f"{__name__}:CountingSameStepVectorEnv",
    )
