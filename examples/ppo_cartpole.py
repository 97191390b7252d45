"""PPO on CartPole-v1 through ``openenv_gym.RemoteVectorEnv`` (CleanRL-style, single file).

The envs run in local environment servers; the agent (torch, CPU) runs here. Usage::

    python examples/ppo_cartpole.py --total-timesteps 100000

Options: ``--num-envs``, ``--num-servers``, ``--seed``, ``--num-steps``, ``--learning-rate`` and
the other PPO hyper-parameters (``--help``). Prints a progress line now and then and a summary
that compares the trained policy's episodic returns with a random policy's.

Autoreset: ``RemoteVectorEnv`` uses gymnasium's default ``NEXT_STEP`` mode. The step *after* an
env's episode ends only resets it: its action is ignored, its reward is 0 and its flags are
False. The rollout keeps a ``next_done`` mask; steps taken from a finished episode's final
observation are marked invalid and dropped from GAE and from the loss. Because the final
observation stays in the buffer in this mode, truncated episodes (500 steps on CartPole-v1)
are bootstrapped with its value, while terminated ones are not.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.wrappers.vector import RecordEpisodeStatistics
from torch import nn
from torch.distributions.categorical import Categorical

import openenv_gym

ENV_ID = "CartPole-v1"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--num-envs", type=int, default=8)
    p.add_argument("--num-servers", type=int, default=1)
    p.add_argument("--total-timesteps", type=int, default=100_000)
    p.add_argument("--num-steps", type=int, default=128, help="rollout length per env")
    p.add_argument("--learning-rate", type=float, default=2.5e-4)
    p.add_argument("--no-anneal-lr", dest="anneal_lr", action="store_false")
    p.add_argument("--gamma", type=float, default=0.99)
    p.add_argument("--gae-lambda", type=float, default=0.95)
    p.add_argument("--num-minibatches", type=int, default=4)
    p.add_argument("--update-epochs", type=int, default=4)
    p.add_argument("--clip-coef", type=float, default=0.2)
    p.add_argument("--no-clip-vloss", dest="clip_vloss", action="store_false")
    p.add_argument("--ent-coef", type=float, default=0.01)
    p.add_argument("--vf-coef", type=float, default=0.5)
    p.add_argument("--max-grad-norm", type=float, default=0.5)
    p.add_argument("--target-kl", type=float, default=None)
    p.add_argument("--random-episodes", type=int, default=100, help="random-policy baseline")
    p.add_argument("--log-every", type=int, default=10, help="updates between progress lines")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p.parse_args(argv)


def layer_init(layer: nn.Linear, std: float = np.sqrt(2), bias_const: float = 0.0) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    """Separate actor and critic MLPs (64-64, tanh), as in CleanRL's ``ppo.py``."""

    def __init__(self, obs_dim: int, num_actions: int) -> None:
        super().__init__()
        self.critic = nn.Sequential(
            layer_init(nn.Linear(obs_dim, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, 1), std=1.0),
        )
        self.actor = nn.Sequential(
            layer_init(nn.Linear(obs_dim, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, num_actions), std=0.01),
        )

    def get_value(self, x: torch.Tensor) -> torch.Tensor:
        """State values, shape ``(batch, 1)``."""
        return self.critic(x)

    def get_action_and_value(
        self, x: torch.Tensor, action: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample (or evaluate) actions: ``(action, log_prob, entropy, value)``."""
        probs = Categorical(logits=self.actor(x))
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action), probs.entropy(), self.critic(x)


def random_policy_mean_return(seed: int, episodes: int) -> float:
    """Mean episodic return of uniformly random actions on in-process CartPole-v1."""
    env = gym.make(ENV_ID)
    env.action_space.seed(seed)
    returns = []
    for episode in range(episodes):
        env.reset(seed=seed + episode)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return float(np.mean(returns))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train PPO; return a summary of the episodes seen and the random-policy baseline."""
    args = parse_args(argv)
    torch.set_num_threads(1)  # 2-core machines: leave the other core to the env servers
    seed_everything(args.seed)
    batch_size = args.num_envs * args.num_steps
    num_iterations = max(1, args.total_timesteps // batch_size)

    envs = RecordEpisodeStatistics(
        openenv_gym.RemoteVectorEnv(ENV_ID, args.num_envs, num_servers=args.num_servers)
    )
    try:
        assert isinstance(envs.single_action_space, gym.spaces.Discrete)
        obs_dim = int(np.prod(envs.single_observation_space.shape))
        agent = Agent(obs_dim, int(envs.single_action_space.n))
        optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)

        shape = (args.num_steps, args.num_envs)
        obs = torch.zeros((*shape, obs_dim))
        actions = torch.zeros(shape, dtype=torch.long)
        logprobs = torch.zeros(shape)
        rewards = torch.zeros(shape)
        terminations = torch.zeros(shape)  # outcome of step t: episode terminated
        dones = torch.zeros(shape)  # outcome of step t: terminated or truncated
        valids = torch.zeros(shape)  # step t acted in a live episode (not an autoreset step)
        values = torch.zeros(shape)

        episode_returns: list[float] = []
        episode_lengths: list[int] = []
        global_step = 0
        start = time.perf_counter()
        next_obs_np, _ = envs.reset(seed=args.seed)
        next_obs = torch.as_tensor(next_obs_np, dtype=torch.float32)
        # next_done[i]: env i's episode ended on the previous step, so its next step only resets
        # it (NEXT_STEP autoreset): that step's action is ignored and its reward is 0.
        next_done = torch.zeros(args.num_envs)

        for iteration in range(1, num_iterations + 1):
            if args.anneal_lr:
                frac = 1.0 - (iteration - 1.0) / num_iterations
                optimizer.param_groups[0]["lr"] = frac * args.learning_rate

            for step in range(args.num_steps):
                global_step += args.num_envs
                obs[step] = next_obs
                valids[step] = 1.0 - next_done
                with torch.no_grad():
                    action, logprob, _, value = agent.get_action_and_value(next_obs)
                values[step] = value.flatten()
                actions[step] = action
                logprobs[step] = logprob

                next_obs_np, reward, terminated, truncated, infos = envs.step(action.numpy())
                done = np.logical_or(terminated, truncated)
                rewards[step] = torch.as_tensor(reward, dtype=torch.float32)
                terminations[step] = torch.as_tensor(terminated, dtype=torch.float32)
                dones[step] = torch.as_tensor(done, dtype=torch.float32)
                next_obs = torch.as_tensor(next_obs_np, dtype=torch.float32)
                next_done = dones[step].clone()

                if "episode" in infos:
                    for i in np.flatnonzero(infos["_episode"]):
                        episode_returns.append(float(infos["episode"]["r"][i]))
                        episode_lengths.append(int(infos["episode"]["l"][i]))

            # GAE. On a step that ended an episode the next observation in the buffer is that
            # episode's final observation (NEXT_STEP keeps it), so truncations bootstrap from
            # its value and terminations from 0; the chain is cut at every episode end, and
            # invalid (autoreset) steps get no advantage and are left out of the loss below.
            with torch.no_grad():
                next_value = agent.get_value(next_obs).flatten()
                advantages = torch.zeros_like(rewards)
                lastgaelam = torch.zeros(args.num_envs)
                for t in reversed(range(args.num_steps)):
                    nextvalues = next_value if t == args.num_steps - 1 else values[t + 1]
                    delta = (
                        rewards[t] + args.gamma * nextvalues * (1.0 - terminations[t]) - values[t]
                    )
                    lastgaelam = delta + args.gamma * args.gae_lambda * (1.0 - dones[t]) * (
                        lastgaelam
                    )
                    lastgaelam = lastgaelam * valids[t]
                    advantages[t] = lastgaelam
                returns = advantages + values

            valid = valids.reshape(-1).bool()
            b_obs = obs.reshape(-1, obs_dim)[valid]
            b_actions = actions.reshape(-1)[valid]
            b_logprobs = logprobs.reshape(-1)[valid]
            b_advantages = advantages.reshape(-1)[valid]
            b_returns = returns.reshape(-1)[valid]
            b_values = values.reshape(-1)[valid]
            n_valid = int(valid.sum())

            clipfracs = []
            approx_kl = torch.tensor(0.0)
            pg_loss = v_loss = entropy_loss = torch.tensor(0.0)
            for _epoch in range(args.update_epochs):
                perm = np.random.permutation(n_valid)
                for mb_inds in np.array_split(perm, args.num_minibatches):
                    mb = torch.as_tensor(mb_inds)
                    _, newlogprob, entropy, newvalue = agent.get_action_and_value(
                        b_obs[mb], b_actions[mb]
                    )
                    logratio = newlogprob - b_logprobs[mb]
                    ratio = logratio.exp()
                    with torch.no_grad():
                        approx_kl = ((ratio - 1) - logratio).mean()
                        clipfracs.append(((ratio - 1.0).abs() > args.clip_coef).float().mean())

                    mb_adv = b_advantages[mb]
                    mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                    pg_loss1 = -mb_adv * ratio
                    pg_loss2 = -mb_adv * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)
                    pg_loss = torch.max(pg_loss1, pg_loss2).mean()

                    newvalue = newvalue.view(-1)
                    if args.clip_vloss:
                        v_unclipped = (newvalue - b_returns[mb]) ** 2
                        v_clipped = b_values[mb] + torch.clamp(
                            newvalue - b_values[mb], -args.clip_coef, args.clip_coef
                        )
                        v_loss = 0.5 * torch.max(v_unclipped, (v_clipped - b_returns[mb]) ** 2)
                        v_loss = v_loss.mean()
                    else:
                        v_loss = 0.5 * ((newvalue - b_returns[mb]) ** 2).mean()
                    entropy_loss = entropy.mean()
                    loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef

                    optimizer.zero_grad()
                    loss.backward()
                    nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                    optimizer.step()
                if args.target_kl is not None and approx_kl > args.target_kl:
                    break

            if not args.quiet and (iteration % args.log_every == 0 or iteration == num_iterations):
                recent = np.mean(episode_returns[-20:]) if episode_returns else float("nan")
                sps = global_step / (time.perf_counter() - start)
                print(
                    f"iter {iteration}/{num_iterations} step {global_step} "
                    f"episodes {len(episode_returns)} return(last20) {recent:.1f} "
                    f"pg {pg_loss.item():.3f} v {v_loss.item():.2f} "
                    f"ent {entropy_loss.item():.3f} kl {approx_kl.item():.4f} "
                    f"clipfrac {float(np.mean(clipfracs)):.3f} sps {sps:.0f}",
                    flush=True,
                )
        elapsed = time.perf_counter() - start
    finally:
        envs.close()

    baseline = random_policy_mean_return(args.seed, args.random_episodes)
    last = deque(episode_returns, maxlen=20)
    summary = {
        "episodes": len(episode_returns),
        "global_steps": global_step,
        "mean_return_last_20": float(np.mean(last)) if last else float("nan"),
        "mean_length_last_20": float(np.mean(episode_lengths[-20:])) if last else float("nan"),
        "random_policy_mean_return": baseline,
        "steps_per_second": global_step / elapsed,
        "seconds": elapsed,
    }
    if not args.quiet:
        print(
            f"done: {summary['episodes']} episodes, mean return of the last 20 "
            f"{summary['mean_return_last_20']:.1f} vs random policy {baseline:.1f}; "
            f"{summary['steps_per_second']:.0f} steps/s over {elapsed:.1f}s",
            flush=True,
        )
    return summary


if __name__ == "__main__":
    main()
