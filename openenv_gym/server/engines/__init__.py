"""Native vector engines a server may host, each named by the operator (never by a client).

A hosted spec runs natively (``server_vectorization="vector_entry_point"``) through its
``vector_entry_point``: gymnasium's own (``CartPole-v1``), or one the operator names:

* ``envpool:<task id>``: an envpool pool (extra ``envpool``), :mod:`.envpool`;
* ``ale:<game>``: ale-py's ``AtariVectorEnv`` (extra ``ale``), :mod:`.ale`;
* ``module:attr``: a ``gymnasium.vector.VectorEnv`` class, or a factory
  ``(num_envs, **kwargs) -> VectorEnv``.

The two engine forms are specs of their own (``openenv-gym serve ale:pong``); a
``module:attr`` VectorEnv class is one too, and any hosted id may get the operator's engine as
its ``vector_entry_point`` (``--vector-entry-point ID=ENGINE``, or the hosting file's
``vector_entry_point`` field). An engine that can run several autoreset modes says so in
:attr:`VectorEntryPoint.autoreset_modes`; the host then builds it in the mode the client asks.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from gymnasium.envs.registration import EnvSpec
from gymnasium.vector import AutoresetMode, VectorEnv

__all__ = ["ENGINE_PREFIXES", "VectorEntryPoint", "engine_spec", "is_engine", "vector_entry_point"]

ENGINE_PREFIXES = ("envpool:", "ale:")
"""Spec prefixes naming an engine adapter rather than a module."""


class VectorEntryPoint:
    """A ``vector_entry_point`` for ``gymnasium.make_vec``: ``(num_envs, **kwargs) -> VectorEnv``.

    Args:
        name: what the operator wrote (``envpool:Pong-v5``, ``pkg.mod:make``).
        make: builds the engine.
        autoreset_modes: the modes ``make`` can build, passed as its ``autoreset_mode``
            keyword; empty: the engine runs the one mode it declares.

    """

    def __init__(
        self,
        name: str,
        make: Callable[..., VectorEnv[Any, Any, Any]],
        autoreset_modes: tuple[AutoresetMode, ...] = (),
    ) -> None:
        self.name = name
        self.make = make
        self.autoreset_modes = autoreset_modes

    def __call__(self, **kwargs: Any) -> VectorEnv[Any, Any, Any]:
        """Build the engine: ``make_vec`` passes ``num_envs`` and the kwargs as keywords."""
        return self.make(**kwargs)

    def __repr__(self) -> str:
        return f"VectorEntryPoint({self.name!r})"

    def __deepcopy__(self, memo: dict[int, Any]) -> VectorEntryPoint:
        return self  # make_vec deep-copies the spec; an entry point is immutable


def is_engine(spec: str) -> bool:
    """Tell whether ``spec`` names an engine adapter (``envpool:``, ``ale:``)."""
    return spec.startswith(ENGINE_PREFIXES)


def vector_entry_point(name: str) -> VectorEntryPoint:
    """Resolve what the operator named into an entry point (imports what it names).

    Raises:
        ValueError: ``name`` is not ``envpool:<task>``, ``ale:<game>`` or ``module:attr``, or
            names no VectorEnv class or callable.
        ImportError: its module (or the engine's extra) is not installed.

    """
    prefix, sep, rest = name.partition(":")
    if not sep or not rest:
        raise ValueError(f"engine {name!r}: expected envpool:<task>, ale:<game> or module:attr")
    if prefix == "envpool":
        from openenv_gym.server.engines.envpool import envpool_entry_point

        return envpool_entry_point(rest)
    if prefix == "ale":
        from openenv_gym.server.engines.ale import ale_entry_point

        return ale_entry_point(rest)
    target = getattr(importlib.import_module(prefix), rest, None)
    if target is None or not callable(target):
        raise ValueError(f"engine {name!r}: {prefix} has no VectorEnv class or factory {rest!r}")
    return VectorEntryPoint(name, target)


def engine_spec(spec: str) -> EnvSpec:
    """Return the native-only spec of an engine (``envpool:...``, ``ale:...``).

    Raises:
        ValueError, ImportError: see :func:`vector_entry_point`.

    """
    return EnvSpec(id=spec, entry_point=None, vector_entry_point=vector_entry_point(spec))
