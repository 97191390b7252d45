"""An env's MCP tools and how to call them, with no MCP types: the mode's tool table.

* **simulation** mode (training, evaluation): tools ``reset``, ``step`` and ``state``, with JSON
  schemas derived from the env's spaces, plus the env's own tools;
* **production** mode (an agent acting in a live world): only the env's own tools; ``reset`` is
  never exposed, so an agent cannot reset its world.

Values cross as JSON: observations and actions in gymnasium's ``to_jsonable`` form.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any, Literal

import gymnasium
import numpy as np
import pydantic

from openenv_gym.interop.openenv.schema import schema_from_space
from openenv_gym.tools import tools

__all__ = ["Mode", "ToolRegistry", "jsonable"]

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
