"""ClientOptions: how a client talks to its servers, one frozen object for every entry point.

``RemoteEnv``, ``RemoteVectorEnv`` and the session helpers take these options as one value
(``options=ClientOptions(...)``); their keyword arguments of the same names (``token=``,
``call_timeout=`` ...) override single fields. The defaults are written here, once.
"""

from __future__ import annotations

import dataclasses
import enum
import ssl
from typing import Any, Literal, TypeAlias

from openenv_gym.client.connection import (
    DEFAULT_CALL_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT,
    BusyWaitOption,
    CompressionOption,
    Connection,
    busy_wait_seconds,
)
from openenv_gym.protocol.codec import DEFAULT_MAX_MESSAGE_BYTES
from openenv_gym.protocol.compression import DEFAULT_THRESHOLD

__all__ = ["UNSET", "ClientOptions", "Unset"]


class _Unset(enum.Enum):
    UNSET = "unset"

    def __repr__(self) -> str:
        return "UNSET"


UNSET = _Unset.UNSET
"""The default of a keyword argument that leaves the ``ClientOptions`` field as it is."""

Unset: TypeAlias = Literal[_Unset.UNSET]


@dataclasses.dataclass(frozen=True)
class ClientOptions:
    """How to connect to servers and how long to wait for them.

    Args:
        connect_timeout: seconds to connect, handshake and create the envs.
        call_timeout: seconds to wait for each reply; ``None`` waits forever.
        token: the servers' shared secret (default: ``$OPENENV_GYM_TOKEN``). Sent only over
            ``wss://`` or to loopback hosts unless ``allow_insecure_token``. Not in ``repr``.
        ssl_context: TLS settings for ``wss://`` urls (default: the system's trusted CAs).
            Not pickled: an unpickled env uses the default.
        allow_insecure_token: also send the token in clear text over ``ws://`` to hosts that
            are not loopback (as does ``$OPENENV_GYM_ALLOW_INSECURE_TOKEN=1``).
        max_message_bytes: the largest frame sent or accepted; match the server's limit.
        compression: per-message compression asked for at HELLO: ``"auto"`` (every installed
            codec for servers that are not loopback, none for loopback), ``"zstd"``, ``"lz4"``
            or ``None`` (see :class:`~openenv_gym.client.connection.Connection`).
        compression_threshold: the smallest message either side compresses.
        busy_wait: seconds each wait for a reply polls the socket before it sleeps, to take
            the reply without a scheduler wake-up (~0.1-0.2 ms on a VM): ``"auto"`` (poll up
            to 2 ms unless the env's loopback servers are as many as this process's cores, and
            only while no other Python thread competes for the GIL), or seconds (``0``: never; see
            :func:`~openenv_gym.client.connection.busy_wait_seconds`).

    """

    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    call_timeout: float | None = DEFAULT_CALL_TIMEOUT
    token: str | None = dataclasses.field(default=None, repr=False)
    ssl_context: ssl.SSLContext | None = None
    allow_insecure_token: bool = False
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    compression: CompressionOption = "auto"
    compression_threshold: int = DEFAULT_THRESHOLD
    busy_wait: BusyWaitOption = "auto"

    @classmethod
    def resolve(cls, options: ClientOptions | None, **overrides: Any) -> ClientOptions:
        """Return ``options`` (default: ``ClientOptions()``) with the ``overrides`` that are set.

        Args:
            options: the base options.
            **overrides: field values; ``UNSET`` ones are left as they are.

        Raises:
            TypeError: an override names no field.

        """
        given = {name: value for name, value in overrides.items() if value is not UNSET}
        base = cls() if options is None else options
        return dataclasses.replace(base, **given) if given else base

    def with_default_token(self, token: str | None, *, insecure_ok: bool = False) -> ClientOptions:
        """Return these options with ``token`` when they name none (an owned server's).

        Args:
            token: the owned servers' token.
            insecure_ok: the provider placed them beyond loopback on its own cluster's
                network (Ray): the token it made may travel there over plain ``ws://``.

        """
        if self.token or not token:
            return self
        return dataclasses.replace(
            self, token=token, allow_insecure_token=self.allow_insecure_token or insecure_ok
        )

    def for_urls(self, urls: list[str]) -> ClientOptions:
        """Return these options with ``busy_wait="auto"`` turned off if ``urls`` need it off.

        Raises:
            ValueError: ``busy_wait`` is no option.

        """
        seconds = busy_wait_seconds(self.busy_wait, urls)
        if self.busy_wait == "auto" and seconds == 0:
            return dataclasses.replace(self, busy_wait=0.0)
        return self  # "auto" stays: each connection then watches its process's threads

    def picklable(self) -> ClientOptions:
        """Return these options without the ``ssl_context`` (it cannot be pickled)."""
        return dataclasses.replace(self, ssl_context=None)

    def connect(self, url: str) -> Connection:
        """Open and handshake a connection to ``url`` with these options.

        Raises:
            InsecureTokenError, ConnectError, AuthenticationError, CapacityError,
            VersionMismatchError: as :class:`~openenv_gym.client.connection.Connection`.

        """
        return Connection(
            url,
            connect_timeout=self.connect_timeout,
            call_timeout=self.call_timeout,
            max_message_bytes=self.max_message_bytes,
            token=self.token,
            ssl_context=self.ssl_context,
            allow_insecure_token=self.allow_insecure_token,
            compression=self.compression,
            compression_threshold=self.compression_threshold,
            busy_wait=self.busy_wait,
        )
