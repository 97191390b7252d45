"""The results a pool session pushes (POOL_EVENT), per env, and batching them for ``recv``.

``RemoteEnvPool`` keeps one :class:`EnvResult` per env that finished, in the order results
arrived, and hands out ``batch_size`` of them at a time as one batch laid out as gymnasium's
``concatenate`` lays out a batch, with infos merged as ``VectorEnv._add_info`` merges them.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector import VectorEnv
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array, iterate

from openenv_gym.errors import StepTimeoutError, remote_error
from openenv_gym.protocol.messages import ErrorBody, parse_body

__all__ = ["EnvResult", "batch_results", "event_results", "pool_error", "take_actions"]


@dataclasses.dataclass
class EnvResult:
    """One env's step or reset result (``error`` set: the step failed on the server)."""

    env_id: int
    obs: Any = None
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    error: Exception | None = None


def pool_error(url: str, env_index: int, body: Any) -> Exception:
    """Return the exception an env's error body stands for, naming the env (not raised)."""
    error = parse_body(ErrorBody, body)
    details = error.details or {}
    if error.type.endswith("StepTimeoutError") and "elapsed" in details:
        return StepTimeoutError(
            env_index,
            float(details["elapsed"]),
            float(details["timeout"]),
            url,
            str(details.get("action", "step")),
        )
    return remote_error(url, error.type, f"env {env_index}: {error.message}", error.traceback)


def event_results(
    body: Any, start: int, single_space: spaces.Space[Any], url: str
) -> list[EnvResult]:
    """Split one POOL_EVENT body into per-env results; ``start`` maps shard ids to pool ids.

    Raises:
        ValueError: the body is not the 7 elements of docs/protocol.md section 5.12.

    """
    if not (isinstance(body, list) and len(body) == 7):
        raise ValueError(f"{url}: a pool event must hold 7 elements")
    env_ids, obs, rewards, terminated, truncated, merges, errors = body
    count = len(env_ids)
    items = list(iterate(batch_space(single_space, count), obs)) if count else []
    if len(items) != count:
        raise ValueError(f"{url}: a pool event holds {len(items)} observations for {count} envs")
    infos = {int(position): info for position, info in merges}
    results = [
        EnvResult(
            start + int(env_ids[j]),
            items[j],
            float(rewards[j]),
            bool(terminated[j]),
            bool(truncated[j]),
            infos.get(j, {}),
        )
        for j in range(count)
    ]
    for env_id, error in errors:
        index = start + int(env_id)
        results.append(EnvResult(index, error=pool_error(url, index, error)))
    return results


class _Infos:
    """Just what ``VectorEnv._add_info`` reads: ``num_envs`` (and itself, recursively)."""

    _add_info = VectorEnv._add_info

    def __init__(self, num_envs: int) -> None:
        self.num_envs = num_envs


def batch_results(
    single_space: spaces.Space[Any], results: Sequence[EnvResult]
) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
    """Return ``(obs, rewards, terminated, truncated, info)`` of ``results`` as one batch.

    ``info["env_id"]`` (int32) names the env of each position; the envs' own infos are merged
    as ``VectorEnv._add_info`` merges them (``_key`` masks).
    """
    count = len(results)
    obs = concatenate(
        single_space,
        [r.obs for r in results],
        create_empty_array(single_space, count),  # type: ignore[arg-type]
    )
    merger = _Infos(count)
    info: dict[str, Any] = {}
    for position, result in enumerate(results):
        if result.info:
            info = merger._add_info(info, result.info, position)  # type: ignore[misc]
    info["env_id"] = np.array([r.env_id for r in results], dtype=np.int32)
    return (
        obs,
        np.array([r.reward for r in results], dtype=np.float64),
        np.array([r.terminated for r in results], dtype=bool),
        np.array([r.truncated for r in results], dtype=bool),
        info,
    )


@functools.singledispatch
def take_actions(single_space: spaces.Space[Any], batch: Any, positions: Sequence[int]) -> Any:
    """Return the actions at ``positions`` of ``batch``, a batch of ``single_space`` values."""
    return tuple(batch[p] for p in positions)


@take_actions.register(spaces.Box)
@take_actions.register(spaces.Discrete)
@take_actions.register(spaces.MultiDiscrete)
@take_actions.register(spaces.MultiBinary)
def _(single_space: spaces.Space[Any], batch: Any, positions: Sequence[int]) -> Any:
    return np.asarray(batch)[np.asarray(positions, dtype=np.int64)]


@take_actions.register(spaces.Dict)
def _(single_space: spaces.Dict, batch: Any, positions: Sequence[int]) -> Any:
    return {key: take_actions(sub, batch[key], positions) for key, sub in single_space.items()}


@take_actions.register(spaces.Tuple)
def _(single_space: spaces.Tuple[Any], batch: Any, positions: Sequence[int]) -> Any:
    return tuple(
        take_actions(sub, part, positions) for sub, part in zip(single_space, batch, strict=True)
    )
