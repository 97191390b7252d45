"""OpenEnv's protocol on our server: one env per ``/ws`` connection, JSON text messages.

So that OpenEnv's own clients (``EnvClient``, ``GenericEnvClient``) can use any env we host,
a connection to ``/ws`` speaks
OpenEnv's messages ``{"type": "reset" | "step" | "state" | "close", "data": {...}}`` and gets
``{"type": "observation", "data": {"observation": {...}, "reward": r, "done": d}}`` (plus
``"metadata"`` for OpenEnv envs, as OpenEnv >= 0.10 sends it),
``{"type": "state", "data": {...}}`` or ``{"type": "error", "data": {"message", "code"}}``.
:func:`http_reply` answers OpenEnv's ``GET /health``, ``/schema`` and ``/metadata``.
Pure: text in, text out; the connection does the I/O.

Which env: ``/ws`` serves the first hosted spec; ``/envs/<env id>/ws`` (URL-quoted id) any
hosted one, so an OpenEnv client pointed at ``http://host:port/envs/<env id>`` finds its
``/ws``, ``/schema``, ``/metadata`` and ``/health`` there; ``?env=<id>`` works as well.

Bounds: a message is at most ``max_json_bytes`` of JSON text (refused before it is parsed, as
parsing costs some 30 bytes of memory per byte of text); JSON nested too deeply for the parser
is an error reply; ``/schema`` and ``/metadata`` build an env once per env id and remember the
answer (the last :data:`DESCRIPTION_CACHE_SIZE` ids), so repeated requests cost nothing.
Every failure is an error reply; :meth:`OpenEnvSession.handle` never raises.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import threading
import urllib.parse
import uuid
import weakref
from typing import Any

import gymnasium
import pydantic

from openenv_gym.errors import CapacityError
from openenv_gym.interop.openenv.hosted import JsonCodec, OpenEnvAsGym, json_codec
from openenv_gym.interop.openenv.openapi import openapi_document
from openenv_gym.server.catalog import EnvCatalog
from openenv_gym.server.limits import Limits, Usage

__all__ = [
    "DEFAULT_MAX_JSON_BYTES",
    "DESCRIPTION_CACHE_SIZE",
    "OPENENV_HTTP_PATHS",
    "OPENENV_WS_PATH",
    "OpenEnvSession",
    "http_reply",
    "route",
]

logger = logging.getLogger("openenv_gym.server")

OPENENV_HTTP_PATHS = frozenset({"/health", "/schema", "/metadata", "/openapi.json"})
OPENENV_WS_PATH = "/ws"
OPENENV_POST_PATHS = frozenset({"/mcp"})
"""Routes answered to a ``POST`` (JSON-RPC, see :mod:`~openenv_gym.interop.openenv.rpc`)."""

DEFAULT_MAX_JSON_BYTES = 1 << 20
"""The largest JSON message a ``/ws`` session parses (1 MiB)."""

DESCRIPTION_CACHE_SIZE = 64
"""How many env ids' ``/schema`` and ``/metadata`` answers a server remembers."""

STATE_SCHEMA = {
    "type": "object",
    "properties": {
        "episode_id": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "step_count": {"type": "integer"},
    },
}


def route(path: str, query: str) -> tuple[str, str] | None:
    """Map a request path to ``(endpoint, query)`` for OpenEnv's protocol, or ``None``.

    ``/envs/<quoted id>/<endpoint>`` becomes ``(/<endpoint>, "env=<id>")``.
    """
    if path.startswith("/envs/"):
        quoted, _, endpoint = path[len("/envs/") :].rpartition("/")
        if not quoted:
            return None
        path = f"/{endpoint}"
        query = urllib.parse.urlencode({"env": urllib.parse.unquote(quoted)})
    if path in OPENENV_HTTP_PATHS or path in OPENENV_POST_PATHS or path == OPENENV_WS_PATH:
        return path, query
    return None


def _selected_env(catalog: EnvCatalog, query: str) -> str:
    """Return the env a query (``env=<id>``) asks for, or the first hosted spec.

    Raises:
        LookupError: no ``env=`` and the server hosts no explicit spec.

    """
    chosen = urllib.parse.parse_qs(query).get("env")
    if chosen:
        return chosen[0]
    if not catalog.specs:
        raise LookupError("this server hosts any gymnasium id: name one with ?env=<id>")
    return catalog.specs[0]


class _Descriptions:
    """The ``/schema`` and ``/metadata`` answers of one catalog's env ids (least recent out)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._answers: collections.OrderedDict[str, dict[str, tuple[int, dict[str, Any]]]] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()

    def get(self, catalog: EnvCatalog, env_id: str) -> dict[str, tuple[int, dict[str, Any]]]:
        with self._lock:
            answers = self._answers.get(env_id)
            if answers is not None:
                self._answers.move_to_end(env_id)
                return answers
        answers = _describe(catalog, env_id)  # outside the lock: building may take a while
        with self._lock:
            self._answers[env_id] = answers
            while len(self._answers) > self.size:
                self._answers.popitem(last=False)
        return answers


_descriptions: weakref.WeakKeyDictionary[EnvCatalog, _Descriptions] = weakref.WeakKeyDictionary()
_descriptions_lock = threading.Lock()


def _describe(catalog: EnvCatalog, env_id: str) -> dict[str, tuple[int, dict[str, Any]]]:
    """Build ``env_id`` once; return its ``/schema`` and ``/metadata`` answers.

    A failure to build is remembered as well: an env that fails is not rebuilt per request.
    """
    try:
        env = catalog.factory(env_id, {})()
    except Exception as exc:  # its constructor's failure, the same for both endpoints
        failure = (404, {"detail": f"{type(exc).__name__}: {exc}"})
        return {"/schema": failure, "/metadata": failure}
    try:
        codec = json_codec(env)
        inner = env.unwrapped
        described = type(getattr(inner, "env", inner))  # an OpenEnv env's own class
        schema = {
            "action": codec.action_schema,
            "observation": codec.observation_schema,
            "state": STATE_SCHEMA,
        }
        metadata = {
            "name": env_id,
            "description": (described.__doc__ or "").strip().split("\n")[0],
            "version": "openenv-gym",
        }
        return {"/schema": (200, schema), "/metadata": (200, metadata)}
    except Exception as exc:  # spaces without a JSON form, say
        failure = (500, {"detail": f"{type(exc).__name__}: {exc}"})
        return {"/schema": failure, "/metadata": failure}
    finally:
        with contextlib.suppress(Exception):
            env.close()


def http_reply(catalog: EnvCatalog, path: str, query: str) -> tuple[int, dict[str, Any]]:
    """Answer OpenEnv's HTTP endpoints: ``(status, JSON body)``; never raises.

    ``/schema`` and ``/metadata`` build the env the first time its id is asked for and answer
    from memory after that.
    """
    if path == "/health":
        return 200, {"status": "healthy"}
    if path == "/openapi.json":
        return 200, openapi_document(f"openenv-gym: {', '.join(catalog.specs) or 'any id'}")
    if path not in OPENENV_HTTP_PATHS:
        return 404, {
            "detail": f"no OpenEnv endpoint {path!r}; endpoints: /health, /schema, /metadata"
        }
    try:
        env_id = _selected_env(catalog, query)
        catalog.lookup(env_id)  # an id this server does not host is refused before any cache
    except Exception as exc:
        return 404, {"detail": f"{type(exc).__name__}: {exc}"}
    with _descriptions_lock:
        cache = _descriptions.get(catalog)
        if cache is None:
            cache = _descriptions[catalog] = _Descriptions(DESCRIPTION_CACHE_SIZE)
    return cache.get(catalog, env_id)[path]


class _BuildError(Exception):
    """The env of a session could not be built (OpenEnv's ``FACTORY_ERROR``)."""


_ERROR_CODES: tuple[tuple[type[Exception], str], ...] = (
    (pydantic.ValidationError, "VALIDATION_ERROR"),
    (CapacityError, "CAPACITY_REACHED"),
    (_BuildError, "FACTORY_ERROR"),
)


class OpenEnvSession:
    """One OpenEnv client's env on our server (text frames in, text frames out).

    Args:
        catalog: the envs this server hosts.
        query: the ``/ws`` URL's query (``env=<id>`` picks the env).
        usage: the server process's session and env counts; the env and its session are
            counted once the env is built, and released when it closes.
        max_json_bytes: the largest message parsed; larger ones get an error reply.

    """

    text_protocol = True

    def __init__(
        self,
        catalog: EnvCatalog,
        query: str,
        usage: Usage | None = None,
        *,
        max_json_bytes: int = DEFAULT_MAX_JSON_BYTES,
    ) -> None:
        self.catalog = catalog
        self.query = query
        self.usage = usage or Usage(Limits())
        self.max_json_bytes = max_json_bytes
        self.closed = False
        self._env: gymnasium.Env[Any, Any] | None = None
        self._codec: JsonCodec | None = None
        self._episode_id: str | None = None
        self._step_count = 0
        self._handlers = {"reset": self._reset, "step": self._step, "state": self._state}
        self.tools: Any = None  # this env's MCP tools, built on the first "mcp" message
        self.mcp: Any = None  # a callable answering a JSON-RPC request (set by the router)
        self._handlers["mcp"] = self._mcp

    def handle(self, frame: bytes) -> bytes:
        """Serve one JSON message; return the JSON reply (never raises)."""
        try:
            return self._handle(frame)
        except Exception as exc:  # a bug of ours: still a reply, and the session lives on
            logger.exception("openenv session failed to answer")
            return self._error(f"internal error: {type(exc).__name__}: {exc}", "EXECUTION_ERROR")

    def _handle(self, frame: bytes) -> bytes:
        if len(frame) > self.max_json_bytes:
            return self._error(
                f"message too large: {len(frame)} bytes of JSON, at most {self.max_json_bytes}",
                "INVALID_JSON",
            )
        try:
            message = json.loads(frame)
        except RecursionError:
            return self._error("Invalid JSON: nested too deeply", "INVALID_JSON")
        except ValueError as exc:
            return self._error(f"Invalid JSON: {exc}", "INVALID_JSON")
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "close":
            self.close()
            return json.dumps({"type": "closed", "data": {}}).encode()
        handler = self._handlers.get(kind) if isinstance(kind, str) else None
        if handler is None:
            return self._error(f"Unknown message type: {kind!r:.80}", "UNKNOWN_TYPE")
        data = message.get("data") or {}
        try:
            reply_type, body = handler(data if isinstance(data, dict) else {})
            return json.dumps({"type": reply_type, "data": body}).encode()
        except Exception as exc:  # the env's own failure: an error reply, the session lives on
            logger.info("openenv session %s failed: %s", kind, exc)
            code = next((c for t, c in _ERROR_CODES if isinstance(exc, t)), "EXECUTION_ERROR")
            prefix = "Invalid message" if code == "VALIDATION_ERROR" else type(exc).__name__
            return self._error(f"{prefix}: {exc}", code)

    def refuse(self, reason: str) -> bytes:
        """Return the error reply for a frame refused before decoding."""
        return self._error(reason, "INVALID_JSON")

    def _error(self, message: str, code: str) -> bytes:
        return json.dumps({"type": "error", "data": {"message": message, "code": code}}).encode()

    def environment(self) -> gymnasium.Env[Any, Any]:
        """Return this session's env, built (and counted) on first use.

        Raises:
            UnknownEnvError: the server does not host the env asked for.
            CapacityError: the server is at its session or env limit.
            Exception: the env's constructor failed.

        """
        return self._ensure_env()[0]

    def _mcp(self, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if self.mcp is None:
            raise LookupError("MCP requests are not served on this session")
        reply: dict[str, Any] = self.mcp(self, data)
        return "mcp", reply

    def _ensure_env(self) -> tuple[gymnasium.Env[Any, Any], JsonCodec]:
        """Build this session's env on first use, counting it (and the session) only if built.

        Raises:
            UnknownEnvError: the server does not host the env asked for.
            CapacityError: the server is at its session or env limit.
            _BuildError: the env's constructor (or its JSON form) failed.

        """
        if self._env is None:
            env_id = _selected_env(self.catalog, self.query)
            factory = self.catalog.factory(env_id, {})
            with contextlib.ExitStack() as undo:  # on any failure, give back what was taken
                self.usage.open_session()
                undo.callback(self.usage.close_session)
                self.usage.reserve_envs(1)
                undo.callback(self.usage.release_envs, 1)
                try:
                    env = factory()
                    undo.callback(env.close)
                    codec = json_codec(env)
                except Exception as exc:
                    raise _BuildError(
                        f"cannot build {env_id!r}: {type(exc).__name__}: {exc}"
                    ) from exc
                undo.pop_all()
            self._env, self._codec = env, codec
        assert self._codec is not None
        return self._env, self._codec

    def _payload(
        self, obs: Any, reward: float | None, done: bool, info: dict[str, Any]
    ) -> dict[str, Any]:
        """Build an observation reply's data, as OpenEnv (>= 0.10) serializes one.

        An OpenEnv env's ``metadata`` (our ``info``) goes inside ``observation`` always and
        beside it when not empty (``StepResult.metadata`` of OpenEnv's clients); a gymnasium
        env's info is not sent (it need not be JSON).
        """
        assert self._codec is not None and self._env is not None
        payload: dict[str, Any] = {
            "observation": self._codec.observation_to_json(obs),
            "reward": reward,
            "done": done,
        }
        if isinstance(self._env.unwrapped, OpenEnvAsGym) and isinstance(
            payload["observation"], dict
        ):
            payload["observation"]["metadata"] = info
            if info:
                payload["metadata"] = info
        return payload

    def _reset(self, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        env, _ = self._ensure_env()
        self._episode_id = data.get("episode_id") or str(uuid.uuid4())
        native = isinstance(env.unwrapped, OpenEnvAsGym)  # OpenEnv envs take their episode id
        skip = ("seed",) if native else ("seed", "episode_id")
        options = {k: v for k, v in data.items() if k not in skip}
        if native:
            options["episode_id"] = self._episode_id
        obs, info = env.reset(seed=data.get("seed"), options=options or None)
        self._step_count = 0
        return "observation", self._payload(obs, None, False, info)

    def _step(self, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        env, codec = self._ensure_env()
        obs, reward, terminated, truncated, info = env.step(codec.action_from_json(data))
        self._step_count += 1
        done = bool(terminated or truncated)
        return "observation", self._payload(obs, float(reward), done, info)

    def _state(self, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        env = self._env.unwrapped if self._env is not None else None
        if isinstance(env, OpenEnvAsGym):
            return "state", env.state()  # the OpenEnv env's own state, custom fields included
        return "state", {"episode_id": self._episode_id, "step_count": self._step_count}

    def close(self) -> None:
        """Close the env; idempotent."""
        self.closed = True
        env, self._env = self._env, None
        if env is not None:
            try:
                env.close()
            finally:
                self.usage.release_envs(1)
                self.usage.close_session()
