"""OpenEnv's protocol on our server: one env per ``/ws`` connection, JSON text messages.

So that OpenEnv's own clients (``EnvClient``, ``GenericEnvClient``) can use any env we host,
a connection to ``/ws`` speaks
OpenEnv's messages ``{"type": "reset" | "step" | "state" | "close", "data": {...}}`` and gets
``{"type": "observation", "data": {"observation": {...}, "reward": r, "done": d}}``,
``{"type": "state", "data": {...}}`` or ``{"type": "error", "data": {"message", "code"}}``.
:func:`http_reply` answers OpenEnv's ``GET /health``, ``/schema`` and ``/metadata``.
Pure: text in, text out; the connection does the I/O.

Which env: ``/ws`` serves the first hosted spec; ``/envs/<env id>/ws`` (URL-quoted id) any
hosted one, so an OpenEnv client pointed at ``http://host:port/envs/<env id>`` finds its
``/ws``, ``/schema``, ``/metadata`` and ``/health`` there; ``?env=<id>`` works as well.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
import uuid
from typing import Any

import gymnasium
import pydantic

from openenv_gym.interop.hosted import JsonCodec, OpenEnvAsGym, json_codec
from openenv_gym.server.catalog import EnvCatalog
from openenv_gym.server.limits import Limits, Usage

__all__ = ["OPENENV_HTTP_PATHS", "OPENENV_WS_PATH", "OpenEnvSession", "http_reply", "route"]

logger = logging.getLogger("openenv_gym.server")

OPENENV_HTTP_PATHS = frozenset({"/health", "/schema", "/metadata"})
OPENENV_WS_PATH = "/ws"

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
    if path in OPENENV_HTTP_PATHS or path == OPENENV_WS_PATH:
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


def http_reply(catalog: EnvCatalog, path: str, query: str) -> tuple[int, dict[str, Any]]:
    """Answer OpenEnv's HTTP endpoints: ``(status, JSON body)``."""
    if path == "/health":
        return 200, {"status": "healthy"}
    try:
        env_id = _selected_env(catalog, query)
        env = catalog.factory(env_id, {})()
    except Exception as exc:  # an unknown env, or one that fails to build
        return 404, {"detail": f"{type(exc).__name__}: {exc}"}
    try:
        if path == "/schema":
            codec = json_codec(env)
            return 200, {
                "action": codec.action_schema,
                "observation": codec.observation_schema,
                "state": STATE_SCHEMA,
            }
        inner = env.unwrapped
        described = type(getattr(inner, "env", inner))  # an OpenEnv env's own class
        return 200, {
            "name": env_id,
            "description": (described.__doc__ or "").strip().split("\n")[0],
            "version": "openenv-gym",
        }
    finally:
        env.close()


class OpenEnvSession:
    """One OpenEnv client's env on our server (text frames in, text frames out).

    Args:
        catalog: the envs this server hosts.
        query: the ``/ws`` URL's query (``env=<id>`` picks the env).
        usage: the server process's session and env counts.

    """

    text_protocol = True

    def __init__(self, catalog: EnvCatalog, query: str, usage: Usage | None = None) -> None:
        self.catalog = catalog
        self.query = query
        self.usage = usage or Usage(Limits())
        self.closed = False
        self._env: gymnasium.Env[Any, Any] | None = None
        self._codec: JsonCodec | None = None
        self._episode_id: str | None = None
        self._step_count = 0
        self._handlers = {"reset": self._reset, "step": self._step, "state": self._state}

    def handle(self, frame: bytes) -> bytes:
        """Serve one JSON message; return the JSON reply (never raises)."""
        try:
            message = json.loads(frame)
        except ValueError as exc:
            return self._error(f"Invalid JSON: {exc}", "INVALID_JSON")
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "close":
            self.close()
            return json.dumps({"type": "closed", "data": {}}).encode()
        handler = self._handlers.get(kind) if isinstance(kind, str) else None
        if handler is None:
            return self._error(f"Unknown message type: {kind}", "UNKNOWN_TYPE")
        data = message.get("data") or {}
        try:
            reply_type, body = handler(data if isinstance(data, dict) else {})
        except pydantic.ValidationError as exc:
            return self._error(f"Invalid message: {exc}", "VALIDATION_ERROR")
        except Exception as exc:  # the env's own failure: an error reply, the session lives on
            logger.info("openenv session %s failed: %s", kind, exc)
            return self._error(f"{type(exc).__name__}: {exc}", "EXECUTION_ERROR")
        return json.dumps({"type": reply_type, "data": body}).encode()

    def refuse(self, reason: str) -> bytes:
        """Return the error reply for a frame refused before decoding."""
        return self._error(reason, "INVALID_JSON")

    def _error(self, message: str, code: str) -> bytes:
        return json.dumps({"type": "error", "data": {"message": message, "code": code}}).encode()

    def _ensure_env(self) -> tuple[gymnasium.Env[Any, Any], JsonCodec]:
        if self._env is None:
            env_id = _selected_env(self.catalog, self.query)
            factory = self.catalog.factory(env_id, {})
            self.usage.open_session()
            try:
                self.usage.reserve_envs(1)
            except Exception:
                self.usage.close_session()
                raise
            self._env = factory()
            self._codec = json_codec(self._env)
        assert self._codec is not None
        return self._env, self._codec

    def _payload(self, obs: Any, reward: float | None, done: bool) -> dict[str, Any]:
        assert self._codec is not None
        return {"observation": self._codec.observation_to_json(obs), "reward": reward, "done": done}

    def _reset(self, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        env, _ = self._ensure_env()
        self._episode_id = data.get("episode_id") or str(uuid.uuid4())
        native = isinstance(env.unwrapped, OpenEnvAsGym)  # OpenEnv envs take their episode id
        skip = ("seed",) if native else ("seed", "episode_id")
        options = {k: v for k, v in data.items() if k not in skip}
        if native:
            options["episode_id"] = self._episode_id
        obs, _ = env.reset(seed=data.get("seed"), options=options or None)
        self._step_count = 0
        return "observation", self._payload(obs, None, False)

    def _step(self, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        env, codec = self._ensure_env()
        obs, reward, terminated, truncated, _ = env.step(codec.action_from_json(data))
        self._step_count += 1
        return "observation", self._payload(obs, float(reward), bool(terminated or truncated))

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
            env.close()
            self.usage.release_envs(1)
            self.usage.close_session()
