"""MCP tools with the official SDK's client: same trajectory as the Gymnasium facade."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import gymnasium
import numpy as np

from openenv_gym.testing.optional import require_module

require_module("mcp", family="mcp", install="pip install 'openenv-gym[mcp]'")

from mcp import Client, StdioServerParameters

import openenv_gym
from openenv_gym.mcp import build_mcp_server
from openenv_gym.providers.local import LocalProvider
from openenv_gym.testing.envs import CounterEnv

COUNTER = "openenv_gym.testing.envs:CounterEnv"


def _run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def _trajectory(server: Any, seed: int, actions: list[int]) -> list[Any]:
    async with Client(server) as client:
        first = (await client.call_tool("reset", {"seed": seed})).structured_content
        steps = [first["observation"]]
        for action in actions:
            result = (await client.call_tool("step", {"action": action})).structured_content
            steps.append(
                (result["observation"], result["reward"], result["terminated"], result["truncated"])
            )
        return steps


def test_mcp_simulation_tools_and_schemas() -> None:
    server = build_mcp_server(gymnasium.make("CartPole-v1"), mode="simulation", name="cartpole")

    async def tools() -> dict[str, Any]:
        async with Client(server) as client:
            return {t.name: t.input_schema for t in (await client.list_tools()).tools}

    schemas = _run(tools())
    assert set(schemas) == {"reset", "step", "state"}
    assert schemas["step"]["properties"]["action"] == {
        "type": "integer",
        "minimum": 0,
        "maximum": 1,
    }


def test_mcp_trajectory_equals_the_gymnasium_facade() -> None:
    actions = [1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 1, 0]
    server = build_mcp_server(gymnasium.make("CartPole-v1"), mode="simulation", name="cartpole")
    over_mcp = _run(_trajectory(server, 3, actions))
    with (
        LocalProvider(["CartPole-v1"]) as provider,
        openenv_gym.RemoteEnv("CartPole-v1", url=provider.urls[0]) as env,
    ):
        obs, _ = env.reset(seed=3)
        over_gym: list[Any] = [obs.tolist()]
        for action in actions:
            obs, reward, terminated, truncated, _ = env.step(action)
            over_gym.append((obs.tolist(), reward, terminated, truncated))
    assert over_mcp == over_gym


def test_mcp_production_mode_hides_reset_and_exposes_env_tools() -> None:
    env = gymnasium.make(gymnasium.envs.registration.EnvSpec(id=COUNTER, entry_point=CounterEnv))
    env.reset(seed=0)
    start = int(env.unwrapped.total)
    server = build_mcp_server(env, mode="production", name="counter")

    async def session() -> tuple[set[str], Any, Any, Any]:
        async with Client(server) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            added = await client.call_tool("add", {"amount": 3})
            refused = await client.call_tool("reset", {"seed": 1})
            invalid = await client.call_tool("add", {"amount": 9})
            return names, added, refused, invalid

    names, added, refused, invalid = _run(session())
    assert names == {"add"}
    assert added.structured_content == {"total": start + 3, "done": start + 3 >= 10}
    assert refused.is_error and "no tool 'reset'" in refused.content[0].text
    assert invalid.is_error and "amount must be in 0..4" in invalid.content[0].text


def test_mcp_env_tool_is_the_same_code_path_as_the_gymnasium_facade() -> None:
    with (
        LocalProvider([COUNTER]) as provider,
        openenv_gym.RemoteEnv(COUNTER, url=provider.urls[0]) as env,
    ):
        obs, _ = env.reset(seed=0)
        assert env.call("add", 2) == {"total": int(obs) + 2, "done": int(obs) + 2 >= 10}
        obs, reward, *_ = env.step(np.int64(1))
        assert int(obs) == int(env.get_attr("total")) and reward == 1.0


def test_mcp_over_stdio_with_the_cli() -> None:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "openenv_gym", "mcp", "CartPole-v1"]
    )
    steps = _run(_trajectory(params, 5, [1, 0, 1]))
    local = gymnasium.make("CartPole-v1")
    obs, _ = local.reset(seed=5)
    assert steps[0] == obs.tolist()
    assert steps[-1][0] == [local.step(a)[0] for a in (1, 0, 1)][-1].tolist()


def test_mcp_cli_production_mode_over_stdio() -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "openenv_gym", "mcp", COUNTER, "--mode", "production"],
    )

    async def names() -> set[str]:
        async with Client(params) as client:
            return {t.name for t in (await client.list_tools()).tools}

    assert _run(names()) == {"add"}
