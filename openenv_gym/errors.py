"""The exception tree of openenv_gym.

Every error the library raises derives from :class:`OpenEnvError`, and also from the
built-in exception a caller would naturally catch for it::

    OpenEnvError(Exception)
    ├── ProtocolError                 a message broke the wire format
    │   ├── EncodeError(TypeError)    a value has no wire representation
    │   ├── DecodeError(ValueError)   bytes are not a valid message
    │   ├── MessageTooLargeError      a message is over the size limit
    │   ├── VersionMismatchError      client and server share no protocol version
    │   ├── SessionStateError         a request the session's state does not allow
    │   └── UnsupportedSpaceError(TypeError)
    │                                 a gymnasium space type the protocol cannot carry
    ├── EndpointError(ConnectionError)
    │   ├── ConnectError              the server could not be reached
    │   │   ├── AuthenticationError   the server refused the token (HTTP 401)
    │   │   └── InsecureTokenError    the client would not send its token in clear text
    │   └── ConnectionLostError       the server went away mid-session
    ├── TransportError                a WebSocket could not be opened or broke (``ws/``)
    ├── CallTimeoutError(TimeoutError)
    │                                 a server did not answer within the deadline
    ├── RemoteError                   the server raised; ``remote_type`` names the exception
    │   └── Remote<Name>(RemoteError, <Name>)
    │                                 e.g. ``RemoteValueError`` is also a ``ValueError``; one
    │                                 per built-in, ``gymnasium.error`` and own exception type
    │                                 (``RemoteGymnasiumError`` for ``gymnasium.error.Error``),
    │                                 except OSError's family (it would pass for a connection
    │                                 error of this library's), StopIteration and types that
    │                                 cannot be mixed (UnicodeError's family)
    ├── UnknownEnvError(LookupError)  a server does not host the env id asked for
    ├── KwargNotAllowedError(TypeError)
    │                                 a client passed a keyword argument the operator disallows
    ├── AttributeNotAllowedError(AttributeError)
    │                                 a client touched an attribute the operator disallows
    ├── CapacityError                 a server is at one of its limits (sessions, envs)
    ├── InvalidActionError(ValueError)
    │                                 a batch of actions does not fit the action space
    ├── ShardMismatchError(ValueError)
    │                                 the shards of a vector env disagree on their envs
    ├── VectorizationError(ValueError)
    │   │                             a server cannot vectorize an env the way a client asked
    │   └── AutoresetModeMismatchError
    │                                 a native vector env runs another autoreset mode
    ├── ServerStartError(RuntimeError)
    │   └── ImageBuildError           building a server image failed
    ├── RestartUnsupportedError(NotImplementedError)
    │                                 a provider cannot replace one of its servers
    └── SandboxUnavailableError(PermissionError)
                                      a terminal env cannot isolate agent commands here

Exceptions keep their fields and build their text in ``__str__``; every class is defined at
module level and pickles with its fields (``AsyncVectorEnv`` workers send them to the parent).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, overload

if TYPE_CHECKING:
    import gymnasium.error

__all__ = [
    "AttributeNotAllowedError",
    "AuthenticationError",
    "AutoresetModeMismatchError",
    "CallTimeoutError",
    "CapacityError",
    "ConnectError",
    "ConnectionLostError",
    "DecodeError",
    "EncodeError",
    "EndpointError",
    "EnvIdError",
    "ImageBuildError",
    "InsecureTokenError",
    "InvalidActionError",
    "KwargNotAllowedError",
    "MessageTooLargeError",
    "OpenEnvError",
    "ProtocolError",
    "RemoteArithmeticError",
    "RemoteAssertionError",
    "RemoteAttributeError",
    "RemoteError",
    "RemoteGymnasiumError",
    "RemoteIndexError",
    "RemoteKeyError",
    "RemoteLookupError",
    "RemoteNotImplementedError",
    "RemoteRuntimeError",
    "RemoteTypeError",
    "RemoteValueError",
    "RemoteZeroDivisionError",
    "RestartUnsupportedError",
    "SandboxUnavailableError",
    "ServerStartError",
    "SessionStateError",
    "ShardMismatchError",
    "StepTimeoutError",
    "TransportError",
    "UnknownEnvError",
    "UnsupportedSpaceError",
    "VectorizationError",
    "VersionMismatchError",
    "remote_error",
]


class OpenEnvError(Exception):
    """Base class of every exception raised by openenv_gym."""


class ProtocolError(OpenEnvError):
    """A message does not follow the wire protocol (see ``docs/protocol.md``)."""


class EncodeError(ProtocolError, TypeError):
    """A value cannot be represented on the wire."""


class DecodeError(ProtocolError, ValueError):
    """Received bytes are not a valid protocol message."""


class MessageTooLargeError(ProtocolError):
    """A message is larger than the configured limit."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(size, limit)
        self.size = size
        self.limit = limit

    def __str__(self) -> str:
        return f"message of {self.size} bytes is over the limit of {self.limit} bytes"


class VersionMismatchError(ProtocolError):
    """The client and the server speak no common protocol version."""

    def __init__(self, url: str, client_version: int, server_version: int) -> None:
        super().__init__(url, client_version, server_version)
        self.url = url
        self.client_version = client_version
        self.server_version = server_version

    def __str__(self) -> str:
        where = f"{self.url}: " if self.url else ""
        return (
            f"{where}server speaks protocol version {self.server_version}, "
            f"client speaks version {self.client_version}"
        )


class UnsupportedSpaceError(ProtocolError, TypeError):
    """A gymnasium space type that the protocol cannot describe."""


class SessionStateError(ProtocolError):
    """A request arrived in a session state that does not allow it (e.g. STEP before HELLO)."""


class EndpointError(OpenEnvError, ConnectionError):
    """Talking to a server endpoint failed; ``url`` names it."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(url, reason)
        self.url = url
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.url}: {self.reason}"


class ConnectError(EndpointError):
    """The server could not be reached or refused the session."""


class AuthenticationError(ConnectError):
    """The server refused the connection's token (HTTP 401 at the opening handshake)."""


class InsecureTokenError(ConnectError):
    """The client refused to send its token unencrypted to a host that is not loopback.

    Raised before any connection is attempted. A token travels only to ``wss://`` URLs and to
    loopback hosts (``127.0.0.0/8``, ``::1``, ``localhost``) unless the caller opts in.
    """

    def __init__(self, url: str, reason: str | None = None) -> None:
        super().__init__(
            url,
            reason
            or (
                "refusing to send the token over unencrypted ws:// to a host that is not "
                "loopback: use wss://, or opt in with allow_insecure_token=True "
                "(or OPENENV_GYM_ALLOW_INSECURE_TOKEN=1)"
            ),
        )


class TransportError(OpenEnvError):
    """A WebSocket could not be opened or broke; the text says how.

    Raised by ``ws/`` (which knows no endpoint semantics); the client's connection turns it
    into a :class:`ConnectError` naming the URL.

    Attributes:
        status: the HTTP status when the server refused the opening handshake.

    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild_transport_error, (str(self), self.status)


def _rebuild_transport_error(message: str, status: int | None) -> TransportError:
    return TransportError(message, status=status)


class ConnectionLostError(EndpointError):
    """The server closed the connection or went away during a session."""


class CallTimeoutError(OpenEnvError, TimeoutError):
    """A server did not answer a request within its deadline."""

    def __init__(self, url: str, operation: str, timeout: float) -> None:
        super().__init__(url, operation, timeout)
        self.url = url
        self.operation = operation
        self.timeout = timeout

    def __str__(self) -> str:
        return f"{self.url}: no reply to {self.operation} within {self.timeout:g} s"


_TRACEBACK_MARK = "\n--- remote traceback ---\n"
# The text RemoteError.__str__ builds, "URL: TYPE: MESSAGE", read back by the one-argument form.
_TEXT = re.compile(
    r"(?P<url>[A-Za-z][A-Za-z0-9+.-]*://\S*?): (?P<type>[^\s:]+): (?P<message>.*)", re.S
)


class RemoteError(OpenEnvError):
    """The server raised an exception while serving a request.

    Built as ``RemoteError(url, remote_type, message, remote_traceback=None)``, or from one
    argument, as other code rebuilds exceptions (``type(e)(f"{e} ...")`` in ``gymnasium.make``,
    ``raise exctype(value)`` in ``AsyncVectorEnv``): another ``RemoteError`` is copied, and text
    in the form ``str()`` gives (``"URL: TYPE: MESSAGE"``) is read back into its fields, so
    ``str(type(e)(str(e))) == str(e)``. Other text becomes the message, with no URL.
    Instances pickle with all four fields.

    Attributes:
        url: the endpoint that raised (empty when rebuilt from text that names none).
        remote_type: qualified name of the exception type raised on the server.
        message: its message.
        remote_traceback: the server's traceback, only when it runs with ``--debug``.

    """

    default_remote_type: ClassVar[str] = ""
    """``remote_type`` when rebuilt from text that names none (e.g. ``"ValueError"``)."""

    @overload
    def __init__(self, text: object = "", /) -> None: ...

    @overload
    def __init__(
        self, url: str, remote_type: str, message: str, remote_traceback: str | None = None
    ) -> None: ...

    def __init__(
        self,
        url: object = "",
        remote_type: str | None = None,
        message: str | None = None,
        remote_traceback: str | None = None,
    ) -> None:
        if remote_type is None:
            url, remote_type, message, remote_traceback = self._fields_of(url)
        self.url = str(url)
        self.remote_type = remote_type
        self.message = message or ""
        self.remote_traceback = remote_traceback or None
        # Not super(): in a (RemoteError, <builtin or library error>) mix the other base's
        # constructor expects its own arguments.
        Exception.__init__(self, self.url, self.remote_type, self.message)

    @classmethod
    def _fields_of(cls, source: object) -> tuple[str, str, str, str | None]:
        """Return ``(url, remote_type, message, traceback)`` of a one-argument construction."""
        if isinstance(source, RemoteError):
            return source.url, source.remote_type, source.message, source.remote_traceback
        text = str(source)
        match = _TEXT.fullmatch(text)
        url, remote_type = (match["url"], match["type"]) if match else ("", cls.default_remote_type)
        message = match["message"] if match else text
        head, mark, tail = message.partition(_TRACEBACK_MARK)
        return (
            (url, remote_type, head, tail) if mark and tail else (url, remote_type, message, None)
        )

    def __str__(self) -> str:
        text = f"{self.url}: {self.remote_type}: {self.message}" if self.url else self.message
        if self.remote_traceback:
            text += f"{_TRACEBACK_MARK}{self.remote_traceback}"
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        fields = (self.url, self.remote_type, self.message, self.remote_traceback)
        return type(self), fields, dict(self.__dict__)


class UnknownEnvError(OpenEnvError, LookupError):
    """The env id (or entry point) asked for is not one the server hosts."""

    def __init__(self, env_id: str, hosted: list[str], allow_any_id: bool) -> None:
        super().__init__(env_id, hosted, allow_any_id)
        self.env_id = env_id
        self.hosted = hosted
        self.allow_any_id = allow_any_id

    def __str__(self) -> str:
        hosted = ", ".join(self.hosted) or "none"
        extra = " and any registered gymnasium id" if self.allow_any_id else ""
        return f"env {self.env_id!r} is not hosted here; hosted: {hosted}{extra}"


class KwargNotAllowedError(OpenEnvError, TypeError):
    """A client passed a keyword argument the operator did not allow for this env.

    A ``TypeError`` worded like Python's own ("got an unexpected keyword argument 'x'"), so
    callers that retry without an argument they see refused (e.g. TorchRL's ``GymEnv``) work.
    """

    def __init__(self, env_id: str, name: str, allowed: Iterable[str], reason: str = "") -> None:
        super().__init__(env_id, name, allowed, reason)
        self.env_id = env_id
        self.name = name
        self.allowed = sorted(allowed)
        self.reason = reason

    def __str__(self) -> str:
        why = self.reason or "not allowed by this server"
        allowed = ", ".join(self.allowed) or "none"
        return (
            f"env {self.env_id!r} got an unexpected keyword argument {self.name!r} ({why}); "
            f"allowed: {allowed}"
        )


class AttributeNotAllowedError(OpenEnvError, AttributeError):
    """A client asked to set, read or call an attribute the operator did not allow."""

    def __init__(self, env_id: str, name: str, action: str, allowed: Iterable[str]) -> None:
        super().__init__(env_id, name, action, allowed)
        self.env_id = env_id
        self.name = name
        self.action = action
        self.allowed = sorted(allowed)

    def __str__(self) -> str:
        allowed = ", ".join(self.allowed) or "none"
        return f"env {self.env_id!r}: may not {self.action} {self.name!r}; allowed: {allowed}"


class CapacityError(OpenEnvError):
    """A server is at one of its limits; the text names the limit, its use and its maximum."""

    def __init__(
        self,
        limit: str,
        current: int,
        maximum: int,
        *,
        requested: bool = False,
        requested_more: int = 0,
    ) -> None:
        super().__init__(limit, current, maximum)
        self.limit = limit
        self.current = current
        self.maximum = maximum
        self.requested = requested
        self.requested_more = requested_more

    def __str__(self) -> str:
        if self.requested:
            return f"asked for {self.current} {self.limit}, the limit is {self.maximum}"
        more = f" (asked for {self.requested_more} more)" if self.requested_more else ""
        return f"at capacity: {self.current}/{self.maximum} {self.limit}{more}"


class InvalidActionError(OpenEnvError, ValueError):
    """A batch of actions does not match the action space of the environment."""


class EnvIdError(OpenEnvError, ValueError):
    """Env ids of a pool call are out of range, repeated, not reset, or already in flight."""


class StepTimeoutError(OpenEnvError, TimeoutError):
    """An env's step (or reset) outlived its deadline; the server reset or closed that env.

    Args:
        env_index: the env (its index in the pool or vector env; -1: unknown).
        elapsed: seconds the step had run when it was given up.
        timeout: the deadline, in seconds.
        url: the server, when known.
        action: what was given up (``"step"``, ``"reset"``).

    """

    def __init__(
        self,
        env_index: int,
        elapsed: float = 0.0,
        timeout: float = 0.0,
        url: str = "",
        action: str = "step",
    ) -> None:
        super().__init__(env_index, elapsed, timeout, url, action)
        self.env_index = env_index
        self.elapsed = elapsed
        self.timeout = timeout
        self.url = url
        self.action = action

    def __str__(self) -> str:
        where = f"{self.url}: " if self.url else ""
        return (
            f"{where}env {self.env_index}: {self.action} still running after "
            f"{self.elapsed:.2f} s, over its deadline of {self.timeout:g} s; the server "
            "stopped it and the env needs a reset"
        )


class ShardMismatchError(OpenEnvError, ValueError):
    """The shards of a vector env disagree on their envs (e.g. their spaces), found locally.

    Args:
        url: the shard that disagrees.
        first_url: the first shard, whose answer the others must match.
        what: what disagrees (``"observation_space"``, ``"action_space"``).
        expected: the first shard's answer.
        actual: ``url``'s answer.

    """

    def __init__(
        self,
        url: str,
        first_url: str = "",
        what: str = "spaces",
        expected: str = "",
        actual: str = "",
    ) -> None:
        super().__init__(url, first_url, what, expected, actual)
        self.url = url
        self.first_url = first_url
        self.what = what
        self.expected = expected
        self.actual = actual

    def __str__(self) -> str:
        return (
            f"{self.url}: shards disagree on {self.what}: expected {self.expected} "
            f"(as {self.first_url or 'the first shard'}), got {self.actual}"
        )


class VectorizationError(OpenEnvError, ValueError):
    """A server cannot vectorize an env as asked (e.g. its spec has no ``vector_entry_point``).

    Args:
        env_id: the hosted spec asked for.
        vectorization: the server vectorization asked for.
        reason: why it cannot be done.

    """

    def __init__(self, env_id: str, vectorization: str = "", reason: str = "") -> None:
        super().__init__(env_id, vectorization, reason)
        self.env_id = env_id
        self.vectorization = vectorization
        self.reason = reason

    def __str__(self) -> str:
        return f"env {self.env_id!r} cannot be vectorized as {self.vectorization!r}: {self.reason}"


class AutoresetModeMismatchError(VectorizationError):
    """A native vector env runs another autoreset mode than the one a client asked for.

    Args:
        env_id: the hosted spec asked for.
        requested: the autoreset mode the client asked for.
        actual: the mode the engine declares in ``metadata["autoreset_mode"]``.

    """

    def __init__(self, env_id: str, requested: str = "", actual: str = "") -> None:
        super().__init__(env_id, "vector_entry_point", f"asked for {requested}, runs {actual}")
        self.args = (env_id, requested, actual)
        self.requested = requested
        self.actual = actual

    def __str__(self) -> str:
        return (
            f"env {self.env_id!r}: the native vector env runs autoreset mode {self.actual!r}, "
            f"but the client asked for {self.requested!r}; ask for {self.actual!r} or for none"
        )


class ServerStartError(OpenEnvError, RuntimeError):
    """A provider could not bring up an environment server; the text carries its output."""


class ImageBuildError(ServerStartError):
    """Building the wheelhouse, the base image or the server image failed."""


class RestartUnsupportedError(OpenEnvError, NotImplementedError):
    """A provider cannot replace one of its servers (see ``Provider.restart``)."""

    def __init__(self, provider: str, index: int) -> None:
        super().__init__(provider, index)
        self.provider = provider
        self.index = index

    def __str__(self) -> str:
        return f"{self.provider} cannot restart server {self.index}"


class SandboxUnavailableError(OpenEnvError, PermissionError):
    """The isolation asked for (or any, for ``"auto"``) cannot be set up in this process."""

    def __init__(self, requested: str, missing: Mapping[str, str]) -> None:
        super().__init__(requested, dict(missing))
        self.requested = requested
        self.missing = dict(missing)

    def __str__(self) -> str:
        reasons = "; ".join(f"{mode}: {why}" for mode, why in self.missing.items())
        return (
            f"cannot isolate terminal episodes: expected isolation {self.requested!r}, but "
            f"{reasons}. TerminalEnv will not run agent commands unisolated unless the operator "
            "passes isolation='none'"
        )


class RemoteValueError(RemoteError, ValueError):
    """A remote ``ValueError``."""

    default_remote_type = "ValueError"


class RemoteTypeError(RemoteError, TypeError):
    """A remote ``TypeError`` (e.g. an env constructor refused a keyword argument)."""

    default_remote_type = "TypeError"


class RemoteLookupError(RemoteError, LookupError):
    """A remote ``LookupError``."""

    default_remote_type = "LookupError"


class RemoteKeyError(RemoteLookupError, KeyError):
    """A remote ``KeyError``."""

    default_remote_type = "KeyError"


class RemoteIndexError(RemoteLookupError, IndexError):
    """A remote ``IndexError``."""

    default_remote_type = "IndexError"


class RemoteAttributeError(RemoteError, AttributeError):
    """A remote ``AttributeError``."""

    default_remote_type = "AttributeError"


class RemoteAssertionError(RemoteError, AssertionError):
    """A remote ``AssertionError`` (e.g. an env asserting its action is valid)."""

    default_remote_type = "AssertionError"


class RemoteRuntimeError(RemoteError, RuntimeError):
    """A remote ``RuntimeError``."""

    default_remote_type = "RuntimeError"


class RemoteNotImplementedError(RemoteRuntimeError, NotImplementedError):
    """A remote ``NotImplementedError``."""

    default_remote_type = "NotImplementedError"


class RemoteArithmeticError(RemoteError, ArithmeticError):
    """A remote ``ArithmeticError``."""

    default_remote_type = "ArithmeticError"


class RemoteZeroDivisionError(RemoteArithmeticError, ZeroDivisionError):
    """A remote ``ZeroDivisionError``."""

    default_remote_type = "ZeroDivisionError"


if TYPE_CHECKING:

    class RemoteGymnasiumError(RemoteError, gymnasium.error.Error):
        """A remote ``gymnasium.error.Error`` (defined in ``openenv_gym/_remote.py``)."""


def remote_error(
    url: str, remote_type: str, message: str, remote_traceback: str | None = None
) -> RemoteError:
    """Build the exception that stands for a server-side exception.

    When the remote type is a built-in exception, one of ``gymnasium.error``'s or one of this
    module's, the result is also an instance of it, so ``except ValueError`` catches a remote
    ``ValueError`` as it would an in-process one. Names are looked up, never imported.

    Args:
        url: the endpoint that raised.
        remote_type: the remote exception's type, ``"module.Name"`` or ``"Name"``.
        message: the remote exception's message.
        remote_traceback: the remote traceback, if the server sent one.

    Returns:
        A ``RemoteError`` instance (not raised).

    """
    from openenv_gym import _remote

    cls = _remote.remote_class(remote_type)
    return cls(url, remote_type, message, remote_traceback)


def __getattr__(name: str) -> Any:
    """Define the generated ``Remote<Name>`` classes on first use (they need gymnasium.error).

    Raises:
        AttributeError: ``name`` is no class of this module.

    """
    if name.startswith("Remote") or name == "_CLASSES":
        importlib.import_module("openenv_gym._remote")  # defines them here
        if name in globals():
            return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
