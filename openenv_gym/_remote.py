"""The ``Remote<Name>`` classes of ``openenv_gym.errors`` that need ``gymnasium.error``.

Imported on first use (``errors.remote_error`` or an attribute of ``errors`` starting with
``Remote``), so that importing ``errors`` loads no gymnasium: providers and the protocol
layer raise errors of the tree without it. Every class defined here lives in
``openenv_gym.errors`` (its ``__module__``), so it pickles and is found there.
"""

from __future__ import annotations

import builtins

import gymnasium.error

from openenv_gym import errors
from openenv_gym.errors import (
    RemoteArithmeticError,
    RemoteAssertionError,
    RemoteAttributeError,
    RemoteError,
    RemoteIndexError,
    RemoteKeyError,
    RemoteLookupError,
    RemoteNotImplementedError,
    RemoteRuntimeError,
    RemoteTypeError,
    RemoteValueError,
    RemoteZeroDivisionError,
)

__all__ = ["remote_class"]


class RemoteGymnasiumError(RemoteError, gymnasium.error.Error):
    """A remote ``gymnasium.error.Error``."""

    __module__ = errors.__name__
    default_remote_type = "gymnasium.error.Error"


_EXPLICIT: dict[type[Exception], type[RemoteError]] = {
    ValueError: RemoteValueError,
    TypeError: RemoteTypeError,
    LookupError: RemoteLookupError,
    KeyError: RemoteKeyError,
    IndexError: RemoteIndexError,
    AttributeError: RemoteAttributeError,
    AssertionError: RemoteAssertionError,
    RuntimeError: RemoteRuntimeError,
    NotImplementedError: RemoteNotImplementedError,
    ArithmeticError: RemoteArithmeticError,
    ZeroDivisionError: RemoteZeroDivisionError,
    gymnasium.error.Error: RemoteGymnasiumError,
}
"""The classes written out; generated ones derive from the nearest of them."""

_CLASSES: dict[str, type[RemoteError]] = {
    cls.default_remote_type: cls for cls in _EXPLICIT.values()
}
"""Remote type name (bare for built-ins, else ``module.Name``) -> the class standing for it."""

_NOT_MIXED: tuple[type[BaseException], ...] = (OSError, StopIteration, StopAsyncIteration)
_NOT_MIXED += tuple(
    getattr(builtins, name) for name in ("BaseExceptionGroup",) if hasattr(builtins, name)
)


def _mixable(base: object) -> bool:
    """Tell whether a remote exception of type ``base`` is raised as a ``base`` here too."""
    # OSError subclasses would pass for this library's own ConnectionError / TimeoutError (the
    # connection's state, not the env's); StopIteration is control flow; BaseException-only
    # types (SystemExit, KeyboardInterrupt) must not stop the client; an ExceptionGroup
    # checks its constructor's arguments.
    return (
        isinstance(base, type)
        and issubclass(base, Exception)
        and not issubclass(base, _NOT_MIXED)
        and not issubclass(RemoteError, base)
        and not issubclass(base, RemoteError)
    )


def _define_remote_classes() -> None:
    """Define ``Remote<Name>`` in ``errors`` for every other mixable known exception type."""
    namespace = vars(errors)
    namespace["RemoteGymnasiumError"] = RemoteGymnasiumError
    ours = {name: namespace.get(name) for name in errors.__all__}
    sources = [
        ("", vars(builtins)),
        ("gymnasium.error.", vars(gymnasium.error)),
        (f"{errors.__name__}.", ours),
    ]
    for prefix, source in sources:
        for name, base in list(source.items()):
            remote_type = f"{prefix}{name}"
            if remote_type in _CLASSES or not _mixable(base):
                continue
            qualname = f"Remote{name}"
            if qualname in namespace:
                continue
            attrs = {
                "__module__": errors.__name__,
                "__qualname__": qualname,
                "__doc__": f"A remote ``{remote_type}``.",
                "default_remote_type": remote_type,
            }
            parent = next((_EXPLICIT[k] for k in base.__mro__ if k in _EXPLICIT), RemoteError)
            try:
                cls = type(qualname, (parent, base), attrs)
            except TypeError:  # a built-in with its own C layout (e.g. UnicodeError)
                continue
            namespace[qualname] = _CLASSES[remote_type] = cls
    namespace["_CLASSES"] = _CLASSES


_define_remote_classes()
_BY_BARE_NAME = {name.rpartition(".")[2]: cls for name, cls in reversed(_CLASSES.items())}


def remote_class(remote_type: str) -> type[RemoteError]:
    """Return the class standing for ``remote_type`` (``RemoteError`` for an unknown one).

    Args:
        remote_type: ``"module.Name"`` or a bare built-in ``"Name"``.

    Returns:
        The most specific class known for it.

    """
    name = remote_type.removeprefix("builtins.")
    return _CLASSES.get(name) or _BY_BARE_NAME.get(name.rpartition(".")[2]) or RemoteError
