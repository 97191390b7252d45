"""OpenEnvVectorEnv: a ``gymnasium.vector.VectorEnv`` over OpenEnv servers, one session per env.

OpenEnv servers hold one env per connection, so ``num_envs`` sessions are opened (round-robin
over the servers); a step sends every session its action before reading any reply, and the
replies are joined with ``SyncVectorEnv``'s semantics in every autoreset mode.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array, iterate

from openenv_gym.client.batching import check_reset_mask, vector_seeds
from openenv_gym.client.connection import DEFAULT_CALL_TIMEOUT, DEFAULT_CONNECT_TIMEOUT
from openenv_gym.client.openenv_env import (
    _decode,
    _encode_action,
    _reset_data,
    _Session,
    endpoints,
    fields_from_server,
    start_openenv_containers,
)
from openenv_gym.errors import (
    InvalidActionError,
    OpenEnvError,
)
from openenv_gym.interop.schema import Field

__all__ = ["OpenEnvVectorEnv"]


class OpenEnvVectorEnv(VectorEnv[Any, Any, Any]):
    """``num_envs`` OpenEnv sessions as one ``gymnasium.vector.VectorEnv``.

    An OpenEnv server holds one env per connection, so env ``i`` is its own session on
    ``urls[i % len(urls)]``. Each step sends every session its message before reading any
    reply, so the servers work on them concurrently. Semantics are ``SyncVectorEnv``'s in
    every autoreset mode: ``seed + i`` seeds, ``options["reset_mask"]`` partial resets,
    vector infos with ``_key`` masks, ``final_obs``/``final_info`` in SAME_STEP, float64
    rewards, bool flags (OpenEnv's ``done`` as termination, truncations all ``False``).

    Args:
        url_or_urls: one server URL or several (see :class:`OpenEnvEnv` for the forms);
            every server must publish the same schemas.
        num_envs: number of sessions.
        autoreset_mode: gymnasium's autoreset mode (enum or its string value).
        connect_timeout: seconds to fetch the schemas and open each session.
        call_timeout: seconds to wait for the replies of each exchange; ``None``: forever.

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
        self._sessions: list[_Session] = []
        urls = [url_or_urls] if isinstance(url_or_urls, str) else list(url_or_urls)
        if num_envs < 1 or not urls:
            raise ValueError(f"need num_envs >= 1 and a URL, got {num_envs} and {urls}")
        self.urls = [urls[i % len(urls)] for i in range(num_envs)]
        self.num_envs = num_envs
        self.call_timeout = call_timeout
        self.autoreset_mode = AutoresetMode(autoreset_mode)
        self.metadata = {"render_modes": [], "autoreset_mode": self.autoreset_mode}
        self._action, self._observation = self._common_fields(urls, connect_timeout)
        self.single_action_space = self._action.space
        self.single_observation_space = self._observation.space
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self._open_sessions(connect_timeout)
        self.closed = False
        self._env_obs: list[Any] = [None] * num_envs
        self._rewards = np.zeros(num_envs, dtype=np.float64)
        self._terminations = np.zeros(num_envs, dtype=np.bool_)
        self._truncations = np.zeros(num_envs, dtype=np.bool_)
        self._autoreset_envs = np.zeros(num_envs, dtype=np.bool_)

    @staticmethod
    def _common_fields(urls: Sequence[str], timeout: float) -> tuple[Field, Field]:
        """Fetch every distinct server's schemas; they must describe the same spaces."""
        fields = [fields_from_server(url, timeout) for url in dict.fromkeys(urls)]
        first = fields[0]
        for url, (action, observation) in zip(dict.fromkeys(urls), fields, strict=True):
            if action.space != first[0].space or observation.space != first[1].space:
                raise ValueError(f"{url} publishes other spaces than {urls[0]}")
        return first

    def _open_sessions(self, timeout: float) -> None:
        try:
            for url in self.urls:
                self._sessions.append(
                    _Session(
                        endpoints(url)[1], connect_timeout=timeout, call_timeout=self.call_timeout
                    )
                )
        except BaseException:
            self.close_extras()
            raise

    # -- exchanges -----------------------------------------------------------------------

    def _exchange(self, messages: dict[int, tuple[str, Any]]) -> dict[int, dict[str, Any]]:
        """Send each env ``i`` its ``(kind, data)``, then collect every reply's data.

        All replies are read (one ``call_timeout`` deadline for all) before the first error
        is raised, so no session is left with a stale reply.

        Raises:
            RemoteError, CapacityError, CallTimeoutError, ConnectionLostError: from the first
                session that failed.

        """
        error: OpenEnvError | None = None
        sent: list[int] = []
        for index, (kind, data) in messages.items():
            try:
                self._sessions[index].send(kind, data)
                sent.append(index)
            except OpenEnvError as exc:
                error = error or exc
        deadline = None if self.call_timeout is None else time.monotonic() + self.call_timeout
        replies: dict[int, dict[str, Any]] = {}
        for index in sent:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                replies[index] = self._sessions[index].receive(messages[index][0], remaining)
            except OpenEnvError as exc:
                error = error or exc
        if error is not None:
            raise error
        return replies

    def _batch(self) -> Any:
        """Fresh batched observations of every env's last observation."""
        out: Any = create_empty_array(self.single_observation_space, self.num_envs, fn=np.zeros)
        return concatenate(self.single_observation_space, self._env_obs, out)

    # -- reset ---------------------------------------------------------------------------

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
                (bool array of shape ``(num_envs,)``).

        Raises:
            ValueError, TypeError: a bad seed list or mask, as ``SyncVectorEnv``.
            RemoteError: an env raised on its server.
            CallTimeoutError, ConnectionLostError: a server did not answer.

        """
        seeds = vector_seeds(seed, self.num_envs)
        options = dict(options or {})  # never mutate the caller's
        mask = options.pop("reset_mask", None)
        if mask is None:
            mask = np.ones(self.num_envs, dtype=np.bool_)
        else:
            check_reset_mask(mask, self.num_envs)
        self._terminations[mask] = False
        self._truncations[mask] = False
        self._autoreset_envs[mask] = False
        indices = np.flatnonzero(mask).tolist()
        replies = self._exchange({i: ("reset", _reset_data(seeds[i], options)) for i in indices})
        infos: dict[str, Any] = {}
        for index in indices:
            self._env_obs[index], _, _, info = _decode(self._observation, replies[index])
            infos = self._add_info(infos, info, index)
        return self._batch(), infos

    # -- step ----------------------------------------------------------------------------

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """Step every env with its action, autoresetting as ``SyncVectorEnv`` does.

        Args:
            actions: an element of ``action_space`` (one action per env, batched).

        Returns:
            ``(obs, rewards, terminations, truncations, infos)``: batched observations,
            float64 rewards and bool flags of shape ``(num_envs,)``, vector infos.

        Raises:
            AssertionError: DISABLED mode stepping an env that is done and was not reset
                (as ``SyncVectorEnv``).
            InvalidActionError: an action cannot be converted to the action schema.
            RemoteError: a server rejected an action or its env raised.
            CallTimeoutError, ConnectionLostError: a server did not answer.

        """
        messages = self._step_messages(actions)
        replies = self._exchange(messages)
        env_infos: list[dict[str, Any]] = []
        for index, (kind, _) in messages.items():
            obs, reward, done, info = _decode(self._observation, replies[index])
            self._env_obs[index] = obs
            self._rewards[index] = 0.0 if kind == "reset" else reward
            self._terminations[index] = False if kind == "reset" else done
            self._truncations[index] = False
            env_infos.append(info)
        infos = self._same_step_resets(env_infos)
        self._autoreset_envs = self._terminations | self._truncations
        return (
            self._batch(),
            self._rewards.copy(),
            self._terminations.copy(),
            self._truncations.copy(),
            infos,
        )

    def _step_messages(self, actions: Any) -> dict[int, tuple[str, Any]]:
        """Each env's message: its step, or (NEXT_STEP, after done) its reset."""
        if self.autoreset_mode is AutoresetMode.DISABLED and self._autoreset_envs.any():
            raise AssertionError(f"{self._autoreset_envs=}")
        messages: dict[int, tuple[str, Any]] = {}
        for index, action in enumerate(iterate(self.action_space, actions)):
            if self.autoreset_mode is AutoresetMode.NEXT_STEP and self._autoreset_envs[index]:
                messages[index] = ("reset", _reset_data(None, None))
            else:
                messages[index] = ("step", _encode_action(self._action, action))
        if len(messages) != self.num_envs:
            raise InvalidActionError(f"expected {self.num_envs} actions, got {len(messages)}")
        return messages

    def _same_step_resets(self, env_infos: list[dict[str, Any]]) -> dict[str, Any]:
        """In SAME_STEP mode, reset the envs that are done; build the vector infos."""
        done = self._terminations | self._truncations
        resets: dict[int, dict[str, Any]] = {}
        if self.autoreset_mode is AutoresetMode.SAME_STEP and done.any():
            indices = np.flatnonzero(done).tolist()
            resets = self._exchange({i: ("reset", _reset_data(None, None)) for i in indices})
        infos: dict[str, Any] = {}
        for index, info in enumerate(env_infos):
            if index in resets:
                final = {"final_obs": self._env_obs[index], "final_info": info}
                infos = self._add_info(infos, final, index)
                self._env_obs[index], _, _, info = _decode(self._observation, resets[index])
            infos = self._add_info(infos, info, index)
        return infos

    # -- state / close -------------------------------------------------------------------

    def state(self) -> list[dict[str, Any]]:
        """Return every env's episode state (``episode_id``, ``step_count``...), in env order.

        Raises:
            CallTimeoutError, ConnectionLostError: a server did not answer.

        """
        replies = self._exchange({i: ("state", None) for i in range(self.num_envs)})
        return [copy.deepcopy(replies[i]) for i in range(self.num_envs)]

    @classmethod
    def from_docker_image(
        cls,
        image: str,
        num_envs: int,
        *,
        num_servers: int = 1,
        port: int = 8000,
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
        sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close(say_goodbye=True)
        provider, self._provider = getattr(self, "_provider", None), None
        if provider is not None:
            provider.close()

    def __enter__(self) -> OpenEnvVectorEnv:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"OpenEnvVectorEnv({sorted(set(self.urls))}, num_envs={self.num_envs})"
