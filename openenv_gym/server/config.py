"""ServerConfig: how a server runs, written once (the CLI's flags derive from its defaults)."""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Sequence
from typing import Literal

from openenv_gym.protocol import codec
from openenv_gym.protocol.compression import CODECS
from openenv_gym.server.access import AccessPolicy
from openenv_gym.server.catalog import EnvCatalog
from openenv_gym.server.hosting import HostedSpec, HostingPolicy
from openenv_gym.server.limits import Limits

__all__ = ["KEEPALIVE_PING", "ServerConfig"]

KEEPALIVE_PING = 20.0
"""Seconds between WebSocket pings to clients whose pool steps are in flight (keepalive)."""


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """How a server runs.

    Attributes:
        specs: env ids and ``module:attr`` entry points hosted (see ``EnvCatalog``), or
            ``HostedSpec`` entries with their own policy (from a hosting file).
        allow_any_id: also host the plain env classes of gymnasium's registry.
        policy: what clients may pass and set for every spec given as a string and every id
            ``allow_any_id`` admits (see ``server/hosting.py``); a ``HostedSpec``'s own policy
            is merged on top.
        host: address to bind; loopback by default.
        port: port to bind; 0 picks a free one (reported through ``on_ready``).
        workers: processes sharing the listening socket.
        debug: include tracebacks in error replies.
        max_message_bytes: largest frame accepted.
        limits: sessions and envs admitted per process.
        token: shared secret clients must present (``Authorization: Bearer``); ``None``: none.
        idle_timeout: close sessions that sent nothing for this many seconds (``None``: never).
        threads: serve each session's requests on a thread, so that a slow or hung env does
            not stall the other sessions of its process (costs some latency per request).
        mcp_port: also serve the first hosted env as MCP tools (streamable HTTP at
            ``http://host:mcp_port/mcp``; see ``openenv_gym.mcp``), from the main process.
        mcp_mode: ``"simulation"`` (reset/step/state + env tools) or ``"production"`` (the
            env's own tools only).
        mcp_tool_timeout: seconds an MCP tool call may run before the agent gets a tool error
            naming the tool and the elapsed time (``None``: ``openenv_gym.mcp``'s default).
        certfile: PEM certificate chain: serve ``wss://`` (TLS) instead of ``ws://``.
        keyfile: PEM private key of ``certfile`` (if not inside it).
        allow_origins: ``Origin`` values admitted (browsers send one); none by default, so no
            web page can drive the server (see ``server/access.py``).
        allow_hosts: ``Host`` names admitted besides IP literals and ``localhost`` (against
            DNS rebinding).
        handshake_timeout: seconds a connection has to complete the opening handshake and
            have its first message answered (HELLO); past it the connection is aborted.
        close_timeout: seconds the closing handshake may take before the connection is
            aborted (a client that stops reading cannot hold it open).
        metrics: count what is served and answer ``GET /metrics``, ``/status.json`` and the
            status page ``/`` (not an upgrade of ``/``: that is a session as ever); see
            ``server/observe.py``. Off, nothing is counted and those paths are like any other.
        openenv: also speak OpenEnv's protocol on the same port (``/ws``, ``/health``,
            ``/schema``, ``/metadata``, and the ``/envs/<id>/...`` forms); off, those paths
            are ordinary binary-protocol upgrades like any other.
        compression: the codecs a client may choose at HELLO for its session's messages
            (``protocol/compression.py``), in the server's order of preference; those whose
            package is not installed are left out. ``()``: none.
        busy_wait: seconds the event loop keeps polling, instead of sleeping, after each
            binary reply served in less than that, so that a client stepping in a tight loop
            has its next request taken without a scheduler wake-up (``ws/awake.py``). It keeps
            a core busy while it lasts: worth it when the server has a core to itself. Slower
            requests (a multi-threaded engine's) are not followed by polling. ``0``: off.

    """

    specs: Sequence[str | HostedSpec] = ()
    allow_any_id: bool = False
    policy: HostingPolicy = dataclasses.field(default_factory=HostingPolicy)
    host: str = "127.0.0.1"
    port: int = 8765
    workers: int = 1
    debug: bool = False
    max_message_bytes: int = codec.DEFAULT_MAX_MESSAGE_BYTES
    limits: Limits = dataclasses.field(default_factory=Limits)
    token: str | None = None
    idle_timeout: float | None = 900.0
    threads: bool = False
    certfile: str | None = None
    keyfile: str | None = None
    mcp_port: int | None = None
    mcp_mode: Literal["simulation", "production"] = "simulation"
    mcp_tool_timeout: float | None = None
    allow_origins: tuple[str, ...] = ()
    allow_hosts: tuple[str, ...] = ()
    handshake_timeout: float = 10.0
    close_timeout: float = 5.0
    metrics: bool = True
    openenv: bool = True
    compression: tuple[str, ...] = CODECS
    keepalive_ping: float = KEEPALIVE_PING
    """Seconds between WebSocket pings to clients whose pool steps are in flight."""
    busy_wait: float = 0.0

    def catalog(self) -> EnvCatalog:
        """Return the catalog of what this server hosts, under the operator's policy.

        Raises:
            ValueError: a spec names no registered id or cannot be imported.

        """
        return EnvCatalog(self.specs, allow_any_id=self.allow_any_id, policy=self.policy)

    def access_policy(self) -> AccessPolicy:
        """Return the access check (token, Origin, Host) every surface of this server applies.

        Returns:
            The policy built from ``token``, ``allow_origins`` and ``allow_hosts``.

        """
        return AccessPolicy.from_options(self.token, self.allow_origins, self.allow_hosts)

    def ssl_context(self) -> ssl.SSLContext | None:
        """Return the TLS context for ``certfile``/``keyfile``, or ``None`` for plain ``ws://``."""
        if self.certfile is None:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.certfile, self.keyfile)
        return context
