"""Split batched actions across shards and join shard observations into one batch.

Joining must give exactly what one ``SyncVectorEnv`` over all envs would, laid out as
``gymnasium.vector.utils.concatenate`` does. (Infos are joined by replaying the servers' info
merges through ``VectorEnv._add_info``; see ``server/host.py``.)
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

__all__ = ["ARRAY_SPACES", "check_reset_mask", "concat_batches", "slice_batch", "vector_seeds"]

ARRAY_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)
"""Single spaces whose batches are one ndarray with the envs on the first axis."""


@functools.singledispatch
def slice_batch(single_space: spaces.Space[Any], batch: Any, start: int, stop: int) -> Any:
    """Return envs ``start:stop`` of ``batch``, a batch of ``single_space`` values.

    Spaces that batch as a tuple of items (Text, Graph, Sequence, OneOf, custom) slice that tuple.
    """
    return tuple(batch[start:stop])


@slice_batch.register(spaces.Box)
@slice_batch.register(spaces.Discrete)
@slice_batch.register(spaces.MultiDiscrete)
@slice_batch.register(spaces.MultiBinary)
def _(single_space: spaces.Space[Any], batch: Any, start: int, stop: int) -> Any:
    return batch[start:stop]


@slice_batch.register(spaces.Dict)
def _(single_space: spaces.Dict, batch: Any, start: int, stop: int) -> Any:
    return {key: slice_batch(sub, batch[key], start, stop) for key, sub in single_space.items()}


@slice_batch.register(spaces.Tuple)
def _(single_space: spaces.Tuple[Any], batch: Any, start: int, stop: int) -> Any:
    return tuple(
        slice_batch(sub, part, start, stop) for sub, part in zip(single_space, batch, strict=True)
    )


@functools.singledispatch
def concat_batches(single_space: spaces.Space[Any], batches: Sequence[Any]) -> Any:
    """Join shard batches of ``single_space`` values into one batch, in shard order."""
    return tuple(itertools.chain.from_iterable(batches))


@concat_batches.register(spaces.Box)
@concat_batches.register(spaces.Discrete)
@concat_batches.register(spaces.MultiDiscrete)
@concat_batches.register(spaces.MultiBinary)
def _(single_space: spaces.Space[Any], batches: Sequence[Any]) -> Any:
    return np.concatenate(batches)


@concat_batches.register(spaces.Dict)
def _(single_space: spaces.Dict, batches: Sequence[Any]) -> Any:
    return {
        key: concat_batches(sub, [batch[key] for batch in batches])
        for key, sub in single_space.items()
    }


@concat_batches.register(spaces.Tuple)
def _(single_space: spaces.Tuple[Any], batches: Sequence[Any]) -> Any:
    return tuple(
        concat_batches(sub, [batch[index] for batch in batches])
        for index, sub in enumerate(single_space)
    )


def vector_seeds(seed: int | list[int | None] | None, num_envs: int) -> list[int | None]:
    """Spread a vector ``reset`` seed over envs as ``SyncVectorEnv`` does (``seed + i``).

    Raises:
        ValueError: a list whose length is not ``num_envs`` (``SyncVectorEnv``'s message).

    """
    if seed is None:
        return [None] * num_envs
    if isinstance(seed, int):
        return [seed + i for i in range(num_envs)]
    if len(seed) != num_envs:
        raise ValueError(
            f"If seeds are passed as a list the length must match num_envs={num_envs} "
            f"but got length={len(seed)}."
        )
    return [None if s is None else int(s) for s in seed]


def check_reset_mask(mask: Any, num_envs: int, *, empty_ok: bool = False) -> None:
    """Check ``options["reset_mask"]`` as ``SyncVectorEnv`` does, with its errors.

    Args:
        mask: the mask.
        num_envs: the envs it covers.
        empty_ok: a mask with no True value is let through (a native engine decides what it
            does, as in-process) instead of being refused (``SyncVectorEnv``'s rule).

    Raises:
        TypeError: not a bool ndarray.
        ValueError: wrong shape, or no True value (unless ``empty_ok``).

    """
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"`options['reset_mask']` must be a numpy array, got {type(mask)}")
    if mask.shape != (num_envs,):
        raise ValueError(
            f"`options['reset_mask']` must have shape `({num_envs},)`, got {mask.shape}"
        )
    if mask.dtype != np.bool_:
        raise TypeError(f"`options['reset_mask']` must have `dtype=np.bool_`, got {mask.dtype}")
    if not empty_ok and not np.any(mask):
        raise ValueError(
            "`options['reset_mask']` must contain a boolean array with at least one True "
            f"value, got reset_mask={mask}"
        )
