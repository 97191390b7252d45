"""The shards of a ``RemoteVectorEnv``: one server session each, and collecting their replies.

``num_envs`` envs are split into consecutive shards; a request goes to every shard before any
reply is awaited, and :func:`receive_all` collects the replies under one deadline, draining
every shard even when one fails so that no reply goes stale.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import time
from collections.abc import Sequence
from typing import Any

import gymnasium
import numpy as np

from openenv_gym.client.connection import Connection
from openenv_gym.client.recovery import LOST
from openenv_gym.errors import (
    CallTimeoutError,
    ConnectionLostError,
    RemoteError,
    ShardMismatchError,
)
from openenv_gym.protocol.messages import MakeReply
from openenv_gym.protocol.spaces import space_from_data

__all__ = ["Pending", "Shard", "check_spaces", "receive_all", "split"]


class Pending(enum.Enum):
    """The async call a vector env waits for."""

    NONE = "none"
    RESET = "reset"
    STEP = "step"
    CALL = "call"


@dataclasses.dataclass
class Shard:
    """One server session holding envs ``start:stop``."""

    connection: Connection
    start: int
    stop: int
    last_obs: Any = None
    body: Any = None  # the last RESET body sent, to redo it if the shard is lost

    @property
    def size(self) -> int:
        """The number of envs of the shard."""
        return self.stop - self.start


def split(num_envs: int, num_shards: int) -> list[tuple[int, int]]:
    """Return the ``(start, stop)`` bounds of at most ``num_shards`` near-equal shards."""
    bounds = np.linspace(0, num_envs, min(num_shards, num_envs) + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(bounds)]


def check_spaces(
    first_url: str,
    url: str,
    spaces: tuple[gymnasium.Space[Any], gymnasium.Space[Any]],
    reply: MakeReply,
) -> None:
    """Check that a shard's spaces are the first shard's ``(observation, action)`` spaces.

    Raises:
        ShardMismatchError: they differ; names both URLs, the space, expected and actual.

    """
    for what, expected, data in (
        ("observation_space", spaces[0], reply.observation_space),
        ("action_space", spaces[1], reply.action_space),
    ):
        actual = space_from_data(data)
        if actual != expected:
            raise ShardMismatchError(url, first_url, what, repr(expected), repr(actual))


def receive_all(
    shards: Sequence[Shard],
    ids: Sequence[Any],
    operation: str,
    timeout: float | None,
    *,
    lost_ok: bool = False,
) -> list[Any]:
    """Collect each shard's reply; one deadline for all.

    ``None`` ids are skipped shards (their reply is ``None``). With ``lost_ok`` (steps and
    resets of a ``reconnect`` env) a lost shard's reply is ``LOST`` instead of an error.

    Raises:
        RemoteError, CallTimeoutError, ConnectionLostError: the first shard's error, raised
            once every shard was drained.

    """
    deadline = None if timeout is None else time.monotonic() + timeout
    replies: list[Any] = []
    error: BaseException | None = None
    for shard, request_id in zip(shards, ids, strict=True):
        if request_id is None or request_id is LOST:
            replies.append(request_id)  # LOST only comes from a send with reconnect on
            continue
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            replies.append(
                shard.connection.receive(request_id, timeout=remaining, operation=operation)
            )
        except ConnectionLostError as exc:
            if not lost_ok:
                error = error or exc
            replies.append(LOST)
        except (RemoteError, CallTimeoutError) as exc:
            # Keep draining the other shards so their replies do not go stale; raise after.
            error = error or exc
            replies.append(None)
    if error is not None:
        raise error
    return replies
