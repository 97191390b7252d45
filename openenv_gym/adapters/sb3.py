"""Stable-Baselines3's ``VecEnv`` over one :class:`RemoteVectorEnv`: SB3 batched.

SB3 does not take a gymnasium ``VectorEnv``; its users fall back to ``DummyVecEnv`` or
``SubprocVecEnv`` of single envs, one server session (and one message) per env and step.
:class:`RemoteVecEnv` is an SB3 ``VecEnv`` whose envs are one ``RemoteVectorEnv`` in
``SAME_STEP`` autoreset mode: a step is one message per shard, and the results are exactly
``DummyVecEnv``'s over the same envs in-process under the same seeds:

- ``reset()`` returns only the observations; the reset infos are in ``reset_infos``; the seeds
  set by ``seed(s)`` (env ``i`` gets ``s + i``) and the options of ``set_options`` are used by
  the next reset only;
- ``step_wait()`` returns ``(obs, rewards, dones, infos)``: float32 rewards, ``dones =
  terminated | truncated``, one info dict per env holding ``TimeLimit.truncated`` (truncated
  and not terminated) and, for a done env, ``terminal_observation``; the returned observation
  of a done env is already its next episode's first (the server resets it in the same step,
  without a seed, as ``DummyVecEnv`` does), and its reset info goes to ``reset_infos``;
- ``env_method``, ``get_attr``, ``set_attr``, ``env_is_wrapped``, ``get_images``/``render``.

Install with ``pip install "openenv-gym[sb3]"``.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from gymnasium import Wrapper, spaces
from gymnasium.vector import AutoresetMode, VectorEnv

from openenv_gym.client.vector_env import RemoteVectorEnv
from openenv_gym.errors import AutoresetModeMismatchError

try:
    from stable_baselines3.common.vec_env.base_vec_env import (
        VecEnv,
        VecEnvIndices,
        VecEnvObs,
        VecEnvStepReturn,
    )
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "openenv_gym.adapters.sb3 needs stable-baselines3: pip install 'openenv-gym[sb3]'"
    ) from exc

__all__ = ["RemoteVecEnv", "unbatch_infos"]

Info = dict[str, Any]


class _PerEnvInfoVectorEnv(RemoteVectorEnv):
    """A ``RemoteVectorEnv`` that also keeps each env's own info dicts of the last call.

    The server sends infos as the ``(env index, info)`` merges ``SyncVectorEnv`` performs
    (``server/host.py``); keeping them gives SB3 the env's own info values (a Python ``int``
    stays an ``int``), which merged arrays cannot give back.
    """

    last_merges: list[list[Any]] | None = None

    def _join_infos(self, shard_merges: list[Any]) -> dict[str, Any]:
        # A native engine's infos arrive vector-merged already: nothing per env to keep.
        self.last_merges = (
            None
            if self.server_vectorization != "sync"
            else [
                [shard.start + index, info]
                for shard, merges in zip(self._shards, shard_merges, strict=True)
                for index, info in merges
            ]
        )
        return super()._join_infos(shard_merges)


def _unbatch_value(value: Any, mask: Any, index: int) -> tuple[bool, Any]:
    if isinstance(value, dict):
        return True, unbatch_infos(value, index)
    if mask is not None and not bool(mask[index]):
        return False, None
    item = value[index]
    return True, item.copy() if isinstance(item, np.ndarray) else item


def unbatch_infos(infos: dict[str, Any], index: int) -> Info:
    """Return env ``index``'s info from gymnasium vector infos (arrays with ``_key`` masks).

    The inverse of ``VectorEnv._add_info`` up to types: a number an env returned comes back as
    the numpy scalar of its array (``np.int64`` for an ``int``).
    """
    info: Info = {}
    for key, value in infos.items():
        if key.startswith("_") and key[1:] in infos:
            continue
        present, item = _unbatch_value(value, infos.get(f"_{key}"), index)
        if present and not (isinstance(value, dict) and not item):
            info[key] = item
    return info


class RemoteVecEnv(VecEnv):
    """An SB3 ``VecEnv`` of ``num_envs`` envs stepped as one ``RemoteVectorEnv``.

    Args:
        env_id: a gymnasium id or ``module:attr`` entry point the servers host; or a vector
            env in ``SAME_STEP`` mode to adopt (then nothing else: see
            :meth:`from_vector_env`).
        num_envs: number of envs.
        **kwargs: everything else of :class:`RemoteVectorEnv` (``urls``, ``num_servers``,
            ``provider``, ``docker_image``, ``render_mode``, env kwargs such as
            ``max_episode_steps``, ...); ``autoreset_mode`` is always ``SAME_STEP``.

    Raises:
        TypeError: ``autoreset_mode`` was passed (SB3's semantics need ``SAME_STEP``), or
            ``num_envs`` is missing.
        AutoresetModeMismatchError: an adopted vector env is not in ``SAME_STEP`` mode.
        ServerStartError, ConnectError, RemoteError, ...: as :class:`RemoteVectorEnv`.

    """

    def __init__(
        self, env_id: str | VectorEnv[Any, Any, Any], num_envs: int | None = None, **kwargs: Any
    ) -> None:
        if isinstance(env_id, VectorEnv):
            if num_envs is not None or kwargs:
                raise TypeError("RemoteVecEnv(vector_env) takes no num_envs or other arguments")
            self._adopt(env_id)
            return
        if num_envs is None:
            raise TypeError("RemoteVecEnv(env_id, num_envs, ...) needs num_envs")
        if "autoreset_mode" in kwargs:
            raise TypeError(
                "RemoteVecEnv always uses autoreset_mode=SAME_STEP (SB3 resets a done env in "
                f"the step that ends it); got autoreset_mode={kwargs['autoreset_mode']!r}"
            )
        venv = _PerEnvInfoVectorEnv(
            env_id, num_envs, autoreset_mode=AutoresetMode.SAME_STEP, **kwargs
        )
        try:
            self._setup(venv)
        except BaseException:
            venv.close()
            raise

    @classmethod
    def from_vector_env(cls, venv: VectorEnv[Any, Any, Any]) -> RemoteVecEnv:
        """Wrap an existing gymnasium vector env in ``SAME_STEP`` mode (owned: closed by us).

        Also ``RemoteVecEnv(envs)``. A ``RemoteVectorEnv`` keeps its envs' own infos, as
        :class:`RemoteVecEnv` built from an id does; for any other ``VectorEnv``
        (``SyncVectorEnv``, a native engine) infos are rebuilt from its vector infos
        (:func:`unbatch_infos`), so numbers in them are numpy scalars.

        Raises:
            AutoresetModeMismatchError: ``venv`` is not in ``SAME_STEP`` mode.

        """
        adapter = cls.__new__(cls)
        adapter._adopt(venv)
        return adapter

    def _adopt(self, venv: VectorEnv[Any, Any, Any]) -> None:
        mode = getattr(venv, "autoreset_mode", venv.metadata.get("autoreset_mode"))
        if mode != AutoresetMode.SAME_STEP:
            env_id = getattr(getattr(venv, "spec", None), "id", None) or getattr(
                venv, "env_id", type(venv).__name__
            )
            raise AutoresetModeMismatchError(
                str(env_id), AutoresetMode.SAME_STEP.value, str(getattr(mode, "value", mode))
            )
        if type(venv) is RemoteVectorEnv:
            # The subclass adds no state, only keeps the per-env infos: exact types as SB3's.
            venv.__class__ = _PerEnvInfoVectorEnv
        self._setup(venv)

    def _setup(self, venv: VectorEnv[Any, Any, Any]) -> None:
        # Any: gymnasium's VectorEnv declares no call/get_attr/set_attr (its subclasses do).
        self.venv: Any = venv
        """The vector env stepped underneath (one message per shard per step)."""
        self._actions: Any = None
        self._closed = False
        self._started = False
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)

    # -- reset / step ------------------------------------------------------------------------

    def reset(self) -> VecEnvObs:
        """Reset every env with the pending seeds and options; return the observations.

        Envs whose options differ are reset in groups (a partial reset each), in the order
        their options first appear; equal options (the usual case) cost one reset. Before the
        first reset, all envs are reset with the first group's options, then the others again
        with theirs (with seeds, the result is ``DummyVecEnv``'s; an unseeded env's random
        state has then advanced by one reset more).
        """
        seeds = self._seeds if any(seed is not None for seed in self._seeds) else None
        groups: list[tuple[dict[str, Any], list[int]]] = []
        for index, options in enumerate(self._options):
            for group_options, members in groups:
                if group_options == options:
                    members.append(index)
                    break
            else:
                groups.append((options, [index]))
        if len(groups) == 1:
            options = groups[0][0]
            obs, infos = self.venv.reset(seed=seeds, options=dict(options) if options else None)
            self._store_reset_infos(infos, range(self.num_envs))
        else:
            for number, (options, members) in enumerate(groups):
                mask = np.zeros(self.num_envs, dtype=bool)
                mask[members] = True
                if number == 0 and not self._started:
                    # A partial reset needs every env's last observation: reset all first.
                    obs, infos = self.venv.reset(seed=seeds, options=dict(options) or None)
                else:
                    obs, infos = self.venv.reset(
                        seed=seeds, options={**options, "reset_mask": mask}
                    )
                self._store_reset_infos(infos, members)
        self._started = True
        self._reset_seeds()
        self._reset_options()
        return self._to_sb3_obs(obs)

    def step_async(self, actions: np.ndarray[Any, Any]) -> None:
        """Send every env its action (one message per shard); :meth:`step_wait` collects."""
        if isinstance(self.venv, RemoteVectorEnv):
            self.venv.step_async(actions)
        else:
            self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        """Return ``(obs, rewards, dones, infos)`` of the step sent by :meth:`step_async`."""
        if isinstance(self.venv, RemoteVectorEnv):
            obs, rewards, terminations, truncations, infos = self.venv.step_wait()
        else:
            obs, rewards, terminations, truncations, infos = self.venv.step(self._actions)
        dones = np.logical_or(terminations, truncations)
        step_infos = self._step_infos(infos, dones, truncations & ~terminations)
        return (
            self._to_sb3_obs(obs),
            np.asarray(rewards, dtype=np.float32),
            dones,
            step_infos,
        )

    def _per_env(self) -> list[list[Info]] | None:
        """Each env's info dicts of the last call, in the order its env produced them."""
        merges = getattr(self.venv, "last_merges", None)
        if merges is None:
            return None
        per_env: list[list[Info]] = [[] for _ in range(self.num_envs)]
        for index, info in merges:
            per_env[index].append(info)
        return per_env

    def _step_infos(
        self,
        infos: dict[str, Any],
        dones: np.ndarray[Any, Any],
        time_limits: np.ndarray[Any, Any],
    ) -> list[Info]:
        result: list[Info] = []
        merges = self._per_env()
        for index in range(self.num_envs):
            if merges is not None:
                own = merges[index]
                if dones[index]:
                    final, reset_info = own[0], (own[1] if len(own) > 1 else {})
                    step_info, terminal_obs = final["final_info"], final["final_obs"]
                else:
                    step_info, reset_info, terminal_obs = (own[0] if own else {}), None, None
            else:
                own_info = unbatch_infos(infos, index)
                final_info = own_info.pop("final_info", None)
                terminal_obs = own_info.pop("final_obs", None)
                if dones[index]:
                    step_info, reset_info = final_info or {}, own_info
                else:
                    step_info, reset_info = own_info, None
            info = dict(step_info)
            info["TimeLimit.truncated"] = bool(time_limits[index])  # before, as DummyVecEnv
            if dones[index]:
                info["terminal_observation"] = terminal_obs
                self.reset_infos[index] = dict(reset_info or {})
            result.append(info)
        return result

    def _store_reset_infos(self, infos: dict[str, Any], members: Iterable[int]) -> None:
        merges = self._per_env()
        for index in members:
            if merges is not None:
                self.reset_infos[index] = dict(merges[index][-1]) if merges[index] else {}
            else:
                self.reset_infos[index] = unbatch_infos(infos, index)

    def _to_sb3_obs(self, obs: Any) -> VecEnvObs:
        """Batched gymnasium observations as SB3 holds them (an ``OrderedDict`` for ``Dict``)."""
        space = self.observation_space
        if isinstance(space, spaces.Dict):
            return OrderedDict((key, np.array(obs[key])) for key in space.spaces)
        if isinstance(space, spaces.Tuple):
            return tuple(np.array(part) for part in obs)
        result: np.ndarray[Any, Any] = np.array(obs)
        return result

    # -- calls, attributes, render ---------------------------------------------------------

    def _indices(self, indices: VecEnvIndices) -> list[int]:
        return list(self._get_indices(indices))

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """Return attribute ``attr_name`` of the envs at ``indices`` (all by default).

        Raises:
            AttributeError: an env has no such attribute (a ``RemoteError`` that is one).

        """
        values = self.venv.get_attr(attr_name)
        return [values[index] for index in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set attribute ``attr_name`` of the envs at ``indices`` to ``value``.

        The server sets it only if its operator allows that name (``--set-attr-allow``).
        Setting a subset reads every env's current value first and writes it back unchanged
        for the others (one set per call, as the protocol sets all envs of a shard).

        Raises:
            AttributeNotAllowedError: the server does not allow setting ``attr_name``.

        """
        targets = self._indices(indices)
        if len(targets) == self.num_envs and sorted(targets) == list(range(self.num_envs)):
            self.venv.set_attr(attr_name, [value] * self.num_envs)
            return
        values = list(self.venv.get_attr(attr_name))
        for index in targets:
            values[index] = value
        self.venv.set_attr(attr_name, values)

    def env_method(
        self,
        method_name: str,
        *method_args: Any,
        indices: VecEnvIndices = None,
        **method_kwargs: Any,
    ) -> list[Any]:
        """Call method ``method_name`` of the envs at ``indices``; their results in order.

        The protocol calls a method on every env of a session: with ``indices`` naming some
        envs only, the method also runs on the others and their results are dropped, so use
        it for methods without side effects (e.g. HER's ``compute_reward``).
        """
        results = self.venv.call(method_name, *method_args, **method_kwargs)
        return [results[index] for index in self._indices(indices)]

    def env_is_wrapped(
        self, wrapper_class: type[Wrapper[Any, Any, Any, Any]], indices: VecEnvIndices = None
    ) -> list[bool]:
        """Tell whether each env is wrapped in ``wrapper_class``: never, on this side.

        The envs live on the servers, where ``gymnasium.make`` applied only its own wrappers
        (a time limit is reported by ``max_episode_steps``); SB3 asks this for its ``Monitor``,
        which a remote env is never wrapped in (use ``VecMonitor`` over this env).
        """
        from gymnasium.wrappers import TimeLimit

        limited = getattr(self.venv, "max_episode_steps", None) is not None
        answer = wrapper_class is TimeLimit and limited
        return [answer for _ in self._indices(indices)]

    def get_images(self) -> Sequence[np.ndarray[Any, Any] | None]:
        """Return every env's ``rgb_array`` frame (``None`` each in another render mode)."""
        if self.render_mode != "rgb_array":
            warnings.warn(
                f"The render mode is {self.render_mode}, but this method assumes it is "
                "`rgb_array` to obtain images.",
                stacklevel=2,
            )
            return [None for _ in range(self.num_envs)]
        frames = self.venv.render()
        return [None if frame is None else np.asarray(frame) for frame in frames or ()]

    def close(self) -> None:
        """Close the vector env and its sessions (and the servers it started); idempotent."""
        if not self._closed:
            self._closed = True
            self.venv.close()

    def __repr__(self) -> str:
        return f"RemoteVecEnv({self.venv!r})"
