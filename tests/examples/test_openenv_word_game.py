"""CI-sized run of examples/openenv_word_game.py: an OpenEnv env hosted batched, two clients."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from openenv_gym.testing.optional import require_module

require_module("openenv", family="openenv", install="pip install 'openenv-gym[openenv]'")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "openenv_word_game.py"


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("openenv_word_game_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_openenv_word_game() -> None:
    example = _load_example()
    # 8 envs x 4 seeded rounds, 3 guesses: the search policy solves every word in <= 3 guesses;
    # a random word per guess solves with probability 1 - 0.8**3 = 0.488 (seeded: deterministic).
    summary = example.main(
        ["--num-envs", "8", "--episodes-per-env", "4", "--max-guesses", "3", "--quiet"]
    )
    assert summary["search_episodes"] == summary["random_episodes"] == 32, summary
    assert summary["search_solve_rate"] == 1.0, summary
    assert summary["random_solve_rate"] < 0.8, summary
    assert summary["search_solve_rate"] >= summary["random_solve_rate"] + 0.2, summary
    assert summary["search_mean_guesses"] <= 3.0, summary
    assert summary["search_mean_return"] > summary["random_mean_return"], summary

    # (b) OpenEnv's GenericEnvClient played one episode of the same hosted env, same server.
    episode = summary["openenv_client"]
    port = summary["server_url"].rsplit(":", 1)[1]
    assert episode["base_url"].startswith(f"http://127.0.0.1:{port}/envs/"), episode
    assert episode["metadata"]["name"] == example.SPEC == summary["spec"], episode
    assert episode["action_fields"] == ["guess", "metadata"], episode
    assert {"feedback", "in_place", "guesses_left"} <= set(episode["observation_fields"]), episode
    assert episode["done"] and episode["solved"], episode
    moves = episode["transcript"]
    assert 1 <= len(moves) <= 3 and moves[-1]["feedback"] == "solved", episode
    assert moves[-1]["reward"] == 1.0, episode
    assert episode["state"]["step_count"] == len(moves), episode
