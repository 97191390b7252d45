"""``ale:<game>``: ale-py's ``AtariVectorEnv`` (extra ``ale``), a native gymnasium VectorEnv.

``AtariVectorEnv(game, num_envs, **kwargs)`` as a user builds it in-process: 84x84 grayscale
frames stacked by 4, frame skip 4, its own threads. It seeds sub-env ``i`` with ``seed + i`` on
``reset(seed=seed)``, supports ``options["reset_mask"]`` and runs NEXT_STEP or SAME_STEP
autoreset (chosen at construction, so the host builds the mode the client asks for). It has no
``render``. A ``max_episode_steps`` (``make_vec`` passes an id's time limit) becomes
``max_num_frames_per_episode = max_episode_steps * frameskip``.
"""

from __future__ import annotations

import re
from typing import Any

from gymnasium.vector import AutoresetMode, VectorEnv

from openenv_gym.server.engines import VectorEntryPoint

__all__ = ["ale_entry_point"]

_DEFAULT_FRAMESKIP = 4  # AtariVectorEnv's


def _atari_class() -> Any:
    try:
        from ale_py.vector_env import AtariVectorEnv
    except ImportError as exc:
        raise ImportError(
            f"ale: engines need ale-py: pip install 'openenv-gym[ale]' ({exc})"
        ) from exc
    return AtariVectorEnv


def _rom_id(game: str, known: list[str]) -> str:
    """Return ale-py's ROM id for ``game`` (``pong``; ``Pong`` and ``SpaceInvaders`` too)."""
    for candidate in (game, re.sub(r"(?<!^)(?=[A-Z])", "_", game).lower()):
        if candidate in known:
            return candidate
    raise ValueError(f"ale:{game}: ale-py has no ROM {game!r} (see ale_py.roms.get_all_rom_ids)")


def ale_entry_point(game: str) -> VectorEntryPoint:
    """Return the entry point building ``AtariVectorEnv(game, num_envs, **kwargs)``.

    Raises:
        ImportError: ale-py is not installed (extra ``ale``).
        ValueError: ale-py has no ROM for ``game`` (a ROM id such as ``pong``, or ``Pong``).

    """
    atari = _atari_class()
    from ale_py import roms

    rom = _rom_id(game, roms.get_all_rom_ids())

    def make(
        num_envs: int, max_episode_steps: int | None = None, **kwargs: Any
    ) -> VectorEnv[Any, Any, Any]:
        if max_episode_steps is not None:  # a time limit in steps, as ALE counts it: frames
            frames = max_episode_steps * kwargs.get("frameskip", _DEFAULT_FRAMESKIP)
            kwargs.setdefault("max_num_frames_per_episode", frames)
        engine: VectorEnv[Any, Any, Any] = atari(game=rom, num_envs=num_envs, **kwargs)
        return engine

    return VectorEntryPoint(f"ale:{game}", make, (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP))
