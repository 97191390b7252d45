"""openenv_gym: Gymnasium environments served remotely, batched, exact.

``RemoteEnv`` is a ``gymnasium.Env`` and ``RemoteVectorEnv`` a ``gymnasium.vector.VectorEnv``
whose episodes run in environment servers (local processes by default). Importing this package
is cheap: the names below load their modules on first use. It registers ``openenv/<id>`` for
every gymnasium id, and ``openenv/Remote-v0``, as soon as gymnasium is imported (now, if it
already is).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from openenv_gym.registration import register_when_gymnasium_loads

if TYPE_CHECKING:
    from openenv_gym import errors
    from openenv_gym.client.env import RemoteEnv
    from openenv_gym.client.env_pool import RemoteEnvPool
    from openenv_gym.client.vector_env import RemoteVectorEnv
    from openenv_gym.server.app import ServerConfig
    from openenv_gym.server.app import run_server as serve

__version__ = "0.1.0"

__all__ = [
    "RemoteEnv",
    "RemoteEnvPool",
    "RemoteVectorEnv",
    "ServerConfig",
    "__version__",
    "errors",
    "serve",
]

_LAZY = {
    "RemoteEnv": ("openenv_gym.client.env", "RemoteEnv"),
    "RemoteVectorEnv": ("openenv_gym.client.vector_env", "RemoteVectorEnv"),
    "RemoteEnvPool": ("openenv_gym.client.env_pool", "RemoteEnvPool"),
    "ServerConfig": ("openenv_gym.server.app", "ServerConfig"),
    "serve": ("openenv_gym.server.app", "run_server"),
    "errors": ("openenv_gym.errors", None),
}
"""Public name -> (module, attribute; ``None``: the module itself)."""


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use.

    Raises:
        AttributeError: ``name`` is not public here.

    """
    try:
        module_name, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


register_when_gymnasium_loads()
