"""RemoteEnv: a ``gymnasium.Env`` whose episodes run in an environment server."""

from __future__ import annotations

import dataclasses
import ssl
import time
from collections.abc import Mapping
from typing import Any, Literal, SupportsFloat

import gymnasium
from gymnasium.core import ActType, ObsType, RenderFrame
from gymnasium.envs.registration import EnvSpec

from openenv_gym.client.connection import BusyWaitOption, CompressionOption, Connection
from openenv_gym.client.options import UNSET, ClientOptions, Unset
from openenv_gym.client.pool import embedded_pool
from openenv_gym.errors import CallTimeoutError, StepTimeoutError
from openenv_gym.protocol.messages import (
    AutoresetModeName,
    MakeReply,
    MakeRequest,
    Op,
    ServerVectorization,
    parse_body,
)
from openenv_gym.protocol.spaces import space_from_data
from openenv_gym.providers import Provider, ProviderName, embedded_server_args, start_servers

__all__ = ["RemoteEnv"]


def open_session(
    env_id: str,
    url: str | None,
    *,
    num_envs: int,
    autoreset_mode: AutoresetModeName | None,
    env_kwargs: dict[str, Any],
    options: ClientOptions,
    provider: Provider | None = None,
    server_vectorization: ServerVectorization = "sync",
) -> tuple[Connection, MakeReply]:
    """Connect to ``url`` and create the session's envs; close the connection on failure.

    Raises:
        ConnectError, CapacityError, RemoteError: as ``RemoteEnv``.

    """
    assert url is not None or provider is not None
    connection = options.connect(url if url is not None else provider.urls[0])  # type: ignore[union-attr]
    try:
        request = MakeRequest(
            env_id=env_id,
            num_envs=num_envs,
            kwargs=env_kwargs,
            autoreset_mode=autoreset_mode,
            server_vectorization=server_vectorization,
        )
        body = connection.request(Op.MAKE, request.wire(), operation=f"make {env_id}")
        return connection, parse_body(MakeReply, body)
    except BaseException:
        connection.close()
        raise


def _own_server(
    env_id: str,
    kwargs: dict[str, Any],
    docker_image: str | None,
    provider: ProviderName | Provider | None = None,
    provider_options: Mapping[str, Any] | None = None,
) -> Provider:
    """Return the server of an env built without ``url=``: pooled, or one of its own."""
    server_args = embedded_server_args(kwargs)
    if docker_image is None and provider in (None, "local") and not provider_options:
        return embedded_pool().acquire(env_id, server_args)
    return start_servers(
        [env_id],
        provider=provider,
        provider_options=provider_options,
        docker_image=docker_image,
        server_args=server_args,
    )


class RemoteEnv(gymnasium.Env[ObsType, ActType]):
    """A ``gymnasium.Env`` that runs ``env_id`` in an environment server.

    It behaves as the in-process env under the same seeds: spaces, metadata and spec come from
    the server; ``step`` returns exactly the types the env returns (Box observations as arrays of
    the space dtype, ``bool`` flags, the env's own reward type); every returned array is fresh and
    writable. The server applies the env's time limit, and ``spec.max_episode_steps`` says so.

    Args:
        env_id: a gymnasium id or ``module:attr`` entry point the server hosts.
        url: ``ws://host:port`` of a running server. ``None``: a local server process
            hosting ``env_id``, shared with the other embedded envs of this process
            (``openenv_gym.client.pool``), or, with ``docker_image``, a container owned and
            stopped by this env.
        docker_image: run the owned server in a container of this image.
        provider: where the owned server runs: ``"local"`` (pooled, the default), ``"docker"``,
            ``"ray"`` (an actor), or a ``Provider`` the caller owns (its first URL; not
            closed by this env). See ``providers.start_servers``.
        provider_options: options of the provider (e.g. ``RayProvider``'s).
        render_mode: passed to the env on the server.
        options: how to connect and how long to wait (:class:`ClientOptions`; its
            ``ssl_context`` is not pickled: an unpickled env uses the default).
        token, ssl_context, connect_timeout, call_timeout, compression, busy_wait: override the
            field of ``options`` of the same name (see :class:`ClientOptions`).
        **env_kwargs: keyword arguments for the env's constructor (``gymnasium.make``'s,
            including ``max_episode_steps``).

    Raises:
        ServerStartError: the owned server (process or container) failed to start.
        ConnectError: the server cannot be reached (``AuthenticationError``: bad token).
        CapacityError: the server is at one of its limits (sessions, envs).
        RemoteError: the server refused or failed to create the env (e.g. an
            ``UnknownEnvError`` for an id it does not host).

    """

    def __init__(
        self,
        env_id: str,
        *,
        url: str | None = None,
        render_mode: str | None = None,
        docker_image: str | None = None,
        provider: ProviderName | Provider | None = None,
        provider_options: Mapping[str, Any] | None = None,
        options: ClientOptions | None = None,
        token: str | Unset | None = UNSET,
        ssl_context: ssl.SSLContext | Unset | None = UNSET,
        connect_timeout: float | Unset = UNSET,
        call_timeout: float | Unset | None = UNSET,
        compression: CompressionOption | Unset = UNSET,
        busy_wait: BusyWaitOption | Unset = UNSET,
        **env_kwargs: Any,
    ) -> None:
        options = ClientOptions.resolve(
            options,
            token=token,
            ssl_context=ssl_context,
            connect_timeout=connect_timeout,
            call_timeout=call_timeout,
            compression=compression,
            busy_wait=busy_wait,
        )
        self.options = options
        self._init_args = dict(
            env_id=env_id,
            url=url,
            render_mode=render_mode,
            docker_image=docker_image,
            provider=provider if provider is None or isinstance(provider, str) else None,
            provider_options=provider_options,
            options=options.picklable(),
            **env_kwargs,
        )
        self._closed = True
        kwargs = dict(env_kwargs)
        if render_mode is not None:
            kwargs["render_mode"] = render_mode
        self._provider = (
            None
            if url is not None
            else _own_server(env_id, kwargs, docker_image, provider, provider_options)
        )
        self._session_kwargs = kwargs
        self._session_options = options.with_default_token(
            None if self._provider is None else self._provider.token,
            insecure_ok=bool(getattr(self._provider, "allow_insecure_token", False)),
        )
        try:
            self._connection, reply = open_session(
                env_id,
                url,
                num_envs=1,
                autoreset_mode=None,
                env_kwargs=kwargs,
                options=self._session_options,
                provider=self._provider,
            )
        except BaseException:
            if self._provider is not None:
                self._provider.close()
            raise
        self._closed = False
        self.env_id = env_id
        self.url = self._connection.url
        self.observation_space = space_from_data(reply.observation_space)
        self.action_space = space_from_data(reply.action_space)
        self.metadata = dict(reply.metadata)
        self.render_mode = reply.render_mode
        self._max_episode_steps = reply.max_episode_steps
        self._spec: EnvSpec | None = EnvSpec(
            id=env_id if ":" not in env_id else f"openenv/{env_id.replace(':', '.')}",
            entry_point="openenv_gym:RemoteEnv",
            reward_threshold=reply.reward_threshold,
            nondeterministic=reply.nondeterministic,
            max_episode_steps=reply.max_episode_steps,
            order_enforce=False,
            disable_env_checker=True,
            kwargs=dict(self._init_args),
        )

    @property
    def spec(self) -> EnvSpec | None:
        """The env spec, with ``max_episode_steps`` as applied by the server."""
        if self._spec is None:
            return None
        return dataclasses.replace(self._spec, max_episode_steps=self._max_episode_steps)

    @spec.setter
    def spec(self, value: EnvSpec | None) -> None:
        # gymnasium.make assigns its own spec; keep it, but report the server's time limit.
        self._spec = value

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[ObsType, dict[str, Any]]:
        """Reset the remote env; seeds this env's ``np_random`` locally as well.

        Raises:
            RemoteError: the env raised on the server.
            CallTimeoutError, ConnectionLostError: the server did not answer.

        """
        super().reset(seed=seed)
        if self._connection.closed and not self._closed:
            self._reopen()  # the last session was given up at a step deadline
        obs, info = self._connection.request(
            Op.RESET, {"seed": seed, "options": options}, operation="reset"
        )
        return obs, info

    def step(
        self, action: ActType, *, timeout: float | None = None
    ) -> tuple[ObsType, SupportsFloat, bool, bool, dict[str, Any]]:
        """Step the remote env and return its exact ``(obs, reward, terminated, truncated, info)``.

        Args:
            action: the action.
            timeout: this step's deadline in seconds (default: the ``call_timeout``). Past it
                the session is given up: the connection is closed, so the server closes the
                env (once the step returns: a step running inline cannot be interrupted; use
                a ``RemoteEnvPool`` on a ``--step-isolation process`` server to have it
                killed), and the next ``reset`` opens a new session on the same server.

        Raises:
            StepTimeoutError: no result within ``timeout`` (env index 0, the elapsed time).
            RemoteError: the env raised on the server (e.g. an invalid action).
            CallTimeoutError, ConnectionLostError: the server did not answer.

        """
        if timeout is None:
            obs, reward, terminated, truncated, info = self._connection.request(
                Op.STEP, action, operation="step"
            )
            return obs, reward, terminated, truncated, info
        start = time.monotonic()
        try:
            obs, reward, terminated, truncated, info = self._connection.request(
                Op.STEP, action, operation="step", timeout=timeout
            )
        except CallTimeoutError:
            self._connection.close()  # the server closes the session, and the env with it
            elapsed = time.monotonic() - start
            raise StepTimeoutError(0, elapsed, timeout, self.url) from None
        return obs, reward, terminated, truncated, info

    def _reopen(self) -> None:
        """Open a new session on the same server, with the same env kwargs and options."""
        self._connection, _ = open_session(
            self.env_id,
            self.url,
            num_envs=1,
            autoreset_mode=None,
            env_kwargs=self._session_kwargs,
            options=self._session_options,
        )

    def render(self) -> RenderFrame | list[RenderFrame] | None:
        """Return the frame (or text, or list of frames) the remote env renders."""
        return self._connection.request(Op.RENDER, operation="render")  # type: ignore[no-any-return]

    def state(self) -> dict[str, Any]:
        """Return the episode state: ``episode_id``, ``step_count`` and the env's own state."""
        return self._connection.request(Op.STATE, operation="state")  # type: ignore[no-any-return]

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call method ``name`` of the remote env (or read attribute ``name``)."""
        body = {"name": name, "args": list(args), "kwargs": kwargs}
        return self._connection.request(Op.CALL, body, operation=f"call {name}")

    def get_attr(self, name: str) -> Any:
        """Read attribute ``name`` of the remote env."""
        return self._connection.request(Op.GET_ATTR, {"name": name}, operation=f"get {name}")

    def set_attr(self, name: str, value: Any) -> None:
        """Set attribute ``name`` of the remote env."""
        body = {"name": name, "values": value, "per_env": False}
        self._connection.request(Op.SET_ATTR, body, operation=f"set {name}")

    def close(self) -> None:
        """Close the remote env, the connection and an owned local server; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._connection.request(Op.CLOSE, operation="close", timeout=5.0)
        except Exception:  # the server may already be gone; closing must still succeed
            pass
        finally:
            self._connection.close()
            if self._provider is not None:
                self._provider.close()

    def __enter__(self) -> RemoteEnv[ObsType, ActType]:
        return self

    def __exit__(self, *exc_info: object) -> Literal[False]:
        self.close()
        return False

    def __getstate__(self) -> dict[str, Any]:
        return dict(self._init_args)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Unpickling opens a new session with the same arguments.
        init_args = dict(state)
        env_id = init_args.pop("env_id")
        self.__init__(env_id, **init_args)  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"RemoteEnv({self.env_id!r}, url={self.url!r})"
