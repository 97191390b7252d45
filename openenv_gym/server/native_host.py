"""NativeHost: a session's envs as the spec's own ``gymnasium.vector.VectorEnv``. No I/O here.

Built by ``gymnasium.make_vec(spec, num_envs, vectorization_mode="vector_entry_point",
**kwargs)`` with the operator's kwargs policy applied as for any MAKE
(:meth:`~openenv_gym.server.catalog.HostedEnv.make_kwargs`). The engine runs the autoreset mode
it declares in ``metadata["autoreset_mode"]``; a client asking for another gets an
:class:`~openenv_gym.errors.AutoresetModeMismatchError`.

Replies keep the batched shape (obs batch, reward/terminated/truncated arrays, info), but infos
are the engine's own vector-merged dict (``MakeReply.info_form == "vector"``), not the
``[env_index, info]`` merges of a :class:`~openenv_gym.server.host.BatchHost`. Every step is a
handful of whole-array operations: no per-env Python anywhere.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from typing import Any

import gymnasium
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv

from openenv_gym.errors import (
    AttributeNotAllowedError,
    AutoresetModeMismatchError,
    MessageTooLargeError,
    VectorizationError,
)
from openenv_gym.protocol.spaces import space_to_data
from openenv_gym.server.catalog import HostedEnv
from openenv_gym.server.host import EnvHost, _frame_bytes, _portable_metadata
from openenv_gym.server.native_checks import (
    ENGINE_METHODS,
    check_actions,
    check_flags,
    check_reset_mask,
)

__all__ = ["NativeHost"]

_MAKE_ONLY_KWARGS = ("disable_env_checker",)
"""``gymnasium.make``'s own kwargs, which ``make_vec``'s vector_entry_point mode does not take."""


def _engine_mode(engine: VectorEnv[Any, Any, Any]) -> AutoresetMode:
    mode = engine.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
    return AutoresetMode(mode)


class NativeHost(EnvHost):
    """``num_envs`` envs run by the hosted spec's native vector env (its ``vector_entry_point``).

    Args:
        hosted: the hosted spec, with the operator's policy.
        client_kwargs: the client's MAKE kwargs (checked against the policy).
        num_envs: how many envs the engine runs.
        autoreset_mode: the mode the client asks for; ``None``: whatever the engine declares.

    Raises:
        VectorizationError: the spec has no ``vector_entry_point``.
        AutoresetModeMismatchError: the engine declares another autoreset mode.
        KwargNotAllowedError: a kwarg is not allowed by the operator's policy.
        ValueError: ``num_envs`` is below 1.
        Exception: whatever the engine's constructor raises.

    """

    def __init__(
        self,
        hosted: HostedEnv,
        client_kwargs: Mapping[str, Any],
        *,
        num_envs: int,
        autoreset_mode: AutoresetMode | None,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1 for a native vector env: {num_envs}")
        spec = hosted.spec
        if spec.vector_entry_point is None:
            raise VectorizationError(
                hosted.env_id,
                "vector_entry_point",
                f"its spec {spec.id!r} has no vector_entry_point; use server_vectorization='sync'",
            )
        kwargs = hosted.make_kwargs(client_kwargs)
        if autoreset_mode in getattr(spec.vector_entry_point, "autoreset_modes", ()):
            kwargs["autoreset_mode"] = autoreset_mode  # an engine that builds several modes
        for name in _MAKE_ONLY_KWARGS:
            kwargs.pop(name, None)
        if kwargs.get("max_episode_steps", 0) is None:
            del kwargs["max_episode_steps"]  # "no override": make_vec then applies the spec's
        engine = gymnasium.make_vec(
            dataclasses.replace(spec), num_envs, vectorization_mode="vector_entry_point", **kwargs
        )
        mode = _engine_mode(engine)
        if autoreset_mode is not None and autoreset_mode is not mode:
            engine.close()
            raise AutoresetModeMismatchError(hosted.env_id, autoreset_mode.value, mode.value)
        self.autoreset_mode = mode
        self.env_id = hosted.env_id
        self._engine: VectorEnv[Any, Any, Any] | None = engine
        self._max_episode_steps = kwargs.get("max_episode_steps", spec.max_episode_steps)
        self.envs = []
        self.num_envs = num_envs
        self._session_id = uuid.uuid4().hex
        # Per env: episode number, and the step number its episode started at (so a step
        # touches only the envs whose episode ends, never all of them).
        self._episodes = np.zeros(num_envs, dtype=np.int64)
        self._starts = np.zeros(num_envs, dtype=np.int64)
        self._steps = 0
        self._was_done = np.zeros(num_envs, dtype=bool)
        self._unsettled: tuple[Any, Any] | None = None  # the last step's flags, not yet counted

    def _active(self) -> VectorEnv[Any, Any, Any]:
        """Return the engine, the last step settled: its flags may be the engine's buffers."""
        assert self._engine is not None, "the host is closed"
        self.settle()
        return self._engine

    def describe(self) -> dict[str, Any]:
        """Return the ``MakeReply`` fields, with the engine's autoreset mode and info form."""
        engine = self._active()
        spec = engine.spec
        return {
            "observation_space": space_to_data(engine.single_observation_space),
            "action_space": space_to_data(engine.single_action_space),
            "metadata": _portable_metadata(engine.metadata),
            "render_mode": engine.render_mode,
            "max_episode_steps": self._max_episode_steps,
            "reward_threshold": None if spec is None else spec.reward_threshold,
            "nondeterministic": False if spec is None else spec.nondeterministic,
            "autoreset_mode": self.autoreset_mode.value,
            "info_form": "vector",
        }

    def _new_episodes(self, mask: np.ndarray[Any, Any]) -> None:
        started = np.flatnonzero(mask)
        if started.size:
            self._starts[started] = self._steps
            self._episodes[started] += 1

    def reset(
        self, seed: int | list[int | None] | None, options: dict[str, Any] | None
    ) -> list[Any]:
        """Reset the engine (the envs of ``options["reset_mask"]`` if it supports them).

        Returns:
            ``[obs, infos]``, ``infos`` the engine's vector-merged dict.

        """
        mask = None if options is None else options.get("reset_mask")
        if mask is not None:
            check_reset_mask(mask, self.num_envs)
        # A list of seeds goes to the engine as is: it accepts it or raises, as in-process.
        obs, infos = self._active().reset(seed=seed, options=options)  # type: ignore[arg-type]
        reset = np.ones(self.num_envs, dtype=bool) if mask is None else mask  # checked: bool
        self._new_episodes(reset)
        self._was_done &= ~reset
        return [obs, infos]

    def step(self, actions: Any) -> list[Any]:
        """Step the engine and return ``[obs, rewards, terminations, truncations, infos]``.

        The episode bookkeeping of the step waits for :meth:`settle` (the server's call once
        the reply is written, or the next request's).
        """
        engine = self._active()
        check_actions(engine.single_action_space, engine.action_space, actions, self.num_envs)
        obs, rewards, terminations, truncations, infos = engine.step(actions)
        check_flags(self.env_id, self.num_envs, terminations, truncations)
        self._steps += 1
        self._unsettled = (terminations, truncations)
        return [obs, rewards, terminations, truncations, infos]

    def settle(self) -> None:
        """Count the episodes the last step ended and started (touching only those envs)."""
        flags, self._unsettled = self._unsettled, None
        if flags is None:
            return
        terminations, truncations = flags
        if self.autoreset_mode is AutoresetMode.NEXT_STEP:
            self._new_episodes(self._was_done)
            self._was_done = np.logical_or(terminations, truncations)
        elif self.autoreset_mode is AutoresetMode.SAME_STEP:
            self._new_episodes(np.logical_or(terminations, truncations))

    def render(self, *, max_bytes: int | None = None) -> Any:
        """Return the engine's frames.

        Raises:
            MessageTooLargeError: the frames are over ``max_bytes``.

        """
        frames = self._active().render()
        size = _frame_bytes(frames)
        if max_bytes is not None and size > max_bytes:
            raise MessageTooLargeError(size, max_bytes)
        return frames

    def call(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """Call method ``name`` of the engine, or read attribute ``name``: one result.

        Raises:
            AttributeNotAllowedError: ``name`` is one of the engine's own operations
                (:data:`~openenv_gym.server.native_checks.ENGINE_METHODS`).

        """
        if name in ENGINE_METHODS:
            raise AttributeNotAllowedError(self.env_id, name, "call", ())
        attr = getattr(self._active(), name)
        return attr(*args, **kwargs) if callable(attr) else attr

    def get_attr(self, name: str) -> Any:
        """Read attribute ``name`` of the engine: one value."""
        return getattr(self._active(), name)

    def set_attr(self, name: str, values: Any, *, per_env: bool) -> None:
        """Set attribute ``name`` of the engine to ``values``.

        Raises:
            ValueError: ``per_env``: a native vector env has one attribute for all its envs.

        """
        if per_env:
            raise ValueError(
                f"a native vector env has one {name!r} for its {self.num_envs} envs: "
                "set one value, not one per env"
            )
        setattr(self._active(), name, values)

    def state(self) -> list[dict[str, Any]]:
        """Return every env's episode state (``episode_id``, ``step_count``), in env order."""
        self.settle()
        return [
            {
                "episode_id": f"{self._session_id}-{index}-{int(episode)}" if episode else None,
                "step_count": int(steps),
            }
            for index, (episode, steps) in enumerate(
                zip(self._episodes, self._steps - self._starts, strict=True)
            )
        ]

    def close(self) -> None:
        """Close the engine; idempotent."""
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()
