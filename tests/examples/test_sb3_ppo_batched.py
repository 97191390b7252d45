"""CI-sized run of examples/sb3_ppo_batched.py: SB3's PPO over RemoteVecEnv equals DummyVecEnv."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from openenv_gym.testing.optional import require_module

require_module("stable_baselines3", family="sb3", install="pip install 'openenv-gym[sb3]'")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sb3_ppo_batched.py"


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sb3_ppo_batched_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sb3_ppo_batched_matches_dummy_vec_env() -> None:
    args = ["--total-timesteps", "512", "--num-envs", "4", "--num-servers", "2"]
    args += ["--n-steps", "64", "--batch-size", "64", "--n-epochs", "2", "--eval-episodes", "3"]
    summary = _load_example().main([*args, "--compare"])
    assert summary["timesteps"] == 512
    assert summary["identical_to_dummy_vec_env"] is True
    assert 5 < summary["random_policy_mean_return"] < 60, summary
    assert summary["mean_return"] > 0 and summary["train_steps_per_second"] > 0
