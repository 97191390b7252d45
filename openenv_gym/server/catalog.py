"""Which environments a server hosts, how to build them, and what clients may ask of them.

A server is configured with env specs; a client can only ask for those. A spec is either

* a gymnasium id (``"CartPole-v1"``, or ``"module:Env-v0"`` whose module registers it), or
* an entry point ``"module:attr"`` naming an ``Env`` class or factory, or an OpenEnv
  ``Environment`` class (hosted through ``interop.openenv.hosted.OpenEnvAsGym``), or a
  ``gymnasium.vector.VectorEnv`` class (hosted natively only), or
* a native engine, ``"envpool:<task id>"`` or ``"ale:<game>"`` (``server/engines/``; natively
  only). Any spec may also get the operator's engine as its ``vector_entry_point``
  (:class:`~openenv_gym.server.hosting.HostedSpec`).

With ``allow_any_id`` a server also hosts ids of gymnasium's registry, but only those whose
entry point is a plain env class of an installed package (never a factory function, never a
``RemoteEnv``, never an ``openenv*`` namespace, never a module-prefixed id or an entry point:
those import or run code, so the operator must name them).

What a client may pass and set is the operator's :class:`~openenv_gym.server.hosting.HostingPolicy`
for the spec; :class:`HostedEnv` applies it. Nothing a client sends is imported or executed.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.metadata
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium
from gymnasium.envs.registration import EnvSpec, load_env_creator
from gymnasium.vector import VectorEnv

from openenv_gym.errors import (
    AttributeNotAllowedError,
    KwargNotAllowedError,
    UnknownEnvError,
    VectorizationError,
)
from openenv_gym.server.engines import (
    VectorEntryPoint,
    engine_spec,
    is_engine,
    vector_entry_point,
)
from openenv_gym.server.hosting import HostedSpec, HostingPolicy

__all__ = [
    "AttributeNotAllowedError",
    "EnvCatalog",
    "EnvFactory",
    "HostedEnv",
    "KwargNotAllowedError",
]

EnvFactory = Callable[[], gymnasium.Env[Any, Any]]

MAKE_KWARGS = frozenset({"max_episode_steps", "disable_env_checker"})
"""``gymnasium.make``'s own keyword arguments, which a client may always pass."""
_UNSAFE_RENDER_MODES = frozenset({"human"})  # a window on the server
_OWN_PACKAGE = __name__.partition(".")[0]
_NAMESPACE_PREFIX = "openenv"
_REFUSED_CALLS = frozenset({"set_wrapper_attr", "close"})
"""Methods CALL never reaches: setting an attribute bypasses SET_ATTR's policy; closing is CLOSE."""
_ATTRIBUTE_READERS = frozenset({"get_wrapper_attr", "has_wrapper_attr"})


def _resolve_spec(spec: str) -> EnvSpec:
    """Turn a configured spec string into a gymnasium ``EnvSpec``, importing what it names."""
    if spec.startswith("harbor:"):  # a directory of Harbor tasks (interop, loaded only here)
        from openenv_gym.interop.harbor.hosting import harbor_spec

        return harbor_spec(spec)
    if is_engine(spec):
        return engine_spec(spec)
    module_name, sep, attr = spec.partition(":")
    if not sep:
        return gymnasium.spec(spec)
    if module_name == "verifiers":  # a verifiers taskset (interop's, loaded only when named)
        from openenv_gym.interop.verifiers.hosted import VerifiersTaskEnv

        return EnvSpec(id=spec, entry_point=functools.partial(VerifiersTaskEnv, attr))
    module = importlib.import_module(module_name)
    if hasattr(module, attr):
        # OpenEnv hosting is interop's (above the server): loaded only for an entry point.
        from openenv_gym.interop.openenv.hosted import OpenEnvAsGym, is_openenv_environment

        entry_point = getattr(module, attr)
        if isinstance(entry_point, type) and issubclass(entry_point, VectorEnv):
            native = VectorEntryPoint(spec, entry_point)
            return EnvSpec(id=spec, entry_point=None, vector_entry_point=native)
        if is_openenv_environment(entry_point):  # hosted through its gymnasium view
            entry_point = functools.partial(OpenEnvAsGym, entry_point)
        return EnvSpec(id=spec, entry_point=entry_point)
    return gymnasium.spec(attr)  # the module registered it on import


def _creator(spec: EnvSpec) -> Any:
    """Return what ``spec``'s entry point names (importing its module), or ``None``."""
    entry_point = spec.entry_point
    try:
        return load_env_creator(entry_point) if isinstance(entry_point, str) else entry_point
    except Exception:  # a missing extra: the env simply cannot be described here
        return None


def _env_class(spec: EnvSpec) -> type[gymnasium.Env[Any, Any]] | None:
    """Return the env class ``spec`` builds, if its entry point is a plain env class."""
    creator = _creator(spec)
    if not (isinstance(creator, type) and issubclass(creator, gymnasium.Env)):
        return None
    if creator.__module__.partition(".")[0] == _OWN_PACKAGE:
        return None  # RemoteEnv and our own envs are hosted only when named
    return creator


@functools.cache
def _installed_packages() -> frozenset[str]:
    return frozenset(importlib.metadata.packages_distributions())


def _installed_env_class(spec: EnvSpec) -> type[gymnasium.Env[Any, Any]] | None:
    """Return ``spec``'s env class if it is a plain env class of an installed package."""
    cls = _env_class(spec)
    if cls is None or cls.__module__.partition(".")[0] not in _installed_packages():
        return None
    return cls


def _scalar_parameters(cls: type[Any] | None) -> dict[str, type]:
    """Return the constructor's keyword parameters whose default is a bool, int or float."""
    if cls is None:
        return {}
    try:
        parameters = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return {}
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {
        name: type(parameter.default)
        for name, parameter in parameters.items()
        if parameter.kind in kinds and type(parameter.default) in (bool, int, float)
    }


def _declared_render_modes(spec: EnvSpec) -> frozenset[str]:
    creator = _creator(spec)
    if isinstance(creator, functools.partial):
        creator = creator.func
    modes = (getattr(creator, "metadata", None) or {}).get("render_modes", ())
    return frozenset(mode for mode in modes if isinstance(mode, str))


def _scalar_ok(value: Any, kind: type) -> bool:
    if isinstance(value, bool) or kind is bool:
        return isinstance(value, bool) and kind is bool
    if kind is int:
        return isinstance(value, int)
    return isinstance(value, (int, float)) and math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class HostedEnv:
    """One spec a server hosts, with the operator's policy applied to client requests.

    Attributes:
        env_id: the name clients use.
        spec: the gymnasium spec it builds.
        policy: the operator's policy for it.

    """

    env_id: str
    spec: EnvSpec
    policy: HostingPolicy
    scalar_kwargs: Mapping[str, type] = dataclasses.field(default_factory=dict)
    render_modes: frozenset[str] = frozenset()

    @classmethod
    def build(cls, env_id: str, spec: EnvSpec, policy: HostingPolicy, *, gym_id: bool) -> HostedEnv:
        """Derive the defaults (scalar kwargs of gymnasium ids, render modes) for ``spec``."""
        if policy.render_modes is not None:
            modes = policy.render_modes
        else:
            declared = _declared_render_modes(spec)
            modes = frozenset(
                mode
                for mode in declared
                if mode not in _UNSAFE_RENDER_MODES and not mode.endswith("_list")
            )
        scalars = _scalar_parameters(_env_class(spec)) if gym_id else {}
        scalars.pop("render_mode", None)
        return cls(env_id, spec, policy, scalars, modes)

    @property
    def allowed_kwargs(self) -> frozenset[str]:
        """Every keyword argument name a client may pass."""
        names = MAKE_KWARGS | self.policy.allow_kwargs | set(self.scalar_kwargs)
        if self.render_modes:
            names |= {"render_mode"}
        return frozenset(names) - set(self.policy.kwargs)

    def make_kwargs(self, client_kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Return the keyword arguments to build with: the client's, checked, plus the fixed.

        Raises:
            KwargNotAllowedError: a kwarg is not allowed, has the wrong type, or would change
                a kwarg the operator fixed.

        """
        fixed = self.policy.kwargs
        for name, value in client_kwargs.items():
            if name in fixed:
                if _same(value, fixed[name]):
                    continue  # restating the operator's value changes nothing
                raise KwargNotAllowedError(
                    self.env_id, name, self.allowed_kwargs, "fixed by the operator"
                )
            self._check_kwarg(name, value)
        return {**client_kwargs, **fixed}

    def _check_kwarg(self, name: str, value: Any) -> None:
        if name == "render_mode":
            if value is not None and value not in self.render_modes:
                modes = ", ".join(sorted(self.render_modes)) or "none"
                raise KwargNotAllowedError(
                    self.env_id, name, self.allowed_kwargs, f"render mode {value!r} not in {modes}"
                )
        elif name in self.policy.allow_kwargs:
            return
        elif name == "max_episode_steps":
            if not (value is None or (_scalar_ok(value, int) and value >= 1)):
                raise KwargNotAllowedError(
                    self.env_id, name, self.allowed_kwargs, f"expected an int >= 1, got {value!r}"
                )
        elif name == "disable_env_checker":
            if not isinstance(value, bool):
                raise KwargNotAllowedError(
                    self.env_id, name, self.allowed_kwargs, f"expected a bool, got {value!r}"
                )
        elif name in self.scalar_kwargs:
            kind = self.scalar_kwargs[name]
            if not _scalar_ok(value, kind):
                raise KwargNotAllowedError(
                    self.env_id,
                    name,
                    self.allowed_kwargs,
                    f"expected a {kind.__name__}, got {type(value).__name__}",
                )
        else:
            raise KwargNotAllowedError(self.env_id, name, self.allowed_kwargs)

    def check_set_attr(self, name: str) -> None:
        """Refuse SET_ATTR of ``name`` unless the operator allowed it (``*``: any public name).

        Raises:
            AttributeNotAllowedError: ``name`` is private or not among the policy's
                ``set_attrs``.

        """
        allowed = self.policy.set_attrs
        if name.startswith("_") or (name not in allowed and "*" not in allowed):
            raise AttributeNotAllowedError(self.env_id, name, "set", self.policy.set_attrs)

    def check_get_attr(self, name: str) -> None:
        """Refuse reading private attributes (``_name``).

        Raises:
            AttributeNotAllowedError: ``name`` is private.

        """
        if name.startswith("_"):
            raise AttributeNotAllowedError(self.env_id, name, "read private attribute", ())

    def check_call(self, name: str, args: Sequence[Any]) -> None:
        """Refuse CALL of private methods and of those that would bypass the policy.

        Raises:
            AttributeNotAllowedError: ``name`` is private, sets attributes or closes the env,
                or reads a private attribute through ``get_wrapper_attr``.

        """
        if name.startswith("_") or name in _REFUSED_CALLS:
            raise AttributeNotAllowedError(self.env_id, name, "call", ())
        if name in _ATTRIBUTE_READERS and args and isinstance(args[0], str):
            self.check_get_attr(args[0])

    def factory(self, client_kwargs: Mapping[str, Any]) -> EnvFactory:
        """Return a function building one env with the client's (checked) kwargs.

        The env is built as ``gymnasium.make`` builds it (checker, order enforcing, time
        limit); ``max_episode_steps`` and ``disable_env_checker`` go to ``make`` itself.

        Raises:
            KwargNotAllowedError: see :meth:`make_kwargs`.
            VectorizationError: the spec is a native vector engine only (no single env).

        """
        if self.spec.entry_point is None:
            raise VectorizationError(
                self.env_id,
                "sync",
                "it is hosted as a native vector env only; use "
                "server_vectorization='vector_entry_point'",
            )
        kwargs = self.make_kwargs(client_kwargs)
        return functools.partial(gymnasium.make, dataclasses.replace(self.spec), **kwargs)


def _same(a: Any, b: Any) -> bool:
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # e.g. arrays: not a plain value, so not a restatement
        return False


class EnvCatalog:
    """The envs a server may build, resolved once at start-up.

    Args:
        specs: gymnasium ids and ``module:attr`` entry points to host, or
            :class:`~openenv_gym.server.hosting.HostedSpec` entries with their own policy.
        allow_any_id: also host the plain env classes of gymnasium's registry (module doc).
        policy: the policy of every spec given as a string and of the ids ``allow_any_id``
            admits; a ``HostedSpec``'s own policy is merged on top of it.

    Raises:
        ValueError: a spec names no registered id, or its module cannot be imported.

    """

    def __init__(
        self,
        specs: Sequence[str | HostedSpec],
        *,
        allow_any_id: bool = False,
        policy: HostingPolicy | None = None,
    ) -> None:
        self.allow_any_id = allow_any_id
        self.policy = policy or HostingPolicy()
        self._hosted: dict[str, HostedEnv] = {}
        self._any: dict[str, HostedEnv | None] = {}
        for entry in specs:
            hosted = entry if isinstance(entry, HostedSpec) else HostedSpec(entry)
            try:
                spec = _resolve_spec(hosted.spec)
                if hosted.vector_entry_point is not None:  # the operator's engine for it
                    engine = vector_entry_point(hosted.vector_entry_point)
                    # The engine has its own defaults: the id's kwargs are its single env's.
                    # make_vec still passes the id's max_episode_steps (its time limit).
                    spec = dataclasses.replace(spec, vector_entry_point=engine, kwargs={})
            except (gymnasium.error.Error, ImportError, ValueError) as exc:
                raise ValueError(f"cannot host {hosted.spec!r}: {exc}") from exc
            gym_id = spec.id != hosted.spec or ":" not in hosted.spec
            if hosted.spec.startswith("harbor:"):  # clients name it by its id (no "/" in ids)
                hosted = dataclasses.replace(hosted, spec=spec.id)
            self._hosted[hosted.spec] = HostedEnv.build(
                hosted.spec, spec, self.policy.merged(hosted.policy), gym_id=gym_id
            )

    @property
    def specs(self) -> list[str]:
        """The configured spec strings, in order."""
        return list(self._hosted)

    def hosted(self, env_id: str) -> HostedEnv:
        """Return the hosted env ``env_id`` names, with its policy.

        Raises:
            UnknownEnvError: this server does not host ``env_id``.

        """
        hosted = self._hosted.get(env_id)
        if hosted is None and self.allow_any_id:
            hosted = self._any_id(env_id)
        if hosted is None:
            raise UnknownEnvError(env_id, self.specs, self.allow_any_id)
        return hosted

    def _any_id(self, env_id: str) -> HostedEnv | None:
        """Admit a registry id under ``allow_any_id`` (cached, so each id is judged once)."""
        if env_id in self._any:
            return self._any[env_id]
        hosted = None
        if ":" not in env_id and env_id in gymnasium.registry:
            spec = gymnasium.spec(env_id)
            namespace = spec.namespace or ""
            if (
                not namespace.startswith(_NAMESPACE_PREFIX)
                and _installed_env_class(spec) is not None
            ):
                hosted = HostedEnv.build(env_id, spec, self.policy, gym_id=True)
        if len(self._any) < 4096:  # the registry is finite, but bound the cache anyway
            self._any[env_id] = hosted
        return hosted

    def lookup(self, env_id: str) -> EnvSpec:
        """Return the gymnasium spec for ``env_id``.

        Raises:
            UnknownEnvError: this server does not host ``env_id``.

        """
        return self.hosted(env_id).spec

    def factory(self, env_id: str, kwargs: Mapping[str, Any]) -> EnvFactory:
        """Return a function building one env for ``env_id`` with the client's ``kwargs``.

        Raises:
            UnknownEnvError: this server does not host ``env_id``.
            KwargNotAllowedError: a kwarg is not allowed by the operator's policy.

        """
        return self.hosted(env_id).factory(kwargs)
