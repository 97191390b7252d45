"""Drive servers that speak OpenEnv's own protocol from Gymnasium.

An OpenEnv server (``openenv.core.env_server.create_app``) describes its env by JSON schemas at
``GET /schema`` and holds one env per WebSocket session at ``/ws``, where JSON text messages
``{"type": "reset" | "step" | "state" | "close", "data": {...}}`` are answered by
``{"type": "observation" | "state" | "error", "data": {...}}``. :class:`OpenEnvEnv` is one
such session as a ``gymnasium.Env``; ``openenv_vector_env.OpenEnvVectorEnv`` fans ``num_envs``
sessions out over one or more servers as a ``VectorEnv`` with ``SyncVectorEnv``'s semantics.

Spaces come from the schemas through :func:`openenv_gym.interop.schema.field_from_schema`
(actions without ``metadata``, observations without ``reward``/``done``/``metadata``).
OpenEnv has a single ``done`` flag: it is reported as ``terminated``, and ``truncated`` is
always ``False``. A ``None`` reward (e.g. on reset) is ``0.0``. OpenEnv's server does not send
observation ``metadata``; if a server does, it becomes the ``info`` dict.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any, SupportsFloat, cast

import gymnasium
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import ClientConnection, connect

from openenv_gym.client.connection import DEFAULT_CALL_TIMEOUT, DEFAULT_CONNECT_TIMEOUT
from openenv_gym.errors import (
    CallTimeoutError,
    CapacityError,
    ConnectError,
    ConnectionLostError,
    DecodeError,
    InvalidActionError,
    remote_error,
)
from openenv_gym.interop.schema import Field, field_from_schema

__all__ = [
    "OpenEnvEnv",
    "endpoints",
    "fetch_json",
    "fields_from_server",
    "health_check",
    "start_openenv_containers",
]

ACTION_EXCLUDE = frozenset({"metadata"})
OBSERVATION_EXCLUDE = frozenset({"reward", "done", "metadata"})
MAX_MESSAGE_BYTES = 1 << 28
"""Largest WebSocket message accepted (observations may carry images)."""

_SCHEMES = {
    "openenv+ws": ("http", "ws"),
    "openenv+wss": ("https", "wss"),
    "http": ("http", "ws"),
    "https": ("https", "wss"),
    "ws": ("http", "ws"),
    "wss": ("https", "wss"),
}
# ``proxy`` appeared in websockets 15; loopback and remote servers are reached directly.
_NO_PROXY: dict[str, Any] = (
    {"proxy": None} if "proxy" in inspect.signature(connect).parameters else {}
)


def endpoints(url: str) -> tuple[str, str]:
    """Split an OpenEnv server URL into its HTTP base URL and its WebSocket session URL.

    Args:
        url: ``openenv+ws://host:port``, ``openenv+wss://host:port``, ``http(s)://host:port``
            or ``ws(s)://host:port/ws``, optionally under a path prefix.

    Returns:
        ``(http_base, ws_url)``, e.g. ``("http://h:1", "ws://h:1/ws")``.

    Raises:
        ValueError: an unknown scheme or no host.

    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in _SCHEMES or not parts.netloc:
        raise ValueError(
            f"not an OpenEnv server URL: {url!r} (expected openenv+ws://host:port, "
            "openenv+wss://, http(s)://host:port or ws(s)://host:port/ws)"
        )
    http, ws = _SCHEMES[parts.scheme]
    prefix = parts.path.rstrip("/")
    if parts.scheme in ("ws", "wss") and prefix.endswith("/ws"):
        prefix = prefix[: -len("/ws")]
    return f"{http}://{parts.netloc}{prefix}", f"{ws}://{parts.netloc}{prefix}/ws"


def fetch_json(url: str, timeout: float, *, server: str) -> Any:
    """GET ``url`` and parse its JSON body, without any proxy.

    Args:
        url: the HTTP(S) URL.
        timeout: seconds for connecting and reading.
        server: the server URL as the caller gave it, named by errors.

    Raises:
        ConnectError: the server cannot be reached, answers with an error, or not with JSON.

    """
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return json.loads(response.read())
    except (OSError, ValueError) as exc:  # URLError, HTTPError, timeouts; bad JSON
        raise ConnectError(server, f"GET {url} failed: {exc}") from exc


def fields_from_server(url: str, timeout: float) -> tuple[Field, Field]:
    """Fetch the server's ``/schema`` and derive the action and observation fields.

    Args:
        url: the server URL (any form :func:`endpoints` accepts).
        timeout: seconds for the request.

    Returns:
        ``(action_field, observation_field)``.

    Raises:
        ConnectError: the server cannot be reached or its ``/schema`` is not OpenEnv's.

    """
    schema = fetch_json(f"{endpoints(url)[0]}/schema", timeout, server=url)
    if not (isinstance(schema, dict) and "action" in schema and "observation" in schema):
        raise ConnectError(url, "GET /schema did not return action/observation schemas")
    return (
        field_from_schema(schema["action"], exclude=ACTION_EXCLUDE),
        field_from_schema(schema["observation"], exclude=OBSERVATION_EXCLUDE),
    )


def _raise_error_reply(url: str, data: dict[str, Any]) -> None:
    """Raise the typed exception for an OpenEnv ``error`` reply."""
    code = str(data.get("code", "ERROR"))
    message = str(data.get("message", ""))
    if code == "CAPACITY_REACHED":
        raise CapacityError(
            "sessions", int(data.get("active_sessions", 0)), int(data.get("max_sessions", 0))
        )
    if "errors" in data:  # pydantic's validation details say which field and why
        message = f"{message}: {json.dumps(data['errors'], default=str)}"
    raise remote_error(url, code, message)


class _Session:
    """One OpenEnv WebSocket session (one env on the server); JSON text messages.

    After a timeout or a lost connection the session is closed: a late reply would otherwise
    answer the next request.

    Args:
        url: the session's ``ws(s)://.../ws`` URL.
        connect_timeout: seconds to connect and complete the opening handshake.
        call_timeout: default seconds to wait for each reply; ``None`` waits forever.

    Raises:
        ConnectError: the server cannot be reached or refuses the WebSocket.

    """

    def __init__(self, url: str, *, connect_timeout: float, call_timeout: float | None) -> None:
        self.url = url
        self.call_timeout = call_timeout
        self.closed = False
        try:
            opened = connect(
                url,
                open_timeout=connect_timeout,
                close_timeout=2.0,
                ping_interval=None,  # call_timeout bounds every wait instead
                max_size=MAX_MESSAGE_BYTES,
                **_NO_PROXY,
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise ConnectError(url, f"cannot open an OpenEnv session: {exc}") from exc
        # Entered as a context manager (websockets >= 17.1 asks for it); closed in close().
        self._ws = cast(ClientConnection, opened).__enter__()

    def send(self, kind: str, data: Any = None) -> None:
        """Send one ``{"type": kind, "data": data}`` message (no ``data`` when ``None``).

        Raises:
            ConnectionLostError: the session is closed or the server went away.
            RemoteError, CapacityError: the server had sent an error reply before closing.

        """
        message: dict[str, Any] = {"type": kind}
        if data is not None:
            message["data"] = data
        if self.closed:
            raise ConnectionLostError(self.url, "the session is closed")
        try:
            self._ws.send(json.dumps(message))
        except (ConnectionClosed, OSError) as exc:
            self._raise_queued_error()  # e.g. CAPACITY_REACHED, sent just before closing
            self.close()
            raise ConnectionLostError(self.url, f"server went away: {exc}") from exc

    def _raise_queued_error(self) -> None:
        """Raise the error reply the server sent before closing, if one is queued."""
        try:
            raw = self._ws.recv(timeout=0)
        except Exception:  # nothing queued: the caller reports the lost connection
            return
        self.close()
        self._parse(raw)

    def receive(self, operation: str, timeout: float | None = None) -> dict[str, Any]:
        """Wait for the next reply and return its ``data``.

        Args:
            operation: names the request in errors.
            timeout: seconds to wait (default: ``call_timeout``); a timeout is reported
                against ``call_timeout`` when it is set.

        Raises:
            RemoteError: the server answered with an error (``remote_type`` is its code).
            CapacityError: the server is at its session limit.
            CallTimeoutError: no reply within the timeout.
            ConnectionLostError: the server went away.
            DecodeError: the reply is not an OpenEnv JSON message.

        """
        if self.closed:
            raise ConnectionLostError(self.url, "the session is closed")
        wait = self.call_timeout if timeout is None else timeout
        try:
            raw = self._ws.recv(timeout=wait)
        except TimeoutError as exc:
            self.close()
            limit = self.call_timeout if self.call_timeout is not None else wait
            raise CallTimeoutError(self.url, operation, limit or 0.0) from exc
        except (ConnectionClosed, OSError) as exc:
            self.close()
            raise ConnectionLostError(self.url, f"server went away during {operation}") from exc
        return self._parse(raw)

    def _parse(self, raw: str | bytes) -> dict[str, Any]:
        """Return a reply's ``data``; raise the typed error of an ``error`` reply."""
        try:
            reply = json.loads(raw)
            data = reply.get("data") or {}
        except (ValueError, AttributeError) as exc:
            self.close()
            raise DecodeError(f"{self.url}: not an OpenEnv reply: {raw[:200]!r}") from exc
        if reply.get("type") == "error":
            _raise_error_reply(self.url, data)
        return cast(dict[str, Any], data)

    def request(self, kind: str, data: Any = None) -> dict[str, Any]:
        """Send a message and return the ``data`` of its reply (see :meth:`receive`)."""
        self.send(kind, data)
        return self.receive(kind)

    def close(self, *, say_goodbye: bool = False) -> None:
        """Close the connection (after a ``close`` message if ``say_goodbye``); idempotent."""
        if self.closed:
            return
        if say_goodbye:
            with contextlib.suppress(ConnectionClosed, OSError):
                self._ws.send(json.dumps({"type": "close"}))
        self.closed = True
        with contextlib.suppress(Exception):  # the server may already be gone
            self._ws.close()


def _decode(observation: Field, data: dict[str, Any]) -> tuple[Any, float, bool, dict[str, Any]]:
    """Turn an ``observation`` reply's data into ``(obs, reward, done, info)``."""
    fields = data.get("observation") or {}
    metadata = data.get("metadata", fields.get("metadata") if isinstance(fields, dict) else None)
    info = dict(metadata) if isinstance(metadata, dict) else {}
    reward = data.get("reward")
    return observation.from_json(fields), float(reward or 0.0), bool(data.get("done")), info


def _encode_action(action_field: Field, action: Any) -> Any:
    """Convert an action to its JSON form.

    Raises:
        InvalidActionError: the action does not have the action space's structure or types.

    """
    try:
        return action_field.to_json(action)
    except (TypeError, ValueError, KeyError, IndexError) as exc:
        raise InvalidActionError(
            f"action {action!r} does not fit the action space {action_field.space}: {exc}"
        ) from exc


def _reset_data(seed: int | None, options: dict[str, Any] | None) -> dict[str, Any]:
    return {"seed": seed, **(options or {})}


class OpenEnvEnv(gymnasium.Env[Any, Any]):
    """A ``gymnasium.Env`` that is one session of an OpenEnv server.

    The spaces are derived from the server's ``/schema``: usually a ``Dict`` of the action
    model's fields and one of the observation model's fields (see
    :mod:`openenv_gym.interop.schema`). ``step`` takes an action of ``action_space`` and
    returns ``(obs, reward, done, False, info)``.

    Args:
        url: ``openenv+ws://host:port`` (or ``openenv+wss://``, ``http(s)://host:port``,
            ``ws(s)://host:port/ws``).
        connect_timeout: seconds to fetch the schema and open the session.
        call_timeout: seconds to wait for each reply; ``None`` waits forever. After a
            timeout the session is closed.

    Raises:
        ValueError: ``url`` is not one of the accepted forms.
        ConnectError: the server cannot be reached or is not an OpenEnv server.

    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        call_timeout: float | None = DEFAULT_CALL_TIMEOUT,
    ) -> None:
        self.url = url
        ws_url = endpoints(url)[1]
        self._action, self._observation = fields_from_server(url, connect_timeout)
        self.action_space = self._action.space
        self.observation_space = self._observation.space
        self._session = _Session(ws_url, connect_timeout=connect_timeout, call_timeout=call_timeout)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Start an episode; ``options`` go to the server's ``reset`` as keyword arguments.

        Args:
            seed: the env's seed (also seeds this env's ``np_random``).
            options: more reset keyword arguments, e.g. ``episode_id``.

        Raises:
            RemoteError: the server's env raised (``remote_type`` is OpenEnv's error code).
            CallTimeoutError, ConnectionLostError: the server did not answer.

        """
        super().reset(seed=seed)
        obs, _, _, info = _decode(
            self._observation, self._session.request("reset", _reset_data(seed, options))
        )
        return obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Step the env; OpenEnv's ``done`` is reported as ``terminated``.

        Args:
            action: an element of ``action_space``.

        Raises:
            InvalidActionError: the action cannot be converted to the action schema.
            RemoteError: the server rejected the action (``VALIDATION_ERROR``) or its env
                raised (``EXECUTION_ERROR``).
            CallTimeoutError, ConnectionLostError: the server did not answer.

        """
        data = self._session.request("step", _encode_action(self._action, action))
        obs, reward, done, info = _decode(self._observation, data)
        return obs, reward, done, False, info

    def state(self) -> dict[str, Any]:
        """Return the server's episode state (``episode_id``, ``step_count``, env fields).

        Raises:
            CallTimeoutError, ConnectionLostError: the server did not answer.

        """
        return self._session.request("state")

    @classmethod
    def from_docker_image(
        cls,
        image: str,
        *,
        port: int = 8000,
        command: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> OpenEnvEnv:
        """Start an OpenEnv image's server in a container (owned, removed on ``close()``).

        Args:
            image: an OpenEnv environment image (its server listens on ``port`` inside).
            port: the container's server port (OpenEnv images use 8000).
            command: arguments replacing the image's default command, if any.
            **kwargs: ``OpenEnvEnv`` options.

        Raises:
            ServerStartError: the container did not become healthy; the text has its logs.

        """
        provider = start_openenv_containers(image, port=port, command=command)
        try:
            env = cls(provider.urls[0], **kwargs)
        except BaseException:
            provider.close()
            raise
        env._provider = provider
        return env

    def close(self) -> None:
        """End the session (a ``close`` message), close the connection and an owned container."""
        session = getattr(self, "_session", None)
        if session is not None:
            session.close(say_goodbye=True)
        provider = getattr(self, "_provider", None)
        if provider is not None:
            self._provider = None
            provider.close()

    def __repr__(self) -> str:
        return f"OpenEnvEnv({self.url!r})"


def health_check(url: str, timeout: float) -> None:
    """Raise unless the OpenEnv server at ``url`` answers ``GET /health``."""
    fetch_json(endpoints(url)[0] + "/health", timeout, server=url)


def start_openenv_containers(
    image: str, *, port: int = 8000, num_servers: int = 1, command: Sequence[str] | None = None
) -> Any:
    """Start ``num_servers`` containers of an OpenEnv image; ready when ``/health`` answers.

    ``command`` replaces the image's default command (arguments of its entry point).
    """
    from openenv_gym.providers.docker import DockerProvider

    return DockerProvider(
        command,
        image=image,
        num_servers=num_servers,
        container_port=port,
        scheme="http",
        ready=health_check,
    )
