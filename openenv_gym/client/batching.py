"""Split batched actions across shards and join shard results into one batch.

Joining must give exactly what one ``SyncVectorEnv`` over all envs would: observations as
``gymnasium.vector.utils.concatenate`` lays them out, and infos as ``VectorEnv._add_info`` builds
them (same keys in the same order, same dtypes, same ``_key`` masks, same fill values).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

__all__ = ["concat_batches", "merge_infos", "slice_batch"]

_ARRAY_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


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


def _empty_like_batch(value: np.ndarray[Any, Any], num_envs: int) -> np.ndarray[Any, Any]:
    """Start a key as ``_add_info`` does: zeros, or ``None`` for object arrays."""
    if value.dtype.hasobject:
        return np.full((num_envs, *value.shape[1:]), None, dtype=object)
    return np.zeros((num_envs, *value.shape[1:]), dtype=value.dtype)


def _is_mask(key: Any, info: dict[Any, Any]) -> bool:
    return isinstance(key, str) and key.startswith("_") and key[1:] in info


def merge_infos(
    shard_infos: Sequence[dict[Any, Any]], offsets: Sequence[int], num_envs: int
) -> dict[Any, Any]:
    """Join vector info dicts of consecutive shards into the info dict of all envs.

    Args:
        shard_infos: each shard's vector info dict (arrays of the shard's length + masks).
        offsets: index of each shard's first env.
        num_envs: total number of envs.

    Returns:
        The vector info dict ``SyncVectorEnv`` would return for all envs together.

    """
    merged: dict[Any, Any] = {}
    for info, offset in zip(shard_infos, offsets, strict=True):
        if info:
            _merge_into(merged, info, offset, num_envs)
    return merged


def _merge_into(merged: dict[Any, Any], info: dict[Any, Any], offset: int, num_envs: int) -> None:
    for key, value in info.items():
        if _is_mask(key, info):
            continue
        mask = info.get(f"_{key}")
        if isinstance(value, dict):
            nested = merged.get(key, {})
            _merge_into(nested, value, offset, num_envs)
            array = nested
        else:
            value = np.asarray(value)
            array = merged.get(key)
            if array is None:
                array = _empty_like_batch(value, num_envs)
            array[offset : offset + len(value)] = value
        merged_mask = merged.get(f"_{key}")
        if merged_mask is None:
            merged_mask = np.zeros(num_envs, dtype=np.bool_)
        if mask is not None:
            merged_mask[offset : offset + len(mask)] = mask
        merged[key], merged[f"_{key}"] = array, merged_mask
