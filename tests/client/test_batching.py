"""Shard slicing and joining, against gymnasium's own batching utilities."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import data_equivalence
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array

from openenv_gym.client.batching import (
    ARRAY_SPACES,
    check_reset_mask,
    concat_batches,
    slice_batch,
    vector_seeds,
)

SPACES = [
    spaces.Box(-1, 1, (3,), np.float32),
    spaces.Discrete(4, start=-1),
    spaces.MultiDiscrete([2, 3]),
    spaces.MultiBinary(4),
    spaces.Text(5),
    spaces.Dict(
        {"a": spaces.Discrete(3), "b": spaces.Tuple((spaces.Box(0, 1, ()), spaces.Text(3)))}
    ),
    spaces.Sequence(spaces.Discrete(2)),
]


def _batch(space: spaces.Space[Any], n: int) -> Any:
    space.seed(0)
    items = [space.sample() for _ in range(n)]
    return concatenate(space, items, create_empty_array(space, n))


@pytest.mark.parametrize("space", SPACES, ids=lambda s: type(s).__name__)
def test_batching_slices_then_joins_back_to_the_same_batch(space: spaces.Space[Any]) -> None:
    batch = _batch(space, 7)
    shards = [slice_batch(space, batch, a, b) for a, b in ((0, 2), (2, 5), (5, 7))]
    joined = concat_batches(space, shards)
    assert data_equivalence(joined, batch)
    assert batch_space(space, 7).contains(joined)


def test_batching_array_spaces_are_the_ones_batched_as_one_array() -> None:
    for space in SPACES:
        assert isinstance(space, ARRAY_SPACES) == isinstance(_batch(space, 3), np.ndarray)


def test_batching_seeds_and_masks_follow_sync_vector_env() -> None:
    assert vector_seeds(5, 3) == [5, 6, 7]
    assert vector_seeds(None, 2) == [None, None]
    assert vector_seeds([1, None], 2) == [1, None]
    with pytest.raises(ValueError, match="must match num_envs=3 but got length=2"):
        vector_seeds([1, 2], 3)
    check_reset_mask(np.array([True, False]), 2)
    with pytest.raises(ValueError, match="at least one True"):
        check_reset_mask(np.zeros(2, dtype=bool), 2)
    with pytest.raises(TypeError, match=r"dtype=np\.bool_"):
        check_reset_mask(np.zeros(2, dtype=int), 2)
