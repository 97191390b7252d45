"""Re-opening a lost shard (``RemoteVectorEnv(..., reconnect=True)``).

When a shard's server goes away, its envs' episodes are gone with it. Recovery opens a new
session for the shard, on the same URL if a server answers there, else on a replacement server
when the vector env owns its servers, and resets it: the shard's envs start fresh episodes. The
step that noticed the loss reports those envs as truncated, with their new reset observation,
and flags them in ``infos["reconnected"]``, so that no trajectory is silently spliced.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from openenv_gym.client.connection import Connection
from openenv_gym.errors import ConnectionLostError, OpenEnvError
from openenv_gym.protocol.messages import Op

__all__ = ["LOST", "flag_reconnected", "lost_step_reply", "reopen", "reset_after_loss"]

logger = logging.getLogger("openenv_gym.client")

LOST = object()
"""Stands for the reply of a shard whose connection was lost."""

RECONNECTED = "reconnected"
"""The info key flagging envs whose episode was cut by a lost server."""


def reopen(
    url: str,
    open_session: Callable[[str], Connection],
    restart: Callable[[], str] | None,
) -> Connection:
    """Open a new session for a lost shard: same URL first, then a restarted server.

    Args:
        url: the lost shard's server.
        open_session: opens and makes the shard's session on a URL.
        restart: replaces the server (when the vector env owns it) and returns its URL.

    Raises:
        ConnectionLostError: no server could be reached for the shard.

    """
    try:
        return open_session(url)
    except OpenEnvError as first:
        if restart is None:
            raise ConnectionLostError(url, f"lost, and reconnecting failed: {first}") from first
    new_url = restart()
    logger.warning("server %s is gone; replaced by %s", url, new_url)
    return open_session(new_url)


def flag_reconnected(merges: list[Any], size: int) -> list[Any]:
    """Add ``{"reconnected": True}`` for each of a shard's ``size`` envs to its info merges."""
    return [*merges, *[[index, {RECONNECTED: True}] for index in range(size)]]


def reset_after_loss(connection: Connection, body: Any) -> list[Any]:
    """Reset a re-opened shard (with the lost request's seeds when it was a reset)."""
    reply: list[Any] = connection.request(Op.RESET, body or {"seed": None, "options": None})
    return reply


def lost_step_reply(reset_reply: list[Any], size: int) -> list[Any]:
    """Build a step reply for a recovered shard from its reset: fresh obs, truncated, flagged."""
    obs, merges = reset_reply
    return [
        obs,
        np.zeros(size, dtype=np.float64),
        np.zeros(size, dtype=np.bool_),
        np.ones(size, dtype=np.bool_),
        flag_reconnected(merges, size),
    ]
