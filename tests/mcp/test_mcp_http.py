"""The MCP HTTP port beside a server: one access check, tools off the event loop, deadlines."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import gymnasium
import pytest
from gymnasium.envs.registration import EnvSpec

from openenv_gym.testing.optional import require_module

require_module("mcp", family="mcp", install="pip install 'openenv-gym[mcp]'")

from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

import openenv_gym
from openenv_gym.mcp import build_mcp_server
from openenv_gym.providers.local import LocalProvider
from openenv_gym.testing.compliance._support import free_port, wait_listening
from openenv_gym.testing.envs import SlowToolEnv

SLOW_TOOL = "openenv_gym.testing.envs:SlowToolEnv"
COUNTER = "openenv_gym.testing.envs:CounterEnv"
TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@contextlib.asynccontextmanager
async def mcp_client(url: str, headers: dict[str, str] | None = None) -> AsyncIterator[Client]:
    """Open the SDK's client on ``url``, sending ``headers`` with every request."""
    async with (
        create_mcp_http_client(headers=headers) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        yield client


def sdk_failure(coroutine: Any) -> str:
    """Run ``coroutine``, which must fail; return the text of its innermost errors."""
    try:
        asyncio.run(coroutine)
    except BaseException as exc:  # the SDK raises exception groups from its task groups
        errors, leaves = [exc], []
        while errors:
            error = errors.pop()
            nested = getattr(error, "exceptions", None)
            if nested:
                errors.extend(nested)
            else:
                leaves.append(f"{type(error).__name__}: {error}")
        return "; ".join(leaves)
    raise AssertionError("the MCP client succeeded")


def post_status(url: str, headers: dict[str, str]) -> tuple[int, str]:
    """POST an MCP ``initialize`` request; return the HTTP status and the body's first line."""
    body = (
        b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":'
        b'"2025-06-18","capabilities":{},"clientInfo":{"name":"test","version":"1"}}}'
    )
    request = urllib.request.Request(
        url,
        data=body,
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            **headers,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode().split("\n")[0]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode().split("\n")[0]


@pytest.fixture(scope="module")
def guarded() -> Iterator[tuple[str, str]]:
    """A server with a token hosting SlowToolEnv, its MCP port beside it: (ws url, mcp url)."""
    port = free_port()
    with LocalProvider([SLOW_TOOL], extra_args=["--mcp-port", str(port)], token=TOKEN) as provider:
        wait_listening(port, 20)
        yield provider.urls[0], f"http://127.0.0.1:{port}/mcp"


async def _tool_names(url: str, headers: dict[str, str] | None) -> set[str]:
    async with mcp_client(url, headers) as client:
        return {tool.name for tool in (await client.list_tools()).tools}


def test_mcp_streamable_http_beside_the_server_in_production_mode() -> None:
    port = free_port()
    args = ["--mcp-port", str(port), "--mcp-mode", "production"]
    with LocalProvider([COUNTER], extra_args=args):
        wait_listening(port, 20)  # the first request must succeed: no retries
        assert asyncio.run(_tool_names(f"http://127.0.0.1:{port}/mcp", None)) == {"add"}


def test_mcp_http_without_the_token_is_refused_with_401(guarded: tuple[str, str]) -> None:
    _, url = guarded
    assert post_status(url, {}) == (401, "invalid or missing token")
    assert post_status(url, {"Authorization": "Bearer guess"})[0] == 401
    # The SDK's client reports any refusal as one generic error (the status is not kept).
    assert "Server returned an error response" in sdk_failure(_tool_names(url, None))


def test_mcp_http_with_the_token_serves_the_tools(guarded: tuple[str, str]) -> None:
    _, url = guarded
    assert asyncio.run(_tool_names(url, AUTH)) == {"reset", "step", "state", "wait"}


def test_mcp_http_foreign_origin_is_refused_with_403(guarded: tuple[str, str]) -> None:
    _, url = guarded
    status, reason = post_status(url, {**AUTH, "Origin": "https://evil.example"})
    assert status == 403 and "origin 'https://evil.example' is not allowed" in reason
    failure = sdk_failure(_tool_names(url, {**AUTH, "Origin": "https://evil.example"}))
    assert "Server returned an error response" in failure


def test_mcp_http_rebound_host_is_refused(guarded: tuple[str, str]) -> None:
    _, url = guarded
    # The SDK's DNS-rebinding check is on: a name nobody listed is refused even with the token.
    assert post_status(url, {**AUTH, "Host": "evil.example"})[0] == 421


def test_mcp_slow_tool_does_not_stall_the_main_port(guarded: tuple[str, str]) -> None:
    ws_url, mcp_url = guarded
    latencies: list[float] = []
    done = threading.Event()

    def step_meanwhile() -> None:
        with openenv_gym.RemoteEnv(SLOW_TOOL, url=ws_url, token=TOKEN) as env:
            env.reset(seed=0)
            while not done.is_set():
                start = time.monotonic()
                env.step(0)
                latencies.append(time.monotonic() - start)

    async def slow_call() -> tuple[Any, float]:
        async with mcp_client(mcp_url, AUTH) as client:
            start = time.monotonic()
            result = await client.call_tool("wait", {"seconds": 2.0})
            return result, time.monotonic() - start

    stepper = threading.Thread(target=step_meanwhile)
    stepper.start()
    try:
        result, elapsed = asyncio.run(slow_call())
    finally:
        done.set()
        stepper.join(10)
    assert not result.is_error and result.structured_content == {"waited": 2.0}
    assert elapsed >= 2.0
    assert len(latencies) > 20, "the main port answered too few steps while the tool ran"
    assert max(latencies) < 0.5, f"a step waited {max(latencies):.2f} s for the MCP tool"


def _slow_server(timeout: float) -> tuple[Any, SlowToolEnv]:
    env = gymnasium.make(EnvSpec(id=SLOW_TOOL, entry_point=SLOW_TOOL))
    inner = env.unwrapped
    assert isinstance(inner, SlowToolEnv)
    return build_mcp_server(env, mode="production", name="slow", tool_timeout=timeout), inner


def test_mcp_tool_over_its_deadline_is_a_tool_error_naming_it() -> None:
    server, _ = _slow_server(timeout=0.3)

    async def call() -> tuple[Any, float]:
        async with Client(server) as client:
            start = time.monotonic()
            result = await client.call_tool("wait", {"seconds": 1.5})
            return result, time.monotonic() - start

    result, elapsed = asyncio.run(call())
    assert result.is_error and elapsed < 1.2
    text = result.content[0].text
    assert "ToolTimeoutError: tool 'wait' did not return within 0.3 s (elapsed 0." in text


def test_mcp_tool_calls_never_run_on_the_env_at_once() -> None:
    server, env = _slow_server(timeout=10)

    async def calls() -> tuple[list[Any], float]:
        async with Client(server) as client:
            start = time.monotonic()
            results = await asyncio.gather(
                *(client.call_tool("wait", {"seconds": 0.3}) for _ in range(3))
            )
            return results, time.monotonic() - start

    results, elapsed = asyncio.run(calls())
    assert [r.is_error for r in results] == [False, False, False]
    assert env.max_active == 1 and elapsed >= 0.9


def test_mcp_tool_timeout_flag_reaches_the_http_port() -> None:
    port = free_port()
    args = ["--mcp-port", str(port), "--mcp-tool-timeout", "0.3"]
    with LocalProvider([SLOW_TOOL], extra_args=args, token=TOKEN):
        wait_listening(port, 20)

        async def call() -> Any:
            async with mcp_client(f"http://127.0.0.1:{port}/mcp", AUTH) as client:
                return await client.call_tool("wait", {"seconds": 1.5})

        result = asyncio.run(call())
    assert result.is_error
    assert "tool 'wait' did not return within 0.3 s" in result.content[0].text
