"""``envpool:<task id>``: an envpool pool (extra ``envpool``) as a true gymnasium VectorEnv.

envpool's gymnasium pool (``envpool.make_gymnasium(task_id, num_envs=n, seed=s)``) is almost
one: it declares NEXT_STEP autoreset, but reports the single spaces as its batched ones, fixes
its seeds when it is built (``reset(seed=...)`` only warns), returns only the reset envs'
rows on a partial reset, and its infos have no ``_key`` masks. :class:`EnvpoolVectorEnv`
makes it a gymnasium ``VectorEnv``:

* ``observation_space``/``action_space`` are batched, ``autoreset_mode`` is an attribute too;
* ``reset(seed=s)`` rebuilds the pool with ``seed=s`` (envpool seeds env ``i`` with ``s + i``),
  so it equals ``envpool.make_gymnasium(task, num_envs=n, seed=s).reset()``; a list of seeds
  is refused (envpool has no per-env seeds); ``seed=None`` resets the pool as it is;
* ``options["reset_mask"]`` resets those envs; the others keep their last observation;
* infos are envpool's arrays (nested dicts kept) with a ``_key`` mask beside each key (all
  True, or the reset envs on a partial reset, where the other rows are zeros).

Observations, rewards (envpool's float32) and flags are envpool's arrays, unchanged.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from openenv_gym.server.engines import VectorEntryPoint

__all__ = ["EnvpoolVectorEnv", "envpool_entry_point", "vector_infos"]


def _envpool() -> Any:
    try:
        import envpool
    except ImportError as exc:
        raise ImportError(
            f"envpool: engines need envpool: pip install 'openenv-gym[envpool]' ({exc})"
        ) from exc
    return envpool


def vector_infos(info: dict[str, Any], rows: np.ndarray[Any, Any] | None, num_envs: int) -> Any:
    """Return envpool's ``info`` in gymnasium's vector form, a ``_key`` mask beside each key.

    Args:
        info: envpool's info (arrays with one row per env it answered for, nested dicts).
        rows: the envs those rows belong to; ``None``: all ``num_envs``, in order.
        num_envs: the pool's size.

    """
    out: dict[str, Any] = {}
    for key, value in info.items():
        if isinstance(value, dict):
            out[key] = vector_infos(value, rows, num_envs)
            continue
        array = np.asarray(value)
        if rows is None:
            out[key], out[f"_{key}"] = array, np.ones(num_envs, dtype=bool)
            continue
        full = np.zeros((num_envs, *array.shape[1:]), dtype=array.dtype)
        full[rows] = array
        mask = np.zeros(num_envs, dtype=bool)
        mask[rows] = True
        out[key], out[f"_{key}"] = full, mask
    return out


class EnvpoolVectorEnv(VectorEnv[Any, Any, Any]):
    """An envpool pool of ``num_envs`` envs of ``task_id`` (see the module docstring).

    Args:
        task_id: envpool's task id (``envpool.list_all_envs()``).
        num_envs: the pool's size.
        **kwargs: ``envpool.make_gymnasium``'s (``seed``, ``num_threads``, ...).

    Raises:
        ImportError: envpool is not installed (extra ``envpool``).

    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.NEXT_STEP}
    autoreset_mode = AutoresetMode.NEXT_STEP

    def __init__(self, task_id: str, num_envs: int, **kwargs: Any) -> None:
        self.task_id = task_id
        self.num_envs = num_envs
        self._kwargs = kwargs
        self._pool: Any = None
        pool = self._build(kwargs.get("seed"))
        self.single_observation_space = pool.single_observation_space
        self.single_action_space = pool.single_action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.render_mode = pool.render_mode
        # envpool's config, less where this machine keeps envpool's assets (a client may read it).
        self.config = {k: v for k, v in pool.config.items() if k != "base_path"}
        self._last_obs: Any = None

    def _build(self, seed: int | None) -> Any:
        if self._pool is not None:
            self._pool.close()
        kwargs = dict(self._kwargs)
        if seed is not None:
            kwargs["seed"] = seed
        with warnings.catch_warnings():
            # envpool declares float64 Box bounds for float32 spaces: gymnasium warns each time.
            warnings.simplefilter("ignore", UserWarning)
            self._pool = _envpool().make_gymnasium(self.task_id, num_envs=self.num_envs, **kwargs)
        self._fresh_seed: int | None = int(self._pool.config["seed"])
        return self._pool

    def reset(
        self,
        *,
        seed: int | list[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[Any, dict[str, Any]]:
        """Reset every env (rebuilt with ``seed`` if given), or those of ``reset_mask``.

        A mask selecting no env resets none (as ale-py's ``AtariVectorEnv`` does; envpool itself
        refuses it): the last observations, and no infos.

        Raises:
            TypeError: ``seed`` is a list (envpool seeds env ``i`` with ``seed + i`` only).
            ValueError: options other than ``reset_mask``.

        """
        if seed is not None and not isinstance(seed, int):
            raise TypeError(
                f"envpool:{self.task_id} takes one int seed (env i gets seed + i), "
                f"got {type(seed).__name__}"
            )
        mask = None if options is None else options.get("reset_mask")
        fresh, self._fresh_seed = self._fresh_seed, None
        if mask is None:
            if seed is not None and seed != fresh:  # a pool never used equals a new one
                self._build(seed)
            obs, info = self._pool.reset()
            self._last_obs = obs
            return obs, vector_infos(info, None, self.num_envs)
        rows = np.flatnonzero(np.asarray(mask, dtype=bool))
        full = np.array(self._last_obs, copy=True)
        self._last_obs = full
        if not rows.size:  # e.g. a shard's slice of a mask that resets envs of other shards
            return full, {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # envpool warns about the seed it ignores
            obs, info = self._pool.reset(seed=seed, options={"reset_mask": mask})
        full[rows] = obs
        return full, vector_infos(info, rows, self.num_envs)

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """Step every env (NEXT_STEP autoreset: envpool's own)."""
        self._fresh_seed = None
        obs, rewards, terminations, truncations, info = self._pool.step(np.asarray(actions))
        self._last_obs = obs
        return obs, rewards, terminations, truncations, vector_infos(info, None, self.num_envs)

    def render(self) -> Any:
        """Return envpool's frames (a pool built with ``render_mode="rgb_array"``)."""
        return self._pool.render()

    def close_extras(self, **kwargs: Any) -> None:
        """Close the pool."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()


def envpool_entry_point(task_id: str) -> VectorEntryPoint:
    """Return the entry point building ``EnvpoolVectorEnv(task_id, num_envs, **kwargs)``.

    Raises:
        ImportError: envpool is not installed (extra ``envpool``).
        ValueError: envpool has no task ``task_id``.

    """
    if task_id not in _envpool().list_all_envs():
        raise ValueError(f"envpool:{task_id}: envpool has no such task (envpool.list_all_envs())")

    def make(num_envs: int, **kwargs: Any) -> VectorEnv[Any, Any, Any]:
        return EnvpoolVectorEnv(task_id, num_envs, **kwargs)

    return VectorEntryPoint(f"envpool:{task_id}", make)
