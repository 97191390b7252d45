"""The exception tree of openenv_gym.

Every error the library raises derives from :class:`OpenEnvError`, and also from the
built-in exception a caller would naturally catch for it::

    OpenEnvError(Exception)
    ├── ProtocolError                 a message broke the wire format
    │   ├── EncodeError(TypeError)    a value has no wire representation
    │   ├── DecodeError(ValueError)   bytes are not a valid message
    │   ├── MessageTooLargeError      a message is over the size limit
    │   ├── VersionMismatchError      client and server share no protocol version
    │   └── UnsupportedSpaceError(TypeError)
    │                                 a gymnasium space type the protocol cannot carry
    ├── EndpointError(ConnectionError)
    │   ├── ConnectError              the server could not be reached
    │   │   └── AuthenticationError   the server refused the token (HTTP 401)
    │   └── ConnectionLostError       the server went away mid-session
    ├── CallTimeoutError(TimeoutError)
    │                                 a server did not answer within the deadline
    ├── RemoteError                   the server raised; ``remote_type`` names the exception
    │   └── (RemoteError, <builtin>)  e.g. a remote ValueError is also a ``ValueError``
    ├── UnknownEnvError(LookupError)  a server does not host the env id asked for
    ├── CapacityError                 a server is at one of its limits (sessions, envs)
    ├── InvalidActionError(ValueError)
    │                                 a batch of actions does not fit the action space
    └── ServerStartError(RuntimeError)
                                      a provider could not start a server

Exceptions keep their fields and build their text in ``__str__``.
"""

from __future__ import annotations

import builtins
import functools

import gymnasium.error

__all__ = [
    "AuthenticationError",
    "CallTimeoutError",
    "CapacityError",
    "ConnectError",
    "ConnectionLostError",
    "DecodeError",
    "EncodeError",
    "EndpointError",
    "InvalidActionError",
    "MessageTooLargeError",
    "OpenEnvError",
    "ProtocolError",
    "RemoteError",
    "ServerStartError",
    "UnknownEnvError",
    "UnsupportedSpaceError",
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


class RemoteError(OpenEnvError):
    """The server raised an exception while serving a request.

    Attributes:
        url: the endpoint that raised.
        remote_type: qualified name of the exception type raised on the server.
        message: its message.
        remote_traceback: the server's traceback, only when it runs with ``--debug``.

    """

    def __init__(
        self, url: str, remote_type: str, message: str, remote_traceback: str | None = None
    ) -> None:
        # Not super(): in a (RemoteError, <builtin or library error>) mix the other base's
        # constructor expects its own arguments.
        Exception.__init__(self, url, remote_type, message)
        self.url = url
        self.remote_type = remote_type
        self.message = message
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        text = f"{self.url}: {self.remote_type}: {self.message}"
        if self.remote_traceback:
            text += f"\n--- remote traceback ---\n{self.remote_traceback}"
        return text


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


class ServerStartError(OpenEnvError, RuntimeError):
    """A provider could not bring up an environment server; the text carries its output."""


@functools.cache
def _remote_error_class(base_name: str) -> type[RemoteError]:
    """Return a ``RemoteError`` subclass that is also the built-in ``base_name``."""
    base = (
        getattr(builtins, base_name, None)
        or getattr(gymnasium.error, base_name, None)
        or (globals().get(base_name) if base_name in __all__ else None)
    )
    if not (isinstance(base, type) and issubclass(base, Exception)):
        return RemoteError
    if issubclass(base, (OSError, RemoteError)):
        # OSError subclasses reinterpret constructor arguments (errno, strerror).
        return RemoteError
    try:
        return type(f"Remote{base_name}", (RemoteError, base), {"__module__": __name__})
    except TypeError:  # a built-in with its own C layout (e.g. UnicodeError) cannot be mixed
        return RemoteError


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
    cls = _remote_error_class(remote_type.rpartition(".")[2])
    return cls(url, remote_type, message, remote_traceback)
