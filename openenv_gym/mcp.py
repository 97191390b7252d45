"""A hosted env as MCP tools (the official ``mcp`` SDK): one code path for trainers and agents.

* **simulation** mode (training, evaluation): tools ``reset``, ``step`` and ``state``, with JSON
  schemas derived from the env's spaces, plus the env's own tools;
* **production** mode (an agent acting in a live world): only the env's own tools; ``reset`` is
  never exposed, so an agent cannot reset its world.

An env declares its own tools by marking methods with ``openenv_gym.tools.tool``; the same
methods are what its ``step`` calls, and what ``RemoteEnv.call(name, ...)`` reaches through the
Gymnasium facade.
Values cross as JSON: observations and actions in gymnasium's ``to_jsonable`` form.

Serve with ``openenv-gym serve ENV --mcp-port M`` (streamable HTTP at ``/mcp``; the main port
speaks WebSocket, which the SDK's HTTP stack cannot share) or ``openenv-gym mcp ENV`` (stdio).
One env instance serves the MCP endpoint (an agent's world). The SDK is imported lazily.
"""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Callable
from typing import Any, Literal

import gymnasium
import numpy as np
import pydantic

from openenv_gym.interop.schema import schema_from_space
from openenv_gym.tools import tools

__all__ = [
    "Mode",
    "ToolRegistry",
    "build_mcp_server",
    "jsonable",
    "serve_http",
    "serve_stdio",
]

Mode = Literal["simulation", "production"]


def jsonable(value: Any) -> Any:
    """Turn numpy values (at any depth) into JSON values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    return value


def _method_schema(method: Callable[..., Any]) -> dict[str, Any]:
    """Return the JSON schema of a method's keyword arguments (from its annotations)."""
    empty = inspect.Parameter.empty
    hints = typing.get_type_hints(method)
    fields: dict[str, Any] = {}
    for name, parameter in inspect.signature(method).parameters.items():
        default = ... if parameter.default is empty else parameter.default
        fields[name] = (hints.get(name, Any), default)
    model = pydantic.create_model(f"{method.__name__}_arguments", **fields)
    schema: dict[str, Any] = model.model_json_schema()
    return schema


class ToolRegistry:
    """The tools of one env in one mode, and how to call them. No MCP types here.

    Args:
        env: the env (a gymnasium env, possibly wrapped).
        mode: ``"simulation"`` or ``"production"``.

    """

    def __init__(self, env: gymnasium.Env[Any, Any], mode: Mode) -> None:
        self.env = env
        self.mode = mode
        self.tools: dict[str, tuple[str, dict[str, Any], Callable[..., Any]]] = {}
        if mode == "simulation":
            self._add_simulation_tools()
        for name, method in tools(env.unwrapped).items():
            doc = (inspect.getdoc(method) or name).split("\n")[0]
            self.tools[name] = (doc, _method_schema(method), method)

    def _add_simulation_tools(self) -> None:
        env = self.env
        reset_schema = {
            "type": "object",
            "properties": {"seed": {"type": "integer"}, "options": {"type": "object"}},
        }
        step_schema = {
            "type": "object",
            "properties": {"action": schema_from_space(env.action_space)},
            "required": ["action"],
        }
        self.tools["reset"] = (
            "Start a new episode; returns the first observation.",
            reset_schema,
            self._reset,
        )
        self.tools["step"] = (
            "Act once; returns observation, reward, terminated, truncated, info.",
            step_schema,
            self._step,
        )
        self.tools["state"] = (
            "The episode's state.",
            {"type": "object", "properties": {}},
            self._state,
        )

    def _reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        obs, info = self.env.reset(seed=seed, options=options)
        return {"observation": self._obs(obs), "info": jsonable(info)}

    def _step(self, action: Any) -> Any:
        value = self.env.action_space.from_jsonable([action])[0]
        obs, reward, terminated, truncated, info = self.env.step(value)
        return {
            "observation": self._obs(obs),
            "reward": float(reward),
            "terminated": bool(terminated),
            "truncated": bool(truncated),
            "info": jsonable(info),
        }

    def _state(self) -> Any:
        state = getattr(self.env.unwrapped, "state", None)
        return jsonable(state() if callable(state) else state)

    def _obs(self, obs: Any) -> Any:
        return jsonable(self.env.observation_space.to_jsonable([obs])[0])

    def call(self, name: str, arguments: dict[str, Any]) -> Any:
        """Call tool ``name``; return its JSON result.

        Raises:
            KeyError: no such tool in this mode.
            Exception: whatever the tool raises.

        """
        if name not in self.tools:
            raise KeyError(f"no tool {name!r} in {self.mode} mode; tools: {sorted(self.tools)}")
        return jsonable(self.tools[name][2](**arguments))


def build_mcp_server(env: gymnasium.Env[Any, Any], *, mode: Mode, name: str) -> Any:
    """Return an ``mcp`` low-level ``Server`` exposing ``env``'s tools in ``mode``.

    Raises:
        ImportError: the ``mcp`` SDK is not installed (``pip install 'openenv-gym[mcp]'``).

    """
    from mcp import types
    from mcp.server.lowlevel import Server

    registry = ToolRegistry(env, mode)

    async def list_tools(context: Any, params: Any) -> Any:
        return types.ListToolsResult(
            tools=[
                types.Tool(name=tool_name, description=doc, input_schema=schema)
                for tool_name, (doc, schema, _) in registry.tools.items()
            ]
        )

    async def call_tool(context: Any, params: Any) -> Any:
        try:
            result = registry.call(params.name, dict(params.arguments or {}))
        except Exception as exc:  # reported to the agent as a tool error, the server lives on
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


async def serve_stdio(env: gymnasium.Env[Any, Any], *, mode: Mode, name: str) -> None:
    """Serve ``env``'s tools over this process's stdin/stdout until the client leaves."""
    from mcp.server.stdio import stdio_server

    server = build_mcp_server(env, mode=mode, name=name)
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


async def serve_http(
    env: gymnasium.Env[Any, Any], *, mode: Mode, name: str, host: str, port: int
) -> None:
    """Serve ``env``'s tools as streamable HTTP at ``http://host:port/mcp`` (uvicorn)."""
    import uvicorn

    app = build_mcp_server(env, mode=mode, name=name).streamable_http_app(host=host)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    await uvicorn.Server(config).serve()
