"""CI-sized run of examples/trl_grpo.py: two GRPO steps whose rewards come from our server."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType

from openenv_gym.testing.optional import require_module

INSTALL = "pip install 'openenv-gym[trl]'"
for _name in ("torch", "trl", "transformers", "tokenizers", "datasets"):
    require_module(_name, family="trl", install=INSTALL)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "trl_grpo.py"


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("trl_grpo_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_trl_grpo_server_reward_scores_completions_on_the_server() -> None:
    example = _load_example()
    from openenv_gym.envs.answers import AnswerEnv
    from openenv_gym.providers.local import LocalProvider

    local = AnswerEnv()
    seeds = [0, 1, 2, 3, 4, 5]
    prompts, answers = [], []
    for seed in seeds:
        prompt, info = local.reset(seed=seed)
        prompts.append(prompt)
        answers.append(next(t["answer"] for t in local.tasks if t["id"] == info["task_id"]))
    completions = [answers[0], answers[1][:2], "", "zz", answers[4] + "x", answers[5]]
    with LocalProvider([example.ENV_ID], num_servers=1) as servers:
        reward = example.ServerReward(servers.urls[0])
        try:
            got = reward(prompts, completions, seed=seeds)
        finally:
            reward.close()
    assert got == [1.0, 0.5, 0.0, 0.0, 0.8, 1.0]


def test_trl_grpo_two_steps() -> None:
    example = _load_example()
    tokenizer = example.build_tokenizer()
    ids = tokenizer("b=")["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "b="  # character-level, lossless
    summary = example.main(["--max-steps", "2", "--rows", "32", "--batch-size", "8", "--quiet"])
    assert summary["steps"] == 2
    assert [entry["step"] for entry in summary["history"]] == [1, 2]
    for entry in summary["history"]:
        assert 0.0 <= entry["reward"] <= 1.0 and math.isfinite(entry["reward"])
    assert 0.0 <= summary["greedy_reward_after"] <= 1.0
