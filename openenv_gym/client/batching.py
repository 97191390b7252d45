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

__all__ = ["concat_batches", "slice_batch"]

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
