"""What one server process admits: connections, sessions and envs, counted as they come and go.

A request over a limit fails with :class:`CapacityError`, whose text names the limit, the
current use and the maximum ("at capacity: 64/64 sessions"); nothing is created for it.

Connections are counted before any session exists (:class:`ConnectionTable`): a connection
still in its opening handshake (upgrade plus first message) costs an attacker nothing, so when
a new one would exceed a cap, the oldest connection still handshaking is dropped to make room;
only when every slot holds a live session is the newcomer refused.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from collections.abc import Hashable
from typing import Generic, TypeVar

from openenv_gym.errors import CapacityError

__all__ = ["ConnectionTable", "Limits", "Usage"]

C = TypeVar("C", bound=Hashable)


@dataclasses.dataclass(frozen=True)
class Limits:
    """Per-process limits (each ``--workers`` process has its own).

    Attributes:
        max_sessions: open sessions (connections past the opening handshake).
        max_envs_per_session: envs one session may create.
        max_envs: envs across all sessions.
        max_connections: open connections (handshaking, serving or closing); above
            ``max_sessions`` so that sessions plus probes and handshakes fit.
        max_connections_per_peer: open connections from one client address. Above
            ``max_sessions`` because many clients may share one address (loopback, a NAT,
            Docker's port proxy), below ``max_connections`` so that one address cannot take
            every slot.

    """

    max_sessions: int = 256
    max_envs_per_session: int = 4096
    max_envs: int = 16384
    max_connections: int = 1024
    max_connections_per_peer: int = 512

    def check(self) -> None:
        """Check the limits are consistent.

        Raises:
            ValueError: a limit below 1, or fewer connections than sessions.

        """
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value < 1:
                raise ValueError(f"{field.name} must be at least 1, got {value}")
        if self.max_connections < self.max_sessions:
            raise ValueError(
                f"max_connections must be at least max_sessions={self.max_sessions}, "
                f"got {self.max_connections}"
            )


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


class ConnectionTable(Generic[C]):
    """Counts open connections, in total and per peer address, against :class:`Limits`.

    Pure bookkeeping, one event loop's: the caller aborts the connections :meth:`open`
    evicts.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._peers: dict[C, str] = {}
        self._per_peer: collections.Counter[str] = collections.Counter()
        # Insertion-ordered, so the first is the oldest still handshaking.
        self._handshaking: dict[C, None] = {}
        self._handshaking_of: dict[str, dict[C, None]] = collections.defaultdict(dict)

    def __len__(self) -> int:
        return len(self._peers)

    def count(self, peer: str) -> int:
        """Return how many connections ``peer`` has open."""
        return self._per_peer[peer]

    def open(self, connection: C, peer: str) -> list[C]:
        """Admit ``connection`` from ``peer``, as handshaking; return the ones evicted for it.

        Args:
            connection: the new connection.
            peer: its client address (no port).

        Returns:
            Connections no longer counted, to be aborted by the caller (oldest handshaking
            first): at most one per cap that ``connection`` would exceed.

        Raises:
            CapacityError: a cap is reached and every connection under it is past its
                handshake; ``connection`` is not counted.

        """
        evicted: list[C] = []
        if self._per_peer[peer] >= self.limits.max_connections_per_peer:
            victim = next(iter(self._handshaking_of.get(peer, ())), None)
            if victim is None:
                raise CapacityError(
                    "connections from this address",
                    self._per_peer[peer],
                    self.limits.max_connections_per_peer,
                )
            evicted.append(victim)
            self.close(victim)
        if len(self._peers) >= self.limits.max_connections:
            victim = next(iter(self._handshaking), None)
            if victim is None:
                raise CapacityError("connections", len(self._peers), self.limits.max_connections)
            evicted.append(victim)
            self.close(victim)
        self._peers[connection] = peer
        self._per_peer[peer] += 1
        self._handshaking[connection] = None
        self._handshaking_of[peer][connection] = None
        return evicted

    def established(self, connection: C) -> None:
        """Mark ``connection`` past its handshake: it is no longer evicted for newcomers."""
        peer = self._peers.get(connection)
        self._handshaking.pop(connection, None)
        if peer is not None:
            self._forget_handshaking(peer, connection)

    def close(self, connection: C) -> None:
        """Stop counting ``connection`` (idempotent)."""
        peer = self._peers.pop(connection, None)
        if peer is None:
            return
        self._handshaking.pop(connection, None)
        self._forget_handshaking(peer, connection)
        self._per_peer[peer] -= 1
        if not self._per_peer[peer]:
            del self._per_peer[peer]

    def _forget_handshaking(self, peer: str, connection: C) -> None:
        pending = self._handshaking_of.get(peer)
        if pending is not None:
            pending.pop(connection, None)
            if not pending:
                del self._handshaking_of[peer]
