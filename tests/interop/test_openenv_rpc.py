"""OpenEnv 0.10's own tools against our server: ``openenv validate --url``, its MCP client."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import gymnasium
import numpy as np
import pytest

from openenv_gym.testing.optional import require_module

require_module("openenv", family="openenv", install="pip install 'openenv-gym[openenv]'")

from openenv_gym.providers.local import LocalProvider
from openenv_gym.testing.rawws import ws_connection

WORD_GAME = "openenv_gym.testing.openenv_echo:WordGuessEnv"
CALCULATOR = "openenv_gym.testing.openenv_echo:CalculatorMcpEnv"


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A server started with the CLI, hosting CartPole first (``/ws``'s default)."""
    with LocalProvider(["CartPole-v1", WORD_GAME, CALCULATOR]) as provider:
        yield provider.urls[0].replace("ws://", "http://")


def _post(url: str, payload: Any) -> Any:
    request = urllib.request.Request(
        f"{url}/mcp", data=json.dumps(payload).encode(), headers={"Content-Type": "x"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        return json.loads(response.read())


def test_openenv_validate_url_passes_every_runtime_check(server: str) -> None:
    openenv = [sys.executable, "-c", "from openenv.cli.__main__ import main; main()"]
    done = subprocess.run(
        [*openenv, "validate", "--url", server, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["passed"] and report["mode"] == "production"
    assert report["summary"]["passed_count"] == report["summary"]["total_count"] == 6
    assert {c["id"] for c in report["criteria"] if c["passed"]} >= {
        "openapi_version_available",
        "mcp_endpoint",
        "mode_endpoint_consistency",
    }


def test_openenv_mcp_tool_client_drives_a_hosted_env_like_in_process(server: str) -> None:
    from openenv.core.mcp_client import MCPToolClient

    local = gymnasium.make("CartPole-v1")

    async def run() -> None:
        async with MCPToolClient(base_url=server) as client:
            result = await client.reset(seed=5)  # over /ws?session_id=, the same env as tools
            obs, _ = local.reset(seed=5)
            np.testing.assert_allclose(result.observation.observation, obs, rtol=1e-6)
            assert [tool.name for tool in await client.list_tools()] == ["reset", "step", "state"]
            for t in range(10):
                reply = await client.call_tool("step", action=t % 2)
                obs, reward, terminated, _, _ = local.step(t % 2)
                np.testing.assert_allclose(reply["observation"], obs, rtol=1e-6)
                assert (reply["reward"], reply["terminated"]) == (reward, terminated)
            with pytest.raises(RuntimeError, match="Tool not found: nope"):
                await client.call_tool("nope")

    asyncio.run(run())


def test_openenv_mcp_sessions_over_http_are_created_used_and_closed(server: str) -> None:
    created = _post(server, {"jsonrpc": "2.0", "id": 1, "method": "openenv/session/create"})
    session_id = created["result"]["session_id"]
    reset = _post(
        server,
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "reset", "arguments": {"seed": 2}, "session_id": session_id},
        },
    )
    assert reset["id"] == 2 and len(reset["result"]["observation"]) == 4
    closing = {"jsonrpc": "2.0", "id": 3, "method": "openenv/session/close"}
    closing["params"] = {"session_id": session_id}
    assert _post(server, closing)["result"] == {"session_id": session_id, "closed": True}
    again = _post(server, closing)
    assert again["error"]["code"] == -32602 and "Unknown session_id" in again["error"]["message"]


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({}, -32600),
        ({"jsonrpc": "2.0", "id": 9, "method": "no/such"}, -32601),
        ({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": []}, -32602),
        ({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {}}, -32602),
    ],
)
def test_openenv_mcp_bad_requests_are_json_rpc_errors(server: str, payload: Any, code: int) -> None:
    reply = _post(server, payload)
    assert reply["jsonrpc"] == "2.0" and reply["error"]["code"] == code


def test_openenv_ws_mcp_message_lists_the_tools_of_its_own_env(server: str) -> None:
    url = server.replace("http://", "ws://") + "/ws"
    with ws_connection(url, 10) as ws:
        ws.send(json.dumps({"type": "reset", "data": {"seed": 0}}))
        assert json.loads(ws.recv(10))["type"] == "observation"
        rpc = {"jsonrpc": "2.0", "id": 4, "method": "tools/call"}
        rpc["params"] = {"name": "step", "arguments": {"action": 1}}
        ws.send(json.dumps({"type": "mcp", "data": rpc}))
        reply = json.loads(ws.recv(10))
        assert reply["type"] == "mcp" and reply["data"]["result"]["reward"] == 1.0
        ws.send(json.dumps({"type": "state"}))
        assert json.loads(ws.recv(10))["data"]["step_count"] == 0  # a tool, not a /ws step


def test_openenv_post_to_other_routes_is_refused(server: str) -> None:
    request = urllib.request.Request(f"{server}/schema", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 405


def test_openenv_auto_env_connects_to_a_hosted_env(server: str) -> None:
    from openenv.auto import AutoEnv

    local = gymnasium.make("CartPole-v1")
    client = AutoEnv.from_env("cartpole", base_url=server, skip_install=True)
    with client.sync() as env:
        obs, _ = local.reset(seed=8)
        assert env.reset(seed=8).observation["observation"] == pytest.approx(obs.tolist())
        for t in range(5):
            result = env.step({"action": t % 2})
            obs, reward, *_ = local.step(t % 2)
            assert result.observation["observation"] == pytest.approx(obs.tolist())
            assert result.reward == reward


def test_openenv_mcp_environment_we_host_serves_its_own_fastmcp_tools(server: str) -> None:
    from openenv.core.mcp_client import MCPToolClient

    base = f"{server}/envs/{urllib.parse.quote(CALCULATOR, safe='')}"
    with MCPToolClient(base_url=base).sync() as client:
        client.reset()
        tools = client.list_tools()
        assert [(tool.name, tool.description) for tool in tools] == [("add", "Add two integers.")]
        assert client.call_tool("add", a=2, b=40) == 42
