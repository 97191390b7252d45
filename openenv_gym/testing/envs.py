"""Small deterministic envs that exercise what CartPole does not: composite spaces and infos.

Each is seeded only through ``reset(seed=...)``, terminates or truncates at varying times, and
puts ints, floats, bools, numpy scalars, arrays, strings and nested dicts in its infos, so a
remote run can be diffed against an in-process run value by value and type by type.
Host them with ``openenv-gym serve openenv_gym.testing.envs:DictTupleEnv`` (entry points).
"""

from __future__ import annotations

import time
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from openenv_gym.tools import tool

__all__ = ["CounterEnv", "DictTupleEnv", "MultiDiscreteEnv", "SlowEnv", "TextEnv"]


class _EpisodeEnv(gymnasium.Env[Any, Any]):
    """Shared episode bookkeeping: a random episode length drawn at reset."""

    metadata = {"render_modes": ["ansi"]}

    def __init__(self, render_mode: str | None = None, max_length: int = 12) -> None:
        self.render_mode = render_mode
        self.max_length = max_length
        self._t = 0
        self._length = 1

    def _start(self, seed: int | None) -> None:
        super().reset(seed=seed)
        self._t = 0
        self._length = int(self.np_random.integers(2, self.max_length + 1))

    def _advance(self) -> tuple[bool, bool]:
        self._t += 1
        done = self._t >= self._length
        terminated = done and self._length % 2 == 0
        return terminated, done and not terminated

    def render(self) -> str:
        return f"t={self._t}/{self._length}"


class DictTupleEnv(_EpisodeEnv):
    """Dict observation (with a Tuple inside), Discrete(start=-1) actions, rich infos."""

    def __init__(self, render_mode: str | None = None, max_length: int = 12) -> None:
        super().__init__(render_mode, max_length)
        self.observation_space = spaces.Dict(
            {
                "position": spaces.Box(-np.inf, np.inf, (2,), np.float64),
                "flags": spaces.MultiBinary(3),
                "pair": spaces.Tuple((spaces.Discrete(5), spaces.Box(0, 1, (), np.float32))),
            }
        )
        self.action_space = spaces.Discrete(3, start=-1)
        self._position = np.zeros(2)

    def _obs(self) -> dict[str, Any]:
        return {
            "position": self._position.copy(),
            "flags": self.np_random.integers(0, 2, 3, dtype=np.int8),
            "pair": (np.int64(self._t % 5), np.array(self.np_random.random(), dtype=np.float32)),
        }

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        self._start(seed)
        self._position = self.np_random.normal(size=2)
        info = {"length": self._length, "options": dict(options or {}), "note": "reset"}
        return self._obs(), info

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        assert self.action_space.contains(action), f"invalid action {action!r}"
        self._position = self._position + int(action)
        terminated, truncated = self._advance()
        info: dict[str, Any] = {"t": self._t, "distance": float(np.abs(self._position).sum())}
        if self._t % 3 == 0:
            info["every_third"] = np.arange(2, dtype=np.int32) + self._t
            info["nested"] = {"even": self._t % 2 == 0, "scale": np.float32(0.5)}
        if terminated:
            info["outcome"] = "won"
        return self._obs(), float(-np.abs(self._position).sum()), terminated, truncated, info


class TextEnv(_EpisodeEnv):
    """Text observations and Text actions: echo the action, reward matching characters."""

    def __init__(self, render_mode: str | None = None, max_length: int = 12) -> None:
        super().__init__(render_mode, max_length)
        self.observation_space = spaces.Text(8, min_length=0, charset="abc")
        self.action_space = spaces.Text(8, min_length=0, charset="abc")
        self._target = ""

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        self._start(seed)
        size = int(self.np_random.integers(0, 9))
        self._target = "".join(self.np_random.choice(list("abc"), size=size))
        return self._target, {"target_length": len(self._target)}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        matches = sum(a == b for a, b in zip(action, self._target, strict=False))
        terminated, truncated = self._advance()
        info = {"matches": matches, "echo": action} if matches else {}
        return action, float(matches), terminated, truncated, info


class MultiDiscreteEnv(_EpisodeEnv):
    """MultiDiscrete actions with a start offset, Box(uint8) image-like observations."""

    def __init__(self, render_mode: str | None = None, max_length: int = 12) -> None:
        super().__init__(render_mode, max_length)
        self.observation_space = spaces.Box(0, 255, (4, 4), np.uint8)
        self.action_space = spaces.MultiDiscrete([3, 4], start=[1, -2])

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray[Any, Any], dict[str, Any]]:
        self._start(seed)
        return self.np_random.integers(0, 256, (4, 4), dtype=np.uint8), {}

    def step(
        self, action: Any
    ) -> tuple[np.ndarray[Any, Any], np.float32, bool, bool, dict[str, Any]]:
        assert self.action_space.contains(action), f"invalid action {action!r}"
        terminated, truncated = self._advance()
        obs = self.np_random.integers(0, 256, (4, 4), dtype=np.uint8)
        info = {"action_sum": np.int64(np.sum(action)), "big": bool(action[0] > 2)}
        return obs, np.float32(np.sum(action)), terminated, truncated, info


class SlowEnv(gymnasium.Env[Any, Any]):
    """CartPole-like spaces, but each step sleeps ``delay`` seconds: a stand-in for a hung env."""

    metadata = {"render_modes": []}

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = spaces.Discrete(2)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray[Any, Any], dict[str, Any]]:
        super().reset(seed=seed)
        return np.zeros(2, dtype=np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray[Any, Any], float, bool, bool, dict[str, Any]]:
        time.sleep(self.delay)
        return np.zeros(2, dtype=np.float32), 0.0, False, False, {}


class CounterEnv(gymnasium.Env[Any, Any]):
    """Add 0-4 to a counter until it reaches ``target``; ``add`` is also an agent tool.

    ``step(action)`` calls the ``add`` tool, so the Gymnasium facade and an MCP agent go
    through the same code.
    """

    metadata = {"render_modes": []}

    def __init__(self, target: int = 10) -> None:
        self.target = target
        self.total = 0
        self.observation_space = spaces.Box(0, 1000, (), np.int64)
        self.action_space = spaces.Discrete(5)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray[Any, Any], dict[str, Any]]:
        super().reset(seed=seed)
        self.total = int(self.np_random.integers(0, 3))
        return np.array(self.total, dtype=np.int64), {}

    @tool
    def add(self, amount: int) -> dict[str, Any]:
        """Add ``amount`` (0-4) to the counter; return the new total and whether it is done."""
        if not 0 <= amount <= 4:
            raise ValueError(f"amount must be in 0..4, got {amount}")
        self.total = min(self.total + amount, 1000)
        return {"total": self.total, "done": self.total >= self.target}

    def step(self, action: Any) -> tuple[np.ndarray[Any, Any], float, bool, bool, dict[str, Any]]:
        result = self.add(int(action))
        return np.array(result["total"], dtype=np.int64), float(action), result["done"], False, {}


class SlowToolEnv(gymnasium.Env[Any, Any]):
    """A fast ``step`` beside a slow ``wait`` tool: a stand-in for a tool that takes its time.

    ``max_active`` records how many tool calls ever ran on this env at once.
    """

    metadata = {"render_modes": []}

    def __init__(self) -> None:
        self.observation_space = spaces.Discrete(1)
        self.action_space = spaces.Discrete(1)
        self.active = 0
        self.max_active = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        super().reset(seed=seed)
        return 0, {}

    @tool
    def wait(self, seconds: float) -> dict[str, Any]:
        """Take ``seconds`` (at most 10) to answer; return how long it took."""
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            time.sleep(min(max(seconds, 0.0), 10.0))
        finally:
            self.active -= 1
        return {"waited": seconds}

    def step(self, action: Any) -> tuple[int, float, bool, bool, dict[str, Any]]:
        return 0, 0.0, False, False, {}


class FailingEnv(gymnasium.Env[Any, Any]):
    """An env whose constructor raises: a stand-in for a misconfigured or broken env."""

    def __init__(self) -> None:
        raise RuntimeError("FailingEnv cannot be built")
