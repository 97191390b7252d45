"""The observation routes: ``GET /metrics``, ``GET /status.json`` and the status page ``GET /``.

All three are read-only and pass the server's one access check (``server/access.py``): Origin
and Host always, the token as ``Authorization: Bearer`` like every other route. A browser
cannot send that header when it loads a page, so the status page has one more way in, valid on
these three paths only (never on a WebSocket upgrade, so no page can drive envs with it):

* ``GET /?token=<token>`` checks the token (constant time) and answers ``303 See Other`` to
  ``/`` with a cookie ``openenv_gym_view`` that holds not the token but an HMAC of it (a stolen
  cookie lets its holder watch, not step envs), ``HttpOnly; SameSite=Strict; Path=/`` (and
  ``Secure`` under TLS). The page and ``/status.json`` then accept that cookie. Without a valid
  token ``/`` answers 401 with a form asking for it.

With ``--workers N`` every process counts its own sessions (``server/stats.py``) and writes a
snapshot of them into a directory the processes share, once a second; whichever process
answers a request merges its live figures with the others' snapshots (at most ~1 s old), and
every Prometheus series carries a ``worker`` label (a replaced worker's counters start again at
0, which Prometheus' ``rate()`` treats as a counter reset). Sum over ``worker`` in queries.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import http.cookies
import json
import logging
import os
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from http import HTTPStatus
from pathlib import Path
from typing import Any

from openenv_gym.server.access import AccessPolicy
from openenv_gym.server.stats import ServerStats
from openenv_gym.server.status_page import LOGIN_PAGE, STATUS_PAGE
from openenv_gym.ws.server import HttpReply

__all__ = [
    "METRICS_PATH",
    "OBSERVE_PATHS",
    "STATUS_JSON_PATH",
    "STATUS_PAGE_PATH",
    "VIEW_COOKIE",
    "Observer",
    "SnapshotDir",
    "is_upgrade",
    "merge_status",
    "render_metrics",
    "sample_forever",
    "shared_snapshots",
]

logger = logging.getLogger("openenv_gym.server")

METRICS_PATH = "/metrics"
STATUS_JSON_PATH = "/status.json"
STATUS_PAGE_PATH = "/"
OBSERVE_PATHS = frozenset({METRICS_PATH, STATUS_JSON_PATH, STATUS_PAGE_PATH})
VIEW_COOKIE = "openenv_gym_view"
MAX_QUERY_CHARS = 1024
"""The longest query an observation route reads (only ``token=`` means anything to them)."""
_MAX_SNAPSHOT_BYTES = 8 << 20
STALE_AFTER = 5.0
"""Seconds after which a worker's snapshot is taken for a dead worker's (it writes every 1 s)."""
_PAGE_HEADERS = (
    ("Cache-Control", "no-store"),
    # Inline script and style only; nothing is loaded from anywhere, nothing may frame it.
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src data:; frame-ancestors 'none'; form-action 'self'",
    ),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),  # the first load's URL may hold ?token=
    ("X-Content-Type-Options", "nosniff"),
)
METRICS_EXTRA_MISSING = (
    "GET /metrics needs the prometheus_client package: pip install 'openenv-gym[metrics]' "
    "(GET /status.json answers without it)\n"
)


class SnapshotDir:
    """The directory where ``--workers`` processes leave their snapshots for each other.

    Args:
        path: the directory (created by the supervisor, removed when the server stops).
        worker: this process's slot; its file is ``worker-<slot>.json``.

    """

    def __init__(self, path: str | os.PathLike[str], worker: int) -> None:
        self.path = Path(path)
        self.worker = worker

    def write(self, snapshot: dict[str, Any]) -> None:
        """Replace this worker's snapshot (atomically: readers never see half a file)."""
        target = self.path / f"worker-{self.worker}.json"
        partial = self.path / f".worker-{self.worker}.json.part"
        try:
            partial.write_text(json.dumps(snapshot))
            os.replace(partial, target)
        except OSError as exc:  # the figures of one second are lost, the server goes on
            logger.warning("cannot write the metrics snapshot %s: %s", target, exc)

    def others(self) -> list[dict[str, Any]]:
        """Return the other workers' last snapshots (unreadable ones are skipped)."""
        found = []
        for file in sorted(self.path.glob("worker-*.json")):
            if file.name == f"worker-{self.worker}.json":
                continue
            try:
                if file.stat().st_size > _MAX_SNAPSHOT_BYTES:
                    continue
                snapshot = json.loads(file.read_text())
            except (OSError, ValueError):
                continue  # being replaced, or its worker never wrote one
            if time.time() - float(snapshot.get("time", 0)) > STALE_AFTER:
                snapshot = _gone(snapshot)
            found.append(snapshot)
        return found


@contextlib.contextmanager
def shared_snapshots(shared: bool) -> Iterator[str | None]:
    """Yield a new directory for the workers' snapshots (removed after), or ``None``."""
    if not shared:
        yield None
        return
    path = tempfile.mkdtemp(prefix="openenv-gym-stats-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def sample_forever(stats: ServerStats, peers: SnapshotDir | None) -> None:
    """Sample the step count each second (steps/s) and share a snapshot with other workers."""
    while True:
        stats.sample()
        if peers is not None:
            peers.write(stats.snapshot())
        await asyncio.sleep(1.0)  # a sampling period, not a wait for a peer


def _gone(snapshot: dict[str, Any]) -> dict[str, Any]:
    """Keep a dead worker's counters (they happened) but none of its sessions (they ended)."""
    totals = [{**row, "live_sessions": 0, "live_envs": 0} for row in snapshot["totals"]]
    return {**snapshot, "sessions": [], "totals": totals, "steps_per_s": 0.0, "rate_series": []}


def is_upgrade(headers: Iterable[tuple[str, str]]) -> bool:
    """Tell whether request ``headers`` ask for a WebSocket upgrade (``Upgrade: websocket``)."""
    return any(
        name.lower() == "upgrade" and value.strip().lower() == "websocket"
        for name, value in headers
    )


def view_key(token: str) -> str:
    """Return the cookie value that stands for ``token`` on the observation routes."""
    return hmac.new(token.encode(), b"openenv-gym status view v1", hashlib.sha256).hexdigest()


def _query_token(query: str) -> str | None:
    if len(query) > MAX_QUERY_CHARS:
        return None
    values = urllib.parse.parse_qs(query, max_num_fields=8).get("token")
    return values[0] if values else None


def _cookie(headers: Sequence[tuple[str, str]]) -> str | None:
    for name, value in headers:
        if name.lower() == "cookie" and len(value) <= 4096:
            jar = http.cookies.SimpleCookie()
            try:
                jar.load(value)
            except http.cookies.CookieError:
                continue
            if VIEW_COOKIE in jar:
                return jar[VIEW_COOKIE].value
    return None


class Observer:
    """Answer the observation routes of one server process.

    Args:
        stats: this process's counts.
        access: the server's access check.
        secure: the server speaks TLS (the view cookie is then ``Secure``).
        peers: the other workers' snapshots, with ``--workers``.

    """

    def __init__(
        self,
        stats: ServerStats,
        access: AccessPolicy,
        *,
        secure: bool = False,
        peers: SnapshotDir | None = None,
    ) -> None:
        self.stats = stats
        self.access = access
        self.secure = secure
        self.peers = peers
        self._view = None if access.token is None else view_key(access.token)

    def admit(self, path: str, query: str, headers: Iterable[tuple[str, str]]) -> HttpReply | None:
        """Return the refusal of an observation request, or ``None`` to answer it.

        Origin and Host are checked as on every route; the token may come as the bearer
        header, as the view cookie, or (on ``/`` only) as ``?token=``.
        """
        headers = list(headers)
        if len(query) > MAX_QUERY_CHARS:
            return HttpReply(
                HTTPStatus.REQUEST_URI_TOO_LONG, f"query over {MAX_QUERY_CHARS} chars\n"
            )
        if self._view is not None and self._authorized(path, query, headers):
            refusal = self.access.check(headers, require_token=False)  # Origin and Host
        else:
            refusal = self.access.check(headers)  # the bearer header, as on every route
        if refusal is None:
            return None
        if path == STATUS_PAGE_PATH and refusal.status == HTTPStatus.UNAUTHORIZED:
            return HttpReply(
                refusal.status,
                body=LOGIN_PAGE,
                content_type="text/html; charset=utf-8",
                headers=_PAGE_HEADERS,
            )
        return HttpReply(refusal.status, f"{refusal.reason}\n")

    def _authorized(self, path: str, query: str, headers: Sequence[tuple[str, str]]) -> bool:
        """Tell whether the view cookie or (on ``/``) ``?token=`` is valid."""
        assert self._view is not None and self.access.token is not None
        cookie = _cookie(headers)
        if cookie is not None and hmac.compare_digest(cookie.encode(), self._view.encode()):
            return True
        token = _query_token(query) if path == STATUS_PAGE_PATH else None
        return token is not None and hmac.compare_digest(
            token.encode(errors="surrogateescape"), self.access.token.encode()
        )

    def reply(self, path: str, query: str) -> HttpReply:
        """Answer an admitted observation request."""
        if path == METRICS_PATH:
            try:
                body, content_type = render_metrics(self.snapshots())
            except ImportError:
                return HttpReply(HTTPStatus.NOT_IMPLEMENTED, METRICS_EXTRA_MISSING)
            return HttpReply(HTTPStatus.OK, body=body, content_type=content_type)
        if path == STATUS_JSON_PATH:
            body = json.dumps(merge_status(self.snapshots())).encode()
            return HttpReply(
                HTTPStatus.OK,
                body=body,
                content_type="application/json",
                headers=(("Cache-Control", "no-store"),),
            )
        if _query_token(query) is not None:  # admitted: trade the token for the view cookie
            cookie = f"{VIEW_COOKIE}={self._view or ''}; HttpOnly; SameSite=Strict; Path=/"
            cookie += "; Secure" if self.secure else ""
            headers = (
                ("Location", "/"),
                *(() if self._view is None else (("Set-Cookie", cookie),)),
            )
            return HttpReply(HTTPStatus.SEE_OTHER, body=b"", headers=headers + _PAGE_HEADERS)
        return HttpReply(
            HTTPStatus.OK,
            body=STATUS_PAGE,
            content_type="text/html; charset=utf-8",
            headers=_PAGE_HEADERS,
        )

    def snapshots(self) -> list[dict[str, Any]]:
        """Return this process's live snapshot and the other workers' last ones."""
        own = self.stats.snapshot()
        return [own, *(() if self.peers is None else self.peers.others())]


def merge_status(snapshots: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Merge worker snapshots into the ``/status.json`` document.

    Returns:
        ``{"version": 1, "specs", "workers": [{"worker", "pid", "started", "steps_per_s"}],
        "sessions": [...each with "worker"], "totals": [...per spec and protocol, summed],
        "steps_per_s", "rate_series", "live_sessions", "live_envs",
        "recent_errors": [...newest first]}``.

    """
    snapshots = sorted(snapshots, key=lambda s: int(s["worker"]))
    sessions, errors = [], []
    totals: dict[tuple[str, str], dict[str, Any]] = {}
    for snap in snapshots:
        sessions += [{**session, "worker": snap["worker"]} for session in snap["sessions"]]
        errors += [{**error, "worker": snap["worker"]} for error in snap["recent_errors"]]
        for row in snap["totals"]:
            merged = totals.setdefault((row["spec"], row["protocol"]), {})
            for key, value in row.items():
                merged[key] = _add(merged.get(key), value)
    errors.sort(key=lambda error: -float(error["time"]))
    return {
        "version": 1,
        "specs": snapshots[0]["specs"] if snapshots else [],
        "workers": [
            {k: snap[k] for k in ("worker", "pid", "started", "time", "steps_per_s")}
            for snap in snapshots
        ],
        "sessions": sessions,
        "totals": [totals[key] for key in sorted(totals)],
        "steps_per_s": sum(float(snap["steps_per_s"]) for snap in snapshots),
        "rate_series": _sum_right_aligned([snap.get("rate_series", []) for snap in snapshots]),
        "live_sessions": len(sessions),
        "live_envs": sum(int(session["num_envs"]) for session in sessions),
        "recent_errors": errors[:20],
    }


def _sum_right_aligned(series: Sequence[Sequence[float]]) -> list[float]:
    """Sum per-second series that end now but may start at different times."""
    length = max((len(one) for one in series), default=0)
    total = [0.0] * length
    for one in series:
        for offset, value in enumerate(one):
            total[length - len(one) + offset] += float(value)
    return total


def _add(a: Any, b: Any) -> Any:
    """Add two snapshot values: numbers add, dicts add by key, lists element-wise, else keep."""
    if a is None:
        return b
    if isinstance(b, (bool, str)):
        return a
    if isinstance(b, (int, float)):
        return a + b
    if isinstance(b, dict):
        return {key: _add(a.get(key), b.get(key)) for key in {*a, *b}}
    if isinstance(b, list):
        return [x + y for x, y in zip(a, b, strict=True)]
    return a


def render_metrics(snapshots: Sequence[dict[str, Any]]) -> tuple[bytes, str]:
    """Render worker snapshots in Prometheus' text format (0.0.4).

    Returns:
        The exposition and its ``Content-Type``.

    Raises:
        ImportError: ``prometheus_client`` (extra ``metrics``) is not installed.

    """
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

    from openenv_gym.server.prometheus import SnapshotCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshots))
    return generate_latest(registry), CONTENT_TYPE_PLAIN_0_0_4
