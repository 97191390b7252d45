"""Gymnasium ids: ``openenv/<id>`` for every registered id, and ``openenv/Remote-v0``.

``gymnasium.make("openenv/CartPole-v1")`` builds a :class:`RemoteEnv` of ``CartPole-v1`` (on an
embedded local server unless ``url=`` is given); ``gymnasium.make_vec("openenv/CartPole-v1", n,
vectorization_mode="vector_entry_point")`` builds a :class:`RemoteVectorEnv`. The time limit is
applied once, by the server, so these ids register no ``max_episode_steps`` of their own; the
env's ``spec.max_episode_steps`` still reports the limit in force.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from openenv_gym.client.env import RemoteEnv
    from openenv_gym.client.vector_env import RemoteVectorEnv

__all__ = ["NAMESPACE", "register_envs", "register_when_gymnasium_loads", "remote_id"]

NAMESPACE = "openenv"


class _EnvCreator:
    """Entry point of ``openenv/<id>``; exposes the local env class's metadata to ``make``."""

    def __init__(self, env_id: str) -> None:
        self.env_id = env_id

    @property
    def metadata(self) -> dict[str, Any]:
        # gymnasium.make reads render_modes from here before constructing. Envs whose module
        # cannot be imported on the client (extras missing) simply have no metadata here.
        import gymnasium
        from gymnasium.envs.registration import load_env_creator

        try:
            entry_point: Any = gymnasium.spec(self.env_id).entry_point
            creator = entry_point if callable(entry_point) else load_env_creator(entry_point)
            metadata = getattr(creator, "metadata")  # noqa: B009 - absent is an error here
        except Exception as exc:
            raise AttributeError(f"metadata of {self.env_id} unavailable: {exc}") from None
        if not isinstance(metadata, dict):
            raise AttributeError(f"metadata of {self.env_id} is not a dict")
        return metadata

    def __call__(self, **kwargs: Any) -> RemoteEnv[Any, Any]:
        from openenv_gym.client.env import RemoteEnv

        return RemoteEnv(self.env_id, **kwargs)


class _VectorEnvCreator:
    """Vector entry point of ``openenv/<id>``."""

    def __init__(self, env_id: str) -> None:
        self.env_id = env_id

    def __call__(self, num_envs: int, **kwargs: Any) -> RemoteVectorEnv:
        from openenv_gym.client.vector_env import RemoteVectorEnv

        return RemoteVectorEnv(self.env_id, num_envs, **kwargs)


def _remote(env_id: str, **kwargs: Any) -> RemoteEnv[Any, Any]:
    """Entry point of ``openenv/Remote-v0``: any env id, given as ``env_id=``."""
    from openenv_gym.client.env import RemoteEnv

    return RemoteEnv(env_id, **kwargs)


def _remote_vector(num_envs: int, env_id: str, **kwargs: Any) -> RemoteVectorEnv:
    """Vector entry point of ``openenv/Remote-v0``."""
    from openenv_gym.client.vector_env import RemoteVectorEnv

    return RemoteVectorEnv(env_id, num_envs, **kwargs)


def remote_id(env_id: str) -> str:
    """Return the id under which ``env_id`` is registered remotely.

    ``CartPole-v1`` -> ``openenv/CartPole-v1``; a namespaced ``ns/Env-v0`` ->
    ``openenv-ns/Env-v0`` (an id holds at most one namespace).
    """
    namespace, sep, rest = env_id.rpartition("/")
    return f"{NAMESPACE}-{namespace}/{rest}" if sep else f"{NAMESPACE}/{env_id}"


def register_envs() -> None:
    """Register ``openenv/<id>`` for every id now in gymnasium's registry; idempotent."""
    import gymnasium

    prefix = f"{NAMESPACE}/"
    for env_id, spec in list(gymnasium.registry.items()):
        if spec.namespace is not None and spec.namespace.startswith(NAMESPACE):
            continue
        if remote_id(env_id) in gymnasium.registry:
            continue
        gymnasium.register(
            id=remote_id(env_id),
            entry_point=_EnvCreator(env_id),
            vector_entry_point=_VectorEnvCreator(env_id),  # type: ignore[arg-type]
            reward_threshold=spec.reward_threshold,
            nondeterministic=spec.nondeterministic,
            max_episode_steps=None,
        )
    if f"{prefix}Remote-v0" not in gymnasium.registry:
        gymnasium.register(
            id=f"{prefix}Remote-v0",
            entry_point=_remote,  # type: ignore[arg-type]
            vector_entry_point=_remote_vector,  # type: ignore[arg-type]
        )


def register_when_gymnasium_loads() -> None:
    """Register the ids now if gymnasium is imported, else right after it is.

    Importing ``openenv_gym`` (or one of its layers, such as ``protocol`` or ``providers``) thus
    loads no gymnasium of its own, and ``import openenv_gym; gymnasium.make("openenv/...")``
    works in either import order.
    """
    if "gymnasium" in sys.modules:
        register_envs()
    elif not any(isinstance(finder, _GymnasiumHook) for finder in sys.meta_path):
        sys.meta_path.insert(0, _GymnasiumHook())


class _GymnasiumHook(importlib.abc.MetaPathFinder):
    """Find ``gymnasium`` as usual, and register the ids once its module has executed.

    The hook stays in ``sys.meta_path`` until gymnasium has executed: a library that only
    asks whether gymnasium is installed (``importlib.util.find_spec("gymnasium")``, as TorchRL
    does on import) must not use it up before the real import.
    """

    def __init__(self) -> None:
        self._finding = False

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "gymnasium" or self._finding:
            return None
        self._finding = True  # the look-up below goes through sys.meta_path, this hook too
        try:
            spec = importlib.util.find_spec(fullname)  # whichever finder installed it
        finally:
            self._finding = False
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisteringLoader(spec.loader)
        return spec


class _RegisteringLoader(importlib.abc.Loader):
    """Delegate to gymnasium's loader, then register the ``openenv/<id>`` ids."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        self._loader.exec_module(module)
        for finder in [f for f in sys.meta_path if isinstance(f, _GymnasiumHook)]:
            sys.meta_path.remove(finder)  # used: gymnasium is in sys.modules from now on
        # Hand gymnasium its own loader back (resource readers and reloads go through it).
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        register_envs()
