"""Hosts: one session's environments, driven by decoded requests. No I/O here.

A :class:`SingleHost` runs one plain ``gymnasium.Env`` (what ``RemoteEnv`` asks for); a
:class:`BatchHost` runs ``num_envs`` envs stepped by gymnasium's own ``SyncVectorEnv`` in the
requested autoreset mode; :func:`make_host` picks one for a MAKE request. (A session asking for
``server_vectorization="vector_entry_point"`` gets a ``server/native_host.py`` ``NativeHost``.)
What both share (episode bookkeeping, ``state``, the render budget, ``describe``) lives in
:class:`EnvHost`.
Using ``SyncVectorEnv`` itself keeps the batched semantics (autoreset, partial resets,
``final_obs``) exactly gymnasium's: the server does the autoreset, so a reset never costs the
client an extra round trip.

Batched infos travel as the list of ``[env_index, info]`` merges ``SyncVectorEnv`` performs, in
order, not as merged arrays: a client holding several shards replays them all through
gymnasium's own ``VectorEnv._add_info``, which gives exactly the dtypes one ``SyncVectorEnv``
over every env would (an info array's dtype comes from the first env, across all shards, that
sets the key). Envs that return no info cost nothing on the wire.
"""

from __future__ import annotations

import abc
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

__all__ = ["BatchHost", "EnvHost", "SingleHost", "make_host"]

logger = logging.getLogger("openenv_gym.server")


def _built(env: Env[Any, Any]) -> Env[Any, Any]:
    return env


class _InfoRecordingSyncVectorEnv(SyncVectorEnv):
    """A ``SyncVectorEnv`` that records each ``(env index, info)`` merge instead of merging.

    The only place that touches gymnasium's private hooks (``_add_info``, ``_autoreset_envs``);
    ``tests/server/test_session.py`` fails first if gymnasium changes them.
    """

    info_merges: list[list[Any]]

    def pending_autoresets(self) -> np.ndarray[Any, Any]:
        """Return a copy of the mask of envs the next NEXT_STEP step resets instead of steps."""
        pending: np.ndarray[Any, Any] = self._autoreset_envs.copy()
        return pending

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


class EnvHost(abc.ABC):
    """The environments of one session: what single and batched hosts share.

    Args:
        envs: the session's envs, already built; the host owns and closes them.

    """

    def __init__(self, envs: list[Env[Any, Any]]) -> None:
        self.envs = envs
        self.num_envs = len(envs)
        self._episode_ids = [""] * self.num_envs
        self._step_counts = np.zeros(self.num_envs, dtype=np.int64)

    def describe(self) -> dict[str, Any]:
        """Return the ``MakeReply`` fields: spaces, metadata, render mode and spec facts."""
        env = self.envs[0]
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

    @abc.abstractmethod
    def reset(
        self, seed: int | list[int | None] | None, options: dict[str, Any] | None
    ) -> list[Any]:
        """Reset and return ``[obs, info]`` (batched: ``[obs, info merges]``)."""

    @abc.abstractmethod
    def step(self, actions: Any) -> list[Any]:
        """Step and return ``[obs, reward, terminated, truncated, info]``."""

    @abc.abstractmethod
    def render(self, *, max_bytes: int | None = None) -> Any:
        """Render every env within ``max_bytes`` (see :meth:`_frames`)."""

    @abc.abstractmethod
    def call(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """Call method ``name`` (or read attribute ``name``) of the env(s)."""

    @abc.abstractmethod
    def get_attr(self, name: str) -> Any:
        """Read attribute ``name`` of the env(s)."""

    @abc.abstractmethod
    def set_attr(self, name: str, values: Any, *, per_env: bool) -> None:
        """Set attribute ``name``; ``values`` holds one value per env when ``per_env``."""

    @abc.abstractmethod
    def state(self) -> Any:
        """Return the episode state of the env(s) (see :meth:`_states`)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close every env; idempotent."""

    def settle(self) -> None:
        """Do the bookkeeping the last request deferred until its reply was written.

        The server calls this once the reply is on its way, so that work no reply needs stays
        off the round trip; every other method settles first, so nothing depends on the call.
        A host that defers nothing (the default) has nothing to do.
        """
        return

    def _new_episodes(self, mask: np.ndarray[Any, Any]) -> None:
        self._step_counts[mask] = 0
        for index in np.flatnonzero(mask):
            self._episode_ids[index] = uuid.uuid4().hex

    def _check_per_env(self, values: Any, per_env: bool) -> None:
        if per_env and len(values) != self.num_envs:
            raise ValueError(f"{len(values)} values for {self.num_envs} env(s) of this session")

    def _frames(self, max_bytes: int | None) -> list[Any]:
        """Render the envs one by one, as ``SyncVectorEnv.render`` does, within a budget.

        After each frame the bytes so far are projected to every env (the frames of one env id
        are alike in size): once the projection is over ``max_bytes`` the remaining envs are
        not rendered, so a reply that cannot be sent costs one frame, not a batch of them.

        Raises:
            MessageTooLargeError: the frames would be over ``max_bytes``; its size projects the
                envs rendered so far to all of them.

        """
        frames, total = [], 0
        for index, env in enumerate(self.envs):
            frame = env.render()
            total += _frame_bytes(frame)
            projected = max(total, total * len(self.envs) // (index + 1))
            if max_bytes is not None and projected > max_bytes:
                raise MessageTooLargeError(projected, max_bytes)
            frames.append(frame)
        return frames

    def _states(self) -> list[dict[str, Any]]:
        """Return each env's episode state: id, step count, and the env's own ``state``."""
        return [self._env_state(index) for index in range(self.num_envs)]

    def _env_state(self, index: int) -> dict[str, Any]:
        state: dict[str, Any] = {
            "episode_id": self._episode_ids[index] or None,
            "step_count": int(self._step_counts[index]),
        }
        own = getattr(self.envs[index].unwrapped, "state", None)
        if callable(own):
            own = own()
        if isinstance(own, dict):
            return {**own, **state}  # the session's episode bookkeeping wins
        if own is not None:
            state["state"] = own
        return state


class SingleHost(EnvHost):
    """One plain ``gymnasium.Env``: replies are the env's own, unbatched.

    Args:
        factory: builds the env.

    Raises:
        Exception: whatever the env constructor raises.

    """

    def __init__(self, factory: EnvFactory) -> None:
        self._env: Env[Any, Any] | None = factory()
        super().__init__([self._env])

    def _active(self) -> Env[Any, Any]:
        assert self._env is not None, "the host is closed"
        return self._env

    def reset(
        self, seed: int | list[int | None] | None, options: dict[str, Any] | None
    ) -> list[Any]:
        """Reset and return ``[obs, info]``."""
        obs, info = self._active().reset(seed=seed, options=options)  # type: ignore[arg-type]
        self._new_episodes(np.ones(1, dtype=bool))
        return [obs, info]

    def step(self, actions: Any) -> list[Any]:
        """Step and return the env's ``[obs, reward, terminated, truncated, info]``."""
        result = self._active().step(actions)
        self._step_counts += 1
        return list(result)

    def render(self, *, max_bytes: int | None = None) -> Any:
        """Return the env's frame.

        Raises:
            MessageTooLargeError: the frame is over ``max_bytes``.

        """
        return self._frames(max_bytes)[0]

    def call(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """Call method ``name`` of the env (through its wrappers), or read attribute ``name``."""
        attr = self._active().get_wrapper_attr(name)
        return attr(*args, **kwargs) if callable(attr) else attr

    def get_attr(self, name: str) -> Any:
        """Read attribute ``name`` of the env (through its wrappers)."""
        return self._active().get_wrapper_attr(name)

    def set_attr(self, name: str, values: Any, *, per_env: bool) -> None:
        """Set attribute ``name`` (``values[0]`` when ``per_env``).

        Raises:
            ValueError: ``per_env`` and ``values`` does not hold exactly one value.

        """
        self._check_per_env(values, per_env)
        self._active().set_wrapper_attr(name, values[0] if per_env else values)

    def state(self) -> dict[str, Any]:
        """Return the env's episode state: id, step count, and the env's own ``state``."""
        return self._states()[0]

    def close(self) -> None:
        """Close the env; idempotent."""
        env, self._env = self._env, None
        self.envs = []
        if env is not None:
            env.close()


class BatchHost(EnvHost):
    """``num_envs`` envs stepped by gymnasium's ``SyncVectorEnv`` in an autoreset mode.

    Infos travel as the info merges ``SyncVectorEnv`` performs (see the module doc).

    Args:
        factory: builds one env.
        num_envs: how many envs the session runs.
        autoreset_mode: the vector autoreset mode.

    Raises:
        ValueError: ``num_envs`` is below 1.
        Exception: whatever the env constructor raises (the envs already built are closed).

    """

    def __init__(
        self, factory: EnvFactory, *, num_envs: int, autoreset_mode: AutoresetMode
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be 1 for a single env, >= 1 for a batch: {num_envs}")
        self.autoreset_mode = autoreset_mode
        envs: list[Env[Any, Any]] = []
        try:
            for _ in range(num_envs):
                envs.append(factory())
            # copy=False: every result is encoded before the next call can overwrite it.
            self._vector: _InfoRecordingSyncVectorEnv | None = _InfoRecordingSyncVectorEnv(
                [functools.partial(_built, env) for env in envs],
                copy=False,
                autoreset_mode=autoreset_mode,
            )
        except BaseException:
            for env in envs:  # a failure part-way must not leak the envs already built
                env.close()
            raise
        super().__init__(self._vector.envs)

    def _active(self) -> _InfoRecordingSyncVectorEnv:
        assert self._vector is not None, "the host is closed"
        return self._vector

    def reset(
        self, seed: int | list[int | None] | None, options: dict[str, Any] | None
    ) -> list[Any]:
        """Reset all envs (or ``options["reset_mask"]``'s) and return ``[obs, info merges]``."""
        vector = self._active()
        mask = None if options is None else options.get("reset_mask")
        vector.info_merges = []
        obs, _ = vector.reset(seed=seed, options=options)
        self._new_episodes(np.ones(self.num_envs, dtype=bool) if mask is None else mask)
        return [obs, vector.info_merges]

    def step(self, actions: Any) -> list[Any]:
        """Step and return ``[obs, rewards, terminations, truncations, info merges]``."""
        vector = self._active()
        next_step = self.autoreset_mode is AutoresetMode.NEXT_STEP
        was_done = vector.pending_autoresets() if next_step else None
        vector.info_merges = []
        obs, rewards, terminations, truncations, _ = vector.step(actions)
        self._step_counts += 1
        if was_done is not None and was_done.any():
            self._new_episodes(was_done)
        elif self.autoreset_mode is AutoresetMode.SAME_STEP:
            done = terminations | truncations
            if done.any():
                self._new_episodes(done)
        return [obs, rewards, terminations, truncations, vector.info_merges]

    def render(self, *, max_bytes: int | None = None) -> tuple[Any, ...]:
        """Return every env's frame, in env order (see :meth:`EnvHost._frames`).

        Raises:
            MessageTooLargeError: the frames would be over ``max_bytes``.

        """
        return tuple(self._frames(max_bytes))

    def call(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """Call ``name`` on every env as ``SyncVectorEnv.call`` does: a tuple in env order."""
        return self._active().call(name, *args, **kwargs)

    def get_attr(self, name: str) -> Any:
        """Read attribute ``name`` of every env as ``SyncVectorEnv.get_attr`` does."""
        return self._active().get_attr(name)

    def set_attr(self, name: str, values: Any, *, per_env: bool) -> None:
        """Set attribute ``name`` of every env: one value each when ``per_env``, else shared.

        Raises:
            ValueError: ``per_env`` and ``values`` does not hold one value per env.

        """
        self._check_per_env(values, per_env)
        # SyncVectorEnv reads a list as one value per env: a shared list must be repeated.
        self._active().set_attr(name, list(values) if per_env else [values] * self.num_envs)

    def state(self) -> list[dict[str, Any]]:
        """Return every env's episode state, in env order."""
        return self._states()

    def close(self) -> None:
        """Close every env; idempotent."""
        vector, self._vector = self._vector, None
        self.envs = []
        if vector is not None:
            vector.close()


def make_host(
    factory: EnvFactory, *, num_envs: int = 1, autoreset_mode: AutoresetMode | None = None
) -> EnvHost:
    """Build the host a MAKE request asks for: single without an autoreset mode, else batched.

    Args:
        factory: builds one env.
        num_envs: how many envs the session runs; must be 1 without an autoreset mode.
        autoreset_mode: ``None`` for a single plain env, else the vector autoreset mode.

    Raises:
        ValueError: ``num_envs`` is not 1 for a single env, or is below 1.
        Exception: whatever the env constructor raises.

    """
    if autoreset_mode is None:
        if num_envs != 1:
            raise ValueError(f"num_envs must be 1 for a single env, >= 1 for a batch: {num_envs}")
        return SingleHost(factory)
    return BatchHost(factory, num_envs=num_envs, autoreset_mode=autoreset_mode)
