"""Where servers come from: each provider returns ready endpoint URLs and cleans up after them."""

from openenv_gym.providers.local import LocalProvider

__all__ = ["LocalProvider"]
