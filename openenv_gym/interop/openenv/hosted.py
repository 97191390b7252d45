"""OpenEnv environments as gymnasium envs, and any hosted env's JSON form for OpenEnv clients.

:class:`OpenEnvAsGym` wraps an OpenEnv ``Environment`` class so our server can host it like any
gymnasium env (batched, through ``SyncVectorEnv``): the spaces come from its Action and
Observation models (:mod:`~openenv_gym.interop.openenv.schema`), OpenEnv's ``reward``/``done``
become gymnasium's reward and ``terminated``, its ``metadata`` the info.

:func:`json_codec` gives the JSON form in which OpenEnv's own clients see a hosted env: an
OpenEnv env keeps its native models; a gymnasium env is shown as ``{"action": <value>}`` and
``{"observation": <value>}`` in gymnasium's ``to_jsonable`` form.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from typing import Any

import gymnasium
import numpy as np

from openenv_gym.interop.openenv.schema import Field, field_from_schema, schema_from_space

__all__ = ["JsonCodec", "OpenEnvAsGym", "is_openenv_environment", "json_codec"]

OBSERVATION_EXCLUDED = frozenset({"reward", "done", "metadata"})
ACTION_EXCLUDED = frozenset({"metadata"})


def is_openenv_environment(obj: Any) -> bool:
    """Tell whether ``obj`` is an OpenEnv ``Environment`` subclass (without importing OpenEnv)."""
    if not isinstance(obj, type):
        return False
    return any(
        base.__name__ == "Environment" and base.__module__.startswith("openenv.")
        for base in obj.__mro__[1:]
    )


def _model_types(env_class: type) -> tuple[type, type]:
    """Find an OpenEnv env class's Action and Observation models.

    From its generic base (``Environment[MyAction, MyObservation, MyState]``), else from the
    annotations of its ``step`` method.

    Raises:
        TypeError: neither names them.

    """
    for klass in env_class.__mro__:
        for base in getattr(klass, "__orig_bases__", ()):
            args = typing.get_args(base)
            if len(args) >= 2 and all(isinstance(arg, type) for arg in args[:2]):
                return args[0], args[1]
    hints = typing.get_type_hints(getattr(env_class, "step", None))
    action, observation = hints.get("action"), hints.get("return")
    if isinstance(action, type) and isinstance(observation, type):
        return action, observation
    raise TypeError(
        f"{env_class.__qualname__}: cannot tell its Action and Observation models; subclass "
        "Environment[MyAction, MyObservation, MyState] or annotate step(action) -> Observation"
    )


class OpenEnvAsGym(gymnasium.Env[Any, Any]):
    """A gymnasium view of an OpenEnv ``Environment`` instance.

    Args:
        env_class: the OpenEnv ``Environment`` subclass.
        **kwargs: its constructor's arguments.

    Raises:
        TypeError: the class does not name its Action and Observation models.

    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, env_class: type, **kwargs: Any) -> None:
        self.action_model, self.observation_model = _model_types(env_class)
        self.env = env_class(**kwargs)
        self.action_field: Field = field_from_schema(
            self.action_model.model_json_schema(),  # type: ignore[attr-defined]
            exclude=ACTION_EXCLUDED,
        )
        self.observation_field: Field = field_from_schema(
            self.observation_model.model_json_schema(),  # type: ignore[attr-defined]
            exclude=OBSERVATION_EXCLUDED,
        )
        self.action_space = self.action_field.space
        self.observation_space = self.observation_field.space

    def _convert(self, observation: Any) -> tuple[Any, dict[str, Any]]:
        data = observation.model_dump()
        return self.observation_field.from_json(data), dict(data.get("metadata") or {})

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset: ``options`` become OpenEnv reset keyword arguments (e.g. ``episode_id``).

        Without a seed the OpenEnv env gets one drawn from this env's ``np_random``, so that
        episodes after a seeded reset are reproducible, as gymnasium's contract has it.
        """
        super().reset(seed=seed)
        if seed is None:
            seed = int(self.np_random.integers(2**31 - 1))
        return self._convert(self.env.reset(seed=seed, **(options or {})))

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Step with a value of ``action_space``; ``done`` maps to ``terminated``."""
        model = self.action_model(**self.action_field.to_json(action))
        observation = self.env.step(model)
        obs, info = self._convert(observation)
        reward = 0.0 if observation.reward is None else float(observation.reward)
        return obs, reward, bool(observation.done), False, info

    def state(self) -> dict[str, Any]:
        """Return the OpenEnv env's state (episode id, step count, ...)."""
        state = self.env.state
        return dict(state.model_dump() if hasattr(state, "model_dump") else state or {})

    def close(self) -> None:
        """Close the OpenEnv env."""
        close = getattr(self.env, "close", None)
        if callable(close):
            close()


@dataclasses.dataclass(frozen=True)
class JsonCodec:
    """How a hosted env's actions and observations look to OpenEnv clients."""

    action_schema: dict[str, Any]
    observation_schema: dict[str, Any]
    action_from_json: Callable[[Any], Any]
    observation_to_json: Callable[[Any], dict[str, Any]]


def json_codec(env: gymnasium.Env[Any, Any]) -> JsonCodec:
    """Return the JSON form of ``env`` (native models for OpenEnv envs, see module doc)."""
    inner = env.unwrapped
    if isinstance(inner, OpenEnvAsGym):
        model: Any = inner.action_model

        def action_from_json(data: Any) -> Any:
            # Validate the raw JSON with the env's own model first, as OpenEnv's server does:
            # a missing field, an extra field or a wrong type is refused, not coerced.
            return inner.action_field.from_json(model.model_validate(data).model_dump())

        return JsonCodec(
            model.model_json_schema(),
            inner.observation_model.model_json_schema(),  # type: ignore[attr-defined]
            action_from_json,
            inner.observation_field.to_json,
        )
    action_space, observation_space = env.action_space, env.observation_space
    return JsonCodec(
        _wrapped_schema("action", schema_from_space(action_space)),
        _wrapped_schema("observation", schema_from_space(observation_space)),
        lambda data: action_space.from_jsonable([data["action"]])[0],
        lambda obs: {"observation": _plain(observation_space.to_jsonable([obs])[0])},
    )


def _wrapped_schema(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {name: schema}, "required": [name]}


def _plain(value: Any) -> Any:
    """Turn numpy leftovers of ``to_jsonable`` into JSON values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
