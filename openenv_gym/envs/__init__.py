"""Environments shipped with openenv_gym, and the conventions they share.

Task sets (:class:`Task`, :class:`TaskSet`) say what an episode asks for and how its success is
checked. An env exposes the actions an agent can take as *tool methods*, marked with
:func:`tool`: its ``step`` goes through the same method, so a Gymnasium rollout and a tool call
(e.g. from an MCP layer, which lists them with :func:`tools`) behave identically.
"""

from __future__ import annotations

from openenv_gym.tools import is_tool, tool, tools

__all__ = ["Task", "TaskSet", "TerminalEnv", "is_tool", "tool", "tools"]

# After the tool helpers: the env modules import them from this (partly initialised) package.
from openenv_gym.envs.tasks import Task, TaskSet
from openenv_gym.envs.terminal import TerminalEnv
