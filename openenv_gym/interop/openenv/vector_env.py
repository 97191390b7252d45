"""OpenEnvVectorEnv: ``num_envs`` OpenEnv sessions as gymnasium's ``SyncVectorEnv``.

OpenEnv servers hold one env per connection, so env ``i`` is its own :class:`OpenEnvEnv`
session (round-robin over the servers). The vector semantics are not re-implemented: this *is*
a ``SyncVectorEnv`` over those sessions, so seeds, ``reset_mask``, vector infos and every
autoreset mode are gymnasium's own code. What it adds is concurrency: before
``SyncVectorEnv`` walks the envs, every session is sent the request ``SyncVectorEnv`` is about
to make of it (:meth:`OpenEnvEnv.send_ahead`), so the servers work on them at once and each
call in the walk only reads its reply. The requests are predicted from the public results
(an env that was done is reset in NEXT_STEP; in DISABLED none is sent past the first done env,
where ``SyncVectorEnv`` asserts). SAME_STEP's resets of done envs are made by the walk itself,
one at a time.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.vector.utils import iterate

from openenv_gym.client.batching import check_reset_mask, vector_seeds
from openenv_gym.client.connection import DEFAULT_CALL_TIMEOUT, DEFAULT_CONNECT_TIMEOUT
from openenv_gym.errors import InvalidActionError
from openenv_gym.interop.openenv.docker import OPENENV_IMAGE_PORT, start_openenv_containers
from openenv_gym.interop.openenv.env import OpenEnvEnv, RequestKind, encode_action, reset_data
from openenv_gym.interop.openenv.http import fields_from_server
from openenv_gym.interop.openenv.schema import Field

__all__ = ["OpenEnvVectorEnv"]


def _common_fields(urls: Sequence[str], timeout: float) -> tuple[Field, Field]:
    """Fetch every distinct server's schemas; they must describe the same spaces.

    Raises:
        ValueError: two servers publish different spaces.
        ConnectError: a server cannot be reached or is not an OpenEnv server.

    """
    distinct = list(dict.fromkeys(urls))
    fields = [fields_from_server(url, timeout) for url in distinct]
    action, observation = fields[0]
    for url, (other_action, other_observation) in zip(distinct, fields, strict=True):
        if other_action.space != action.space or other_observation.space != observation.space:
            raise ValueError(f"{url} publishes other spaces than {distinct[0]}")
    return action, observation


class OpenEnvVectorEnv(SyncVectorEnv[Any, Any]):
    """``num_envs`` OpenEnv sessions as one ``gymnasium.vector.SyncVectorEnv``.

    Semantics are ``SyncVectorEnv``'s (it is one) in every autoreset mode: ``seed + i``
    seeds, ``options["reset_mask"]`` partial resets, vector infos with ``_key`` masks,
    ``final_obs``/``final_info`` in SAME_STEP, float64 rewards, bool flags (OpenEnv's ``done``
    as termination, truncations all ``False``). Each step sends every session its request
    before reading any reply, so the servers work on them concurrently.

    Args:
        url_or_urls: one server URL or several (see :class:`OpenEnvEnv` for the forms);
            every server must publish the same schemas.
        num_envs: number of sessions.
        autoreset_mode: gymnasium's autoreset mode (enum or its string value).
        connect_timeout: seconds to fetch the schemas and open each session.
        call_timeout: seconds to wait for each reply, counted from when its request was sent;
            ``None``: forever.

    Raises:
        ValueError: ``num_envs < 1``, no URL, a bad URL, or servers whose schemas differ.
        ConnectError: a server cannot be reached or is not an OpenEnv server.

    """

    def __init__(
        self,
        url_or_urls: str | Sequence[str],
        num_envs: int,
        *,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        call_timeout: float | None = DEFAULT_CALL_TIMEOUT,
    ) -> None:
        self.closed = True
        self._provider: Any = None
        urls = [url_or_urls] if isinstance(url_or_urls, str) else list(url_or_urls)
        if num_envs < 1 or not urls:
            raise ValueError(f"need num_envs >= 1 and a URL, got {num_envs} and {urls}")
        self.urls = [urls[i % len(urls)] for i in range(num_envs)]
        self.call_timeout = call_timeout
        fields = _common_fields(urls, connect_timeout)
        self._action_field = fields[0]
        self.sessions = self._open_sessions(fields, connect_timeout)
        super().__init__(
            [_constant(session) for session in self.sessions],
            copy=True,
            autoreset_mode=AutoresetMode(autoreset_mode),
        )
        self._was_done = np.zeros(num_envs, dtype=np.bool_)
        self.closed = False

    def _open_sessions(self, fields: tuple[Field, Field], timeout: float) -> list[OpenEnvEnv]:
        sessions: list[OpenEnvEnv] = []
        try:
            for url in self.urls:
                sessions.append(
                    OpenEnvEnv(
                        url, connect_timeout=timeout, call_timeout=self.call_timeout, fields=fields
                    )
                )
        except BaseException:
            for session in sessions:
                session.close()
            raise
        return sessions

    def reset(
        self,
        *,
        seed: int | list[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[Any, dict[str, Any]]:
        """Reset every env (or those in ``options["reset_mask"]``), as ``SyncVectorEnv``.

        Args:
            seed: ``None``, an int (env ``i`` gets ``seed + i``) or one seed per env.
            options: reset keyword arguments for every env, plus an optional ``reset_mask``
                (bool array of shape ``(num_envs,)``); not modified.

        Raises:
            ValueError, TypeError: a bad seed list or mask, as ``SyncVectorEnv``.
            RemoteError: an env raised on its server.
            CallTimeoutError, ConnectionLostError: a server did not answer.

        """
        seeds = vector_seeds(seed, self.num_envs)
        options = None if options is None else dict(options)  # SyncVectorEnv pops the mask
        mask = None if options is None else options.pop("reset_mask", None)
        if mask is not None:
            check_reset_mask(mask, self.num_envs)
        selected = np.ones(self.num_envs, dtype=np.bool_) if mask is None else mask
        self._was_done[selected] = False
        requests: dict[int, tuple[RequestKind, Any]] = {
            i: ("reset", reset_data(seeds[i], options)) for i in np.flatnonzero(selected).tolist()
        }
        forward = options if mask is None else {**(options or {}), "reset_mask": mask}
        with self._sent_ahead(requests):
            return super().reset(seed=seed, options=forward)

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """Step every env with its action, autoresetting as ``SyncVectorEnv`` does.

        Args:
            actions: an element of ``action_space`` (one action per env, batched).

        Returns:
            ``(obs, rewards, terminations, truncations, infos)``: batched observations,
            float64 rewards and bool flags of shape ``(num_envs,)``, vector infos.

        Raises:
            AssertionError: DISABLED mode stepping an env that is done and was not reset
                (``SyncVectorEnv``'s).
            InvalidActionError: an action cannot be converted to the action schema (nothing
                is sent then).
            RemoteError: a server rejected an action or its env raised.
            CallTimeoutError, ConnectionLostError: a server did not answer.

        """
        with self._sent_ahead(self._step_requests(actions)):
            result = super().step(actions)
        self._was_done = result[2] | result[3]
        return result

    def _step_requests(self, actions: Any) -> dict[int, tuple[RequestKind, Any]]:
        """Return the request ``SyncVectorEnv.step`` will make of each env, in env order."""
        per_env = list(iterate(self.action_space, actions))
        if len(per_env) != self.num_envs:
            raise InvalidActionError(f"expected {self.num_envs} actions, got {len(per_env)}")
        requests: dict[int, tuple[RequestKind, Any]] = {}
        for index, action in enumerate(per_env):
            if self._was_done[index] and self.autoreset_mode is AutoresetMode.DISABLED:
                break  # SyncVectorEnv asserts here: nothing past it may run
            if self._was_done[index] and self.autoreset_mode is AutoresetMode.NEXT_STEP:
                requests[index] = ("reset", reset_data(None, None))
            else:
                requests[index] = ("step", encode_action(self._action_field, action))
        return requests

    def _sent_ahead(self, requests: dict[int, tuple[RequestKind, Any]]) -> _SentAhead:
        return _SentAhead(self.sessions, requests)

    def state(self) -> list[dict[str, Any]]:
        """Return every env's episode state (``episode_id``, ``step_count``...), in env order.

        Raises:
            CallTimeoutError, ConnectionLostError: a server did not answer.

        """
        return [copy.deepcopy(session.state()) for session in self.sessions]

    @classmethod
    def from_docker_image(
        cls,
        image: str,
        num_envs: int,
        *,
        num_servers: int = 1,
        port: int = OPENENV_IMAGE_PORT,
        command: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> OpenEnvVectorEnv:
        """Start ``num_servers`` containers of an OpenEnv image and fan ``num_envs`` over them.

        ``port`` is the server's port inside (OpenEnv images: 8000); ``command`` replaces the
        image's default command, if given.

        Raises:
            ServerStartError: a container did not become healthy; the text has its logs.

        """
        provider = start_openenv_containers(
            image, port=port, num_servers=num_servers, command=command
        )
        try:
            envs = cls(provider.urls, num_envs, **kwargs)
        except BaseException:
            provider.close()
            raise
        envs._provider = provider
        return envs

    def close_extras(self, **kwargs: Any) -> None:
        """End every session (a ``close`` message each), close connections and containers."""
        super().close_extras(**kwargs)
        provider, self._provider = getattr(self, "_provider", None), None
        if provider is not None:
            provider.close()

    def __enter__(self) -> OpenEnvVectorEnv:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"OpenEnvVectorEnv({sorted(set(self.urls))}, num_envs={self.num_envs})"


class _SentAhead:
    """Send each session its request on entry; on exit, drop replies nobody read.

    Replies are left unread when ``SyncVectorEnv`` stops at an error: they are read and
    dropped so that no session answers a later request with a stale reply.
    """

    def __init__(
        self, sessions: list[OpenEnvEnv], requests: dict[int, tuple[RequestKind, Any]]
    ) -> None:
        self.sessions = sessions
        self.requests = requests

    def __enter__(self) -> None:
        try:
            for index, (kind, data) in self.requests.items():
                self.sessions[index].send_ahead(kind, data)
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc_info: object) -> None:
        for index in self.requests:
            self.sessions[index].drain()


def _constant(env: OpenEnvEnv) -> Any:
    """Return an ``env_fn`` for ``SyncVectorEnv`` that gives back an env already opened."""
    return lambda: env
