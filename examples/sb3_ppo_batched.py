"""Stable-Baselines3 PPO over batched remote envs: ``openenv_gym.adapters.sb3.RemoteVecEnv``.

The envs run in local environment servers, one message per server per step; SB3's PPO (torch,
CPU) runs here, unchanged. Usage::

    python examples/sb3_ppo_batched.py --total-timesteps 100000 --num-envs 16 --num-servers 2

``--compare`` also trains the same PPO (same seed) on SB3's ``DummyVecEnv`` of in-process envs
and checks that both policies end bit-identical, as the env results are. Prints a summary:
mean return of the trained policy (``evaluate_policy``, deterministic) and of a random policy,
and training throughput.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecMonitor

from openenv_gym.adapters.sb3 import RemoteVecEnv

ENV_ID = "CartPole-v1"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-envs", type=int, default=8)
    p.add_argument("--num-servers", type=int, default=1)
    p.add_argument("--total-timesteps", type=int, default=50_000)
    p.add_argument("--n-steps", type=int, default=128, help="rollout length per env")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--n-epochs", type=int, default=4)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--eval-episodes", type=int, default=20)
    p.add_argument("--compare", action="store_true", help="also train on DummyVecEnv, diff")
    return p.parse_args(argv)


def train(venv: VecEnv, args: argparse.Namespace) -> tuple[PPO, float]:
    """Train PPO on ``venv``; return the model and the env-steps per second of training."""
    torch.set_num_threads(1)  # small MLPs: threads only add noise to the timing
    model = PPO(
        "MlpPolicy",
        VecMonitor(venv),
        n_steps=args.n_steps,
        batch_size=args.batch_size,
        n_epochs=args.n_epochs,
        learning_rate=args.learning_rate,
        gamma=0.98,
        gae_lambda=0.8,
        ent_coef=0.0,
        seed=args.seed,
        device="cpu",
        verbose=0,
    )
    start = time.perf_counter()
    model.learn(total_timesteps=args.total_timesteps)
    return model, model.num_timesteps / (time.perf_counter() - start)


def random_return(venv: VecEnv, episodes: int, seed: int) -> float:
    """Mean return of uniformly random actions over ``episodes`` episodes of ``venv``."""
    venv.seed(seed)
    venv.action_space.seed(seed)
    venv.reset()
    returns: list[float] = []
    running = np.zeros(venv.num_envs)
    while len(returns) < episodes:
        actions = np.array([venv.action_space.sample() for _ in range(venv.num_envs)])
        _, rewards, dones, _ = venv.step(actions)
        running += rewards
        returns.extend(float(r) for r in running[dones])
        running[dones] = 0.0
    return float(np.mean(returns[:episodes]))


def same_parameters(a: PPO, b: PPO) -> bool:
    """Whether two models hold bit-identical policy parameters."""
    pa, pb = a.policy.state_dict(), b.policy.state_dict()
    return pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    summary: dict[str, Any] = {"env_id": ENV_ID, "num_envs": args.num_envs}
    venv = RemoteVecEnv(ENV_ID, args.num_envs, num_servers=args.num_servers)
    try:
        summary["random_policy_mean_return"] = random_return(venv, args.eval_episodes, args.seed)
        model, rate = train(venv, args)
        mean, std = evaluate_policy(
            model, model.get_env(), n_eval_episodes=args.eval_episodes, deterministic=True
        )
        summary.update(
            timesteps=model.num_timesteps,
            train_steps_per_second=rate,
            mean_return=float(mean),
            std_return=float(std),
        )
        if args.compare:
            local = DummyVecEnv([lambda: gym.make(ENV_ID)] * args.num_envs)
            try:
                random_return(local, args.eval_episodes, args.seed)  # same env history
                twin, local_rate = train(local, args)
            finally:
                local.close()
            summary["dummy_vec_env_steps_per_second"] = local_rate
            summary["identical_to_dummy_vec_env"] = same_parameters(model, twin)
    finally:
        venv.close()
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
