"""``openenv-gym demo`` (a short rollout on local servers) and ``mcp`` (one env over stdio)."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any


def _demo(args: argparse.Namespace) -> int:
    import numpy as np

    from openenv_gym import RemoteVectorEnv

    started = time.perf_counter()
    with RemoteVectorEnv(args.env_id, args.num_envs, num_servers=args.servers) as envs:
        ready = time.perf_counter()
        envs.reset(seed=0)
        returns, episode_returns = np.zeros(args.num_envs), []
        steps_started = time.perf_counter()
        for _ in range(args.steps):
            _, rewards, terms, truncs, _ = envs.step(envs.action_space.sample())
            returns += rewards
            for index in np.flatnonzero(terms | truncs):
                episode_returns.append(returns[index])
                returns[index] = 0.0
        elapsed = time.perf_counter() - steps_started
    env_steps = args.steps * args.num_envs
    print(
        f"{args.num_envs} x {args.env_id} on {args.servers} local server(s), "
        f"ready in {ready - started:.2f} s"
    )
    print(
        f"{env_steps} env-steps in {elapsed:.2f} s = {env_steps / elapsed:,.0f} env-steps/s; "
        f"{len(episode_returns)} episodes, mean return "
        f"{np.mean(episode_returns) if episode_returns else float('nan'):.1f} (random policy)"
    )
    return 0


def _mcp(args: argparse.Namespace) -> int:
    import asyncio

    from openenv_gym.mcp import serve_stdio
    from openenv_gym.server.catalog import EnvCatalog

    env = EnvCatalog([args.env_id]).factory(args.env_id, {})()
    try:
        if args.mode == "production":  # the operator prepares the world; agents cannot reset it
            env.reset(seed=args.seed, options=json.loads(args.reset_options or "null"))
        asyncio.run(serve_stdio(env, mode=args.mode, name=args.env_id))
    finally:
        env.close()
    return 0


def add_commands(commands: Any) -> None:
    """Add ``demo`` and ``mcp`` to the command parser."""
    demo = commands.add_parser("demo", help="a short random rollout on local servers")
    demo.add_argument("env_id", nargs="?", default="CartPole-v1")
    demo.add_argument("--num-envs", type=int, default=64)
    demo.add_argument("--servers", type=int, default=2)
    demo.add_argument("--steps", type=int, default=500)
    demo.set_defaults(run=_demo)

    mcp = commands.add_parser("mcp", help="serve one env as MCP tools over stdio")
    mcp.add_argument("env_id", help="gymnasium id or module:attr entry point")
    mcp.add_argument(
        "--mode",
        choices=["simulation", "production"],
        default="simulation",
        help="simulation: reset/step/state + env tools; production: env tools only",
    )
    mcp.add_argument("--seed", type=int, help="production: the seed of the one reset at start")
    mcp.add_argument("--reset-options", help='production: JSON reset options, e.g. {"task": "x"}')
    mcp.set_defaults(run=_mcp)
