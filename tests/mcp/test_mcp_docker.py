"""An MCP agent in a Docker-hosted terminal env with no network, against the Gymnasium facade.

The MCP server runs inside the container (`openenv-gym mcp` over stdio through `docker exec -i`),
so the container needs no network at all; the Gymnasium facade drives the same env id in a
container of the same image. Skipped without an engine unless OPENENV_GYM_REQUIRE_ALL=1.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from openenv_gym.testing.optional import require_module, unavailable

require_module("mcp", family="mcp", install="pip install 'openenv-gym[mcp]'")

from mcp import Client, StdioServerParameters

import openenv_gym

pytestmark = pytest.mark.docker

TERMINAL = "openenv_gym.envs.terminal:TerminalEnv"
COMMANDS = ["ls", "printf 'Hello, terminal!\\n' > hello.txt", "cat hello.txt"]


@pytest.fixture(scope="module")
def offline_container(docker_client: Any, docker_image: str) -> Iterator[Any]:
    if shutil.which("docker") is None:
        unavailable("docker", "the docker CLI is needed for `docker exec -i`")
    container = docker_client.containers.run(
        docker_image,
        entrypoint=["sleep", "300"],
        network_mode="none",
        detach=True,
        mem_limit="512m",
        labels={"io.openenv-gym.server": "1", "io.openenv-gym.owner": "test"},
    )
    try:
        yield container
    finally:
        container.remove(force=True)


def _over_mcp(container: Any) -> tuple[set[str], list[dict[str, Any]], str]:
    params = StdioServerParameters(
        command="docker",
        args=[
            "exec",
            "-i",
            container.id,
            "openenv-gym",
            "mcp",
            TERMINAL,
            "--mode",
            "production",
            "--reset-options",
            json.dumps({"task": "hello-file"}),
        ],
    )

    async def session() -> tuple[set[str], list[dict[str, Any]], str]:
        async with Client(params) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            results = [
                (await client.call_tool("run", {"command": command})).structured_content
                for command in COMMANDS
            ]
            interfaces = await client.call_tool("run", {"command": "ls /sys/class/net"})
            return names, results, interfaces.structured_content["stdout"]

    return asyncio.run(session())


def test_mcp_agent_in_an_offline_container_matches_the_gymnasium_facade(
    offline_container: Any,
) -> None:
    names, over_mcp, interfaces = _over_mcp(offline_container)
    assert names == {"run"}  # production mode: the env's own tool, never reset
    assert interfaces.split() == ["lo"]  # no network but loopback inside the container
    with openenv_gym.RemoteEnv(TERMINAL, docker_image=offline_container.image.tags[0]) as env:
        env.reset(seed=0, options={"task": "hello-file"})
        over_gym = [env.step(command) for command in COMMANDS]
    assert [r["reward"] for r in over_mcp] == [step[1] for step in over_gym]
    assert [r["terminated"] for r in over_mcp] == [step[2] for step in over_gym]
    assert [r["stdout"] for r in over_mcp] == [step[0]["stdout"] for step in over_gym]
    assert over_mcp[-1]["reward"] == 1.0  # the verifier accepted the file: task solved
