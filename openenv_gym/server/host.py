"""EnvHost: one session's environments, driven by decoded requests. No I/O here.

A host runs either one plain ``gymnasium.Env`` (``autoreset_mode=None``: what ``RemoteEnv``
asks for) or a batch of ``num_envs`` envs stepped by gymnasium's own ``SyncVectorEnv`` in the
requested autoreset mode. Using ``SyncVectorEnv`` itself keeps the batched semantics (autoreset,
partial resets, ``final_obs``) exactly gymnasium's: the server does the autoreset, so a reset
never costs the client an extra round trip.

Batched infos travel as the list of ``[env_index, info]`` merges ``SyncVectorEnv`` performs, in
order, not as merged arrays: a client holding several shards replays them all through
gymnasium's own ``VectorEnv._add_info``, which gives exactly the dtypes one ``SyncVectorEnv``
over every env would (an info array's dtype comes from the first env, across all shards, that
sets the key). Envs that return no info cost nothing on the wire.
"""

from __future__ import annotations

import functools
import logging
import uuid
from typing import Any

import numpy as np
from gymnasium import Env
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from openenv_gym.errors import EncodeError, MessageTooLargeError
from openenv_gym.protocol import codec
from openenv_gym.protocol.spaces import space_to_data
from openenv_gym.server.catalog import EnvFactory

__all__ = ["EnvHost"]

logger = logging.getLogger("openenv_gym.server")


def _built(env: Env[Any, Any]) -> Env[Any, Any]:
    return env


class _InfoRecordingSyncVectorEnv(SyncVectorEnv):
    """A ``SyncVectorEnv`` that records each ``(env index, info)`` merge instead of merging."""

    info_merges: list[list[Any]]

    def _add_info(
        self, vector_infos: dict[str, Any], env_info: dict[str, Any], env_num: int
    ) -> dict[str, Any]:
        if env_info:
            self.info_merges.append([env_num, env_info])
        return vector_infos


def _frame_bytes(frame: Any) -> int:
    """Return at least the bytes a render result takes on the wire (frames, text, lists)."""
    if isinstance(frame, np.ndarray):
        return frame.nbytes
    if isinstance(frame, (str, bytes)):
        return len(frame)
    if isinstance(frame, (list, tuple)):
        return sum(_frame_bytes(item) for item in frame)
    return 1


def _portable_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """Keep the metadata entries that can cross the wire; log the ones dropped."""
    kept = {}
    for key, value in metadata.items():
        if isinstance(value, AutoresetMode):
            value = value.value
        try:
            codec.encode(value)
        except EncodeError:
            logger.debug("metadata[%r] of type %s not sent", key, type(value).__name__)
            continue
        kept[key] = value
    return kept


class EnvHost:
    """The environments of one session.

    Args:
        factory: builds one env.
        num_envs: how many envs the session runs; must be 1 without an autoreset mode.
        autoreset_mode: ``None`` for a single plain env, else the vector autoreset mode.

    Raises:
        ValueError: ``num_envs`` is not 1 for a single env, or is below 1.
        Exception: whatever the env constructor raises.

    """

    def __init__(
        self,
        factory: EnvFactory,
        *,
        num_envs: int = 1,
        autoreset_mode: AutoresetMode | None = None,
    ) -> None:
        if num_envs < 1 or (autoreset_mode is None and num_envs != 1):
            raise ValueError(f"num_envs must be 1 for a single env, >= 1 for a batch: {num_envs}")
        self.num_envs = num_envs
        self.autoreset_mode = autoreset_mode
        self._vector: _InfoRecordingSyncVectorEnv | None = None
        self._single: Env[Any, Any] | None = None
        if autoreset_mode is None:
            self._single = factory()
            self._envs: list[Env[Any, Any]] = [self._single]
        else:
            envs: list[Env[Any, Any]] = []
            try:
                for _ in range(num_envs):
                    envs.append(factory())
                # copy=False: every result is encoded before the next call can overwrite it.
                self._vector = _InfoRecordingSyncVectorEnv(
                    [functools.partial(_built, env) for env in envs],
                    copy=False,
                    autoreset_mode=autoreset_mode,
                )
            except BaseException:
                for env in envs:  # a failure part-way must not leak the envs already built
                    env.close()
                raise
            self._envs = self._vector.envs
        self._episode_ids = [""] * num_envs
        self._step_counts = np.zeros(num_envs, dtype=np.int64)

    def describe(self) -> dict[str, Any]:
        """Return the ``MakeReply`` fields: spaces, metadata, render mode and spec facts."""
        env = self._envs[0]
        spec = env.spec
        return {
            "observation_space": space_to_data(env.observation_space),
            "action_space": space_to_data(env.action_space),
            "metadata": _portable_metadata(env.metadata),
            "render_mode": env.render_mode,
            "max_episode_steps": None if spec is None else spec.max_episode_steps,
            "reward_threshold": None if spec is None else spec.reward_threshold,
            "nondeterministic": False if spec is None else spec.nondeterministic,
        }

    def reset(
        self, seed: int | list[int | None] | None, options: dict[str, Any] | None
    ) -> list[Any]:
        """Reset and return ``[obs, info]``; batched: ``[obs, info merges]`` (see module doc)."""
        if self._single is not None:
            obs, info = self._single.reset(seed=seed, options=options)  # type: ignore[arg-type]
            self._new_episodes(np.ones(1, dtype=bool))
            return [obs, info]
        assert self._vector is not None
        mask = None if options is None else options.get("reset_mask")
        self._vector.info_merges = []
        obs, _ = self._vector.reset(seed=seed, options=options)
        self._new_episodes(np.ones(self.num_envs, dtype=bool) if mask is None else mask)
        return [obs, self._vector.info_merges]

    def step(self, actions: Any) -> list[Any]:
        """Step and return ``[obs, reward, terminated, truncated, info]``.

        Batched: arrays of rewards and flags, and the info merges (see the module doc).
        """
        if self._single is not None:
            result = self._single.step(actions)
            self._step_counts += 1
            return list(result)
        assert self._vector is not None
        was_done = self._vector._autoreset_envs.copy()
        self._vector.info_merges = []
        obs, rewards, terminations, truncations, _ = self._vector.step(actions)
        self._step_counts += 1
        if self.autoreset_mode is AutoresetMode.NEXT_STEP and was_done.any():
            self._new_episodes(was_done)
        elif self.autoreset_mode is AutoresetMode.SAME_STEP:
            done = terminations | truncations
            if done.any():
                self._new_episodes(done)
        return [obs, rewards, terminations, truncations, self._vector.info_merges]

    def _new_episodes(self, mask: np.ndarray[Any, Any]) -> None:
        self._step_counts[mask] = 0
        for index in np.flatnonzero(mask):
            self._episode_ids[index] = uuid.uuid4().hex

    def render(self, *, max_bytes: int | None = None) -> Any:
        """Render: one frame for a single env, a tuple of frames for a batch.

        Envs render one by one, as ``SyncVectorEnv.render`` does. After each frame the bytes so
        far are projected to every env (the frames of one env id are alike in size): once the
        projection is over ``max_bytes`` the remaining envs are not rendered, so a reply that
        cannot be sent costs one frame, not a batch of them.

        Args:
            max_bytes: the largest reply the frames may make (``None``: no bound).

        Raises:
            MessageTooLargeError: the frames would be over ``max_bytes``; its size projects the
                envs rendered so far to all of them.

        """
        frames, total = [], 0
        for index, env in enumerate(self._envs):
            frame = env.render()
            total += _frame_bytes(frame)
            projected = max(total, total * len(self._envs) // (index + 1))
            if max_bytes is not None and projected > max_bytes:
                raise MessageTooLargeError(projected, max_bytes)
            frames.append(frame)
        return frames[0] if self._single is not None else tuple(frames)

    def call(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """Call method ``name`` (or read attribute ``name``) of the env(s)."""
        if self._single is not None:
            attr = self._single.get_wrapper_attr(name)
            return attr(*args, **kwargs) if callable(attr) else attr
        assert self._vector is not None
        return self._vector.call(name, *args, **kwargs)

    def get_attr(self, name: str) -> Any:
        """Read attribute ``name`` of the env(s)."""
        if self._single is not None:
            return self._single.get_wrapper_attr(name)
        assert self._vector is not None
        return self._vector.get_attr(name)

    def set_attr(self, name: str, values: Any, *, per_env: bool) -> None:
        """Set attribute ``name``; ``values`` holds one value per env when ``per_env``."""
        if per_env and len(values) != self.num_envs:
            raise ValueError(f"{len(values)} values for {self.num_envs} env(s) of this session")
        if self._single is not None:
            self._single.set_wrapper_attr(name, values[0] if per_env else values)
            return
        assert self._vector is not None
        # SyncVectorEnv reads a list as one value per env: a shared list must be repeated.
        self._vector.set_attr(name, list(values) if per_env else [values] * self.num_envs)

    def state(self) -> Any:
        """Return each env's episode state: id, step count, and the env's own ``state``.

        A dict for a single env, a list of dicts for a batch.
        """
        states = [self._env_state(index) for index in range(self.num_envs)]
        return states[0] if self._single is not None else states

    def _env_state(self, index: int) -> dict[str, Any]:
        state: dict[str, Any] = {
            "episode_id": self._episode_ids[index] or None,
            "step_count": int(self._step_counts[index]),
        }
        own = getattr(self._envs[index].unwrapped, "state", None)
        if callable(own):
            own = own()
        if isinstance(own, dict):
            return {**own, **state}  # the session's episode bookkeeping wins
        if own is not None:
            state["state"] = own
        return state

    def close(self) -> None:
        """Close every env; idempotent."""
        if self._vector is not None:
            self._vector.close()
        elif self._single is not None:
            self._single.close()
        self._vector = self._single = None
        self._envs = []
