"""The environment server: hosts sessions of env batches behind the wire protocol."""

from openenv_gym.server.app import ServerConfig, run_server
from openenv_gym.server.catalog import EnvCatalog
from openenv_gym.server.host import EnvHost
from openenv_gym.server.session import Session

__all__ = ["EnvCatalog", "EnvHost", "ServerConfig", "Session", "run_server"]
