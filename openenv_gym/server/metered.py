"""A session that counts what it serves: requests by op, env steps, step latency, errors, bytes.

:class:`MeteredSession` wraps a binary :class:`~openenv_gym.server.session.Session` or an
OpenEnv ``/ws`` session and implements the same ``ServedSession`` interface, so the connection
does not know it is measured. Per request it costs two ``time.monotonic`` calls, a dict lookup of
the op from the message's first bytes (``messages.REQUEST_PREFIXES``, as the session itself
does), a few integer increments and, for a step, one ``bisect`` over the latency buckets: no
decoding on the success path. Only an error reply (rare) is decoded, for its type and message.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from openenv_gym.protocol import codec
from openenv_gym.protocol.messages import REQUEST_PREFIXES, Op
from openenv_gym.server.stats import ServerStats

__all__ = ["MeteredSession"]

_BINARY_OPS = {int(op): f"binary/{op.name}" for op in Op}
_STEP = int(Op.STEP)
_MAKE = int(Op.MAKE)
_ERROR_PREFIX = b"\x93\x01"  # [Status.ERROR, request_id, body]: a fixarray, then 1
_OPENENV_TYPE = re.compile(rb'"type"\s*:\s*"([a-z_]{1,16})"')
_OPENENV_OPS = frozenset({"reset", "step", "state", "close", "mcp"})
_OPENENV_ERROR = b'{"type": "error"'
_PEEK = 128
"""Bytes of an OpenEnv message searched for its ``"type"`` (where its encoders write it)."""


class _Inner(Protocol):
    """The ``ServedSession`` interface of ``ws/server.py`` (not imported: server sits above)."""

    @property
    def text_protocol(self) -> bool: ...

    @property
    def closed(self) -> bool: ...

    def handle(self, message: bytes) -> bytes: ...

    def refuse(self, reason: str) -> bytes: ...

    def close(self) -> None: ...


class MeteredSession:
    """Serve ``inner``'s requests and count them in ``stats``.

    Args:
        inner: the session doing the work (binary ``Session`` or OpenEnv's).
        stats: the process's counts; the session is live there until :meth:`close`.
        specs: the hosted specs (an OpenEnv session without ``?env=`` serves the first).
        query: the ``/ws`` request's query (OpenEnv's ``?env=<id>``).

    """

    def __init__(
        self, inner: _Inner, stats: ServerStats, *, specs: Sequence[str] = (), query: str = ""
    ) -> None:
        self.inner = inner
        self._stats = stats
        self._text = inner.text_protocol
        self.counts = stats.open("openenv" if self._text else "binary")
        self._openenv_id: str | None = None
        if self._text:
            chosen = urllib.parse.parse_qs(query).get("env")
            self._openenv_id = chosen[0] if chosen else (specs[0] if specs else None)

    @property
    def text_protocol(self) -> bool:
        """True if the wrapped session speaks text frames."""
        return self._text

    @property
    def closed(self) -> bool:
        """True once the wrapped session is over."""
        return self.inner.closed

    @property
    def busy(self) -> bool:
        """True while the wrapped session has steps in flight (pool sessions)."""
        return bool(getattr(self.inner, "busy", False))

    def attach(self, notify: Callable[[], None]) -> None:
        """Pass the connection's wake-up to a session that pushes messages (pool sessions)."""
        attach = getattr(self.inner, "attach", None)
        if attach is not None:
            attach(notify)

    def events(self) -> list[bytes]:
        """Return the messages the wrapped session pushes unasked (none for most)."""
        events = getattr(self.inner, "events", None)
        return [] if events is None else list(events())

    def handle(self, message: bytes) -> bytes:
        """Answer ``message`` through the wrapped session and count it (never raises)."""
        return codec.join_parts(self.handle_parts(message))

    def handle_parts(self, message: bytes) -> codec.Parts:
        """Answer ``message`` as :meth:`handle` does, the reply as parts to write in order."""
        op = REQUEST_PREFIXES.get(message[:2])
        if self._text:
            started = time.monotonic()
            reply = self.inner.handle(message)
            self._count_openenv(message, reply, time.monotonic() - started)
            return [reply]
        inner: Any = self.inner
        if op is None:
            # Not a plain request's first bytes (compressed, or encoded unusually): the
            # session tells what it decoded.
            inner.last_op = None
        handle_parts = getattr(inner, "handle_parts", None)
        started = time.monotonic()  # one clock for latency and idle time (ns on Linux)
        parts: codec.Parts = (
            [inner.handle(message)] if handle_parts is None else handle_parts(message)
        )
        elapsed = time.monotonic() - started
        self._count_binary(inner.last_op if op is None else op, message, parts, started, elapsed)
        return parts

    def _count_binary(
        self, op: int | None, message: bytes, parts: codec.Parts, started: float, elapsed: float
    ) -> None:
        counts = self.counts
        counts.last_request = started
        name = "binary/unknown" if op is None else _BINARY_OPS.get(op, "binary/unknown")
        counts.request(name, len(message), sum(map(len, parts)))
        if bytes(parts[0][:2]) == _ERROR_PREFIX:
            self._binary_error(codec.join_parts(parts))
        elif op == _STEP:
            counts.step(elapsed, counts.num_envs)
        elif op == _MAKE:
            self._made()

    def _made(self) -> None:
        host = getattr(self.inner, "host", None)
        self.counts.num_envs = 0 if host is None else int(host.num_envs)
        self.counts.env_id = getattr(self.inner, "env_id", None)

    def _binary_error(self, reply: bytes) -> None:
        try:
            body: Any = codec.decode(reply)[2]
            name, text = str(body["type"]), str(body["message"])
        except Exception:  # an error reply we cannot read is still an error
            name, text = "unreadable", repr(reply[:80])
        self._stats.error(self.counts, name, text)

    def _count_openenv(self, message: bytes, reply: bytes, elapsed: float) -> None:
        counts = self.counts
        counts.last_request = time.monotonic()
        found = _OPENENV_TYPE.search(message, 0, _PEEK)
        kind = found.group(1).decode() if found else "other"
        kind = kind if kind in _OPENENV_OPS else "other"
        counts.request(f"openenv/{kind}", len(message), len(reply))
        if reply.startswith(_OPENENV_ERROR):
            try:
                data = json.loads(reply)["data"]
                name, text = f"openenv.{data['code']}", str(data["message"])
            except Exception:
                name, text = "openenv.unreadable", repr(reply[:80])
            self._stats.error(counts, name, text)
            return
        if kind in ("reset", "step") and counts.env_id is None:
            counts.env_id, counts.num_envs = self._openenv_id, 1  # built: a hosted id
        if kind == "step":
            counts.step(elapsed, 1)

    def after_reply(self) -> None:
        """Let the wrapped session do what it left until the reply was written."""
        after_reply = getattr(self.inner, "after_reply", None)
        if after_reply is not None:
            after_reply()

    def refuse(self, reason: str) -> bytes:
        """Return the wrapped session's refusal of a frame, counted as an error."""
        self._stats.error(self.counts, "DecodeError", reason)
        return self.inner.refuse(reason)

    def close(self) -> None:
        """Close the wrapped session and fold its counts into the totals; idempotent."""
        try:
            self.inner.close()
        finally:
            self._stats.close(self.counts)
