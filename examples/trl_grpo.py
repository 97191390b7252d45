"""TRL's GRPO over a text env served by openenv_gym: a tiny model, nothing downloaded, CPU.

The env (``openenv_gym.envs.answers:AnswerEnv``, task set "repeat the letter": prompt ``b=``,
answer ``bbbb``, scored by matching characters) runs in a local environment server. The
dataset's rows are the prompts the env gives for seeds 0..N-1; TRL's reward function sends a
whole batch of completions to the server in one message (``RemoteVectorEnv``: ``reset(seed=the
rows' seeds)``, then ``step(completions)``), and the server's scores are the rewards. The model
is a 2-layer Llama built from a config and the tokenizer a character-level one built here, so
the run needs no network. Usage::

    python examples/trl_grpo.py --max-steps 150 --plot docs/img/trl_grpo_reward.png

Prints a JSON summary: mean reward of the first and last logged steps, and of greedy
completions before and after training (evaluated through the same server).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from trl import GRPOConfig, GRPOTrainer

from openenv_gym import RemoteVectorEnv

ENV_ID = "openenv_gym.envs.answers:AnswerEnv"
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
ALPHABET = "abcd="


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-steps", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rows", type=int, default=256, help="dataset rows (env seeds)")
    p.add_argument("--batch-size", type=int, default=16, help="completions per step")
    p.add_argument("--num-generations", type=int, default=8)
    p.add_argument("--learning-rate", type=float, default=3e-3)
    p.add_argument("--output-dir", default=None, help="default: a temporary directory")
    p.add_argument("--plot", default=None, help="write the reward curve (PNG) here")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Build a character-level tokenizer of the task's alphabet (WordLevel, a token a char)."""
    vocab = {token: index for index, token in enumerate([*SPECIALS, *ALPHABET])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()  # characters back together, no spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        padding_side="left",
    )


def build_model(tokenizer: PreTrainedTokenizerFast, seed: int) -> LlamaForCausalLM:
    """Build a 2-layer Llama of ~70k parameters, randomly initialised from a config."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=32,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


class ServerReward:
    """TRL reward function whose scores come from the env server, a batch per message.

    One ``RemoteVectorEnv`` per batch size (TRL calls with a fixed one); its envs are reset
    with the rows' seeds, so env ``i`` holds the task row ``i``'s prompt came from, and
    stepped with the completions.
    """

    __name__ = "server_reward"  # TRL logs rewards under the function's name

    def __init__(self, url: str) -> None:
        self.url = url
        self._envs: dict[int, RemoteVectorEnv] = {}

    def __call__(self, prompts: list[str], completions: list[str], **row: Any) -> list[float]:
        """Score ``completions`` of the rows (their ``seed`` column) on the server."""
        envs = self._envs.get(len(completions))
        if envs is None:
            envs = self._envs[len(completions)] = RemoteVectorEnv(
                ENV_ID, len(completions), urls=[self.url]
            )
        observed, _ = envs.reset(seed=[int(seed) for seed in row["seed"]])
        assert list(observed) == list(prompts), "rows and env tasks disagree"
        _, rewards, _, _, _ = envs.step(np.array(completions, dtype=object))
        return [float(reward) for reward in rewards]

    def close(self) -> None:
        """Close the sessions."""
        for envs in self._envs.values():
            envs.close()
        self._envs.clear()


def prompt_dataset(url: str, rows: int) -> Dataset:
    """Return the prompts the env gives for seeds ``0..rows-1``, with the seeds."""
    envs = RemoteVectorEnv(ENV_ID, rows, urls=[url])
    try:
        prompts, _ = envs.reset(seed=list(range(rows)))
    finally:
        envs.close()
    return Dataset.from_dict({"prompt": list(prompts), "seed": list(range(rows))})


def greedy_reward(model: Any, tokenizer: Any, dataset: Dataset, reward: ServerReward) -> float:
    """Mean server reward of greedy completions of every distinct prompt."""
    rows = dataset.to_pandas().drop_duplicates("prompt")
    encoded = tokenizer(list(rows["prompt"]), return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**encoded, max_new_tokens=4, do_sample=False)
    completions = tokenizer.batch_decode(out[:, encoded["input_ids"].shape[1] :], True)
    scores = reward(list(rows["prompt"]), completions, seed=list(rows["seed"]))
    return float(np.mean(scores))


def plot(history: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [entry["step"] for entry in history if "reward" in entry]
    rewards = [entry["reward"] for entry in history if "reward" in entry]
    figure, axes = plt.subplots(figsize=(6, 3.5))
    axes.plot(steps, rewards, label="mean reward per step")
    if len(rewards) >= 10:
        smooth = np.convolve(rewards, np.ones(10) / 10, mode="valid")
        axes.plot(steps[9:], smooth, label="10-step mean")
    axes.set(xlabel="GRPO step", ylabel="reward (server-scored)", ylim=(0, 1.02))
    axes.set_title("TRL GRPO, 2-layer Llama, AnswerEnv 'repeat the letter'")
    axes.legend(loc="lower right")
    figure.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    figure.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    from openenv_gym.providers.local import LocalProvider

    if args.quiet:
        logging.getLogger("transformers").setLevel(logging.ERROR)
    torch.set_num_threads(1)
    with LocalProvider([ENV_ID], num_servers=1) as servers, tempfile.TemporaryDirectory() as tmp:
        url = servers.urls[0]
        tokenizer = build_tokenizer()
        model = build_model(tokenizer, args.seed)
        dataset = prompt_dataset(url, args.rows)
        reward = ServerReward(url)
        try:
            before = greedy_reward(model, tokenizer, dataset, reward)
            config = GRPOConfig(
                output_dir=args.output_dir or tmp,
                max_steps=args.max_steps,
                per_device_train_batch_size=args.batch_size,
                num_generations=args.num_generations,
                max_completion_length=4,
                learning_rate=args.learning_rate,
                beta=0.0,
                temperature=1.0,
                logging_steps=1,
                save_strategy="no",
                report_to="none",
                use_cpu=True,
                seed=args.seed,
                disable_tqdm=args.quiet,
            )
            trainer = GRPOTrainer(
                model=model,
                reward_funcs=reward,
                args=config,
                train_dataset=dataset,
                processing_class=tokenizer,
            )
            trainer.train()
            history = [
                {"step": entry["step"], "reward": entry["reward"]}
                for entry in trainer.state.log_history
                if "reward" in entry
            ]
            after = greedy_reward(trainer.model, tokenizer, dataset, reward)
        finally:
            reward.close()
    window = max(1, min(10, len(history) // 2))
    summary = {
        "steps": trainer.state.global_step,
        "first_steps_mean_reward": float(np.mean([h["reward"] for h in history[:window]])),
        "last_steps_mean_reward": float(np.mean([h["reward"] for h in history[-window:]])),
        "greedy_reward_before": before,
        "greedy_reward_after": after,
        "history": history,
    }
    if args.plot:
        plot(history, args.plot)
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}, indent=2))
    return summary


if __name__ == "__main__":
    main()
