"""RemoteVectorEnv: a ``gymnasium.vector.VectorEnv`` whose envs run in servers, in shards.

``num_envs`` envs are split into consecutive shards, one session per server. A step sends one
message per shard carrying that shard's actions as one array, sends to every shard before
waiting for any, and joins the replies. Each server steps its shard as gymnasium's own
``SyncVectorEnv`` (autoreset included), so results equal ``SyncVectorEnv`` over all envs; or,
with ``server_vectorization="vector_entry_point"``, as the spec's native vector env of the
shard's size (``client/native.py``).
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import time
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
from gymnasium.error import AlreadyPendingCallError, ClosedEnvironmentError, NoAsyncCallError
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from openenv_gym.client.batching import (
    ARRAY_SPACES,
    check_reset_mask,
    concat_batches,
    slice_batch,
    vector_seeds,
)
from openenv_gym.client.connection import BusyWaitOption, CompressionOption, Connection
from openenv_gym.client.env import open_session
from openenv_gym.client.native import engine_results, join_vector_infos, shard_seed
from openenv_gym.client.options import UNSET, ClientOptions, Unset
from openenv_gym.client.recovery import (
    LOST,
    flag_reconnected,
    lost_step_reply,
    reopen,
    reset_after_loss,
)
from openenv_gym.client.shards import Pending, Shard, check_spaces, receive_all, split
from openenv_gym.errors import (
    CallTimeoutError,
    ConnectionLostError,
    InvalidActionError,
    StepTimeoutError,
    VectorizationError,
)
from openenv_gym.protocol.messages import MakeReply, Op, ServerVectorization
from openenv_gym.protocol.spaces import space_from_data
from openenv_gym.providers import Provider, ProviderName, embedded_server_args, start_servers

__all__ = ["RemoteVectorEnv"]

logger = logging.getLogger("openenv_gym.client")


class RemoteVectorEnv(VectorEnv[Any, Any, Any]):
    """A vector env of ``num_envs`` copies of ``env_id`` running in environment servers.

    Semantics are ``gymnasium.vector.SyncVectorEnv``'s under the same seeds, in every autoreset
    mode: partial resets through ``options["reset_mask"]``, vector infos with ``_key`` masks,
    ``final_obs``/``final_info`` in SAME_STEP, float64 rewards, bool flags, fresh arrays. With
    ``server_vectorization="vector_entry_point"`` they are the native engine's instead (its
    reward dtype, its autoreset mode; see ``docs/native.md``).

    Args:
        env_id: a gymnasium id or ``module:attr`` entry point the servers host.
        num_envs: number of envs in total.
        urls: servers to use, one shard each. ``None`` starts ``num_servers`` servers, owned
            and stopped by this env: local processes (the embedded default) or, with
            ``docker_image``, containers.
        num_servers: servers to start when ``urls`` is ``None``.
        provider: where those servers run: ``"local"`` processes (default), ``"docker"``
            containers, ``"ray"`` actors on a Ray cluster, or a ``Provider`` the caller owns
            (one shard per URL; not closed by this env). See ``providers.start_servers``.
        provider_options: options of the provider (e.g. Ray's ``num_cpus``, ``strategy``,
            ``address``; see ``openenv_gym.providers.ray.RayProvider``).
        docker_image: run the owned servers in containers of this image.
        autoreset_mode: gymnasium's autoreset mode (enum or its string value). ``None``:
            NEXT_STEP for ``"sync"``; for ``"vector_entry_point"``, the mode the engine declares
            (asking for another raises ``AutoresetModeMismatchError``).
        server_vectorization: ``"sync"``: each server steps its shard as a ``SyncVectorEnv``
            of single envs. ``"vector_entry_point"``: as the spec's native vector env of the
            shard's size; shard ``k`` of envs ``start_k:stop_k`` is reset with seed
            ``s + start_k`` for ``reset(seed=s)``, so each shard equals the in-process engine
            of its size under that seed (``client/native.py``: also call, attrs, render).
        render_mode: passed to every env.
        options: how to connect and how long to wait (:class:`ClientOptions`).
        token, ssl_context, connect_timeout, call_timeout, compression, busy_wait: override the
            field of ``options`` of the same name (see :class:`ClientOptions`).
        reconnect: when a shard's server goes away, re-open its session (on the same URL, or
            on a replacement server when this env owns its servers) and continue: that
            shard's envs start fresh episodes, reported as truncated and flagged in
            ``infos["reconnected"]`` (see ``client/recovery.py``). Off: a typed error.
        **env_kwargs: keyword arguments of every env (``gymnasium.make``'s, including
            ``max_episode_steps``).

    Raises:
        ServerStartError: an owned server (process or container) failed to start.
        ConnectError: a server cannot be reached (``AuthenticationError``: bad token).
        CapacityError: a server is at one of its limits (sessions, envs).
        RemoteError: a server refused or failed to create the envs.
        ShardMismatchError: the servers' envs disagree on their spaces.
        VectorizationError: ``"vector_entry_point"`` for a spec that has none (remote), or
            with ``reconnect``.


    """

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        *,
        urls: Sequence[str] | None = None,
        num_servers: int = 1,
        autoreset_mode: AutoresetMode | str | None = None,
        server_vectorization: ServerVectorization = "sync",
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
        reconnect: bool = False,
        **env_kwargs: Any,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be at least 1, got {num_envs}")
        self.closed = True
        self.num_envs = num_envs
        self.server_vectorization = server_vectorization
        self._native = server_vectorization == "vector_entry_point"
        if self._native and reconnect:
            raise VectorizationError(env_id, server_vectorization, "reconnect is not supported")
        if autoreset_mode is None and not self._native:
            autoreset_mode = AutoresetMode.NEXT_STEP
        self._requested_mode = None if autoreset_mode is None else AutoresetMode(autoreset_mode)
        self._pending = Pending.NONE
        self._pending_ids: list[Any] = []
        self._reconnect = reconnect
        self._shards: list[Shard] = []
        if provider is not None and not isinstance(provider, str) and not urls:
            num_servers = len(provider.urls)
        bounds = split(num_envs, len(urls) if urls else num_servers)
        kwargs = dict(env_kwargs)
        if render_mode is not None:
            kwargs["render_mode"] = render_mode
        self._provider = (
            None
            if urls
            else start_servers(
                [env_id],
                num_servers=len(bounds),
                provider=provider,
                provider_options=provider_options,
                docker_image=docker_image,
                server_args=embedded_server_args(kwargs),
            )
        )
        targets = list(urls) if urls else self._provider.urls  # type: ignore[union-attr]
        self.env_id, self._env_kwargs = env_id, kwargs
        options = ClientOptions.resolve(
            options,
            token=token,
            ssl_context=ssl_context,
            connect_timeout=connect_timeout,
            call_timeout=call_timeout,
            compression=compression,
            busy_wait=busy_wait,
        )
        self.options = options.with_default_token(
            None if self._provider is None else self._provider.token,
            insecure_ok=bool(getattr(self._provider, "allow_insecure_token", False)),
        )
        # What the connections use: busy_wait="auto" decided for this env's servers.
        self._connect_options = self.options.for_urls(targets[: len(bounds)])
        try:
            replies = []
            for (start, stop), url in zip(bounds, targets, strict=False):
                connection, reply = self._open(url, stop - start)
                self._shards.append(Shard(connection, start, stop))
                replies.append(reply)
            first = replies[0]
            self.autoreset_mode = AutoresetMode(first.autoreset_mode or self._requested_mode)
            self.single_observation_space = space_from_data(first.observation_space)
            self.single_action_space = space_from_data(first.action_space)
            for shard, reply in zip(self._shards, replies, strict=True):
                spaces = (self.single_observation_space, self.single_action_space)
                check_spaces(self._shards[0].connection.url, shard.connection.url, spaces, reply)
        except BaseException:
            self.close_extras()
            raise
        self.closed = False
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.metadata = {**first.metadata, "autoreset_mode": self.autoreset_mode}
        self.render_mode = first.render_mode
        self.max_episode_steps = first.max_episode_steps

    def _open(self, url: str, num_envs: int) -> tuple[Connection, MakeReply]:
        return open_session(
            self.env_id,
            url,
            num_envs=num_envs,
            autoreset_mode=None if self._requested_mode is None else self._requested_mode.value,
            env_kwargs=self._env_kwargs,
            options=self._connect_options,
            server_vectorization=self.server_vectorization,
        )

    @property
    def np_random_seed(self) -> tuple[int, ...]:  # type: ignore[override]
        """Each env's ``np_random_seed``, as ``SyncVectorEnv`` reports them."""
        return self.get_attr("np_random_seed")

    @property
    def urls(self) -> list[str]:
        """The server URL of each shard, in env order."""
        return [shard.connection.url for shard in self._shards]

    # -- reset ---------------------------------------------------------------------------

    def reset(
        self,
        *,
        seed: int | list[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[Any, dict[str, Any]]:
        """Reset all envs (or those in ``options["reset_mask"]``); see ``SyncVectorEnv.reset``.

        A native engine's shards each get their slice of ``reset_mask``, even one with no True
        value (the engine decides, as in-process); the requests of all shards are encoded
        before any is sent.

        Raises:
            ValueError, TypeError: as ``SyncVectorEnv`` for bad seeds or masks (native: a mask
                with no True value is the engine's to refuse).
            EncodeError: a shard's request cannot go on the wire (e.g. ``seed + start`` of
                64 bits or more); no shard was reset.
            RemoteError: an env raised on its server.
            CallTimeoutError, ConnectionLostError: a server did not answer.

        """
        self.reset_async(seed=seed, options=options)
        return self.reset_wait()

    def reset_async(
        self,
        seed: int | list[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        """Send the reset to every shard without waiting (see :meth:`reset`)."""
        self._check_can_send("reset_async")
        seeds = vector_seeds(seed, self.num_envs)
        options = None if options is None else dict(options)  # never mutate the caller's
        mask = None if options is None else options.pop("reset_mask", None)
        if mask is not None:
            # A native engine decides what a mask with no True value does, as in-process.
            check_reset_mask(mask, self.num_envs, empty_ok=self._native)
        bodies: list[dict[str, Any] | None] = []
        for shard in self._shards:
            shard_options = options
            if mask is not None:
                shard_mask = mask[shard.start : shard.stop]
                # A native engine gets its slice even when all False: it decides, as in-process.
                if not shard_mask.any() and not self._native:
                    bodies.append(None)  # nothing to reset here: keep its last observations
                    continue
                shard_options = {**(options or {}), "reset_mask": shard_mask}
            shard_seeds = (
                shard_seed(seed, shard.start, shard.stop)
                if self._native
                else seeds[shard.start : shard.stop]
            )
            bodies.append({"seed": shard_seeds, "options": shard_options})
        # Every shard's request is encoded before any is sent: one that cannot be (a seed past
        # the wire's 64 bits) fails the reset with no shard reset.
        requests = [
            None if body is None else shard.connection.encode(Op.RESET, body)
            for shard, body in zip(self._shards, bodies, strict=True)
        ]
        ids: list[int | None] = []
        for shard, body, request in zip(self._shards, bodies, requests, strict=True):
            if request is not None:
                shard.body = body
            ids.append(None if request is None else self._send_encoded(shard, Op.RESET, request))
        self._set_pending(Pending.RESET, ids)

    def reset_wait(self, timeout: float | None = None) -> tuple[Any, dict[str, Any]]:
        """Wait for the reset sent by :meth:`reset_async` and return ``(obs, infos)``."""
        replies = self._wait(Pending.RESET, "reset_wait", timeout)
        for index, reply in enumerate(replies):
            if reply is LOST:
                shard = self._shards[index]
                obs, info_merges = self._recover(index)
                replies[index] = [obs, flag_reconnected(info_merges, shard.size)]
        merges: list[Any] = []
        for shard, reply in zip(self._shards, replies, strict=True):
            if reply is None:
                merges.append([])  # never for a native engine: every shard is sent its reset
            else:
                shard.last_obs, info_merges = reply
                merges.append(info_merges)
        return self._join_obs(), self._join_infos(merges)

    # -- step ----------------------------------------------------------------------------

    def step(
        self, actions: Any, *, timeout: float | None = None
    ) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """Step every env with its action; see ``SyncVectorEnv.step``.

        Args:
            actions: the batch of actions.
            timeout: this step's deadline in seconds (default: the ``call_timeout``). A shard
                past it is given up: its connection is closed (its server closes its envs) and,
                with ``reconnect``, the next step re-opens it as after a lost server.

        Returns:
            ``(obs, rewards, terminations, truncations, infos)``: batched observations, float64
            rewards of shape ``(num_envs,)`` (a native engine's: its dtype), bool flags of shape
            ``(num_envs,)``, vector infos.

        Raises:
            InvalidActionError: ``actions`` does not have the batched action shape.
            RemoteError: an env raised on its server (e.g. DISABLED mode stepping a done env).
            CallTimeoutError, ConnectionLostError: a server did not answer.
            StepTimeoutError: a shard had no result within ``timeout``; names its first env
                and the elapsed time.

        """
        self.step_async(actions)
        if timeout is None:
            return self.step_wait()
        start = time.monotonic()
        try:
            return self.step_wait(timeout)
        except CallTimeoutError as exc:
            shard = next((s for s in self._shards if s.connection.url == exc.url), None)
            if shard is None:
                raise
            shard.connection.close()  # its server closes the shard's envs
            elapsed = time.monotonic() - start
            raise StepTimeoutError(shard.start, elapsed, timeout, exc.url) from None

    def step_async(self, actions: Any) -> None:
        """Send each shard its actions without waiting (see :meth:`step`)."""
        self._check_can_send("step_async")
        actions = self._check_actions(actions)
        if len(self._shards) == 1:
            ids = [self._send(self._shards[0], Op.STEP, actions)]
        else:
            ids = [
                self._send(
                    shard,
                    Op.STEP,
                    slice_batch(self.single_action_space, actions, shard.start, shard.stop),
                )
                for shard in self._shards
            ]
        self._set_pending(Pending.STEP, ids)

    def step_wait(self, timeout: float | None = None) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """Wait for the step sent by :meth:`step_async` and return its joined results.

        Raises:
            CallTimeoutError: a shard did not answer within ``timeout`` (its URL is named).

        """
        replies = self._wait(Pending.STEP, "step_wait", timeout)
        for index, reply in enumerate(replies):
            if reply is LOST:
                replies[index] = lost_step_reply(
                    self._recover(index, body=None), self._shards[index].size
                )
        if len(replies) == 1:
            obs, rewards, terminations, truncations, info_merges = replies[0]
            self._shards[0].last_obs = obs
            return obs, rewards, terminations, truncations, self._join_infos([info_merges])
        for shard, reply in zip(self._shards, replies, strict=True):
            shard.last_obs = reply[0]
        return (
            self._join_obs(),
            np.concatenate([reply[1] for reply in replies]),
            np.concatenate([reply[2] for reply in replies]),
            np.concatenate([reply[3] for reply in replies]),
            self._join_infos([reply[4] for reply in replies]),
        )

    def _check_actions(self, actions: Any) -> Any:
        if isinstance(self.single_action_space, ARRAY_SPACES):
            array = np.asarray(actions)
            expected = self.action_space.shape
            if array.shape != expected:
                raise InvalidActionError(
                    f"actions must have shape {expected} (num_envs={self.num_envs}, "
                    f"action shape {self.single_action_space.shape}), got {array.shape}"
                )
            return array
        return actions

    # -- call / attributes / render -------------------------------------------------------

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Call method ``name`` (or read attribute ``name``) of every env; a tuple in env order."""
        self.call_async(name, *args, **kwargs)
        return self.call_wait()

    def call_async(self, name: str, *args: Any, **kwargs: Any) -> None:
        """Send the call to every shard without waiting."""
        self._check_can_send("call_async")
        body = {"name": name, "args": list(args), "kwargs": kwargs}
        self._set_pending(
            Pending.CALL, [shard.connection.send(Op.CALL, body) for shard in self._shards]
        )

    def call_wait(self, timeout: float | None = None) -> tuple[Any, ...]:
        """Wait for the call sent by :meth:`call_async`; return one result per env."""
        replies = self._wait(Pending.CALL, "call_wait", timeout)
        if self._native:
            return cast("tuple[Any, ...]", engine_results(replies, frames=False))
        return tuple(item for reply in replies for item in reply)

    def get_attr(self, name: str) -> tuple[Any, ...]:
        """Return attribute ``name`` of every env, in env order."""
        return self._gather(Op.GET_ATTR, {"name": name}, f"get_attr {name}")

    def set_attr(self, name: str, values: list[Any] | tuple[Any, ...] | Any) -> None:
        """Set attribute ``name`` of every env: one value each if a list/tuple, else shared.

        Raises:
            ValueError: a list or tuple whose length is not ``num_envs``.

        """
        per_env = isinstance(values, (list, tuple)) and not self._native  # an engine: one value
        if per_env and len(values) != self.num_envs:
            raise ValueError(
                "Values must be a list or tuple with length equal to the number of environments. "
                f"Got `{len(values)}` values for {self.num_envs} environments."
            )
        self._check_can_send("set_attr")
        ids = [
            shard.connection.send(
                Op.SET_ATTR,
                {
                    "name": name,
                    "values": list(values[shard.start : shard.stop]) if per_env else values,
                    "per_env": per_env,
                },
            )
            for shard in self._shards
        ]
        receive_all(self._shards, ids, f"set_attr {name}", None)

    def render(self) -> tuple[Any, ...] | None:
        """Return every env's rendered frame, in env order."""
        return self._gather(Op.RENDER, None, "render")

    def state(self) -> list[dict[str, Any]]:
        """Return every env's episode state (``episode_id``, ``step_count``, env state)."""
        return list(self._gather(Op.STATE, None, "state"))

    def _gather(self, op: Op, body: Any, operation: str) -> tuple[Any, ...]:
        self._check_can_send(operation)
        ids = [shard.connection.send(op, body) for shard in self._shards]
        replies = receive_all(self._shards, ids, operation, None)
        if self._native and op is not Op.STATE:
            return cast("tuple[Any, ...]", engine_results(replies, frames=op is Op.RENDER))
        return tuple(item for reply in replies for item in reply)

    # -- plumbing ------------------------------------------------------------------------

    def _check_can_send(self, name: str) -> None:
        if self.closed:
            raise ClosedEnvironmentError(
                f"Trying to operate on `{type(self).__name__}`, after a call to `close()`."
            )
        if self._pending is not Pending.NONE:
            raise AlreadyPendingCallError(
                f"Calling `{name}` while waiting for a pending call to "
                f"`{self._pending.value}` to complete.",
                self._pending.value,
            )

    def _set_pending(self, kind: Pending, ids: Sequence[Any]) -> None:
        self._pending, self._pending_ids = kind, list(ids)

    def _wait(self, kind: Pending, name: str, timeout: float | None) -> list[Any]:
        if self.closed:
            raise ClosedEnvironmentError(
                f"Trying to operate on `{type(self).__name__}`, after a call to `close()`."
            )
        if self._pending is not kind:
            raise NoAsyncCallError(
                f"Calling `{name}` without any prior call to `{kind.value}_async`.", kind.value
            )
        ids, self._pending, self._pending_ids = self._pending_ids, Pending.NONE, []
        lost_ok = self._reconnect and kind is not Pending.CALL
        return receive_all(self._shards, ids, kind.value, timeout, lost_ok=lost_ok)

    def _send(self, shard: Shard, op: Op, body: Any) -> Any:
        """Send to a shard; with ``reconnect`` a lost connection gives ``LOST``, not an error."""
        return self._send_encoded(shard, op, shard.connection.encode(op, body))

    def _send_encoded(self, shard: Shard, op: Op, request: tuple[int, bytes]) -> Any:
        """:meth:`_send` of a request encoded beforehand (``Connection.encode``)."""
        try:
            return shard.connection.send_encoded(op, *request)
        except ConnectionLostError:
            if not self._reconnect:
                raise
            return LOST

    def _recover(self, index: int, body: Any = ...) -> list[Any]:
        """Re-open lost shard ``index`` (see ``client/recovery.py``) and reset it."""
        shard = self._shards[index]
        shard.connection.close()

        def open_shard(url: str) -> Connection:
            return self._open(url, shard.size)[0]

        provider = self._provider
        shard.connection = reopen(
            shard.connection.url,
            open_shard,
            None if provider is None else lambda: provider.restart(index),
        )
        logger.warning(
            "envs %d-%d lost their server; fresh episodes on %s",
            shard.start,
            shard.stop - 1,
            shard.connection.url,
        )
        return reset_after_loss(shard.connection, shard.body if body is ... else body)

    def _join_obs(self) -> Any:
        if len(self._shards) == 1:
            return self._shards[0].last_obs
        return concat_batches(
            self.single_observation_space, [shard.last_obs for shard in self._shards]
        )

    def _join_infos(self, shard_merges: list[Any]) -> dict[str, Any]:
        """Replay every shard's info merges, in env order, through gymnasium's ``_add_info``.

        A native engine's infos are already vector-merged: joined key by key instead.
        """
        if self._native:
            return join_vector_infos(shard_merges, [shard.size for shard in self._shards])
        infos: dict[str, Any] = {}
        for shard, merges in zip(self._shards, shard_merges, strict=True):
            for index, info in merges:
                infos = self._add_info(infos, info, shard.start + index)
        return infos

    def close_extras(self, **kwargs: Any) -> None:
        """Close every shard's session and connection, and stop owned local servers."""
        shards, self._shards = self._shards, []
        for shard in shards:
            # The server may already be gone; closing must still succeed.
            with contextlib.suppress(Exception):
                shard.connection.send(Op.CLOSE, None)
        for shard in shards:
            shard.connection.close()
        if self._provider is not None:
            self._provider.close()
            self._provider = None

    def __enter__(self) -> RemoteVectorEnv:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RemoteVectorEnv({self.env_id!r}, num_envs={self.num_envs}, urls={self.urls})"
