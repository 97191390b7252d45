"""A small OpenEnv text environment, written the OpenEnv way (needs ``openenv``).

Word guessing: each episode hides a word from a fixed list (chosen by the reset seed); the
agent sends guesses as text; the observation says how many letters are in the right place.
Reward 1.0 and ``done`` when the guess is right, else the fraction of letters in place; the
episode also ends after ``max_guesses`` guesses.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

from openenv.core.env_server.interfaces import Environment
from openenv.core.env_server.mcp_environment import MCPEnvironment
from openenv.core.env_server.mcp_types import CallToolAction, CallToolObservation
from openenv.core.env_server.types import Action, Observation, State
from pydantic import Field

__all__ = ["CalculatorMcpEnv", "GuessAction", "GuessObservation", "WordGuessEnv"]

WORDS = ("cab", "bad", "dab", "add", "bed")


class GuessAction(Action):
    """One guess."""

    guess: str = Field(max_length=8, description="the guessed word")


class GuessObservation(Observation):
    """What the agent sees after a guess."""

    feedback: str = Field(default="", max_length=64, description="a message for the agent")
    in_place: int = Field(default=0, ge=0, le=8, description="letters in the right place")
    guesses_left: int = Field(default=0, ge=0, le=16)


class WordGuessEnv(Environment[GuessAction, GuessObservation, State]):
    """Guess a three-letter word from the letters a-e."""

    SUPPORTS_CONCURRENT_SESSIONS = True

    def __init__(self, max_guesses: int = 6) -> None:
        super().__init__()
        self.max_guesses = max_guesses
        self._word = WORDS[0]
        self._state = State(episode_id=str(uuid.uuid4()), step_count=0)

    def reset(
        self, seed: int | None = None, episode_id: str | None = None, **kwargs: Any
    ) -> GuessObservation:
        self._word = random.Random(seed).choice(WORDS)
        self._state = State(episode_id=episode_id or str(uuid.uuid4()), step_count=0)
        return GuessObservation(
            feedback="guess the word", guesses_left=self.max_guesses, done=False, reward=None
        )

    def step(
        self, action: GuessAction, timeout_s: float | None = None, **kwargs: Any
    ) -> GuessObservation:
        self._state.step_count += 1
        in_place = sum(a == b for a, b in zip(action.guess, self._word, strict=False))
        solved = action.guess == self._word
        left = self.max_guesses - self._state.step_count
        return GuessObservation(
            feedback="solved" if solved else f"{in_place} in place",
            in_place=in_place,
            guesses_left=max(left, 0),
            done=solved or left <= 0,
            reward=1.0 if solved else in_place / len(self._word),
            metadata={"guess": action.guess},
        )

    @property
    def state(self) -> State:
        return self._state


class CalculatorMcpEnv(MCPEnvironment, Environment[CallToolAction, CallToolObservation, State]):
    """An OpenEnv MCP environment: its tools live on a FastMCP server (``add``).

    Its models are OpenEnv's MCP action and observation (named in the bases, as the
    gymnasium view needs them).
    """

    SUPPORTS_CONCURRENT_SESSIONS = True

    def __init__(self) -> None:
        from fastmcp import FastMCP

        server = FastMCP("calculator")

        @server.tool()
        def add(a: int, b: int) -> int:
            """Add two integers."""
            return a + b

        super().__init__(server)
        self._state = State(episode_id=str(uuid.uuid4()), step_count=0)

    def reset(
        self, seed: int | None = None, episode_id: str | None = None, **kwargs: Any
    ) -> Observation:
        self._state = State(episode_id=episode_id or str(uuid.uuid4()), step_count=0)
        return Observation(done=False, reward=None)

    def _step_impl(self, action: Any, timeout_s: float | None = None, **kwargs: Any) -> Observation:
        return Observation(done=False, reward=0.0)

    @property
    def state(self) -> State:
        return self._state
