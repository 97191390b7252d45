"""What a server process has served, counted cheaply as it serves: the data behind ``/metrics``.

Each session owns a :class:`SessionStats` that its connection's requests bump (plain integer
and dict increments, a ``bisect`` for the step latency bucket: O(1) and lock-free, since one
session's requests run one at a time, on the event loop or on one thread at a time with
``--threads``). The process's :class:`ServerStats` keeps the live sessions, folds a session's
counts into per-spec totals when it closes, remembers the last errors and samples the env-step
count once a second for a steps-per-second figure over the last minute.

:meth:`ServerStats.snapshot` turns all of it into plain JSON data (one worker's view); the
routes (``server/observe.py``) merge the snapshots of every ``--workers`` process and render
them as Prometheus text or as ``/status.json``. Nothing here imports ``prometheus_client``: a
server counts whether or not the ``metrics`` extra is installed.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import itertools
import os
import threading
import time
from collections.abc import Iterable
from typing import Any

__all__ = [
    "LATENCY_BUCKETS",
    "MAX_ERROR_TYPES",
    "NO_SPEC",
    "RECENT_ERRORS",
    "ServerStats",
    "SessionStats",
    "SpecTotals",
]

LATENCY_BUCKETS: tuple[float, ...] = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Upper bounds (seconds) of the step latency histogram's buckets; one more for +Inf."""

NO_SPEC = "none"
"""The spec label of a session that has not built an env (yet)."""

MAX_ERROR_TYPES = 32
"""Distinct error type names counted per spec; further ones count as ``"other"``."""

RECENT_ERRORS = 20
"""How many of the last errors a process remembers (for the status page)."""

_RATE_WINDOW = 60.0
"""Seconds over which ``steps_per_s`` is measured."""

_MESSAGE_CHARS = 200
"""Characters of an error's message kept for the status page."""


@dataclasses.dataclass
class SpecTotals:
    """Counts of one spec (or of one session), added up as requests are served.

    Attributes:
        requests: requests by ``protocol/op`` (e.g. ``"binary/STEP"``, ``"openenv/step"``).
        steps: env steps (a STEP request of a session of ``n`` envs counts ``n``).
        errors: error replies by error type name.
        bytes_in: request message bytes received (WebSocket payloads).
        bytes_out: reply message bytes sent.
        latency: step requests per :data:`LATENCY_BUCKETS` bucket (the last is +Inf).
        latency_sum: seconds spent answering step requests.

    """

    requests: dict[str, int] = dataclasses.field(default_factory=dict)
    steps: int = 0
    errors: dict[str, int] = dataclasses.field(default_factory=dict)
    bytes_in: int = 0
    bytes_out: int = 0
    latency: list[int] = dataclasses.field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0

    def add(self, other: SpecTotals) -> None:
        """Add ``other``'s counts to these (``other`` may be a live session's, being bumped)."""
        # Copies taken in one C call each: a session thread adding a key cannot break the loop.
        for key, count in list(other.requests.items()):
            self.requests[key] = self.requests.get(key, 0) + count
        for key, count in list(other.errors.items()):
            _count_error(self.errors, key, count)
        self.steps += other.steps
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        self.latency = [a + b for a, b in zip(self.latency, other.latency, strict=True)]
        self.latency_sum += other.latency_sum

    def data(self) -> dict[str, Any]:
        """Return the counts as JSON data (see :meth:`from_data`)."""
        return {
            "requests": dict(self.requests),
            "steps": self.steps,
            "errors": dict(self.errors),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "latency_buckets": list(self.latency),
            "latency_sum": self.latency_sum,
        }


def _count_error(errors: dict[str, int], name: str, count: int = 1) -> None:
    """Count ``name`` in ``errors``, folding names past :data:`MAX_ERROR_TYPES` into "other"."""
    if name not in errors and len(errors) >= MAX_ERROR_TYPES:
        name = "other"
    errors[name] = errors.get(name, 0) + count


_session_ids = itertools.count(1)


class SessionStats:
    """One session's counts; bumped by its connection on every request (the hot path).

    Args:
        protocol: ``"binary"`` or ``"openenv"``.

    Attributes:
        id: a number unique in this process.
        protocol: which protocol the session speaks.
        env_id: the spec the session built (``None`` before it built one).
        num_envs: how many envs it holds.
        totals: its counts.
        opened: ``time.time()`` when it opened.
        last_request: ``time.monotonic()`` of its last request.

    """

    def __init__(self, protocol: str) -> None:
        self.id = next(_session_ids)
        self.protocol = protocol
        self.env_id: str | None = None
        self.num_envs = 0
        self.totals = SpecTotals()
        self.opened = time.time()
        self.last_request = time.monotonic()

    def request(self, op: str, bytes_in: int, bytes_out: int) -> None:
        """Count one request of kind ``op`` and its message sizes."""
        totals = self.totals
        requests = totals.requests
        requests[op] = requests.get(op, 0) + 1
        totals.bytes_in += bytes_in
        totals.bytes_out += bytes_out

    def step(self, seconds: float, envs: int) -> None:
        """Count one answered step request of ``envs`` envs that took ``seconds``."""
        totals = self.totals
        totals.steps += envs
        totals.latency[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        totals.latency_sum += seconds


class ServerStats:
    """One process's sessions, totals by spec, recent errors and step rate.

    Args:
        worker: the ``--workers`` slot of this process (0 without workers).
        specs: what the server hosts (shown on the status page).

    """

    def __init__(self, *, worker: int = 0, specs: Iterable[str] = ()) -> None:
        self.worker = worker
        self.specs = list(specs)
        self.started = time.time()
        self._live: dict[int, SessionStats] = {}
        self._closed: dict[tuple[str, str], SpecTotals] = {}
        self._opened: collections.Counter[tuple[str, str]] = collections.Counter()
        self._errors: collections.deque[dict[str, Any]] = collections.deque(maxlen=RECENT_ERRORS)
        self._samples: collections.deque[tuple[float, int]] = collections.deque()
        self._lock = threading.Lock()  # opens and closes may come from session threads

    def open(self, protocol: str) -> SessionStats:
        """Return the counts of a new live session."""
        session = SessionStats(protocol)
        with self._lock:
            self._live[session.id] = session
        return session

    def close(self, session: SessionStats) -> None:
        """Fold a closed session's counts into its spec's totals (idempotent)."""
        with self._lock:
            if self._live.pop(session.id, None) is None:
                return
            key = (session.env_id or NO_SPEC, session.protocol)
            self._closed.setdefault(key, SpecTotals()).add(session.totals)
            self._opened[key] += 1

    def error(self, session: SessionStats, type_name: str, message: str) -> None:
        """Count an error reply of ``session`` and remember it for the status page."""
        _count_error(session.totals.errors, type_name)
        self._errors.append(
            {
                "time": time.time(),
                "session": session.id,
                "spec": session.env_id or NO_SPEC,
                "type": type_name,
                "message": message[:_MESSAGE_CHARS],
            }
        )

    def sample(self, now: float | None = None) -> None:
        """Record the env-step count now (called once a second) for :meth:`steps_per_s`."""
        now = time.monotonic() if now is None else now
        self._samples.append((now, self._steps()))
        while self._samples and self._samples[0][0] < now - _RATE_WINDOW - 1.0:
            self._samples.popleft()

    def steps_per_s(self, now: float | None = None) -> float:
        """Return env steps per second over the last minute (or since the first sample)."""
        now = time.monotonic() if now is None else now
        window = [(t, n) for t, n in self._samples if t >= now - _RATE_WINDOW]
        if not window:
            return 0.0
        first_t, first_n = window[0]
        elapsed = now - first_t
        return 0.0 if elapsed <= 0 else max(0, self._steps() - first_n) / elapsed

    def rate_series(self) -> list[float]:
        """Return env steps per second in each second sampled over the last minute."""
        samples = list(self._samples)[-int(_RATE_WINDOW) - 1 :]
        return [
            max(0, n1 - n0) / (t1 - t0) if t1 > t0 else 0.0
            for (t0, n0), (t1, n1) in itertools.pairwise(samples)
        ]

    def _steps(self) -> int:
        with self._lock:
            live = sum(s.totals.steps for s in self._live.values())
            return live + sum(t.steps for t in self._closed.values())

    def snapshot(self) -> dict[str, Any]:
        """Return this process's view as JSON data: sessions, totals by spec, errors, rate.

        Returns:
            ``{"worker", "pid", "time", "started", "specs", "sessions": [...],
            "totals": [{"spec", "protocol", "sessions_opened", "live_sessions", "live_envs",
            ...counts}], "steps_per_s", "rate_series", "recent_errors": [...]}``.

        """
        now = time.monotonic()
        with self._lock:
            live = list(self._live.values())
            totals = {key: _copy(t) for key, t in self._closed.items()}
            opened = collections.Counter(self._opened)
        gauges: dict[tuple[str, str], list[int]] = {}
        for session in live:
            key = (session.env_id or NO_SPEC, session.protocol)
            totals.setdefault(key, SpecTotals())
            # A session counts under its spec once it has one, or under "none" once it closed
            # without: so that no series' counters ever go down when a session builds its env.
            if session.env_id is not None:
                totals[key].add(session.totals)
                opened[key] += 1
            gauge = gauges.setdefault(key, [0, 0])
            gauge[0] += 1
            gauge[1] += session.num_envs
        return {
            "worker": self.worker,
            "pid": os.getpid(),
            "time": time.time(),
            "started": self.started,
            "specs": self.specs,
            "sessions": [_session_data(session, now) for session in live],
            "totals": [
                {
                    "spec": spec,
                    "protocol": protocol,
                    "sessions_opened": opened[(spec, protocol)],
                    "live_sessions": gauges.get((spec, protocol), [0, 0])[0],
                    "live_envs": gauges.get((spec, protocol), [0, 0])[1],
                    **counts.data(),
                }
                for (spec, protocol), counts in sorted(totals.items())
            ],
            "steps_per_s": self.steps_per_s(now),
            "rate_series": self.rate_series(),
            "recent_errors": list(self._errors),
        }


def _copy(totals: SpecTotals) -> SpecTotals:
    copy = SpecTotals()
    copy.add(totals)
    return copy


def _session_data(session: SessionStats, now: float) -> dict[str, Any]:
    totals = session.totals
    return {
        "id": session.id,
        "protocol": session.protocol,
        "spec": session.env_id or NO_SPEC,
        "num_envs": session.num_envs,
        "steps": totals.steps,
        "requests": sum(totals.requests.values()),
        "errors": sum(totals.errors.values()),
        "opened": session.opened,
        "idle_s": max(0.0, now - session.last_request),
    }
