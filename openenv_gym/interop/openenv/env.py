"""OpenEnvEnv: one session of a server that speaks OpenEnv's protocol, as a ``gymnasium.Env``.

An OpenEnv server (``openenv.core.env_server.create_app``) describes its env by JSON schemas at
``GET /schema`` (:mod:`~openenv_gym.interop.openenv.http`) and holds one env per WebSocket
session at ``/ws`` (:mod:`~openenv_gym.interop.openenv.connection`).

Spaces come from the schemas through :func:`~openenv_gym.interop.openenv.schema.field_from_schema`
(actions without ``metadata``, observations without ``reward``/``done``/``metadata``).
OpenEnv has a single ``done`` flag: it is reported as ``terminated``, and ``truncated`` is
always ``False``. A ``None`` reward (e.g. on reset) is ``0.0``. The observation's ``metadata``
becomes the ``info`` dict: OpenEnv >= 0.10 sends it (inside ``observation``, and beside it when
not empty), 0.3 does not (``info`` is then ``{}``).

A request may be sent ahead (:meth:`OpenEnvEnv.send_ahead`) so that many sessions work at once:
``OpenEnvVectorEnv`` sends every session its request before ``SyncVectorEnv`` reads the replies.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, SupportsFloat

import gymnasium

from openenv_gym.client.connection import DEFAULT_CALL_TIMEOUT, DEFAULT_CONNECT_TIMEOUT
from openenv_gym.errors import InvalidActionError, OpenEnvError
from openenv_gym.interop.openenv.connection import OpenEnvConnection
from openenv_gym.interop.openenv.docker import OPENENV_IMAGE_PORT, start_openenv_containers
from openenv_gym.interop.openenv.http import fields_from_server
from openenv_gym.interop.openenv.schema import Field
from openenv_gym.interop.openenv.urls import endpoints

if TYPE_CHECKING:
    from openenv_gym.providers.docker import DockerProvider

__all__ = ["OpenEnvEnv", "RequestKind", "decode_reply", "encode_action", "reset_data"]

RequestKind = Literal["reset", "step"]
"""The requests that may be sent ahead (:meth:`OpenEnvEnv.send_ahead`)."""


def decode_reply(
    observation: Field, data: dict[str, Any]
) -> tuple[Any, float, bool, dict[str, Any]]:
    """Turn an ``observation`` reply's data into ``(obs, reward, done, info)``."""
    fields = data.get("observation") or {}
    metadata = data.get("metadata", fields.get("metadata") if isinstance(fields, dict) else None)
    info = dict(metadata) if isinstance(metadata, dict) else {}
    reward = data.get("reward")
    return observation.from_json(fields), float(reward or 0.0), bool(data.get("done")), info


def encode_action(action_field: Field, action: Any) -> Any:
    """Convert an action to its JSON form (a ``step`` request's data).

    Raises:
        InvalidActionError: the action does not have the action space's structure or types.

    """
    try:
        return action_field.to_json(action)
    except (TypeError, ValueError, KeyError, IndexError) as exc:
        raise InvalidActionError(
            f"action {action!r} does not fit the action space {action_field.space}: {exc}"
        ) from exc


def reset_data(seed: int | None, options: dict[str, Any] | None) -> dict[str, Any]:
    """Return a ``reset`` request's data: the seed and the options as keyword arguments."""
    return {"seed": seed, **(options or {})}


class OpenEnvEnv(gymnasium.Env[Any, Any]):
    """A ``gymnasium.Env`` that is one session of an OpenEnv server.

    The spaces are derived from the server's ``/schema``: usually a ``Dict`` of the action
    model's fields and one of the observation model's fields (see
    :mod:`openenv_gym.interop.openenv.schema`). ``step`` takes an action of ``action_space``
    and returns ``(obs, reward, done, False, info)``.

    Args:
        url: ``openenv+ws://host:port`` (or ``openenv+wss://``, ``http(s)://host:port``,
            ``ws(s)://host:port/ws``).
        connect_timeout: seconds to fetch the schema and open the session.
        call_timeout: seconds to wait for each reply; ``None`` waits forever. After a
            timeout the session is closed.
        fields: the server's ``(action, observation)`` fields if already fetched (as
            :func:`~openenv_gym.interop.openenv.http.fields_from_server` returns them):
            ``/schema`` is then not fetched again.

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
        fields: tuple[Field, Field] | None = None,
    ) -> None:
        self.url = url
        self._provider: DockerProvider | None = None
        self._ahead: tuple[RequestKind, Any, float | None] | None = None
        ws_url = endpoints(url)[1]
        self._action, self._observation = fields or fields_from_server(url, connect_timeout)
        self.action_space = self._action.space
        self.observation_space = self._observation.space
        self._session = OpenEnvConnection(
            ws_url, connect_timeout=connect_timeout, call_timeout=call_timeout
        )

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
        data = self._request("reset", reset_data(seed, options))
        obs, _, _, info = decode_reply(self._observation, data)
        return obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Step the env; OpenEnv's ``done`` is reported as ``terminated``.

        After :meth:`send_ahead` of a step, this returns that step's reply (``action`` is
        not sent again).

        Args:
            action: an element of ``action_space``.

        Raises:
            InvalidActionError: the action cannot be converted to the action schema.
            RemoteError: the server rejected the action (``VALIDATION_ERROR``) or its env
                raised (``EXECUTION_ERROR``).
            CallTimeoutError, ConnectionLostError: the server did not answer.

        """
        if self._ahead is not None and self._ahead[0] == "step":
            data = self._receive_ahead()
        else:
            data = self._request("step", encode_action(self._action, action))
        obs, reward, done, info = decode_reply(self._observation, data)
        return obs, reward, done, False, info

    def state(self) -> dict[str, Any]:
        """Return the server's episode state (``episode_id``, ``step_count``, env fields).

        Raises:
            CallTimeoutError, ConnectionLostError: the server did not answer.

        """
        self.drain()
        return self._session.request("state")

    # -- requests sent ahead -------------------------------------------------------------

    def send_ahead(self, kind: RequestKind, data: Any) -> None:
        """Send a ``reset`` or ``step`` request now; the next ``reset``/``step`` reads its reply.

        The reply is read by the next :meth:`step` (for a step) or by the next :meth:`reset`
        whose ``reset_data(seed, options)`` equals ``data`` (for a reset). Any other call
        first reads and drops it. Its ``call_timeout`` runs from now.

        Args:
            kind: ``"reset"`` or ``"step"``.
            data: the request's data: :func:`reset_data` or :func:`encode_action`'s result.

        Raises:
            ConnectionLostError: the session is closed or the server went away.

        """
        self.drain()
        timeout = self._session.call_timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        self._session.send(kind, data)
        self._ahead = (kind, data, deadline)

    def drain(self) -> None:
        """Read and drop the reply of a request sent ahead, if any (its errors too)."""
        if self._ahead is not None:
            # The caller has stopped waiting for it; a lost session stays closed.
            with contextlib.suppress(OpenEnvError):
                self._receive_ahead()

    def _receive_ahead(self) -> dict[str, Any]:
        assert self._ahead is not None
        kind, _, deadline = self._ahead
        self._ahead = None
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        return self._session.receive(kind, remaining)

    def _request(self, kind: RequestKind, data: Any) -> dict[str, Any]:
        """Return the reply to ``(kind, data)``: the one sent ahead if it matches."""
        if self._ahead is not None and self._ahead[:2] == (kind, data):
            return self._receive_ahead()
        self.drain()
        return self._session.request(kind, data)

    # -- life cycle ----------------------------------------------------------------------

    @classmethod
    def from_docker_image(
        cls,
        image: str,
        *,
        port: int = OPENENV_IMAGE_PORT,
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
        provider, self._provider = getattr(self, "_provider", None), None
        if provider is not None:
            provider.close()

    def __repr__(self) -> str:
        return f"OpenEnvEnv({self.url!r})"
