"""Adapters that put other RL libraries' vector-env APIs over :class:`RemoteVectorEnv`.

Each module imports its library when imported (``openenv_gym.adapters.sb3``: Stable-Baselines3,
extra ``sb3``); this package itself imports nothing, so ``import openenv_gym`` stays cheap.
"""

from __future__ import annotations
