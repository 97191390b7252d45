"""Which environments a server hosts, and how to build them.

A server is configured with env specs; a client can only ask for those. A spec is either

* a gymnasium id (``"CartPole-v1"``, or ``"module:Env-v0"`` whose module registers it), or
* an entry point ``"module:attr"`` naming an ``Env`` class or factory, or an OpenEnv
  ``Environment`` class (hosted through ``interop.hosted.OpenEnvAsGym``).

With ``allow_any_id`` a server also hosts every id in gymnasium's registry (never an entry point
or a module-prefixed id: those import code, so they must be configured explicitly).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium
from gymnasium.envs.registration import EnvSpec

from openenv_gym.errors import UnknownEnvError
from openenv_gym.interop.hosted import OpenEnvAsGym, is_openenv_environment

__all__ = ["EnvCatalog", "EnvFactory"]

EnvFactory = Callable[[], gymnasium.Env[Any, Any]]


def _resolve_spec(spec: str) -> EnvSpec:
    """Turn a configured spec string into a gymnasium ``EnvSpec``, importing what it names."""
    module_name, sep, attr = spec.partition(":")
    if not sep:
        return gymnasium.spec(spec)
    module = importlib.import_module(module_name)
    if hasattr(module, attr):
        entry_point = getattr(module, attr)
        if is_openenv_environment(entry_point):  # hosted through its gymnasium view
            entry_point = functools.partial(OpenEnvAsGym, entry_point)
        return EnvSpec(id=spec, entry_point=entry_point)
    return gymnasium.spec(attr)  # the module registered it on import


class EnvCatalog:
    """The envs a server may build, resolved once at start-up.

    Args:
        specs: gymnasium ids and ``module:attr`` entry points to host.
        allow_any_id: also host every id registered in gymnasium.

    Raises:
        ValueError: a spec names no registered id, or its module cannot be imported.

    """

    def __init__(self, specs: Sequence[str], *, allow_any_id: bool = False) -> None:
        self.allow_any_id = allow_any_id
        self._specs = {}
        for spec in specs:
            try:
                self._specs[spec] = _resolve_spec(spec)
            except (gymnasium.error.Error, ImportError) as exc:
                raise ValueError(f"cannot host {spec!r}: {exc}") from exc

    @property
    def specs(self) -> list[str]:
        """The configured spec strings, in order."""
        return list(self._specs)

    def lookup(self, env_id: str) -> EnvSpec:
        """Return the gymnasium spec for ``env_id``.

        Raises:
            UnknownEnvError: this server does not host ``env_id``.

        """
        spec = self._specs.get(env_id)
        if spec is not None:
            return spec
        if self.allow_any_id and ":" not in env_id and env_id in gymnasium.registry:
            return gymnasium.spec(env_id)
        raise UnknownEnvError(env_id, self.specs, self.allow_any_id)

    def factory(self, env_id: str, kwargs: dict[str, Any]) -> EnvFactory:
        """Return a function building one env for ``env_id`` with ``kwargs``.

        The env is built as ``gymnasium.make`` builds it (checker, order enforcing, time limit);
        ``max_episode_steps`` and ``disable_env_checker`` in ``kwargs`` go to ``make`` itself.

        Raises:
            UnknownEnvError: this server does not host ``env_id``.

        """
        spec = self.lookup(env_id)
        return functools.partial(gymnasium.make, dataclasses.replace(spec), **kwargs)
