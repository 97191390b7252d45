"""Tools an env offers agents: methods marked with :func:`tool`.

The same methods serve three callers: the env's own ``step``, ``RemoteEnv.call(name, ...)``
through the Gymnasium facade, and MCP agents (``openenv_gym.mcp``), so a tool behaves the same
whoever calls it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["TOOL_MARK", "tool", "tool_methods"]

TOOL_MARK = "__openenv_tool__"

_F = TypeVar("_F", bound=Callable[..., Any])


def tool(method: _F) -> _F:
    """Mark an env method as a tool agents may call (its docstring is the description)."""
    setattr(method, TOOL_MARK, True)
    return method


def tool_methods(env: Any) -> dict[str, Callable[..., Any]]:
    """Return the bound tool methods of ``env`` (unwrapped), by name."""
    return {
        name: method
        for name, method in inspect.getmembers(env, callable)
        if getattr(method, TOOL_MARK, False)
    }
