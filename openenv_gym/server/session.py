"""Session: the server side of one connection as a pure object, bytes in, bytes out.

Each received frame goes to :meth:`Session.handle`, which always returns exactly one reply
frame. The state machine (docs/protocol.md, "States")::

    NEW --HELLO--> OPEN --MAKE--> ACTIVE --(RESET|STEP|RENDER|CALL|GET_ATTR|SET_ATTR|STATE)*-->
    any --CLOSE--> CLOSED

A request that is not allowed in the current state, a malformed frame, or an exception raised
by an env becomes an error reply; the session (and the server) carry on.
"""

from __future__ import annotations

import enum
import logging
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from gymnasium.vector import AutoresetMode

from openenv_gym.errors import (
    CapacityError,
    DecodeError,
    MessageTooLargeError,
    ProtocolError,
    SessionStateError,
    StepTimeoutError,
    VersionMismatchError,
)
from openenv_gym.protocol import codec
from openenv_gym.protocol.compression import Compressor, make_compressor, negotiate
from openenv_gym.protocol.messages import (
    PROTOCOL_VERSION,
    REQUEST_PREFIXES,
    AttrRequest,
    CallRequest,
    ErrorBody,
    Hello,
    HelloReply,
    MakeReply,
    MakeRequest,
    Op,
    PoolResetRequest,
    PoolSendRequest,
    ResetRequest,
    SetAttrRequest,
    Status,
    parse_body,
    parse_request,
    request_bound,
)
from openenv_gym.server.catalog import EnvCatalog, HostedEnv
from openenv_gym.server.host import EnvHost, make_host
from openenv_gym.server.limits import Limits, Usage
from openenv_gym.server.native_host import NativeHost
from openenv_gym.server.pool_events import PoolEvents
from openenv_gym.server.pool_host import PoolHost

__all__ = ["Session", "SessionState"]

logger = logging.getLogger("openenv_gym.server")


class SessionState(enum.Enum):
    """Where a session is in its life."""

    NEW = "new"
    OPEN = "open"
    ACTIVE = "active"
    POOL = "pool"
    """A pool session's: POOL_SEND and POOL_RESET instead of STEP and RESET."""
    CLOSED = "closed"


_ALLOWED = {
    SessionState.NEW: {Op.HELLO, Op.CLOSE},
    SessionState.OPEN: {Op.MAKE, Op.CLOSE},
    SessionState.ACTIVE: {
        Op.RESET,
        Op.STEP,
        Op.RENDER,
        Op.CALL,
        Op.GET_ATTR,
        Op.SET_ATTR,
        Op.STATE,
        Op.CLOSE,
    },
    SessionState.POOL: {Op.POOL_SEND, Op.POOL_RESET, Op.STATE, Op.CLOSE},
    SessionState.CLOSED: set(),
}


_OK = int(Status.OK)


def _type_name(exc: BaseException) -> str:
    own = getattr(exc, "type_name", None)  # an env process's error keeps the env's type name
    if isinstance(own, str):
        return own
    cls = type(exc)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


def _truncate(text: str, limit: int = 16384) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more chars)"


def _details(exc: BaseException) -> dict[str, Any] | None:
    """Machine-readable fields a client needs to rebuild a typed error."""
    if isinstance(exc, VersionMismatchError):
        return {"client_version": exc.client_version, "server_version": exc.server_version}
    if isinstance(exc, CapacityError):
        return {"limit": exc.limit, "current": exc.current, "maximum": exc.maximum}
    if isinstance(exc, MessageTooLargeError):
        return {"size": exc.size, "limit": exc.limit}
    if isinstance(exc, StepTimeoutError):
        return {"elapsed": exc.elapsed, "timeout": exc.timeout, "action": exc.action}
    return None


class Session:
    """One client's session on a server.

    Args:
        catalog: the envs this server hosts.
        server_name: how the server names itself in HELLO replies.
        debug: send tracebacks in error replies.
        max_message_bytes: the largest frame accepted and sent. Each request is also held to
            its op's bound (``messages.REQUEST_BOUNDS``: size and values), checked before it is
            decoded; a request whose op the state does not allow gets the state's largest.
        usage: the server process's session and env counts, checked against its limits.
        compression: the codecs this server accepts at HELLO (``protocol/compression.py``),
            in its order of preference; the client's first offered one among them is used.

    """

    text_protocol = False
    """Frames are binary msgpack (``OpenEnvSession`` speaks JSON text instead)."""

    def __init__(
        self,
        catalog: EnvCatalog,
        *,
        server_name: str = "openenv-gym",
        debug: bool = False,
        max_message_bytes: int = codec.DEFAULT_MAX_MESSAGE_BYTES,
        usage: Usage | None = None,
        compression: Sequence[str] = (),
    ) -> None:
        self.catalog = catalog
        self.accepted_codecs = tuple(compression)
        self.compressor: Compressor | None = None
        self.usage = usage or Usage(Limits())
        self._admitted = False
        self._reserved_envs = 0
        self.server_name = server_name
        self.debug = debug
        self.max_message_bytes = max_message_bytes
        self.state = SessionState.NEW
        self.host: EnvHost | None = None
        self._hosted: HostedEnv | None = None
        self._handlers: dict[Op, Callable[[Any], Any]] = {
            Op.HELLO: self._hello,
            Op.MAKE: self._make,
            Op.RESET: self._reset,
            Op.STEP: self._step,
            Op.RENDER: lambda body: self._active_host().render(max_bytes=self.max_message_bytes),
            Op.CALL: self._call,
            Op.GET_ATTR: self._get_attr,
            Op.SET_ATTR: self._set_attr,
            Op.STATE: self._state,
            Op.CLOSE: self._close,
            Op.POOL_SEND: self._pool_send,
            Op.POOL_RESET: self._pool_reset,
        }
        self.pool: PoolHost | None = None
        self._pool_events = PoolEvents(self)
        # Request bounds by op, for the state and env count they were computed in.
        self._bounds: dict[int | None, tuple[int, int]] = {}
        self._bounds_state: SessionState | None = None
        self._bounds_envs = 0
        self.last_op: int | None = None
        """The op of the last request decoded (what a request whose first bytes do not name
        its op, e.g. a compressed one, was: ``server/metered.py`` reads it)."""

    @property
    def closed(self) -> bool:
        """True once the session has handled CLOSE or was closed by the server."""
        return self.state is SessionState.CLOSED

    @property
    def env_id(self) -> str | None:
        """The hosted spec this session built its envs from (``None`` before MAKE)."""
        return None if self._hosted is None else self._hosted.env_id

    def handle(self, frame: bytes) -> bytes:
        """Serve one request frame and return the reply frame (never raises)."""
        return codec.join_parts(self.handle_parts(frame))

    def handle_parts(self, frame: bytes) -> codec.Parts:
        """Serve one request frame; return the reply as parts to write in order (never raises).

        Large arrays of the reply are views of the env's (``codec.encode_parts``): write the
        parts before the session's next request.
        """
        request_id = 0
        compressor = self.compressor
        try:
            if compressor is not None:
                frame = compressor.decompress(frame, max_bytes=self.max_message_bytes)
            max_bytes, max_values = self._request_bounds(frame)
            op, request_id, body = parse_request(
                codec.decode(frame, max_bytes=max_bytes, max_values=max_values)
            )
            self.last_op = op
            if op not in _ALLOWED[self.state]:
                raise SessionStateError(
                    f"{op.name} is not allowed in session state {self.state.value}; "
                    f"allowed: {', '.join(sorted(o.name for o in _ALLOWED[self.state]))}"
                )
            result = self._handlers[op](body)
            # Plain ints: an IntEnum goes through the codec's Python fallback (~1 µs a message).
            reply = codec.encode_parts([_OK, request_id, result], max_bytes=self.max_message_bytes)
            # Replies compress under the codec in force when the request came (not HELLO's).
            if compressor is None:
                return reply
            return [compressor.compress(codec.join_parts(reply))]
        except (Exception, SystemExit) as exc:  # an error reply; the session and server live on
            return [self._error_reply(request_id, exc)]

    def _request_bounds(self, frame: bytes) -> tuple[int, int]:
        """Return the largest size and the most values ``frame`` may have, before decoding it."""
        op = REQUEST_PREFIXES.get(frame[:2])  # messages.peek_op, inline: this is the hot path
        host = self.host or self.pool
        num_envs = 0 if host is None else host.num_envs
        # Compared by identity, not as a tuple key: hashing an Enum member costs ~0.5 µs.
        if self._bounds_state is not self.state or self._bounds_envs != num_envs:
            self._bounds = {}
            self._bounds_state, self._bounds_envs = self.state, num_envs
        bounds = self._bounds.get(op)
        if bounds is None:
            # An op the state does not allow, or one not in the first two bytes (a request
            # encoded unusually), gets the largest bound of the state's ops: nothing larger than
            # what the state allows is decoded.
            allowed = _ALLOWED[self.state] or {Op.CLOSE}
            ops = [Op(op)] if op in allowed else allowed
            candidates = [
                request_bound(o, max_message_bytes=self.max_message_bytes, num_envs=num_envs)
                for o in ops
            ]
            bounds = max(b for b, _ in candidates), max(v for _, v in candidates)
            self._bounds[op] = bounds
        return bounds

    def after_reply(self) -> None:
        """Do the bookkeeping the last request left until its reply was written; never raises."""
        host = self.host
        if host is None:
            return
        try:
            host.settle()
        except Exception:  # a bug in the bookkeeping: the session and server live on
            logger.exception("settling a step's bookkeeping failed")

    def refuse(self, reason: str) -> bytes:
        """Return the error reply for a frame refused before decoding (e.g. a text frame)."""
        return self._error_reply(0, DecodeError(reason))

    def _error_reply(self, request_id: int, exc: BaseException) -> bytes:
        if not isinstance(exc, ProtocolError):
            logger.info("request %d failed: %s: %s", request_id, _type_name(exc), exc)
        body = ErrorBody(
            type=_type_name(exc),
            message=_truncate(str(exc)),
            traceback="".join(traceback.format_exception(exc)) if self.debug else None,
            details=_details(exc),
        )
        return codec.encode([Status.ERROR, request_id, body.model_dump()])

    def _active_host(self) -> EnvHost:
        assert self.host is not None
        return self.host

    def _active_hosted(self) -> HostedEnv:
        assert self._hosted is not None
        return self._hosted

    def _hello(self, body: Any) -> dict[str, Any]:
        hello = parse_body(Hello, body)
        if hello.protocol_version != PROTOCOL_VERSION:
            raise VersionMismatchError("", hello.protocol_version, PROTOCOL_VERSION)
        try:
            self.usage.open_session()
        except CapacityError:
            self.state = SessionState.CLOSED  # refused: the connection closes after the reply
            raise
        self._admitted = True
        self.state = SessionState.OPEN
        codec_name = negotiate(hello.compression, self.accepted_codecs)
        if codec_name is not None:
            self.compressor = make_compressor(codec_name, threshold=hello.compression_threshold)
        return HelloReply(
            protocol_version=PROTOCOL_VERSION,
            server=self.server_name,
            specs=self.catalog.specs,
            allow_any_id=self.catalog.allow_any_id,
            compression=codec_name,
        ).wire()

    def _make(self, body: Any) -> dict[str, Any]:
        request = parse_body(MakeRequest, body)
        hosted = self.catalog.hosted(request.env_id)
        if request.pool:
            return self._make_pool(request, hosted)
        native = request.server_vectorization == "vector_entry_point"
        factory = None if native else hosted.factory(dict(request.kwargs))
        mode = None if request.autoreset_mode is None else AutoresetMode(request.autoreset_mode)
        self.usage.reserve_envs(request.num_envs)
        try:
            if factory is None:
                host: EnvHost = NativeHost(
                    hosted, request.kwargs, num_envs=request.num_envs, autoreset_mode=mode
                )
            else:
                host = make_host(factory, num_envs=request.num_envs, autoreset_mode=mode)
        except BaseException:
            self.usage.release_envs(request.num_envs)
            raise
        self._reserved_envs = request.num_envs
        try:
            reply = MakeReply(**host.describe()).wire()
        except Exception:
            host.close()
            self._release()
            raise
        self.host = host
        self._hosted = hosted
        self.state = SessionState.ACTIVE
        return reply

    def _make_pool(self, request: MakeRequest, hosted: HostedEnv) -> dict[str, Any]:
        factory = hosted.factory(dict(request.kwargs))
        self.usage.reserve_envs(request.num_envs)
        try:
            pool = PoolHost(
                factory,
                num_envs=request.num_envs,
                concurrent_steps=hosted.policy.concurrent_steps,
                step_timeout=hosted.policy.step_timeout,
                step_isolation=hosted.policy.step_isolation,
            )
        except BaseException:
            self.usage.release_envs(request.num_envs)
            raise
        self._reserved_envs = request.num_envs
        try:
            reply = MakeReply(**pool.describe()).wire()
        except Exception:
            pool.close()
            self._release()
            raise
        self.pool = pool
        self._hosted = hosted
        self._pool_events.attach(pool)
        self.state = SessionState.POOL
        return reply

    def attach(self, notify: Callable[[], None]) -> None:
        """Have ``notify`` called (from any thread) when :meth:`events` has messages to push."""
        self._pool_events.notify = notify

    def events(self) -> list[bytes]:
        """Return the POOL_EVENT messages ready to push (none outside pool sessions)."""
        frames = self._pool_events.take()
        compressor = self.compressor
        return frames if compressor is None else [compressor.compress(f) for f in frames]

    @property
    def busy(self) -> bool:
        """True while a pool session has steps in flight (its connection is not idle)."""
        return self.pool is not None and self.pool.busy

    def _pool_send(self, body: Any) -> None:
        request = parse_body(PoolSendRequest, body)
        assert self.pool is not None
        self.pool.send(request.env_ids, request.actions, request.timeout)

    def _pool_reset(self, body: Any) -> None:
        request = parse_body(PoolResetRequest, body)
        assert self.pool is not None
        self.pool.reset(request.env_ids, request.seed, request.options, request.timeout)

    def _state(self, body: Any) -> Any:
        if self.pool is not None:
            return self.pool.state()
        return self._active_host().state()

    def _reset(self, body: Any) -> list[Any]:
        request = parse_body(ResetRequest, body)
        options = None if request.options is None else dict(request.options)
        return self._active_host().reset(request.seed, options)

    def _step(self, body: Any) -> list[Any]:
        return self._active_host().step(body)

    def _call(self, body: Any) -> Any:
        request = parse_body(CallRequest, body)
        self._active_hosted().check_call(request.name, request.args)
        return self._active_host().call(request.name, request.args, request.kwargs)

    def _get_attr(self, body: Any) -> Any:
        name = parse_body(AttrRequest, body).name
        self._active_hosted().check_get_attr(name)
        return self._active_host().get_attr(name)

    def _set_attr(self, body: Any) -> None:
        request = parse_body(SetAttrRequest, body)
        self._active_hosted().check_set_attr(request.name)
        self._active_host().set_attr(request.name, request.values, per_env=request.per_env)

    def _close(self, body: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the session's envs; idempotent."""
        self.state = SessionState.CLOSED
        host, self.host = self.host, None
        pool, self.pool = self.pool, None
        if pool is not None:
            try:
                pool.close()
            except Exception:
                logger.exception("closing the envs of a pool session failed")
        if host is not None:
            try:
                host.close()
            except Exception:
                logger.exception("closing the envs of a session failed")
        self._release()

    def _release(self) -> None:
        self.usage.release_envs(self._reserved_envs)
        self._reserved_envs = 0
        if self._admitted:
            self._admitted = False
            self.usage.close_session()
