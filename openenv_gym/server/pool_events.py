"""POOL_EVENT messages: a pool session's results, pushed as they finish (docs/protocol.md 5.12).

One message carries every result ready when the connection gets round to pushing:
``[2, 0, [env_ids, obs, rewards, terminated, truncated, info_merges, errors]]`` where
``env_ids`` is an int64 array of the envs that finished, ``obs`` their observations as one
batch (nil when none succeeded), ``rewards`` float64, the flags bool, ``info_merges``
``[position, info]`` pairs for the non-empty infos (``position`` indexes ``env_ids``), and
``errors`` ``[env_id, error body]`` pairs (section 7.1's body) for envs whose step or reset
failed (a ``StepTimeoutError`` carries ``elapsed``, ``timeout``, ``action`` in ``details``).
A message over the size limit is split in two, down to single results; a single result that
still cannot be sent becomes that env's error.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from openenv_gym.errors import EncodeError, MessageTooLargeError
from openenv_gym.protocol import codec
from openenv_gym.protocol.messages import POOL_EVENT, ErrorBody
from openenv_gym.server.env_runner import ChildError

if TYPE_CHECKING:
    from openenv_gym.server.pool_host import PoolHost, PoolResult
    from openenv_gym.server.session import Session

__all__ = ["PoolEvents", "error_body"]


def error_body(exc: BaseException) -> dict[str, Any]:
    """Return the section 7.1 error body of a failed env (a child's error keeps its type)."""
    from openenv_gym.server import session

    name = exc.type_name if isinstance(exc, ChildError) else session._type_name(exc)
    return ErrorBody(
        type=name, message=session._truncate(str(exc)), details=session._details(exc)
    ).model_dump()


class PoolEvents:
    """The push side of one session: turns a pool's results into POOL_EVENT messages.

    Args:
        session: the session (its message size limit).

    Attributes:
        notify: called, from any thread, when messages are ready (the connection schedules
            :meth:`take` on its event loop); ``None``: the caller polls :meth:`take`.

    """

    def __init__(self, session: Session) -> None:
        self._session = session
        self._pool: PoolHost | None = None
        self.notify: Callable[[], None] | None = None
        self._scheduled = False
        self._lock = threading.Lock()

    def attach(self, pool: PoolHost) -> None:
        """Start pushing ``pool``'s results."""
        self._pool = pool
        pool.attach(self._ready)

    def _ready(self) -> None:
        with self._lock:
            if self._scheduled or self.notify is None:
                return
            self._scheduled = True  # one push per burst of results: several per message
        self.notify()

    def take(self) -> list[bytes]:
        """Return the messages for every result ready now (none when there are none)."""
        with self._lock:
            self._scheduled = False
        pool = self._pool
        if pool is None:
            return []
        results = pool.take_results()
        return self._encode(pool, results) if results else []

    def _encode(self, pool: PoolHost, results: list[PoolResult]) -> list[bytes]:
        ok = [r for r in results if r.error is None]
        errors = [[r.env_id, error_body(r.error)] for r in results if r.error is not None]
        try:
            body = [
                np.array([r.env_id for r in ok], dtype=np.int64),
                pool.batch_obs(ok) if ok else None,
                np.array([r.reward for r in ok], dtype=np.float64),
                np.array([r.terminated for r in ok], dtype=bool),
                np.array([r.truncated for r in ok], dtype=bool),
                [[j, r.info] for j, r in enumerate(ok) if r.info],
                errors,
            ]
            return [codec.encode([POOL_EVENT, 0, body], max_bytes=self._session.max_message_bytes)]
        except (EncodeError, MessageTooLargeError, ValueError, TypeError) as exc:
            if len(results) > 1:
                half = len(results) // 2
                return self._encode(pool, results[:half]) + self._encode(pool, results[half:])
            failed = [[r.env_id, error_body(exc)] for r in results]
            empty = np.zeros(0, dtype=np.int64)
            body = [empty, None, empty.astype(np.float64), empty.astype(bool), empty.astype(bool)]
            return [codec.encode([POOL_EVENT, 0, [*body, [], failed]])]
