"""Keep an asyncio loop polling instead of sleeping, for a short while after a reply.

A server that sleeps in ``epoll_wait`` between a client's requests is woken by the scheduler
when the next one lands: ~0.1-0.2 ms on a VM, where an idle virtual CPU halts. A client in a
tight step loop sends its next request within that time. :func:`keep_awake` keeps the running
loop's queue non-empty until a deadline, so each loop iteration polls the sockets without
sleeping (every connection is still served in turn), then lets it sleep again. It costs a
core's time while it lasts; the server's ``--busy-wait`` chooses how long (off by default).
"""

from __future__ import annotations

import asyncio
import weakref

__all__ = ["keep_awake"]


class _Awake:
    """The deadline of one loop, and whether its tick is queued."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._until = 0.0
        self._queued = False

    def extend(self, seconds: float) -> None:
        self._until = max(self._until, self._loop.time() + seconds)
        if not self._queued:
            self._queued = True
            self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        # A ready callback makes the loop's next select() poll with timeout 0.
        if self._loop.time() < self._until:
            self._loop.call_soon(self._tick)
        else:
            self._queued = False


_LOOPS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Awake] = weakref.WeakKeyDictionary()


def keep_awake(seconds: float) -> None:
    """Keep the running loop from sleeping for the next ``seconds`` (extends, never shortens)."""
    loop = asyncio.get_running_loop()
    awake = _LOOPS.get(loop)
    if awake is None:
        awake = _LOOPS[loop] = _Awake(loop)
    awake.extend(seconds)
