"""A hosted env as MCP tools (the official ``mcp`` SDK): one code path for trainers and agents.

* **simulation** mode (training, evaluation): tools ``reset``, ``step`` and ``state``, with JSON
  schemas derived from the env's spaces, plus the env's own tools;
* **production** mode (an agent acting in a live world): only the env's own tools; ``reset`` is
  never exposed, so an agent cannot reset its world.

An env declares its own tools by marking methods with ``openenv_gym.tools.tool``; the same
methods are what its ``step`` calls, and what ``RemoteEnv.call(name, ...)`` reaches through the
Gymnasium facade.
Values cross as JSON: observations and actions in gymnasium's ``to_jsonable`` form.

Serve with ``openenv-gym serve ENV --mcp-port M`` (streamable HTTP at ``/mcp``; the main port
speaks WebSocket, which the SDK's HTTP stack cannot share) or ``openenv-gym mcp ENV`` (stdio).
One env instance serves the MCP endpoint (an agent's world). The SDK is imported lazily.

Safety, as on every surface of the server:

* every HTTP request passes the server's :class:`~openenv_gym.server.access.AccessPolicy`
  (token, ``Origin``, ``Host``) before the SDK sees it; the SDK's own DNS-rebinding check is
  on too, with hosts and origins derived from the same policy and the bind address;
* tools run on worker threads (at most ``tool_threads`` at once), never on the event loop that
  also serves the WebSocket port, and one at a time on the env (a lock);
* a tool call that outlives ``tool_timeout`` seconds is answered with a tool error naming the
  tool and the time waited. Python cannot kill a thread: the call runs on until it returns,
  holding the env, so later calls wait for it (each within its own deadline) and a tool that
  never returns makes the env unusable until the server restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ipaddress
import json
import logging
import socket
import threading
import time
import typing
from collections.abc import Callable, Iterator
from typing import Any, Literal

import gymnasium
import numpy as np
import pydantic

from openenv_gym.errors import OpenEnvError
from openenv_gym.interop.openenv.schema import schema_from_space
from openenv_gym.server.access import AccessPolicy
from openenv_gym.tools import tools

__all__ = [
    "DEFAULT_TOOL_THREADS",
    "DEFAULT_TOOL_TIMEOUT",
    "AccessMiddleware",
    "Mode",
    "ToolRegistry",
    "ToolRunner",
    "ToolTimeoutError",
    "build_mcp_server",
    "jsonable",
    "serve_http",
    "serve_stdio",
    "transport_security",
]

logger = logging.getLogger("openenv_gym.mcp")

Mode = Literal["simulation", "production"]

DEFAULT_TOOL_TIMEOUT = 30.0
"""Seconds a tool call may take before the agent gets a tool error."""

DEFAULT_TOOL_THREADS = 4
"""Worker threads for tool calls; calls beyond them (e.g. behind hung ones) wait their turn."""

_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def jsonable(value: Any) -> Any:
    """Turn numpy values (at any depth) into JSON values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    return value


def _method_schema(method: Callable[..., Any]) -> dict[str, Any]:
    """Return the JSON schema of a method's keyword arguments (from its annotations)."""
    empty = inspect.Parameter.empty
    hints = typing.get_type_hints(method)
    fields: dict[str, Any] = {}
    for name, parameter in inspect.signature(method).parameters.items():
        default = ... if parameter.default is empty else parameter.default
        fields[name] = (hints.get(name, Any), default)
    model = pydantic.create_model(f"{method.__name__}_arguments", **fields)
    schema: dict[str, Any] = model.model_json_schema()
    return schema


class ToolRegistry:
    """The tools of one env in one mode, and how to call them. No MCP types here.

    Args:
        env: the env (a gymnasium env, possibly wrapped).
        mode: ``"simulation"`` or ``"production"``.

    """

    def __init__(self, env: gymnasium.Env[Any, Any], mode: Mode) -> None:
        self.env = env
        self.mode = mode
        self.tools: dict[str, tuple[str, dict[str, Any], Callable[..., Any]]] = {}
        if mode == "simulation":
            self._add_simulation_tools()
        for name, method in tools(env.unwrapped).items():
            doc = (inspect.getdoc(method) or name).split("\n")[0]
            self.tools[name] = (doc, _method_schema(method), method)

    def _add_simulation_tools(self) -> None:
        env = self.env
        reset_schema = {
            "type": "object",
            "properties": {"seed": {"type": "integer"}, "options": {"type": "object"}},
        }
        step_schema = {
            "type": "object",
            "properties": {"action": schema_from_space(env.action_space)},
            "required": ["action"],
        }
        self.tools["reset"] = (
            "Start a new episode; returns the first observation.",
            reset_schema,
            self._reset,
        )
        self.tools["step"] = (
            "Act once; returns observation, reward, terminated, truncated, info.",
            step_schema,
            self._step,
        )
        self.tools["state"] = (
            "The episode's state.",
            {"type": "object", "properties": {}},
            self._state,
        )

    def _reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        obs, info = self.env.reset(seed=seed, options=options)
        return {"observation": self._obs(obs), "info": jsonable(info)}

    def _step(self, action: Any) -> Any:
        value = self.env.action_space.from_jsonable([action])[0]
        obs, reward, terminated, truncated, info = self.env.step(value)
        return {
            "observation": self._obs(obs),
            "reward": float(reward),
            "terminated": bool(terminated),
            "truncated": bool(truncated),
            "info": jsonable(info),
        }

    def _state(self) -> Any:
        state = getattr(self.env.unwrapped, "state", None)
        return jsonable(state() if callable(state) else state)

    def _obs(self, obs: Any) -> Any:
        return jsonable(self.env.observation_space.to_jsonable([obs])[0])

    def call(self, name: str, arguments: dict[str, Any]) -> Any:
        """Call tool ``name``; return its JSON result.

        Raises:
            KeyError: no such tool in this mode.
            Exception: whatever the tool raises.

        """
        if name not in self.tools:
            raise KeyError(f"no tool {name!r} in {self.mode} mode; tools: {sorted(self.tools)}")
        return jsonable(self.tools[name][2](**arguments))


class ToolTimeoutError(OpenEnvError, TimeoutError):
    """A tool call did not return within its deadline (it may still be running on its thread)."""

    def __init__(self, tool: str, elapsed: float, timeout: float) -> None:
        super().__init__(tool, elapsed, timeout)
        self.tool = tool
        self.elapsed = elapsed
        self.timeout = timeout

    def __str__(self) -> str:
        return (
            f"tool {self.tool!r} did not return within {self.timeout:g} s (elapsed "
            f"{self.elapsed:.1f} s); it cannot be stopped and holds the env until it returns"
        )


class ToolRunner:
    """Run a registry's tools off the event loop: on worker threads, one at a time, with deadlines.

    Each call gets its own daemon thread (at most ``threads`` alive at once), so a tool that
    never returns cannot hold up the process's exit either.

    Args:
        registry: the tools.
        timeout: seconds a call may take, waiting for a thread and for the env included.
        threads: worker threads; a call finding all of them busy waits (within its deadline).

    Raises:
        ValueError: ``timeout`` or ``threads`` is not positive.

    """

    def __init__(
        self,
        registry: ToolRegistry,
        *,
        timeout: float = DEFAULT_TOOL_TIMEOUT,
        threads: int = DEFAULT_TOOL_THREADS,
    ) -> None:
        if timeout <= 0 or threads <= 0:
            raise ValueError(
                f"tool timeout and threads must be positive, got timeout={timeout}, "
                f"threads={threads}"
            )
        self.registry = registry
        self.timeout = timeout
        self._env_lock = threading.Lock()  # one env: two tool calls never run on it at once
        self._threads = asyncio.Semaphore(threads)

    async def call(self, name: str, arguments: dict[str, Any]) -> Any:
        """Call tool ``name`` on a worker thread; return its JSON result.

        Raises:
            ToolTimeoutError: no result within ``timeout`` seconds (the thread runs on).
            KeyError: no such tool in this mode.
            Exception: whatever the tool raises.

        """
        import anyio

        start = time.monotonic()
        deadline = start + self.timeout
        try:
            with anyio.fail_after(self.timeout):
                await self._threads.acquire()  # released by the thread when the tool returns
                return await self._start(name, arguments, deadline)
        except TimeoutError as exc:
            raise ToolTimeoutError(name, time.monotonic() - start, self.timeout) from exc

    def _start(self, name: str, arguments: dict[str, Any], deadline: float) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def settle(result: Any, error: BaseException | None) -> None:
            self._threads.release()
            if future.done():  # its caller gave up (timeout or cancellation)
                return
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)

        def work() -> None:
            result, error = None, None
            try:
                result = self._call_holding_env(name, arguments, deadline)
            except BaseException as exc:  # handed to the caller, raised there
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
                loop.call_soon_threadsafe(settle, result, error)

        threading.Thread(target=work, name=f"openenv-gym-mcp-{name}", daemon=True).start()
        return future

    def _call_holding_env(self, name: str, arguments: dict[str, Any], deadline: float) -> Any:
        start = time.monotonic()
        if not self._env_lock.acquire(timeout=max(0.0, deadline - start)):
            raise ToolTimeoutError(name, time.monotonic() - start, self.timeout)
        try:
            if time.monotonic() >= deadline:  # its caller has given up: do not act for it
                raise ToolTimeoutError(name, time.monotonic() - start, self.timeout)
            return self.registry.call(name, arguments)
        finally:
            self._env_lock.release()


def build_mcp_server(
    env: gymnasium.Env[Any, Any],
    *,
    mode: Mode,
    name: str,
    tool_timeout: float = DEFAULT_TOOL_TIMEOUT,
    tool_threads: int = DEFAULT_TOOL_THREADS,
) -> Any:
    """Return an ``mcp`` low-level ``Server`` exposing ``env``'s tools in ``mode``.

    Args:
        env: the one env the tools act on.
        mode: ``"simulation"`` or ``"production"`` (see the module doc).
        name: the server's name, shown to agents.
        tool_timeout: seconds a tool call may take before it is answered with a tool error.
        tool_threads: worker threads running tool calls.

    Raises:
        ImportError: the ``mcp`` SDK is not installed (``pip install 'openenv-gym[mcp]'``).
        ValueError: ``tool_timeout`` or ``tool_threads`` is not positive.

    """
    from mcp import types
    from mcp.server.lowlevel import Server

    registry = ToolRegistry(env, mode)
    runner = ToolRunner(registry, timeout=tool_timeout, threads=tool_threads)

    async def list_tools(context: Any, params: Any) -> Any:
        return types.ListToolsResult(
            tools=[
                types.Tool(name=tool_name, description=doc, input_schema=schema)
                for tool_name, (doc, schema, _) in registry.tools.items()
            ]
        )

    async def call_tool(context: Any, params: Any) -> Any:
        try:
            result = await runner.call(params.name, dict(params.arguments or {}))
        except Exception as exc:  # reported to the agent as a tool error, the server lives on
            if isinstance(exc, ToolTimeoutError):
                logger.warning("mcp: %s", exc)
            message = f"{type(exc).__name__}: {exc}"
            return types.CallToolResult(
                content=[types.TextContent(type="text", text=message)], is_error=True
            )
        structured = result if isinstance(result, dict) else {"result": result}
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=json.dumps(result))],
            structured_content=structured,
        )

    return Server(name, on_list_tools=list_tools, on_call_tool=call_tool)


async def serve_stdio(
    env: gymnasium.Env[Any, Any],
    *,
    mode: Mode,
    name: str,
    tool_timeout: float = DEFAULT_TOOL_TIMEOUT,
) -> None:
    """Serve ``env``'s tools over this process's stdin/stdout until the client leaves."""
    from mcp.server.stdio import stdio_server

    server = build_mcp_server(env, mode=mode, name=name, tool_timeout=tool_timeout)
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


ASGIApp = Callable[[dict[str, Any], Any, Any], Any]


class AccessMiddleware:
    """ASGI middleware: every HTTP request passes ``policy`` before ``app`` sees it.

    A refused request is answered with the refusal's status and reason (plain text), and
    ``WWW-Authenticate: Bearer`` on a 401; the app never runs for it.

    Args:
        app: the ASGI app behind (the SDK's streamable HTTP app).
        policy: the server's access policy.

    """

    def __init__(self, app: ASGIApp, policy: AccessPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Check an HTTP request's headers, then refuse it or pass it on."""
        if scope["type"] != "http":  # lifespan: the SDK's session manager starts there
            await self.app(scope, receive, send)
            return
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        refusal = self.policy.check(headers)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        client = scope.get("client") or ("?", 0)
        logger.warning("mcp: refused a request from %s: %s", client[0], refusal.reason)
        body = f"{refusal.reason}\n".encode()
        reply_headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
        ]
        if refusal.status == 401:
            reply_headers.append((b"www-authenticate", b"Bearer"))
        await send(
            {"type": "http.response.start", "status": int(refusal.status), "headers": reply_headers}
        )
        await send({"type": "http.response.body", "body": body})


def _host_literal(name: str) -> str:
    """Return ``name`` as it appears in a ``Host`` header (IPv6 literals bracketed)."""
    try:
        address = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return name.lower()
    return f"[{address}]" if address.version == 6 else str(address)


def _local_addresses() -> list[str]:
    """Return this machine's own names and addresses (for a server bound to every interface)."""
    names = [socket.gethostname()]
    with contextlib.suppress(OSError):
        names += [str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None)]
    return names


def transport_security(policy: AccessPolicy, bind_host: str) -> Any:
    """Return the SDK's ``TransportSecuritySettings`` for a server bound to ``bind_host``.

    DNS-rebinding protection is on. Hosts admitted: loopback, the bind address (every local
    address when bound to all interfaces) and the policy's hosts, with any port. Origins
    admitted: the policy's (none by default). The SDK matches names exactly, so a client
    reaching the MCP port through another name needs it listed in the policy (``--allow-host``).
    """
    from mcp.server.transport_security import TransportSecuritySettings

    names = {*_LOOPBACK_HOSTS, *policy.allowed_hosts}
    unspecified = bind_host in ("", "0.0.0.0", "::")
    names.update(_local_addresses() if unspecified else [bind_host])
    hosts = sorted({_host_literal(name) for name in names})
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[*hosts, *(f"{host}:*" for host in hosts)],
        allowed_origins=sorted(policy.allowed_origins),
    )


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def serve_http(
    env: gymnasium.Env[Any, Any],
    *,
    mode: Mode,
    name: str,
    host: str,
    port: int,
    policy: AccessPolicy | None = None,
    tool_timeout: float = DEFAULT_TOOL_TIMEOUT,
    on_bound: Callable[[int], None] | None = None,
) -> None:
    """Serve ``env``'s tools as streamable HTTP at ``http://host:port/mcp`` (uvicorn).

    The socket is bound before anything else, so once ``on_bound`` has been called clients can
    connect (they wait in the backlog while the app starts).

    Args:
        env: the one env the tools act on.
        mode: ``"simulation"`` or ``"production"``.
        name: the server's name, shown to agents.
        host: address to bind.
        port: port to bind (0: any free one).
        policy: the server's access policy (default: no token, no origin, loopback names).
        tool_timeout: seconds a tool call may take.
        on_bound: called with the bound port once the socket listens.

    Raises:
        OSError: the address cannot be bound.
        ImportError: the ``mcp`` SDK or uvicorn is not installed.

    """
    import uvicorn

    policy = policy or AccessPolicy()
    server = build_mcp_server(env, mode=mode, name=name, tool_timeout=tool_timeout)
    sdk_app = server.streamable_http_app(
        host=host, transport_security=transport_security(policy, host)
    )
    config = uvicorn.Config(AccessMiddleware(sdk_app, policy), log_level="warning", lifespan="on")
    sock = _bind(host, port)
    if on_bound is not None:
        on_bound(sock.getsockname()[1])
    try:
        await _uvicorn_server(config).serve(sockets=[sock])
    finally:
        sock.close()


def _uvicorn_server(config: Any) -> Any:
    """Return uvicorn's server minus its signal handlers: the hosting process owns the signals."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # SIGTERM/SIGINT stop the whole server, which cancels this task

    return Server(config)
