"""The attacks of the trust-boundary campaign, one function per hole, against a live server.

Each function takes a :class:`Target` (a server already started the way the attack needs:
see :mod:`openenv_gym.testing.compliance.campaign`, which starts them) and returns an
:class:`AttackResult`: whether the server withstood it, with figures. An attack never raises
for what the server does; it reports it. Only loopback is addressed, and every loop is bounded
in count and time.

This module holds the holes of code execution, safety kwargs, origin and host checks, the MCP
port and consumer-visible errors; memory (:mod:`.amplification`), connection slots
(:mod:`.slots`), terminal isolation (:mod:`.terminal`) and the observation routes
(:mod:`.observe`) have modules of their own and are re-exported here.
"""

from __future__ import annotations

import asyncio
import functools
import json
import multiprocessing
import os
import select
import socket
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np

from openenv_gym.client.connection import Connection
from openenv_gym.errors import OpenEnvError, UnknownEnvError
from openenv_gym.protocol.messages import Op
from openenv_gym.testing.compliance._support import (
    AttackResult,
    GoodClient,
    Target,
    failed,
    http_status,
    not_runnable,
    result,
)
from openenv_gym.testing.compliance.amplification import (
    attack_compression_bombs,
    attack_continuation_frames,
    attack_deep_json,
    attack_large_json,
    attack_msgpack_maps_before_hello,
    attack_render_1024_envs,
    attack_unread_requests_threads,
)
from openenv_gym.testing.compliance.observe import (
    attack_observe_huge_request,
    attack_observe_origin_and_host,
    attack_observe_scrape_storm,
    attack_observe_without_token,
)
from openenv_gym.testing.compliance.slots import (
    attack_failing_constructor_slots,
    attack_half_open_flood,
    attack_unread_close,
)
from openenv_gym.testing.compliance.terminal import (
    attack_terminal_other_workdir,
    attack_terminal_server_environ,
    attack_terminal_setsid_escape,
)

__all__ = [
    "TERMINAL",
    "attack_async_vector_remote_error",
    "attack_compression_bombs",
    "attack_continuation_frames",
    "attack_deep_json",
    "attack_duplicate_authorization",
    "attack_failing_constructor_slots",
    "attack_half_open_flood",
    "attack_large_json",
    "attack_make_bogus_kwarg",
    "attack_mcp_slow_tool",
    "attack_mcp_without_token",
    "attack_msgpack_maps_before_hello",
    "attack_native_engine_named_by_client",
    "attack_observe_huge_request",
    "attack_observe_origin_and_host",
    "attack_observe_scrape_storm",
    "attack_observe_without_token",
    "attack_origin_and_host",
    "attack_remote_id_dials_no_url",
    "attack_remote_id_runs_no_code",
    "attack_render_1024_envs",
    "attack_safety_kwargs",
    "attack_set_attr_safety",
    "attack_terminal_other_workdir",
    "attack_terminal_server_environ",
    "attack_terminal_setsid_escape",
    "attack_unread_close",
    "attack_unread_requests_threads",
]

TERMINAL = "openenv_gym.envs.terminal:TerminalEnv"


def _make_error(target: Target, env_id: str, kwargs: dict[str, Any]) -> str | None:
    """MAKE ``env_id`` with ``kwargs`` on a fresh session; return the error text, or ``None``."""
    connection = Connection(target.url, token=target.token, call_timeout=30)
    try:
        connection.request(Op.MAKE, {"env_id": env_id, "kwargs": kwargs})
    except OpenEnvError as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        connection.close()
    return None


# ------------------------------------------------------------------ 1. code execution


def attack_remote_id_runs_no_code(target: Target) -> AttackResult:
    """MAKE ``openenv/Remote-v0`` with ``env_id="os:system"``: no command may run.

    The target should be served with ``--allow-any-id`` (where the hole was).
    """
    name = "remote_id_runs_no_code"
    marker = Path(tempfile.gettempdir()) / f"openenv-compliance-{os.urandom(6).hex()}"
    try:
        kwargs = {"env_id": "os:system", "command": f"touch {marker}"}
        error = _make_error(target, "openenv/Remote-v0", kwargs)
        ran = marker.exists()
    except OpenEnvError as exc:
        return failed(name, exc)
    finally:
        marker.unlink(missing_ok=True)
    return result(
        name,
        {"MAKE answered an error": error is not None, "the command did not run": not ran},
        {"marker_created": ran, "reply": (error or "ok (the env was built)")[:160]},
    )


def attack_native_engine_named_by_client(target: Target) -> AttackResult:
    """MAKE engines the operator did not host, natively: every one refused as unknown.

    ``envpool:<task>``, ``ale:<game>``, a ``module:attr`` VectorEnv class and ``os:system``
    with ``server_vectorization="vector_entry_point"``: an engine is the operator's to name,
    so even ``--allow-any-id`` (the target's flag) admits none of them.
    """
    name = "native_engine_named_by_client"
    names = [
        "envpool:CartPole-v1",
        "ale:pong",
        "openenv_gym.testing.vector_envs:CountingSameStepVectorEnv",
        "os:system",
    ]
    errors: dict[str, str] = {}
    try:
        for env_id in names:
            connection = Connection(target.url, token=target.token, call_timeout=30)
            try:
                body = {
                    "env_id": env_id,
                    "num_envs": 2,
                    "server_vectorization": "vector_entry_point",
                }
                connection.request(Op.MAKE, body)
                errors[env_id] = "built"
            except UnknownEnvError as exc:
                errors[env_id] = f"unknown: {type(exc).__name__}"
            except OpenEnvError as exc:
                errors[env_id] = type(exc).__name__
            finally:
                connection.close()
    except OpenEnvError as exc:
        return failed(name, exc)
    return result(
        name,
        {f"{env_id} refused as unknown": errors[env_id].startswith("unknown") for env_id in names},
        {"replies": ", ".join(f"{env_id}: {reply}" for env_id, reply in errors.items())},
    )


def attack_remote_id_dials_no_url(target: Target) -> AttackResult:
    """MAKE ``openenv/CartPole-v1`` with a client-chosen ``url``: the server dials nothing."""
    name = "remote_id_dials_no_url"
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        try:
            kwargs = {"url": f"ws://127.0.0.1:{port}", "token": "x"}
            error = _make_error(target, "openenv/CartPole-v1", kwargs)
        except OpenEnvError as exc:
            return failed(name, exc)
        dialled, _, _ = select.select([listener], [], [], 0.2)
    return result(
        name,
        {"MAKE answered an error": error is not None, "no connection to the listener": not dialled},
        {"inbound_connection": bool(dialled), "reply": (error or "ok (the env was built)")[:160]},
    )


# ------------------------------------------------------------------ 2. safety kwargs


def attack_safety_kwargs(target: Target) -> AttackResult:
    """Move TerminalEnv's safety settings at MAKE: every attempt is refused by name.

    The target hosts :data:`TERMINAL` as the documented command line does
    (``openenv-gym serve openenv_gym.envs.terminal:TerminalEnv``), no kwarg fixed or allowed.
    """
    name = "safety_kwargs"
    attempts: dict[str, Any] = {
        "allow_outside_container": True,
        "timeout": 1e6,
        "tasks": "/etc/passwd",
    }
    checks: dict[str, bool] = {}
    figures: dict[str, Any] = {}
    try:
        for kwarg, value in attempts.items():
            error = _make_error(target, TERMINAL, {kwarg: value})
            checks[f"MAKE {kwarg}= refused naming it"] = error is not None and kwarg in error
            figures[f"make_{kwarg}"] = _short(error or "accepted")
    except OpenEnvError as exc:
        return failed(name, exc, figures)
    return result(name, checks, figures)


def attack_set_attr_safety(target: Target) -> AttackResult:
    """SET_ATTR TerminalEnv's ``timeout`` on a live episode: refused by name.

    The target hosts :data:`TERMINAL` with ``allow_outside_container`` fixed by the operator
    (a hosting file), so that a plain MAKE builds an env to try it on.
    """
    name = "set_attr_safety"
    try:
        connection = Connection(target.url, token=target.token, call_timeout=30)
        try:
            connection.request(Op.MAKE, {"env_id": TERMINAL})
            try:
                connection.request(Op.SET_ATTR, {"name": "timeout", "values": 1e6})
                error = None
            except OpenEnvError as exc:
                error = f"{type(exc).__name__}: {exc}"
        finally:
            connection.close()
    except OpenEnvError as exc:
        return failed(name, exc)
    return result(
        name,
        {"SET_ATTR timeout refused naming it": error is not None and "timeout" in error},
        {"set_attr_timeout": _short(error or "accepted")},
    )


def _short(text: str) -> str:
    """Keep the part of an error's text after the URL, shortened for a table."""
    return text.split(": ", 2)[-1][:160]


# ------------------------------------------------------------------ 3. origin and host


def attack_origin_and_host(target: Target) -> AttackResult:
    """Upgrade from a foreign web page (``Origin``) or a rebound name (``Host``): refused.

    The target is a tokenless loopback server started with no ``--allow-origin``.
    """
    name = "origin_and_host"
    evil = [("Origin", "http://evil.example")]
    try:
        plain, _ = http_status(target.url)
        origin, origin_head = http_status(target.url, headers=evil)
        origin_ws, _ = http_status(target.url, path="/ws", headers=evil)
        host, host_head = http_status(target.url, host="evil.example")
    except OSError as exc:
        return failed(name, exc)
    return result(
        name,
        {
            "a plain upgrade is admitted (101)": plain == 101,
            "a foreign Origin is refused with 403": origin == 403,
            "a foreign Origin on /ws is refused with 403": origin_ws == 403,
            "Host evil.example is refused (4xx)": 400 <= host < 500,
        },
        {
            "plain_status": plain,
            "origin_status": origin,
            "origin_ws_status": origin_ws,
            "host_status": host,
            "origin_reply": origin_head.split(b"\r\n")[0].decode(errors="replace"),
            "host_reply": host_head.split(b"\r\n")[0].decode(errors="replace"),
        },
    )


def attack_duplicate_authorization(target: Target) -> AttackResult:
    """Send two ``Authorization`` headers: an HTTP 400 reply, not a silent drop.

    The target requires a token (``target.token``).
    """
    name = "duplicate_authorization"
    token = target.token or "x"
    twice = [("Authorization", f"Bearer {token}"), ("Authorization", "Bearer other")]
    try:
        status, head = http_status(target.url, headers=twice)
    except OSError as exc:
        return failed(name, exc)
    return result(
        name,
        {"answered with HTTP 400": status == 400},
        {"status": status, "reply": head.split(b"\r\n")[0].decode(errors="replace")},
    )


# ------------------------------------------------------------------ 4. MCP


def _post(url: str, payload: dict[str, Any], headers: dict[str, str]) -> int:
    body = json.dumps(payload).encode()
    request = urllib.request.Request(
        url,
        data=body,
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            **headers,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def attack_mcp_without_token(target: Target) -> AttackResult:
    """Call the MCP port without the server's token: HTTP 401, also for a tool call."""
    name = "mcp_without_token"
    if target.mcp_url is None:
        return not_runnable(name, "the target serves no MCP port")
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "compliance", "version": "1"},
        },
    }
    call = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": "wait", "arguments": {"seconds": 5}},
    }
    try:
        started = time.monotonic()
        statuses = {
            "initialize": _post(target.mcp_url, initialize, {}),
            "tool_call": _post(target.mcp_url, call, {}),
            "wrong_token": _post(target.mcp_url, call, {"Authorization": "Bearer guess"}),
        }
        seconds = time.monotonic() - started
    except OSError as exc:
        return failed(name, exc)
    checks = {f"{what} without the token answered 401": s == 401 for what, s in statuses.items()}
    checks["no tool ran (answered in under 2 s)"] = seconds < 2.0
    return result(name, checks, {**{f"{k}_status": v for k, v in statuses.items()}, "s": seconds})


async def _slow_tool_call(url: str, token: str | None, seconds: float) -> tuple[bool, float]:
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with (
        create_mcp_http_client(headers=headers) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        started = time.monotonic()
        reply = await asyncio.wait_for(client.call_tool("wait", {"seconds": seconds}), 30)
        return not reply.is_error, time.monotonic() - started


def attack_mcp_slow_tool(target: Target, *, seconds: float = 2.0) -> AttackResult:
    """Run a slow MCP tool (``SlowToolEnv.wait``) while a good client steps on the main port.

    The target hosts ``openenv_gym.testing.envs:SlowToolEnv`` (``target.env_id``) with its
    MCP port at ``target.mcp_url``.
    """
    name = "mcp_slow_tool"
    if target.mcp_url is None:
        return not_runnable(name, "the target serves no MCP port")
    try:
        import mcp  # noqa: F401
    except ImportError:
        return not_runnable(name, "the mcp package is not installed (extra 'mcp')")
    try:
        with GoodClient(target) as good:
            with good.window():
                ok, took = asyncio.run(_slow_tool_call(target.mcp_url, target.token, seconds))
            figures = good.figures()
    except Exception as exc:  # the SDK raises exception groups of anything
        return failed(name, exc)
    figures.update(tool_ok=ok, tool_seconds=took)
    worst = figures["good_client_max_ms"]
    return result(
        name,
        {
            "the tool answered": ok,
            "main-port steps p50 < 200 ms meanwhile": good.ok(),
            "no main-port step waited for the tool (max < 1 s)": worst is not None and worst < 1000,
        },
        figures,
    )


# ------------------------------------------------------------------ 8. consumer errors


def attack_make_bogus_kwarg(target: Target) -> AttackResult:
    """``gymnasium.make("openenv_gym:openenv/CartPole-v1", bogus=1)``: a TypeError naming it."""
    name = "make_bogus_kwarg"
    started = time.monotonic()
    try:
        env = gymnasium.make(
            "openenv_gym:openenv/CartPole-v1", url=target.url, token=target.token, bogus=1
        )
        env.close()
        error: BaseException | None = None
    except Exception as exc:
        error = exc
    text = f"{type(error).__name__}: {error}" if error is not None else "no error"
    return result(
        name,
        {
            "raises a TypeError": isinstance(error, TypeError),
            "the message names 'bogus'": "bogus" in text,
        },
        {"error": text.splitlines()[0][:200], "seconds": time.monotonic() - started},
    )


def attack_async_vector_remote_error(target: Target, *, timeout: float = 10.0) -> AttackResult:
    """Step ``AsyncVectorEnv`` of two openenv CartPoles with an invalid action: it raises.

    The remote ``AssertionError`` must reach the caller within ``timeout`` seconds (it used to
    hang: the remote error class could not be pickled back from the worker).
    """
    name = "async_vector_remote_error"
    make = functools.partial(
        gymnasium.make, "openenv_gym:openenv/CartPole-v1", url=target.url, token=target.token
    )
    envs = gymnasium.vector.AsyncVectorEnv([make, make], context="spawn")
    error: BaseException | None = None
    try:
        envs.reset(seed=0)
        started = time.monotonic()
        envs.step_async(np.array([7, 7]))
        try:
            envs.step_wait(timeout=timeout)
        except multiprocessing.TimeoutError as exc:
            error = exc
        except Exception as exc:
            error = exc
        seconds = time.monotonic() - started
    finally:
        envs.close(terminate=True)
    hung = isinstance(error, multiprocessing.TimeoutError)
    text = "no error" if error is None else f"{type(error).__name__}: {error}".splitlines()[0]
    return result(
        name,
        {
            f"raised within {timeout} s": error is not None and not hung,
            "an AssertionError": isinstance(error, AssertionError),
        },
        {"seconds": seconds, "error": text[:200]},
    )
