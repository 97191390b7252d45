"""The gymnasium facade: RemoteEnv and RemoteVectorEnv over connections to servers."""

from openenv_gym.client.env import RemoteEnv
from openenv_gym.client.vector_env import RemoteVectorEnv

__all__ = ["RemoteEnv", "RemoteVectorEnv"]
