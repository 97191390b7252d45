"""A fuzz campaign: random inputs of every kind for a while, and a bystander served throughout.

:func:`run_fuzz` draws from :data:`~.fuzz_inputs.GENERATORS` with a seeded ``Random``, runs
each input's check (:class:`~.fuzz.Fuzzer`, :class:`~.fuzz_frames.FrameChecks`) and collects
bad outcomes instead of raising; a :class:`Bystander` session opened before the campaign must
still step afterwards. The reliability report runs it; the tests run the checks one by one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import time
from collections.abc import Callable
from typing import Any

from openenv_gym.testing.compliance.fuzz import ANSWER_TIMEOUT, Fuzzer
from openenv_gym.testing.compliance.fuzz_frames import FrameChecks
from openenv_gym.testing.compliance.fuzz_inputs import GENERATORS
from openenv_gym.testing.rawws import healthz

__all__ = ["Bystander", "FuzzReport", "run_fuzz"]


class Bystander:
    """A session opened before a campaign, stepped afterwards: it must be served throughout.

    Args:
        url: the server.
        env_id: what it builds.
        reward: the reward every step must give, if the env has a constant one.

    """

    def __init__(
        self, url: str, env_id: str = "CartPole-v1", *, reward: float | None = None
    ) -> None:
        from openenv_gym.client.env import RemoteEnv

        self.env: Any = RemoteEnv(env_id, url=url, call_timeout=10)
        self.reward = reward
        self.env.reset(seed=0)

    def served(self, steps: int) -> int:
        """Step ``steps`` times; return how many steps gave a well-formed result."""
        from openenv_gym.errors import OpenEnvError

        good = 0
        with contextlib.suppress(OpenEnvError):
            for _ in range(steps):
                obs, reward, terminated, truncated, _ = self.env.step(
                    self.env.action_space.sample()
                )
                fits = self.env.observation_space.contains(obs)
                good += bool(fits and (self.reward is None or reward == self.reward))
                if terminated or truncated:
                    self.env.reset()
        return good

    def close(self) -> None:
        """Close the session."""
        self.env.close()


@dataclasses.dataclass(frozen=True)
class FuzzReport:
    """What :func:`run_fuzz` found: inputs tried, server answers, bad outcomes, bystander steps."""

    tried: dict[str, int]
    outcomes: dict[str, int]
    bad: list[str]
    bystander_steps: int
    bystander_wanted: int
    healthy: bool


def run_fuzz(
    url: str, small_url: str, *, seconds: float, max_inputs: int, seed: int = 0
) -> FuzzReport:
    """Throw random inputs of every kind for ``seconds`` or ``max_inputs``, then check a bystander.

    Args:
        url: a server started with :data:`FUZZ_SERVER_ARGS` hosting :data:`SPECS`.
        small_url: a server started with :data:`SMALL_SERVER_ARGS`.
        seconds: how long to throw inputs.
        max_inputs: a bound on the inputs thrown.
        seed: seeds the inputs.

    Returns:
        The tallies and bad outcomes (never raises for what a server does).

    """
    rng = random.Random(seed)
    bystander = Bystander(url, "openenv_gym.testing.envs:DictTupleEnv")
    fuzzer = Fuzzer(url, small_url=small_url)
    frames = FrameChecks(fuzzer)
    bad: list[str] = []
    deadline, count = time.monotonic() + seconds, 0
    while time.monotonic() < deadline and count < max_inputs:
        kind = rng.choice(list(GENERATORS))
        owner = frames if hasattr(frames, f"check_{kind}") else fuzzer
        check: Callable[..., None] = getattr(owner, f"check_{kind}")
        count += 1
        try:
            check(*GENERATORS[kind](rng))
        except Exception as exc:  # a bad outcome, or the harness failed (a refused connection)
            bad.append(f"{kind}: {type(exc).__name__}: {exc}"[:300])
        if count % 50 == 0 and healthz(url, ANSWER_TIMEOUT) != 200:
            bad.append(f"{kind}: the server stopped answering /healthz")
            break
    steps = bystander.served(20)
    bystander.close()
    healthy = healthz(url, ANSWER_TIMEOUT) == 200 and healthz(small_url, ANSWER_TIMEOUT) == 200
    tally = fuzzer.tally
    return FuzzReport(
        dict(sorted(tally.tried.items())),
        dict(sorted(tally.outcomes.items())),
        bad,
        steps,
        20,
        healthy,
    )
