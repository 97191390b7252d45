"""A hosted env as MCP tools (the official ``mcp`` SDK): one code path for trainers and agents.

* **simulation** mode (training, evaluation): tools ``reset``, ``step`` and ``state``, with JSON
  schemas derived from the env's spaces, plus the env's own tools;
* **production** mode (an agent acting in a live world): only the env's own tools; ``reset`` is
  never exposed, so an agent cannot reset its world.

An env declares its own tools by marking methods with ``openenv_gym.tools.tool``; the same
methods are what its ``step`` calls, and what ``RemoteEnv.call(name, ...)`` reaches through the
Gymnasium facade.

Serve with ``openenv-gym serve ENV --mcp-port M`` (streamable HTTP at ``/mcp``; the main port
speaks WebSocket, which the SDK's HTTP stack cannot share) or ``openenv-gym mcp ENV`` (stdio).
One env instance serves the MCP endpoint (an agent's world). The SDK is imported lazily.

Modules: ``registry`` (the tool table, no MCP types), ``runner`` (tool calls on worker threads,
one at a time on the env, with deadlines), ``security`` (the server's access policy on every
HTTP request, the SDK's DNS-rebinding settings), ``server`` (the SDK's server, HTTP and stdio).
"""

from __future__ import annotations

from openenv_gym.mcp.registry import Mode, ToolRegistry, jsonable
from openenv_gym.mcp.runner import (
    DEFAULT_TOOL_THREADS,
    DEFAULT_TOOL_TIMEOUT,
    ToolRunner,
    ToolTimeoutError,
)
from openenv_gym.mcp.security import AccessMiddleware, transport_security
from openenv_gym.mcp.server import build_mcp_server, serve_http, serve_stdio

__all__ = [
    "DEFAULT_TOOL_THREADS",
    "DEFAULT_TOOL_TIMEOUT",
    "AccessMiddleware",
    "Mode",
    "ToolRegistry",
    "ToolRunner",
    "ToolTimeoutError",
    "build_mcp_server",
    "jsonable",
    "serve_http",
    "serve_stdio",
    "transport_security",
]
