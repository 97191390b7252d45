"""RemoteEnvPool: envpool's asynchronous API (``send`` / ``recv``) over pool sessions.

``num_envs`` independent envs, split into consecutive shards, one pool session per server
(docs/protocol.md section 5.12). ``send(actions, env_ids)`` starts steps and returns at once;
``recv()`` returns the first ``batch_size`` envs whose results are ready, whichever they are,
with ``info["env_id"]`` naming them. Servers push each result as soon as its env is done, so a
slow env holds up nobody else (with ``concurrent_steps`` > 0 on the server, steps run at
once on worker threads or, with ``step_isolation="process"``, child processes).

**Autoreset** is envpool's: when an env's episode ends (terminated or truncated), the next
``send`` naming it resets it instead of stepping it: that action is ignored and its result is
the reset observation and info, reward 0.0, both flags false (gymnasium's NEXT_STEP, per env).
**Seeds** are envpool's too: ``seed=s`` gives env ``i`` seed ``s + i`` at its first reset; later
resets (and autoresets) continue its RNG. So env ``i``'s trajectory equals
``gymnasium.make(env_id)`` reset with seed ``s + i`` and stepped with the same actions,
whatever the interleaving of sends and receives.
"""

from __future__ import annotations

import contextlib
import select
import ssl
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium.vector.utils import batch_space

from openenv_gym.client.batching import ARRAY_SPACES
from openenv_gym.client.options import UNSET, ClientOptions, Unset
from openenv_gym.client.pool_results import EnvResult, batch_results, event_results, take_actions
from openenv_gym.client.shards import Shard, check_spaces, split
from openenv_gym.errors import (
    CallTimeoutError,
    DecodeError,
    EnvIdError,
    InvalidActionError,
    StepTimeoutError,
)
from openenv_gym.protocol.messages import POOL_EVENT, MakeReply, MakeRequest, Op, parse_body
from openenv_gym.protocol.spaces import space_from_data
from openenv_gym.providers import Provider, ProviderName, embedded_server_args, start_servers
from openenv_gym.ws.handshake import reply_error

__all__ = ["RemoteEnvPool"]

_DEADLINE_GRACE = 2.0
"""Seconds ``step(timeout=)`` waits past the deadline for the server's own verdict."""


class RemoteEnvPool:
    """``num_envs`` envs of ``env_id`` stepped asynchronously, envpool-style, in servers.

    Args:
        env_id: a gymnasium id or ``module:attr`` entry point the servers host.
        num_envs: envs in the pool.
        batch_size: envs ``recv`` returns at a time (default ``num_envs``: synchronous, the
            batch in env order).
        seed: env ``i`` gets seed ``seed + i`` at its first reset (``None``: unseeded).
        urls: servers to use, one shard each; ``None`` starts ``num_servers`` of them
            (``provider``, ``provider_options``, ``docker_image`` as for ``RemoteVectorEnv``).
        concurrent_steps, step_timeout, step_isolation: the servers' policy for the pool
            sessions of servers this pool starts (``--concurrent-steps``, ``--step-timeout``,
            ``--step-isolation``); servers given by ``urls`` apply their operator's. Servers
            this pool starts run each env in a child process by default (``step_isolation=
            "process"``), so that a step past its deadline is killed with what it started;
            ``"none"`` keeps the envs in the server process (a stuck step's thread is then
            abandoned, not killed). ``concurrent_steps`` unset: inline until a step takes
            over 2 ms, then up to 64 threads per server.
        options, token, ssl_context, connect_timeout, call_timeout: as ``RemoteVectorEnv``.
        **env_kwargs: keyword arguments of every env.

    Raises:
        ValueError: ``num_envs`` below 1, or ``batch_size`` not in ``[1, num_envs]``.
        ServerStartError, ConnectError, CapacityError, RemoteError, ShardMismatchError: as
            ``RemoteVectorEnv`` (a server older than pool sessions refuses the MAKE with a
            ``RemoteValueError`` naming ``pool``).

    """

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        *,
        batch_size: int | None = None,
        seed: int | None = None,
        urls: Sequence[str] | None = None,
        num_servers: int = 1,
        provider: ProviderName | Provider | None = None,
        provider_options: Mapping[str, Any] | None = None,
        docker_image: str | None = None,
        concurrent_steps: int | None = None,
        step_timeout: float | None = None,
        step_isolation: str | None = None,
        options: ClientOptions | None = None,
        token: str | Unset | None = UNSET,
        ssl_context: ssl.SSLContext | Unset | None = UNSET,
        connect_timeout: float | Unset = UNSET,
        call_timeout: float | Unset | None = UNSET,
        **env_kwargs: Any,
    ) -> None:
        batch_size = num_envs if batch_size is None else batch_size
        if num_envs < 1 or not 1 <= batch_size <= num_envs:
            raise ValueError(f"need 1 <= batch_size <= num_envs, got {batch_size}, {num_envs}")
        self.env_id, self.num_envs, self.batch_size, self.seed = env_id, num_envs, batch_size, seed
        self.closed = False
        self._shards: list[Shard] = []
        self._provider: Provider | None = None
        self._busy = np.zeros(num_envs, dtype=bool)  # in flight, or ready but not received
        self._reset_seen = np.zeros(num_envs, dtype=bool)
        self._needs_reset = np.ones(num_envs, dtype=bool)
        self._ready: deque[EnvResult] = deque()
        self._requests: dict[tuple[int, int], np.ndarray[Any, Any]] = {}
        self._errors: deque[Exception] = deque()
        if provider is not None and not isinstance(provider, str) and not urls:
            num_servers = len(provider.urls)
        bounds = split(num_envs, len(urls) if urls else num_servers)
        args = embedded_server_args(env_kwargs)
        if step_isolation is None and not urls:
            step_isolation = "process"  # owned servers: a stuck step can be killed
        for flag, value in (
            ("--concurrent-steps", concurrent_steps),
            ("--step-timeout", step_timeout),
            ("--step-isolation", step_isolation),
        ):
            if value is not None:
                args += [flag, str(value)]
        try:
            if not urls:
                self._provider = start_servers(
                    [env_id],
                    num_servers=len(bounds),
                    provider=provider,
                    provider_options=provider_options,
                    docker_image=docker_image,
                    server_args=args,
                )
            targets = list(urls) if urls else self._provider.urls  # type: ignore[union-attr]
            resolved = ClientOptions.resolve(
                options,
                token=token,
                ssl_context=ssl_context,
                connect_timeout=connect_timeout,
                call_timeout=call_timeout,
            )
            self.options = resolved.with_default_token(
                None if self._provider is None else self._provider.token,
                insecure_ok=bool(getattr(self._provider, "allow_insecure_token", False)),
            )
            replies = [
                self._open(url, start, stop, env_kwargs)
                for (start, stop), url in zip(bounds, targets, strict=False)
            ]
        except BaseException:
            self.close()
            raise
        first = replies[0]
        self.single_observation_space = space_from_data(first.observation_space)
        self.single_action_space = space_from_data(first.action_space)
        for shard, reply in zip(self._shards, replies, strict=True):
            spaces = (self.single_observation_space, self.single_action_space)
            check_spaces(self._shards[0].connection.url, shard.connection.url, spaces, reply)
        self.observation_space = batch_space(self.single_observation_space, batch_size)
        self.action_space = batch_space(self.single_action_space, batch_size)
        self.metadata = dict(first.metadata)
        self.render_mode = first.render_mode
        self.max_episode_steps = first.max_episode_steps
        self.concurrent_steps = first.concurrent_steps
        self.step_timeout = first.step_timeout
        self.step_isolation = first.step_isolation

    def _open(self, url: str, start: int, stop: int, env_kwargs: dict[str, Any]) -> MakeReply:
        connection = self.options.connect(url)
        try:
            request = MakeRequest(
                env_id=self.env_id, num_envs=stop - start, kwargs=env_kwargs, pool=True
            )
            body = connection.request(Op.MAKE, request.wire(), operation=f"make {self.env_id}")
            reply = parse_body(MakeReply, body)
        except BaseException:
            connection.close()
            raise
        self._shards.append(Shard(connection, start, stop))
        return reply

    @property
    def urls(self) -> list[str]:
        """The server of each shard, in env order."""
        return [shard.connection.url for shard in self._shards]

    @property
    def all_env_ids(self) -> np.ndarray[Any, Any]:
        """Every env id, ``0 .. num_envs - 1`` (int32, as envpool's)."""
        return np.arange(self.num_envs, dtype=np.int32)

    # -- envpool's API -------------------------------------------------------------------

    def async_reset(
        self,
        *,
        seed: int | list[int | None] | None = None,
        options: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> None:
        """Reset every env without waiting; ``recv`` returns the results ``batch_size`` at a time.

        Args:
            seed: ``None``: the pool's seeds (``seed + i`` at an env's first reset, then
                none); an int ``s``: env ``i`` gets ``s + i``; a list: one per env.
            options: each env's ``reset(options=...)``.
            timeout: deadline of each reset in seconds.

        Raises:
            EnvIdError: an env has a step in flight or a result not yet received.

        """
        self._send_reset(self.all_env_ids, options, timeout, seed)

    def reset(
        self,
        env_id: Any = None,
        *,
        seed: int | list[int | None] | None = None,
        options: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> tuple[Any, dict[str, Any]]:
        """Reset ``env_id`` (default: every env), wait, and return ``(obs, info)`` in that order.

        ``seed`` as for :meth:`async_reset` (a list: one per id of ``env_id``).

        Raises:
            EnvIdError: bad ids, or an env has a step in flight or a result not received.
            StepTimeoutError: a reset outlived its deadline.
            RemoteError: an env raised on its server.

        """
        ids = self._ids(self.all_env_ids if env_id is None else env_id, "reset")
        self._send_reset(ids, options, timeout, seed)
        wanted = set(ids.tolist())
        deadline = None if timeout is None else time.monotonic() + timeout + _DEADLINE_GRACE
        self._pump(
            lambda: bool(self._errors) or wanted <= {r.env_id for r in self._ready},
            deadline,
            "reset",
            timeout,
        )
        if self._errors:
            raise self._errors.popleft()
        picked = {r.env_id: r for r in self._ready if r.env_id in wanted}
        self._ready = deque(r for r in self._ready if r.env_id not in wanted)
        self._busy[ids] = False
        failed = [picked[i].error for i in ids.tolist() if picked[i].error is not None]
        if failed:
            raise failed[0]  # type: ignore[misc]
        obs, _, _, _, info = batch_results(
            self.single_observation_space, [picked[i] for i in ids.tolist()]
        )
        return obs, info

    def send(self, actions: Any, env_id: Any = None, *, timeout: float | None = None) -> None:
        """Start a step of each env of ``env_id`` (default: every env); return at once.

        Args:
            actions: a batch of ``len(env_id)`` actions (``batch_space`` layout).
            env_id: the envs (ints); each must be reset and have no step in flight.
            timeout: deadline of each step in seconds (default: the server's ``step_timeout``);
                past it ``recv`` raises ``StepTimeoutError`` for that env.

        Raises:
            EnvIdError: ids out of range, repeated, never reset, stopped at a deadline, or
                with a step in flight (or a result not received).
            InvalidActionError: ``actions`` is not a batch of that many actions.
            ConnectionLostError: a server went away.

        """
        ids = self._ids(self.all_env_ids if env_id is None else env_id, "send")
        unready = ids[self._needs_reset[ids]]
        if unready.size:
            raise EnvIdError(f"send: env {int(unready[0])} needs a reset first")
        actions = self._check_actions(actions, len(ids))
        self._check_timeout(timeout)
        for shard in self._shards:
            positions = np.flatnonzero((ids >= shard.start) & (ids < shard.stop))
            if not positions.size:
                continue
            body = {
                "env_ids": ids[positions] - shard.start,
                "actions": take_actions(self.single_action_space, actions, positions.tolist()),
                "timeout": None if timeout is None else float(timeout),
            }
            self._request(shard, Op.POOL_SEND, body, ids[positions])

    def recv(self, timeout: float | None = None) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """Wait for ``batch_size`` results and return them as one batch.

        Returns:
            ``(obs, rewards, terminated, truncated, info)`` of ``batch_size`` envs, the first
            to finish (in env order when ``batch_size == num_envs``); ``info["env_id"]``
            names them.

        Raises:
            StepTimeoutError: an env's step outlived its deadline (it needs a reset; the other
                results stay for the next ``recv``).
            RemoteError: an env raised on its server (named in the message).
            EnvIdError: fewer than ``batch_size`` envs are in flight: the wait could not end.
            CallTimeoutError: not enough results within ``timeout`` seconds (none are lost).
            ConnectionLostError: a server went away.

        """
        if self.closed:
            raise EnvIdError("recv on a closed RemoteEnvPool")
        if int(self._busy.sum()) < self.batch_size and not self._errors:
            raise EnvIdError(
                f"recv: {int(self._busy.sum())} envs in flight, fewer than batch_size="
                f"{self.batch_size}: send more first"
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        self._pump(self._batch_ready, deadline, "recv", timeout)
        if self._errors:
            raise self._errors.popleft()
        failed = next((r for r in self._ready if r.error is not None), None)
        if failed is not None:
            self._ready.remove(failed)
            self._busy[failed.env_id] = False
            assert failed.error is not None
            raise failed.error
        batch = [self._ready.popleft() for _ in range(self.batch_size)]
        if self.batch_size == self.num_envs:
            batch.sort(key=lambda r: r.env_id)
        self._busy[[r.env_id for r in batch]] = False
        return batch_results(self.single_observation_space, batch)

    def step(
        self, actions: Any, env_id: Any = None, *, timeout: float | None = None
    ) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """``send(actions, env_id, timeout=timeout)`` then ``recv()``; see both."""
        self.send(actions, env_id, timeout=timeout)
        return self.recv(None if timeout is None else timeout + _DEADLINE_GRACE)

    # -- plumbing ------------------------------------------------------------------------

    def _batch_ready(self) -> bool:
        if self._errors or any(r.error is not None for r in self._ready):
            return True
        return len(self._ready) >= self.batch_size

    def _ids(self, env_id: Any, what: str) -> np.ndarray[Any, Any]:
        if self.closed:
            raise EnvIdError(f"{what} on a closed RemoteEnvPool")
        ids = np.asarray(env_id)
        if ids.ndim == 0:
            ids = ids.reshape(1)
        if ids.ndim != 1 or ids.dtype.kind not in "iu" or not len(ids):
            raise EnvIdError(f"{what}: env_id must be a non-empty 1-d array of ints, got {ids!r}")
        ids = ids.astype(np.int64)
        bad = ids[(ids < 0) | (ids >= self.num_envs)]
        if bad.size:
            raise EnvIdError(f"{what}: env id {int(bad[0])} out of range [0, {self.num_envs})")
        if len(np.unique(ids)) != len(ids):
            raise EnvIdError(f"{what}: env_id repeats an id")
        busy = ids[self._busy[ids]]
        if busy.size:
            raise EnvIdError(
                f"{what}: env {int(busy[0])} already has a step in flight (or a result not "
                "received yet)"
            )
        return ids

    def _check_actions(self, actions: Any, count: int) -> Any:
        if isinstance(self.single_action_space, ARRAY_SPACES):
            array = np.asarray(actions)
            expected = (count, *(self.single_action_space.shape or ()))
            if array.shape != expected:
                raise InvalidActionError(
                    f"actions must have shape {expected} ({count} env ids, action shape "
                    f"{self.single_action_space.shape}), got {array.shape}"
                )
            return array
        return actions

    @staticmethod
    def _check_timeout(timeout: float | None) -> None:
        if timeout is not None and not 0 < timeout <= 86400:
            raise ValueError(f"timeout must be in (0, 86400] seconds, got {timeout!r}")

    def _send_reset(
        self,
        ids: np.ndarray[Any, Any],
        options: dict[str, Any] | None,
        timeout: float | None,
        seed: int | list[int | None] | None = None,
    ) -> None:
        ids = self._ids(ids, "reset")
        self._check_timeout(timeout)
        if isinstance(seed, list) and len(seed) != len(ids):
            raise ValueError(f"{len(seed)} seeds for {len(ids)} env ids")
        for shard in self._shards:
            positions = np.flatnonzero((ids >= shard.start) & (ids < shard.stop))
            if not positions.size:
                continue
            shard_ids = ids[positions]
            seeds = [
                self._seed_of(int(i), int(j), seed)
                for i, j in zip(shard_ids, positions, strict=True)
            ]
            body = {
                "env_ids": shard_ids - shard.start,
                "seed": seeds,
                "options": options,
                "timeout": None if timeout is None else float(timeout),
            }
            self._request(shard, Op.POOL_RESET, body, shard_ids)
        self._reset_seen[ids] = True
        self._needs_reset[ids] = False

    def _seed_of(
        self, env_id: int, position: int, seed: int | list[int | None] | None
    ) -> int | None:
        """Return the seed of env ``env_id``, ``position``-th of a reset's ids."""
        if isinstance(seed, int):
            return seed + env_id
        if seed is not None:
            value = seed[position]
            return None if value is None else int(value)
        return None if self.seed is None or self._reset_seen[env_id] else self.seed + env_id

    def _request(self, shard: Shard, op: Op, body: Any, ids: np.ndarray[Any, Any]) -> None:
        request_id = shard.connection.send(op, body)
        self._requests[(shard.start, request_id)] = ids
        self._busy[ids] = True

    def _pump(
        self, done: Any, deadline: float | None, operation: str, timeout: float | None = None
    ) -> None:
        """Read every shard's messages until ``done()`` or the deadline."""
        while not done():
            ready = [s for s in self._shards if s.connection.has_message()]
            if not ready:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    url = self._shards[0].connection.url
                    raise CallTimeoutError(url, operation, timeout or 0.0)
                ready = self._wait_readable(remaining)
            for shard in ready:
                try:
                    message = shard.connection.next_message(0.001, operation)
                except TimeoutError:
                    continue  # part of a frame: the rest comes with the next read
                self._dispatch(shard, message)

    def _wait_readable(self, remaining: float | None) -> list[Shard]:
        poller = select.poll()
        by_fd = {}
        for shard in self._shards:
            fd = shard.connection.fileno()
            if fd >= 0:
                poller.register(fd, select.POLLIN)
                by_fd[fd] = shard
        wait_ms = None if remaining is None else max(1, int(remaining * 1000))
        return [by_fd[fd] for fd, _ in poller.poll(wait_ms) if fd in by_fd]

    def _dispatch(self, shard: Shard, message: list[Any]) -> None:
        status, request_id, body = message
        url = shard.connection.url
        if status == POOL_EVENT:
            results = event_results(body, shard.start, self.single_observation_space, url)
            for result in results:
                if isinstance(result.error, StepTimeoutError) or (
                    result.error is not None and "EnvProcessError" in type(result.error).__name__
                ):
                    self._needs_reset[result.env_id] = True
            self._ready.extend(results)
            return
        ids = self._requests.pop((shard.start, request_id), None)
        if status == 0:
            return  # a POOL_SEND/POOL_RESET accepted; its results come as events
        if status != 1:
            raise DecodeError(f"{url}: unknown message status {status!r}")
        if ids is not None:
            self._busy[ids] = False  # refused: nothing of it runs
        self._errors.append(reply_error(url, body))

    def close(self) -> None:
        """Close every pool session (the servers stop the envs), and owned servers; idempotent."""
        if self.closed and not self._shards and self._provider is None:
            return
        self.closed = True
        shards, self._shards = self._shards, []
        for shard in shards:
            with contextlib.suppress(Exception):
                shard.connection.send(Op.CLOSE, None)
        for shard in shards:
            shard.connection.close()
        provider, self._provider = self._provider, None
        if provider is not None:
            provider.close()

    def __enter__(self) -> RemoteEnvPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"RemoteEnvPool({self.env_id!r}, num_envs={self.num_envs}, "
            f"batch_size={self.batch_size}, urls={self.urls})"
        )
