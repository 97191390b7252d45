"""What a native session checks before a client's request reaches its engine, and after.

An engine may be C++ that trusts its caller: envpool aborts the process on a batch of the
wrong size and crashes on an action out of range; ale-py's ``AtariVectorEnv`` hangs on one. A
client must not be able to do that to a server, so a step's actions and a reset's mask are
checked here first, with errors that name what was expected; and an engine whose flags do not
have one value per env is reported instead of breaking the session's episode bookkeeping.

The checks cost O(1) Python per step (a shape, a dtype kind, a min and a max); Box actions are
not range-checked (engines clip them, and in-process they are accepted as they are).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from openenv_gym.errors import InvalidActionError

__all__ = ["ENGINE_METHODS", "check_actions", "check_flags", "check_reset_mask"]

ENGINE_METHODS = frozenset(
    {
        "step",
        "reset",
        "close",
        "close_extras",
        "render",
        "call",
        "get_attr",
        "set_attr",
        "step_async",
        "step_wait",
        "reset_async",
        "reset_wait",
        "call_async",
        "call_wait",
        # envpool's and ale-py's asynchronous API: a recv without a send blocks for ever.
        "send",
        "recv",
        "async_reset",
        "xla",
    }
)
"""Engine methods a client's CALL may not reach: the session's own operations (STEP, RESET,
RENDER, ...) go through its bookkeeping and checks, and the engines' async halves can block."""


_DTYPE_KINDS = {"iu": "an integer", "iub": "an integer or bool", "iuf": "a numeric"}


def _batch_shape(single: spaces.Space[Any], num_envs: int) -> tuple[int, ...]:
    return (num_envs, *(single.shape or ()))


def check_actions(
    single: spaces.Space[Any], batched: spaces.Space[Any], actions: Any, num_envs: int
) -> None:
    """Refuse ``actions`` that are not a batch of ``num_envs`` ``single`` actions.

    ``batched`` (the engine's ``action_space``) decides for spaces other than Box, Discrete,
    MultiDiscrete and MultiBinary (``contains``).

    Raises:
        InvalidActionError: wrong type, dtype, shape, or an integer action out of range; the
            message says what was expected.

    """
    if not isinstance(single, (spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)):
        if isinstance(single, spaces.Box):
            _check_array(actions, _batch_shape(single, num_envs), "iuf")
        elif not batched.contains(actions):
            raise InvalidActionError(f"actions are not in the action space {batched}")
        return
    kinds = "iub" if isinstance(single, spaces.MultiBinary) else "iu"
    array = _check_array(actions, _batch_shape(single, num_envs), kinds)
    if not array.size:
        return
    low: Any
    high: Any
    if isinstance(single, spaces.Discrete):  # the common case: two reductions, no temporaries
        low, high = int(single.start), int(single.start + single.n - 1)
        if low <= array.min() and array.max() <= high:
            return
    elif isinstance(single, spaces.MultiBinary):
        low, high = 0, 1
        if low <= array.min() and array.max() <= high:
            return
    else:
        low, high = single.start, single.start + single.nvec - 1
        if not (np.any(array < low) or np.any(array > high)):
            return
    bad = tuple(np.argwhere((array < low) | (array > high))[0])
    raise InvalidActionError(
        f"action of env {int(bad[0])} is out of range: got {array[bad].item()}, expected "
        f"{np.min(low)}..{np.max(high)} (single action space {single})"
    )


def _check_array(actions: Any, shape: tuple[int, ...], kinds: str) -> np.ndarray[Any, Any]:
    if not isinstance(actions, np.ndarray):
        raise InvalidActionError(
            f"actions must be an array of shape {shape}, got {type(actions).__name__}"
        )
    if actions.shape != shape:
        raise InvalidActionError(f"actions must have shape {shape}, got {actions.shape}")
    if actions.dtype.kind not in kinds:
        raise InvalidActionError(
            f"actions of shape {shape} must have {_DTYPE_KINDS[kinds]} dtype, got {actions.dtype}"
        )
    return actions


def check_reset_mask(mask: Any, num_envs: int) -> None:
    """Refuse a ``reset_mask`` that is not a bool array with one value per env.

    Raises:
        ValueError: the message names ``reset_mask`` and what was expected.

    """
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.shape != (num_envs,):
        got = (
            f"{mask.dtype} array of shape {mask.shape}"
            if isinstance(mask, np.ndarray)
            else type(mask).__name__
        )
        raise ValueError(
            f"options['reset_mask'] must be a bool array of shape ({num_envs},), got {got}"
        )


def check_flags(env_id: str, num_envs: int, terminations: Any, truncations: Any) -> None:
    """Refuse an engine's step flags unless each is one value per env.

    Raises:
        RuntimeError: the engine (the operator's code) returned flags of another shape.

    """
    for name, flags in (("terminations", terminations), ("truncations", truncations)):
        if np.shape(flags) != (num_envs,):
            raise RuntimeError(
                f"engine {env_id!r} returned {name} of shape {np.shape(flags)}, "
                f"expected ({num_envs},)"
            )
