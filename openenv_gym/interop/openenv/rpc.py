"""OpenEnv's MCP routes on our port: JSON-RPC 2.0 on ``POST /mcp`` and ``{"type": "mcp"}``.

OpenEnv 0.10's ``MCPToolClient`` (production mode) and its ``openenv validate --url`` talk to
``POST /mcp``: ``openenv/session/create`` gives a session id, a WebSocket to
``/ws?session_id=<id>`` then drives the same env (reset/step/state), ``tools/list`` and
``tools/call`` (with ``params.session_id``) reach its tools, ``openenv/session/close`` ends it.
A ``tools/*`` request without a session id builds a throwaway env, as OpenEnv's server does.
The same JSON-RPC requests inside a ``/ws`` session (``{"type": "mcp", "data": {...}}``) act
on that session's env.

Tools: an OpenEnv env with an MCP server (``MCPEnvironment``) lists that server's tools; any
other env gets :class:`~openenv_gym.mcp.registry.ToolRegistry`'s (``reset``/``step``/``state``
in simulation mode, plus its ``@tool`` methods).

Bounds: sessions made over HTTP count against the process's session and env limits like any
other (:class:`~openenv_gym.server.limits.Usage`); one untouched for ``idle_timeout`` seconds
is closed; a request body is bounded by the connection (``ws/http.py``); every request passed
the server's access check before it got here. Errors are JSON-RPC error replies, never raised.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from typing import Any

from openenv_gym.interop.openenv.hosted import OpenEnvAsGym
from openenv_gym.interop.openenv.session import OpenEnvSession
from openenv_gym.mcp.registry import Mode, ToolRegistry, jsonable
from openenv_gym.server.catalog import EnvCatalog
from openenv_gym.server.limits import Usage

__all__ = [
    "AttachedSession",
    "McpSessions",
    "handle_rpc",
    "rpc_reply",
    "session_store",
    "sessions_for",
    "ws_session",
]

logger = logging.getLogger("openenv_gym.server")

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_ERROR = -32000


class _RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


def _error(code: int, message: str, request_id: Any = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


class Tools:
    """The tools of one env: an OpenEnv env's own MCP server's, else our registry's."""

    def __init__(self, env: Any, mode: Mode) -> None:
        inner = env.unwrapped
        server = getattr(inner.env, "mcp_server", None) if isinstance(inner, OpenEnvAsGym) else None
        self._server_tools: dict[str, Any] | None = None
        self._registry: ToolRegistry | None = None
        if server is not None:
            from openenv.core.env_server.mcp_environment import get_server_tools

            self._server_tools = dict(get_server_tools(server))
        else:
            self._registry = ToolRegistry(env, mode)

    def listing(self) -> list[dict[str, Any]]:
        """Return the tools as MCP lists them (name, description, inputSchema)."""
        if self._server_tools is not None:
            return [
                {
                    "name": tool.name,
                    "description": tool.description or "",
                    "inputSchema": getattr(tool, "parameters", None) or {},
                }
                for tool in self._server_tools.values()
            ]
        assert self._registry is not None
        return [
            {"name": name, "description": doc, "inputSchema": schema}
            for name, (doc, schema, _) in self._registry.tools.items()
        ]

    def call(self, name: str, arguments: dict[str, Any]) -> Any:
        """Call tool ``name``; return its JSON result.

        Raises:
            _RpcError: no such tool.
            Exception: whatever the tool raises.

        """
        if self._server_tools is not None:
            tool = self._server_tools.get(name)
            if tool is None:
                raise _RpcError(INVALID_PARAMS, f"Tool not found: {name}")
            result = tool.fn(**arguments)
            if inspect.isawaitable(result):
                from openenv.core.env_server.mcp_environment import run_async_safely

                result = run_async_safely(result)
            return jsonable(result)
        assert self._registry is not None
        if name not in self._registry.tools:
            raise _RpcError(INVALID_PARAMS, f"Tool not found: {name}")
        return self._registry.call(name, arguments)


@dataclasses.dataclass
class _Entry:
    """One HTTP-made session: its OpenEnv session, tools, lock, and use."""

    session: OpenEnvSession
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    tools: Tools | None = None
    attached: bool = False
    last_used: float = dataclasses.field(default_factory=time.monotonic)


class McpSessions:
    """The sessions ``openenv/session/create`` made in this process, by id.

    Args:
        new_session: builds an OpenEnv session for a query (``env=<id>``).
        mode: the tool mode (see :mod:`openenv_gym.mcp.registry`).
        idle_timeout: seconds a session may go untouched before it is closed (``None``: never).

    """

    def __init__(
        self, new_session: Callable[[str], Any], *, mode: Mode, idle_timeout: float | None
    ) -> None:
        self.new_session = new_session
        self.mode = mode
        self.idle_timeout = idle_timeout
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def create(self, query: str) -> str:
        """Build a session and its env; return its id.

        Raises:
            CapacityError: the process is at its session or env limit.
            Exception: the env cannot be built.

        """
        self._expire()
        session = self.new_session(query)
        try:
            session.environment()  # built (and counted) now, as OpenEnv's server does
        except Exception:
            session.close()
            raise
        session_id = str(uuid.uuid4())
        with self._lock:
            self._entries[session_id] = _Entry(session)
        return session_id

    def get(self, session_id: str) -> _Entry:
        """Return a live session's entry, marked as used.

        Raises:
            _RpcError: no such session.

        """
        self._expire()
        with self._lock:
            entry = self._entries.get(session_id)
        if entry is None:
            raise _RpcError(INVALID_PARAMS, f"Unknown session_id: {session_id}")
        entry.last_used = time.monotonic()
        return entry

    def close(self, session_id: str) -> None:
        """Close a session (its env too); idempotent only in that a second close is an error.

        Raises:
            _RpcError: no such session.

        """
        with self._lock:
            entry = self._entries.pop(session_id, None)
        if entry is None:
            raise _RpcError(INVALID_PARAMS, f"Unknown session_id: {session_id}")
        with entry.lock:
            entry.session.close()

    def close_all(self) -> None:
        """Close every session (server shutdown)."""
        with self._lock:
            entries, self._entries = list(self._entries.values()), {}
        for entry in entries:
            with contextlib.suppress(Exception):
                entry.session.close()

    def __len__(self) -> int:
        return len(self._entries)

    def _expire(self) -> None:
        if self.idle_timeout is None:
            return
        now = time.monotonic()
        with self._lock:
            stale = [
                key
                for key, entry in self._entries.items()
                if not entry.attached and now - entry.last_used > self.idle_timeout
            ]
            entries = [self._entries.pop(key) for key in stale]
        for entry in entries:
            logger.info("closing an idle MCP session")
            with contextlib.suppress(Exception):
                entry.session.close()


_stores: weakref.WeakKeyDictionary[Any, McpSessions] = weakref.WeakKeyDictionary()
_stores_lock = threading.Lock()


def sessions_for(owner: Any, factory: Callable[[], McpSessions]) -> McpSessions:
    """Return the session store of ``owner`` (a server's usage counter), made on first use."""
    with _stores_lock:
        store = _stores.get(owner)
        if store is None:
            store = _stores[owner] = factory()
        return store


def _tools(entry_or_session: Any, mode: Mode) -> Tools:
    """Return (and remember on the object) the tools of a session's env."""
    tools: Tools | None = getattr(entry_or_session, "tools", None)
    if tools is None:
        session = getattr(entry_or_session, "session", entry_or_session)
        tools = Tools(session.environment(), mode)
        entry_or_session.tools = tools
    return tools


def handle_rpc(
    message: Any,
    store: McpSessions,
    query: str,
    *,
    own: Any = None,
    own_id: str | None = None,
) -> dict[str, Any]:
    """Answer one JSON-RPC request (already parsed); never raises.

    Args:
        message: the request object.
        store: this process's HTTP-made sessions.
        query: the route's query (``env=<id>``), for sessions and throwaway envs.
        own: the ``/ws`` session the request came in on (its env serves ``tools/*``).
        own_id: that session's id, if it is an HTTP-made one.

    """
    request_id = message.get("id") if isinstance(message, dict) else None
    try:
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            raise _RpcError(INVALID_REQUEST, "Invalid Request: expected a JSON-RPC 2.0 object")
        method, params = message.get("method"), message.get("params", {})
        if not isinstance(method, str):
            raise _RpcError(INVALID_REQUEST, "Invalid Request: 'method' must be a string")
        if not isinstance(params, dict):
            raise _RpcError(INVALID_PARAMS, "Params must be an object")
        result = _dispatch(method, params, store, query, own, own_id)
        return {"jsonrpc": "2.0", "id": request_id, "result": result}
    except _RpcError as exc:
        return _error(exc.code, exc.message, request_id)
    except Exception as exc:  # the env's or the tool's failure: an error reply
        logger.info("MCP request failed: %s", exc)
        return _error(INTERNAL_ERROR, f"{type(exc).__name__}: {exc}", request_id)


def _dispatch(
    method: str,
    params: dict[str, Any],
    store: McpSessions,
    query: str,
    own: Any,
    own_id: str | None,
) -> Any:
    if method == "openenv/session/create":
        if own is not None:
            return {"session_id": own_id or "websocket"}
        try:
            return {"session_id": store.create(query)}
        except Exception as exc:
            raise _RpcError(SERVER_ERROR, f"{type(exc).__name__}: {exc}") from exc
    if method == "openenv/session/close":
        target = params.get("session_id")
        if not isinstance(target, str) or not target:
            raise _RpcError(INVALID_PARAMS, "Invalid params - 'session_id' is required")
        if target == own_id:
            raise _RpcError(INVALID_REQUEST, "Cannot close the session this WebSocket drives")
        store.close(target)
        return {"session_id": target, "closed": True}
    if method not in ("tools/list", "tools/call"):
        raise _RpcError(METHOD_NOT_FOUND, f"Method not found: {method:.80}")
    if own is not None:
        return _tool_request(method, params, _tools(own, store.mode))
    session_id = params.get("session_id")
    if session_id:
        entry = store.get(str(session_id))
        with entry.lock:
            return _tool_request(method, params, _tools(entry, store.mode))
    throwaway = store.new_session(query)  # no session: a fresh env for this one request
    try:
        return _tool_request(method, params, Tools(throwaway.environment(), store.mode))
    finally:
        throwaway.close()


def _tool_request(method: str, params: dict[str, Any], tools: Tools) -> Any:
    if method == "tools/list":
        return {"tools": tools.listing()}
    name, arguments = params.get("name"), params.get("arguments", {})
    if not isinstance(name, str) or not name:
        raise _RpcError(INVALID_PARAMS, "Missing 'name' in params")
    if not isinstance(arguments, dict):
        raise _RpcError(INVALID_PARAMS, "'arguments' must be an object")
    return tools.call(name, arguments)


def rpc_reply(body: bytes, store: McpSessions, query: str) -> dict[str, Any]:
    """Answer ``POST /mcp``'s body (a JSON-RPC request); never raises."""
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        return _error(PARSE_ERROR, "Parse error")
    return handle_rpc(message, store, query)


def session_store(
    catalog: EnvCatalog, usage: Usage, *, mode: Mode, idle_timeout: float | None
) -> McpSessions:
    """Return the HTTP-made sessions of one server (keyed by its usage counter)."""

    def factory() -> McpSessions:
        def new_session(query: str) -> OpenEnvSession:
            return _with_mcp(OpenEnvSession(catalog, query, usage), store, query, None)

        store = McpSessions(new_session, mode=mode, idle_timeout=idle_timeout)
        return store

    return sessions_for(usage, factory)


def _with_mcp(
    session: OpenEnvSession, store: McpSessions, query: str, own_id: str | None
) -> OpenEnvSession:
    """Let ``session`` answer ``{"type": "mcp"}`` messages on its own env."""

    def answer(own: OpenEnvSession, data: dict[str, Any]) -> dict[str, Any]:
        return handle_rpc(data, store, query, own=own, own_id=own_id)

    session.mcp = answer
    return session


class AttachedSession:
    """A ``/ws?session_id=<id>`` connection driving a session made by ``POST /mcp``.

    Messages go to that session's env (one at a time with its HTTP tool calls); a ``close``
    message or a dropped connection detaches, the session lives on until
    ``openenv/session/close`` (or its idle timeout), as in OpenEnv's server. One WebSocket per
    session at a time; an unknown id gets an error reply and a close.
    """

    text_protocol = True

    def __init__(self, store: McpSessions, session_id: str) -> None:
        self.store = store
        self.session_id = session_id
        self.closed = False
        self._entry: _Entry | None = None
        self._refusal: str | None = None
        try:
            entry = store.get(session_id)
        except _RpcError as exc:
            self._refusal = exc.message
            return
        with store._lock:
            if entry.attached:
                self._refusal = f"Session {session_id} already has an attached WebSocket"
                return
            entry.attached = True
        self._entry = entry
        _with_mcp(entry.session, store, entry.session.query, session_id)

    def handle(self, frame: bytes) -> bytes:
        """Serve one message on the attached session (never raises)."""
        entry = self._entry
        if entry is None:
            self.closed = True
            return self._error(self._refusal or "session closed", "SESSION_ERROR")
        if b'"close"' in frame and _is_close(frame):
            self.close()
            return json.dumps({"type": "closed", "data": {}}).encode()
        entry.last_used = time.monotonic()
        with entry.lock:
            reply = entry.session.handle(frame)
        if entry.session.closed:  # closed over HTTP meanwhile
            self.close()
        return reply

    def refuse(self, reason: str) -> bytes:
        """Return the error reply for a frame refused before decoding."""
        return self._error(reason, "INVALID_JSON")

    def close(self) -> None:
        """Detach from the session (it stays open); idempotent."""
        self.closed = True
        entry, self._entry = self._entry, None
        if entry is not None:
            entry.attached = False
            entry.last_used = time.monotonic()

    def _error(self, message: str, code: str) -> bytes:
        return json.dumps({"type": "error", "data": {"message": message, "code": code}}).encode()


def _is_close(frame: bytes) -> bool:
    try:
        message = json.loads(frame)
    except (ValueError, RecursionError):
        return False
    return isinstance(message, dict) and message.get("type") == "close"


def ws_session(
    catalog: EnvCatalog, query: str, usage: Usage, store: McpSessions
) -> OpenEnvSession | AttachedSession:
    """Return the session a ``/ws`` connection serves: attached to ``session_id``, else new."""
    from urllib.parse import parse_qs

    session_id = parse_qs(query).get("session_id")
    if session_id:
        return AttachedSession(store, session_id[0])
    return _with_mcp(OpenEnvSession(catalog, query, usage), store, query, None)
