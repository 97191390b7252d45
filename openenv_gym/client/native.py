"""What a ``RemoteVectorEnv`` does differently when its servers run native vector envs.

With ``server_vectorization="vector_entry_point"`` each shard is one engine (the spec's
``vector_entry_point``) of the shard's size. Shard ``k`` holding envs ``start_k:stop_k`` gets
``reset(seed=s + start_k)`` for ``reset(seed=s)``, so each shard equals the in-process engine of
its size under that seed. Infos arrive vector-merged per shard (``MakeReply.info_form ==
"vector"``); several shards are joined key by key, one preallocated array per key, never env by
env. ``call`` and ``get_attr`` return the engine's one result (a tuple of one per shard with
several shards), ``set_attr`` sets one value on every engine (a list too), and ``reconnect`` is
not supported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["engine_results", "join_vector_infos", "shard_seed"]


def engine_results(replies: Sequence[Any], *, frames: bool) -> Any:
    """Return what the shards' engines answered to CALL, GET_ATTR or RENDER.

    One shard: the engine's own result. Several: a tuple of one result per shard, except
    frames, which are joined in env order (``None`` if an engine rendered nothing).
    """
    if len(replies) == 1:
        return replies[0]
    if not frames:
        return tuple(replies)
    if any(reply is None for reply in replies):
        return None
    return tuple(frame for reply in replies for frame in reply)


def shard_seed(
    seed: int | list[int | None] | None, start: int, stop: int
) -> int | list[int | None] | None:
    """Return the seed the shard of envs ``start:stop`` resets its engine with.

    An int ``s`` becomes ``s + start``; a list is sliced; ``None`` stays ``None``.
    """
    if seed is None:
        return None
    if isinstance(seed, int):
        return seed + start
    return list(seed[start:stop])


def join_vector_infos(infos: Sequence[dict[str, Any]], sizes: Sequence[int]) -> dict[str, Any]:
    """Join the vector-merged infos of consecutive shards into one, as one engine would give.

    A key some shard lacks is filled as gymnasium's ``_add_info`` fills envs that did not set
    it (zeros, ``None`` for objects) with its ``_key`` mask False there.

    Args:
        infos: each shard's vector infos, in shard order.
        sizes: each shard's number of envs.

    Returns:
        The joined vector infos.

    """
    if len(infos) == 1:
        return infos[0]
    keys: dict[str, None] = {}
    for info in infos:
        keys.update(dict.fromkeys(info))
    total = sum(sizes)
    joined: dict[str, Any] = {}
    for key in keys:
        parts = [info.get(key) for info in infos]
        if all(part is None or isinstance(part, dict) for part in parts):
            joined[key] = join_vector_infos([part or {} for part in parts], sizes)
        else:
            joined[key] = _join_arrays(parts, sizes, total, mask=key.startswith("_"))
    return joined


def _join_arrays(
    parts: Sequence[Any], sizes: Sequence[int], total: int, *, mask: bool
) -> np.ndarray[Any, Any]:
    first = next(np.asarray(part) for part in parts if part is not None)
    dtype = np.dtype(bool) if mask else first.dtype
    out = np.zeros((total, *first.shape[1:]), dtype=dtype)
    if dtype.hasobject:
        out[...] = None
    start = 0
    for part, size in zip(parts, sizes, strict=True):
        if part is not None:
            out[start : start + size] = part
        start += size
    return out
