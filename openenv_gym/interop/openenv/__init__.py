"""OpenEnv, both ways: everything that knows OpenEnv's models, routes or messages.

Hosting (their envs and clients on our server):

- :mod:`~openenv_gym.interop.openenv.schema`: JSON schemas <-> gymnasium spaces.
- :mod:`~openenv_gym.interop.openenv.hosted`: an OpenEnv ``Environment`` class as a gymnasium
  env (``OpenEnvAsGym``), and the JSON form in which OpenEnv clients see any hosted env.
- :mod:`~openenv_gym.interop.openenv.session`: OpenEnv's ``/ws`` JSON session and its HTTP
  replies (``/health``, ``/schema``, ``/metadata``) on our port; pure, text in, text out.

Driving (their servers from Gymnasium):

- :mod:`~openenv_gym.interop.openenv.urls`: the URL forms of an OpenEnv server.
- :mod:`~openenv_gym.interop.openenv.http`: ``GET /schema`` and ``/health``.
- :mod:`~openenv_gym.interop.openenv.connection`: one JSON WebSocket session.
- :mod:`~openenv_gym.interop.openenv.env`: ``OpenEnvEnv``, one session as a ``gymnasium.Env``.
- :mod:`~openenv_gym.interop.openenv.vector_env`: ``OpenEnvVectorEnv``, a ``SyncVectorEnv``
  over sessions.
- :mod:`~openenv_gym.interop.openenv.docker`: an OpenEnv image's servers in containers.

Supported: ``openenv`` >= 0.10 (``openenv-core`` 0.3 also works; never install both, they
write the same ``openenv`` package). OpenEnv itself is needed only to host its ``Environment``
classes; driving its servers needs only this library. ``OpenEnvEnv`` and ``OpenEnvVectorEnv``
are importable from here (loaded on first use).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # typed for checkers; loaded on first use at run time
    from openenv_gym.interop.openenv.env import OpenEnvEnv
    from openenv_gym.interop.openenv.vector_env import OpenEnvVectorEnv

__all__ = ["OpenEnvEnv", "OpenEnvVectorEnv"]

_LAZY = {
    "OpenEnvEnv": "openenv_gym.interop.openenv.env",
    "OpenEnvVectorEnv": "openenv_gym.interop.openenv.vector_env",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
