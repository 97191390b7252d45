"""Deliberately broken envs (and a server) that each break one rule ``validate`` checks.

Each env is a small correct env with exactly one defect, named after it; ``docs/validate.md``
lists which check catches which, and ``tests/testing/validate/`` proves it. Host one with
``openenv-gym validate openenv_gym.testing.broken_envs:WrongDtypeEnv``. The fragile server
(``python -m openenv_gym.testing.broken_envs --port 0``) speaks the protocol through the real
session code but dies on the first frame it cannot decode.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.envs.registration import EnvSpec

__all__ = [
    "GoodEnv",
    "InfoNotDictEnv",
    "LyingTimeLimitEnv",
    "NonBoolFlagEnv",
    "NondeterministicEnv",
    "ObsOutOfSpaceEnv",
    "ShortTimeLimitEnv",
    "WrongDtypeEnv",
    "serve_fragile",
]


class GoodEnv(gymnasium.Env[Any, Any]):
    """A correct env: a seeded walk on [-1, 1]^2, episodes of 5-15 steps, reward = action.

    Its ``reference_policy`` (always action 1) earns more than a random one.
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(self, render_mode: str | None = None) -> None:
        self.render_mode = render_mode
        self.observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = spaces.Discrete(2)
        self._t, self._length = 0, 5
        self._position = np.zeros(2, dtype=np.float32)

    def _obs(self) -> Any:
        return self._position.copy()

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, Any]:
        super().reset(seed=seed)
        self._t = 0
        self._length = int(self.np_random.integers(5, 16))
        self._position = self.np_random.uniform(-0.5, 0.5, 2).astype(np.float32)
        return self._obs(), {}

    def _flags(self) -> tuple[Any, Any]:
        return False, self._t >= self._length

    def _info(self) -> Any:
        return {"t": self._t}

    def step(self, action: Any) -> tuple[Any, float, Any, Any, Any]:
        self._t += 1
        noise = self.np_random.uniform(-0.1, 0.1, 2)
        self._position = np.clip(self._position + noise, -1, 1).astype(np.float32)
        terminated, truncated = self._flags()
        return self._obs(), float(action), terminated, truncated, self._info()

    def render(self) -> str:
        return f"t={self._t} position={self._position.tolist()}"

    def reference_policy(self, observation: Any) -> int:
        """Return action 1: its reward is 1, a random action's is 0.5 on average."""
        return 1


class NondeterministicEnv(GoodEnv):
    """Defect: the start position comes from the global RNG, not ``np_random``."""

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, Any]:
        _, info = super().reset(seed=seed)
        self._position = np.random.uniform(-0.5, 0.5, 2).astype(np.float32)
        return self._obs(), info


class ObsOutOfSpaceEnv(GoodEnv):
    """Defect: from the third step on, the observation leaves the Box [-1, 1]."""

    def _obs(self) -> Any:
        return self._position + np.float32(5.0 if self._t >= 3 else 0.0)


class WrongDtypeEnv(GoodEnv):
    """Defect: observations are float64 though the space says float32."""

    def _obs(self) -> Any:
        return self._position.astype(np.float64)


class NonBoolFlagEnv(GoodEnv):
    """Defect: ``truncated`` is an int (0 or 1), not a bool."""

    def _flags(self) -> tuple[Any, Any]:
        return False, int(self._t >= self._length)


class InfoNotDictEnv(GoodEnv):
    """Defect: step infos are lists."""

    def _info(self) -> Any:
        return [self._t]


class LyingTimeLimitEnv(GoodEnv):
    """Defect: its spec declares ``max_episode_steps=10``, but episodes run 25 steps."""

    claimed_limit, actual_limit = 10, 25

    @property
    def spec(self) -> EnvSpec:
        """The spec it claims (``gymnasium.make`` cannot replace it)."""
        name = f"openenv_gym.testing.broken_envs:{type(self).__name__}"
        return EnvSpec(name, entry_point=name, max_episode_steps=self.claimed_limit)

    @spec.setter
    def spec(self, value: EnvSpec | None) -> None:
        pass  # gymnasium.make sets the spec it built; this env keeps its claim

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, Any]:
        obs, info = super().reset(seed=seed)
        self._length = self.actual_limit
        return obs, info


class ShortTimeLimitEnv(LyingTimeLimitEnv):
    """Defect: its spec declares ``max_episode_steps=20``, but every episode is cut at 8."""

    claimed_limit, actual_limit = 20, 8


DECLARED_NONDETERMINISTIC = "OpenEnvGymDeclaredNondeterministic-v0"
"""``NondeterministicEnv`` registered with ``nondeterministic=True``: it says what it does."""
gymnasium.register(
    DECLARED_NONDETERMINISTIC,
    entry_point="openenv_gym.testing.broken_envs:NondeterministicEnv",
    nondeterministic=True,
)


def serve_fragile(port: int) -> None:
    """Serve the real protocol on ``127.0.0.1:port``, but exit on the first undecodable frame.

    A stand-in for a server that dies on malformed input: a raw ``websockets`` server that
    hands frames to :class:`~openenv_gym.server.session.Session` and calls ``os._exit`` when
    a frame is not a msgpack request envelope. Prints ``ws://127.0.0.1:PORT`` when listening.
    """
    import msgpack
    from websockets.sync.server import serve

    from openenv_gym.server.catalog import EnvCatalog
    from openenv_gym.server.session import Session

    catalog = EnvCatalog(["CartPole-v1"])

    def handler(ws: Any) -> None:
        session = Session(catalog)
        for frame in ws:
            try:
                value = msgpack.unpackb(frame) if isinstance(frame, bytes) else None
            except Exception:
                value = None
            if not (isinstance(value, list) and len(value) == 3):
                os._exit(3)  # the defect: one bad frame takes the whole server down
            ws.send(session.handle(frame))

    with serve(handler, "127.0.0.1", port, compression=None, max_size=None) as server:
        print(f"ws://127.0.0.1:{server.socket.getsockname()[1]}", flush=True)
        server.serve_forever()


def main() -> None:
    """Run the fragile server (``--port 0``: any free port, printed)."""
    parser = argparse.ArgumentParser(description=serve_fragile.__doc__)
    parser.add_argument("--port", type=int, default=0)
    serve_fragile(parser.parse_args().port)


if __name__ == "__main__":
    main()
