"""What one server process admits: sessions and envs, counted as they open and close.

A request over a limit fails with :class:`CapacityError`, whose text names the limit, the
current use and the maximum ("at capacity: 64/64 sessions"); nothing is created for it.
"""

from __future__ import annotations

import dataclasses
import threading

from openenv_gym.errors import CapacityError

__all__ = ["Limits", "Usage"]


@dataclasses.dataclass(frozen=True)
class Limits:
    """Per-process limits (each ``--workers`` process has its own).

    Attributes:
        max_sessions: open sessions (connections past the opening handshake).
        max_envs_per_session: envs one session may create.
        max_envs: envs across all sessions.

    """

    max_sessions: int = 256
    max_envs_per_session: int = 4096
    max_envs: int = 16384


class Usage:
    """Counts sessions and envs against :class:`Limits`."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.sessions = 0
        self.envs = 0
        self._lock = threading.Lock()  # sessions served on threads (--threads) count here too

    def open_session(self) -> None:
        """Admit one more session.

        Raises:
            CapacityError: ``max_sessions`` are open.

        """
        with self._lock:
            if self.sessions >= self.limits.max_sessions:
                raise CapacityError("sessions", self.sessions, self.limits.max_sessions)
            self.sessions += 1

    def close_session(self) -> None:
        """Forget one session."""
        with self._lock:
            self.sessions -= 1

    def reserve_envs(self, count: int) -> None:
        """Admit ``count`` more envs for one session.

        Raises:
            CapacityError: over ``max_envs_per_session`` or ``max_envs``.

        """
        if count > self.limits.max_envs_per_session:
            raise CapacityError(
                "envs per session", count, self.limits.max_envs_per_session, requested=True
            )
        with self._lock:
            if self.envs + count > self.limits.max_envs:
                raise CapacityError("envs", self.envs, self.limits.max_envs, requested_more=count)
            self.envs += count

    def release_envs(self, count: int) -> None:
        """Forget ``count`` envs."""
        with self._lock:
            self.envs -= count
