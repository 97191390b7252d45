"""Tools an env offers agents: methods marked with :func:`tool`.

The same methods serve three callers: the env's own ``step``, ``RemoteEnv.call(name, ...)``
through the Gymnasium facade, and MCP agents (``openenv_gym.mcp``), so a tool behaves the same
whoever calls it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["TOOL_MARK", "is_tool", "tool", "tools"]

TOOL_MARK = "__openenv_tool__"

_F = TypeVar("_F", bound=Callable[..., Any])


def tool(method: _F) -> _F:
    """Mark an env method as a tool agents may call.

    Returns the method itself, so its name, signature, annotations and docstring (what a tool
    listing shows) are unchanged.
    """
    setattr(method, TOOL_MARK, True)
    return method


def is_tool(method: object) -> bool:
    """Return whether ``method`` (a function or bound method) was marked with :func:`tool`."""
    return getattr(method, TOOL_MARK, False) is True


def tools(env: object) -> dict[str, Callable[..., Any]]:
    """Return the bound tool methods of ``env`` (an unwrapped env instance), by name.

    Looks at the class, so properties of the instance are not evaluated; private names are
    never tools.
    """
    return {
        name: getattr(env, name)
        for name, member in inspect.getmembers(type(env), callable)
        if not name.startswith("_") and is_tool(member)
    }
