"""openenv_gym: Gymnasium environments served remotely, batched, exact.

``RemoteEnv`` is a ``gymnasium.Env`` and ``RemoteVectorEnv`` a ``gymnasium.vector.VectorEnv``
whose episodes run in environment servers (local processes by default). Importing this package
registers ``openenv/<id>`` for every gymnasium id, and ``openenv/Remote-v0``.
"""

from openenv_gym import errors
from openenv_gym.client import RemoteEnv, RemoteVectorEnv
from openenv_gym.registration import register_envs
from openenv_gym.server import ServerConfig
from openenv_gym.server import run_server as serve

__version__ = "0.1.0"

__all__ = ["RemoteEnv", "RemoteVectorEnv", "ServerConfig", "__version__", "errors", "serve"]

register_envs()
