"""Serve an env's MCP tools with the official SDK: streamable HTTP (uvicorn) or stdio."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
from collections.abc import Callable, Iterator
from typing import Any

import gymnasium

from openenv_gym.mcp.registry import Mode, ToolRegistry
from openenv_gym.mcp.runner import (
    DEFAULT_TOOL_THREADS,
    DEFAULT_TOOL_TIMEOUT,
    ToolRunner,
    ToolTimeoutError,
)
from openenv_gym.mcp.security import AccessMiddleware, transport_security
from openenv_gym.server.access import AccessPolicy

__all__ = ["build_mcp_server", "serve_http", "serve_stdio"]

logger = logging.getLogger("openenv_gym.mcp")


def build_mcp_server(
    env: gymnasium.Env[Any, Any],
    *,
    mode: Mode,
    name: str,
    tool_timeout: float = DEFAULT_TOOL_TIMEOUT,
    tool_threads: int = DEFAULT_TOOL_THREADS,
) -> Any:
    """Return an ``mcp`` low-level ``Server`` exposing ``env``'s tools in ``mode``.

    Args:
        env: the one env the tools act on.
        mode: ``"simulation"`` or ``"production"`` (see the module doc).
        name: the server's name, shown to agents.
        tool_timeout: seconds a tool call may take before it is answered with a tool error.
        tool_threads: worker threads running tool calls.

    Raises:
        ImportError: the ``mcp`` SDK is not installed (``pip install 'openenv-gym[mcp]'``).
        ValueError: ``tool_timeout`` or ``tool_threads`` is not positive.

    """
    from mcp import types
    from mcp.server.lowlevel import Server

    registry = ToolRegistry(env, mode)
    runner = ToolRunner(registry, timeout=tool_timeout, threads=tool_threads)

    async def list_tools(context: Any, params: Any) -> Any:
        return types.ListToolsResult(
            tools=[
                types.Tool(name=tool_name, description=doc, input_schema=schema)
                for tool_name, (doc, schema, _) in registry.tools.items()
            ]
        )

    async def call_tool(context: Any, params: Any) -> Any:
        try:
            result = await runner.call(params.name, dict(params.arguments or {}))
        except Exception as exc:  # reported to the agent as a tool error, the server lives on
            if isinstance(exc, ToolTimeoutError):
                logger.warning("mcp: %s", exc)
            message = f"{type(exc).__name__}: {exc}"
            return types.CallToolResult(
                content=[types.TextContent(type="text", text=message)], is_error=True
            )
        structured = result if isinstance(result, dict) else {"result": result}
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=json.dumps(result))],
            structured_content=structured,
        )

    return Server(name, on_list_tools=list_tools, on_call_tool=call_tool)


async def serve_stdio(
    env: gymnasium.Env[Any, Any],
    *,
    mode: Mode,
    name: str,
    tool_timeout: float = DEFAULT_TOOL_TIMEOUT,
) -> None:
    """Serve ``env``'s tools over this process's stdin/stdout until the client leaves."""
    from mcp.server.stdio import stdio_server

    server = build_mcp_server(env, mode=mode, name=name, tool_timeout=tool_timeout)
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def serve_http(
    env: gymnasium.Env[Any, Any],
    *,
    mode: Mode,
    name: str,
    host: str,
    port: int,
    policy: AccessPolicy | None = None,
    tool_timeout: float = DEFAULT_TOOL_TIMEOUT,
    on_bound: Callable[[int], None] | None = None,
) -> None:
    """Serve ``env``'s tools as streamable HTTP at ``http://host:port/mcp`` (uvicorn).

    The socket is bound before anything else, so once ``on_bound`` has been called clients can
    connect (they wait in the backlog while the app starts).

    Args:
        env: the one env the tools act on.
        mode: ``"simulation"`` or ``"production"``.
        name: the server's name, shown to agents.
        host: address to bind.
        port: port to bind (0: any free one).
        policy: the server's access policy (default: no token, no origin, loopback names).
        tool_timeout: seconds a tool call may take.
        on_bound: called with the bound port once the socket listens.

    Raises:
        OSError: the address cannot be bound.
        ImportError: the ``mcp`` SDK or uvicorn is not installed.

    """
    import uvicorn

    policy = policy or AccessPolicy()
    server = build_mcp_server(env, mode=mode, name=name, tool_timeout=tool_timeout)
    sdk_app = server.streamable_http_app(
        host=host, transport_security=transport_security(policy, host)
    )
    config = uvicorn.Config(AccessMiddleware(sdk_app, policy), log_level="warning", lifespan="on")
    sock = _bind(host, port)
    if on_bound is not None:
        on_bound(sock.getsockname()[1])
    try:
        await _uvicorn_server(config).serve(sockets=[sock])
    finally:
        sock.close()


def _uvicorn_server(config: Any) -> Any:
    """Return uvicorn's server minus its signal handlers: the hosting process owns the signals."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # SIGTERM/SIGINT stop the whole server, which cancels this task

    return Server(config)
