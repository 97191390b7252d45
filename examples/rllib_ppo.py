"""RLlib PPO whose EnvRunners each drive a ``RemoteVectorEnv`` of servers that are Ray actors.

Everything runs on one Ray cluster: RLlib's EnvRunner actors sample, and each one's vector env
is ``openenv_gym:openenv/CartPole-v1`` made by ``gymnasium.make_vec`` (RLlib's own call) with
``provider="ray"``: its environment servers are ``OpenEnvGymServer`` actors of the same cluster,
placed by a placement group per EnvRunner (``SPREAD`` over the nodes), one message per server
per step. Usage::

    python examples/rllib_ppo.py --iterations 20                  # a local Ray of its own
    python examples/rllib_ppo.py --address auto --env-runners 8   # a running cluster

RLlib 2.60 declares ``gymnasium==1.2.2`` in its ``rllib`` extra, but runs with gymnasium 1.4:
install RLlib's other dependencies (``pip install 'openenv-gym[rllib]'``) rather than
``ray[rllib]``, which would downgrade gymnasium for everything else. RLlib assumes gymnasium's
default ``NEXT_STEP`` autoreset, which is ``RemoteVectorEnv``'s default too.

Prints a line per iteration and returns (from :func:`main`) a summary: iterations, env steps
sampled, episodes, mean return, and where the env servers ran.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import ray
from ray.rllib.algorithms.ppo import PPOConfig

ENV = "openenv_gym:openenv/CartPole-v1"  # the module prefix registers the id in each worker


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--address", help="a running Ray cluster (default: start a local one)")
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--env-runners", type=int, default=2, help="RLlib EnvRunner actors")
    p.add_argument("--envs-per-runner", type=int, default=8, help="envs of each vector env")
    p.add_argument("--servers-per-runner", type=int, default=2, help="servers per vector env")
    p.add_argument("--cpus-per-runner", type=float, default=0.5)
    p.add_argument("--cpus-per-server", type=float, default=0.5)
    p.add_argument("--batch-size", type=int, default=1024, help="train batch per iteration")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace) -> PPOConfig:
    """Return PPO on CartPole whose sampling envs are remote, on Ray-actor servers."""
    env_config = {
        "num_servers": args.servers_per_runner,
        "provider": "ray",
        "provider_options": {"num_cpus": args.cpus_per_server, "strategy": "SPREAD"},
    }
    return (
        PPOConfig()
        .environment(ENV, env_config=env_config)
        .env_runners(
            num_env_runners=args.env_runners,
            num_envs_per_env_runner=args.envs_per_runner,
            num_cpus_per_env_runner=args.cpus_per_runner,
            # RLlib's gymnasium.make_vec then calls our vector entry point with env_config.
            gym_env_vectorize_mode="vector_entry_point",
            rollout_fragment_length="auto",
        )
        .training(
            train_batch_size_per_learner=args.batch_size,
            minibatch_size=min(256, args.batch_size),
            num_epochs=4,
            lr=3e-4,
        )
        .learners(num_learners=0)
        .debugging(seed=args.seed)
    )


def _server_nodes() -> list[str]:
    """Return the node id of every live env-server actor (the state API needs the dashboard)."""
    from ray.util.state import list_actors

    actors = list_actors(filters=[("class_name", "=", "OpenEnvGymServer"), ("state", "=", "ALIVE")])
    return [actor.node_id for actor in actors]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(address=args.address, log_to_driver=False)
    algo = build_config(args).build_algo()
    summary: dict[str, Any] = {"iterations": 0, "returns": []}
    try:
        summary["server_nodes"] = _server_nodes()
        started = time.perf_counter()
        for _ in range(args.iterations):
            result = algo.train()
            runners = result["env_runners"]
            summary["iterations"] = result["training_iteration"]
            summary["env_steps"] = result["num_env_steps_sampled_lifetime"]
            summary["episodes"] = runners.get("num_episodes_lifetime", 0)
            mean = runners.get("episode_return_mean")
            if mean is not None:
                summary["returns"].append(float(mean))
            if not args.quiet:
                print(
                    f"iteration {summary['iterations']}: {summary['env_steps']} env steps, "
                    f"{summary['episodes']} episodes, mean return {mean}",
                    flush=True,
                )
        summary["seconds"] = time.perf_counter() - started
    finally:
        algo.stop()
        if started_ray:
            ray.shutdown()
    return summary


if __name__ == "__main__":
    print(main())
