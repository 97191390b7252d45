"""The operator's hosting policy: what clients may build and set, written by the operator only.

A server hosts named specs; for each one the operator decides

* which keyword arguments a client may pass at MAKE (``allow_kwargs``, on top of the safe
  defaults the catalog derives: ``gymnasium.make``'s own ``max_episode_steps`` and
  ``disable_env_checker``, ``render_mode`` among the allowed modes, and the scalar (bool, int,
  float) constructor parameters of a gymnasium id whose entry point is an env class);
* which keyword arguments are fixed on the server (``kwargs``: safety settings such as
  TerminalEnv's ``allow_outside_container``, ``timeout`` or ``tasks``; a client can never
  change them);
* which attributes a client may set (``set_attrs``; none by default; ``*`` allows any public
  name, for a server that one client alone can reach);
* which render modes a client may ask for (``render_modes``; by default the env's declared
  modes except ``human``, which opens a window on the server, and the ``*_list`` modes, which
  collect frames without bound).

Policies come from the command line (``--env-kwargs-allow``, ``--set-attr-allow``,
``--render-modes``) or from a hosting file (``--hosting FILE``, TOML or JSON)::

    [[env]]
    spec = "openenv_gym.envs.terminal:TerminalEnv"
    allow_kwargs = ["max_steps"]
    set_attrs = []
    render_modes = ["ansi"]
    kwargs = { allow_outside_container = true, timeout = 5.0 }
    concurrent_steps = 16        # pool sessions: steps on 16 threads (0: inline)
    step_timeout = 30.0          # pool sessions: default deadline of a step
    step_isolation = "process"   # pool sessions: each env in a child killed at its deadline

    [[env]]
    spec = "CartPole-v1"
    vector_entry_point = "mypkg.fast:make_cartpole_vec"   # or envpool:CartPole-v1

Nothing a client sends can change a policy.
"""

from __future__ import annotations

import dataclasses
import json
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

__all__ = ["HostedSpec", "HostingPolicy", "load_hosting_file", "pool_fields"]


@dataclasses.dataclass(frozen=True)
class HostingPolicy:
    """What clients may do with one hosted spec (see the module docstring).

    Attributes:
        allow_kwargs: MAKE keyword arguments a client may pass, beyond the safe defaults.
        kwargs: keyword arguments fixed by the operator; a client cannot change them.
        set_attrs: attribute names a client may set with SET_ATTR (``*``: any public name).
        render_modes: render modes a client may ask for; ``None``: the env's declared modes
            except ``human`` and the ``*_list`` modes.

    """

    allow_kwargs: frozenset[str] = frozenset()
    kwargs: Mapping[str, Any] = dataclasses.field(
        default_factory=lambda: types.MappingProxyType({})
    )
    set_attrs: frozenset[str] = frozenset()
    render_modes: frozenset[str] | None = None
    concurrent_steps: int | None = None
    """Pool sessions: envs stepped at once on worker threads (0: one after another, inline;
    ``None``: inline until a step takes over 2 ms, then up to 64 threads)."""
    step_timeout: float | None = None
    """Pool sessions: the default deadline of one step or reset, in seconds (``None``: none)."""
    step_isolation: Literal["none", "process"] = "none"
    """Pool sessions: ``"process"`` runs each env in a child process killed at its deadline."""

    @classmethod
    def from_data(cls, data: Mapping[str, Any], *, where: str) -> HostingPolicy:
        """Build a policy from a hosting file's table.

        Raises:
            ValueError: an unknown field, or a field of the wrong type; the text names ``where``.

        """
        known = {"allow_kwargs", "kwargs", "set_attrs", "render_modes", *_POOL_FIELDS}
        entry = {"spec", "vector_entry_point"}  # HostedSpec's own fields
        unknown = set(data) - known - entry
        if unknown:
            expected = ", ".join(sorted(known | entry))
            raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}; expected: {expected}")
        fixed = data.get("kwargs", {})
        if not isinstance(fixed, Mapping):
            raise ValueError(f"{where}: kwargs must be a table, got {type(fixed).__name__}")
        modes = data.get("render_modes")
        return cls(
            allow_kwargs=_names(data.get("allow_kwargs", ()), f"{where}: allow_kwargs"),
            kwargs=types.MappingProxyType(dict(fixed)),
            set_attrs=_names(data.get("set_attrs", ()), f"{where}: set_attrs"),
            render_modes=None if modes is None else _names(modes, f"{where}: render_modes"),
            **pool_fields(data, where),
        )

    def merged(self, other: HostingPolicy) -> HostingPolicy:
        """Return this policy with ``other``'s names added and its fixed kwargs on top."""
        if other.render_modes is None:
            modes = self.render_modes
        else:
            modes = other.render_modes | (self.render_modes or frozenset())
        defaults = HostingPolicy()
        pool = {
            name: getattr(other, name)
            if getattr(other, name) != getattr(defaults, name)
            else getattr(self, name)
            for name in _POOL_FIELDS
        }
        return HostingPolicy(
            allow_kwargs=self.allow_kwargs | other.allow_kwargs,
            kwargs=types.MappingProxyType({**self.kwargs, **other.kwargs}),
            set_attrs=self.set_attrs | other.set_attrs,
            render_modes=modes,
            **pool,
        )


@dataclasses.dataclass(frozen=True)
class HostedSpec:
    """A spec the operator hosts and its policy (one entry of a hosting file).

    Attributes:
        spec: the spec (see ``server/catalog.py``).
        policy: what clients may do with it.
        vector_entry_point: the native engine sessions asking for
            ``server_vectorization="vector_entry_point"`` get instead of the spec's own:
            ``envpool:<task>``, ``ale:<game>`` or ``module:attr`` (a VectorEnv class or a
            factory ``(num_envs, **kwargs) -> VectorEnv``; see ``server/engines/``).

    """

    spec: str
    policy: HostingPolicy = HostingPolicy()
    vector_entry_point: str | None = None


_POOL_FIELDS = ("concurrent_steps", "step_timeout", "step_isolation")
_MAX_CONCURRENT_STEPS = 1024
"""The most worker threads a pool session may get (a bound on what one MAKE can start)."""


def pool_fields(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Return the pool fields of a hosting table (or of the command line), checked.

    Raises:
        ValueError: a field of the wrong type or out of range; the text names ``where``.

    """
    fields: dict[str, Any] = {}
    steps = data.get("concurrent_steps")
    if steps is not None:
        if type(steps) is not int or not 0 <= steps <= _MAX_CONCURRENT_STEPS:
            raise ValueError(
                f"{where}: concurrent_steps must be an int in [0, 1024], got {steps!r}"
            )
        fields["concurrent_steps"] = steps
    timeout = data.get("step_timeout")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ValueError(f"{where}: step_timeout must be a number > 0, got {timeout!r}")
        fields["step_timeout"] = float(timeout)
    isolation = data.get("step_isolation")
    if isolation is not None:
        if isolation not in ("none", "process"):
            raise ValueError(
                f"{where}: step_isolation must be 'none' or 'process', got {isolation!r}"
            )
        fields["step_isolation"] = isolation
    return fields


def _names(value: Any, where: str) -> frozenset[str]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ValueError(f"{where} must be a list of names, got {value!r}")
    if not all(isinstance(name, str) and name for name in value):
        raise ValueError(f"{where} must hold non-empty strings, got {value!r}")
    return frozenset(value)


def load_hosting_file(path: str | Path) -> list[HostedSpec]:
    """Read a hosting file (TOML, or JSON if the name ends in ``.json``).

    The file holds a list of tables under ``env`` (JSON: ``{"env": [...]}``), each with a
    ``spec`` and the :class:`HostingPolicy` fields.

    Raises:
        ValueError: the file cannot be parsed or does not have that shape.
        OSError: the file cannot be read.

    """
    path = Path(path)
    text = path.read_text()
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import tomllib  # type: ignore[import-not-found,unused-ignore]  # Python 3.11+

            data = tomllib.loads(text)
    except ImportError as exc:
        raise ValueError(f"{path}: TOML needs Python 3.11+; write the file as JSON") from exc
    except ValueError as exc:  # json.JSONDecodeError and tomllib.TOMLDecodeError
        raise ValueError(f"{path}: {exc}") from exc
    entries = data.get("env") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of [[env]] tables")
    hosted = []
    for index, entry in enumerate(entries):
        where = f"{path}: env #{index + 1}"
        if not isinstance(entry, dict) or not isinstance(entry.get("spec"), str):
            raise ValueError(f"{where}: each [[env]] needs a spec string")
        engine = entry.get("vector_entry_point")
        if engine is not None and not isinstance(engine, str):
            raise ValueError(f"{where}: vector_entry_point must be a string, got {engine!r}")
        policy = HostingPolicy.from_data(entry, where=where)
        hosted.append(HostedSpec(entry["spec"], policy, vector_entry_point=engine))
    return hosted
