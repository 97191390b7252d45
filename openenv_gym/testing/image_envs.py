"""An env with Atari-sized frames for wire tests: 4 stacked 84x84 uint8 frames, mostly flat.

Like Atari screens, its frames compress well (a uniform background and a few moving blocks),
so tests of per-message compression see realistic ratios without an emulator. Deterministic
under a seed.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

__all__ = ["FramesEnv"]

SIZE = 84


class FramesEnv(gymnasium.Env[np.ndarray, np.int64]):
    """A ball that moves by the action (0..3: up, down, left, right) over a 4-frame stack.

    Reward 1.0 when the ball reaches the right edge (the episode terminates), else 0.0.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self) -> None:
        self.observation_space = spaces.Box(0, 255, (4, SIZE, SIZE), np.uint8)
        self.action_space = spaces.Discrete(4)
        self._frames = np.zeros((4, SIZE, SIZE), np.uint8)
        self._ball = np.zeros(2, np.int64)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._ball = self.np_random.integers(0, SIZE - 4, size=2)
        self._frames[:] = 0
        self._draw()
        return self._frames.copy(), {}

    def step(self, action: np.int64) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        moves = ((-2, 0), (2, 0), (0, -2), (0, 2))
        self._ball = np.clip(self._ball + moves[int(action)], 0, SIZE - 4)
        self._draw()
        done = bool(self._ball[1] >= SIZE - 4)
        return self._frames.copy(), float(done), done, False, {}

    def _draw(self) -> None:
        self._frames[:-1] = self._frames[1:]
        frame = self._frames[-1]
        frame[:] = 87  # the background
        frame[:, 2:4] = 144  # a paddle
        row, col = self._ball
        frame[row : row + 4, col : col + 4] = 236
