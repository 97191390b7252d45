"""Attacks on OpenEnv 0.10's routes on our port: ``POST /mcp``, ``/openapi.json``, attaching.

* :func:`attack_openenv_mcp_without_token`: every new route answers 401 without the token,
  and no session or tool call happens behind the refusal;
* :func:`attack_openenv_mcp_session_flood`: ``openenv/session/create`` far past the session
  limit: refused past it, every request answered, the process's memory bounded;
* :func:`attack_openenv_mcp_bodies`: oversized, chunked, unfinished and malformed bodies get
  413/411/an abort/a JSON-RPC error, never a crash;
* :func:`attack_openenv_attach_foreign_session`: ``/ws?session_id=`` with a guessed id or a
  second WebSocket on a live session is refused.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from openenv_gym.testing.compliance._support import AttackResult, Target, failed, result
from openenv_gym.testing.rawws import raw_connection, ws_connection

__all__ = [
    "attack_openenv_attach_foreign_session",
    "attack_openenv_mcp_bodies",
    "attack_openenv_mcp_session_flood",
    "attack_openenv_mcp_without_token",
]


def _http(target: Target) -> str:
    return target.url.replace("ws://", "http://", 1)


def _rpc(target: Target, method: str, params: dict[str, Any], token: str | None) -> tuple[int, Any]:
    """POST one JSON-RPC request to ``/mcp``; return ``(status, parsed body or None)``."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"{_http(target)}/mcp", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), None


def _get_status(url: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def attack_openenv_mcp_without_token(target: Target) -> AttackResult:
    """Use ``POST /mcp`` and ``GET /openapi.json`` without the token: 401, nothing done.

    The target requires a token (``target.token``).
    """
    name = "openenv_mcp_without_token"
    try:
        statuses = {
            "session_create": _rpc(target, "openenv/session/create", {}, None)[0],
            "tool_call": _rpc(target, "tools/call", {"name": "reset", "arguments": {}}, None)[0],
            "wrong_token": _rpc(target, "openenv/session/create", {}, "guess")[0],
            "openapi": _get_status(f"{_http(target)}/openapi.json", None),
        }
        good_status, good = _rpc(target, "openenv/session/create", {}, target.token)
    except OSError as exc:
        return failed(name, exc)
    checks = {f"{what} answered 401": status == 401 for what, status in statuses.items()}
    session_id = (good or {}).get("result", {}).get("session_id")
    checks["with the token a session is made"] = good_status == 200 and bool(session_id)
    if session_id:
        _rpc(target, "openenv/session/close", {"session_id": session_id}, target.token)
    return result(name, checks, {f"{k}_status": v for k, v in statuses.items()})


def _peak_rss_mib(pid: int | None) -> float:
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def attack_openenv_mcp_session_flood(target: Target, *, requests: int = 200) -> AttackResult:
    """Ask ``openenv/session/create`` ``requests`` times on a server of 2 sessions.

    At most 2 are made, every other request gets a JSON-RPC error naming the limit, the
    server answers ``/health`` throughout, and its peak memory grows by under 100 MiB.
    """
    name = "openenv_mcp_session_flood"
    made: list[str] = []
    refused = unanswered = 0
    before = _peak_rss_mib(target.pid)
    started = time.monotonic()
    try:
        for _ in range(requests):
            status, body = _rpc(target, "openenv/session/create", {}, target.token)
            session_id = (body or {}).get("result", {}).get("session_id")
            if session_id:
                made.append(session_id)
            elif status == 200 and "capacity" in str((body or {}).get("error", "")).lower():
                refused += 1
            else:
                unanswered += 1
            if time.monotonic() - started > 60:
                break
        healthy = _get_status(f"{_http(target)}/health", target.token) == 200
        for session_id in made:
            _rpc(target, "openenv/session/close", {"session_id": session_id}, target.token)
        status, again = _rpc(target, "openenv/session/create", {}, target.token)
        reusable = bool((again or {}).get("result", {}).get("session_id"))
        if reusable:
            _rpc(target, "openenv/session/close", again["result"], target.token)
    except OSError as exc:
        return failed(name, exc)
    growth = _peak_rss_mib(target.pid) - before
    checks = {
        "at most 2 sessions made": len(made) <= 2,
        "every other request refused by the limit": refused + len(made) == requests,
        "health answered during the flood": healthy,
        "slots given back on close": reusable,
        "peak memory grew by under 100 MiB": growth < 100,
    }
    figures = {"made": len(made), "refused": refused, "other": unanswered, "rss_growth": growth}
    return result(name, checks, figures)


def _raw_post(target: Target, head: str, body: bytes, *, timeout: float = 5.0) -> bytes:
    """Send a raw request; return what the server answers before it closes (or ``b""``)."""
    sock = raw_connection(target.url, timeout)
    try:
        sock.sendall(head.encode() + body)
        reply, deadline = b"", time.monotonic() + timeout
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            reply += chunk
        return reply
    finally:
        sock.close()


def attack_openenv_mcp_bodies(target: Target) -> AttackResult:
    """Send ``POST /mcp`` bodies that are too large, chunked, unfinished or not JSON.

    The server is started with ``--handshake-timeout 1``: an unfinished body is dropped
    within it. A 2 MiB body is refused from its ``Content-Length`` (before it is sent).
    """
    name = "openenv_mcp_bodies"
    base = "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    try:
        big = _raw_post(target, base + f"Content-Length: {2 << 20}\r\n\r\n", b"")
        chunked = _raw_post(target, base + "Transfer-Encoding: chunked\r\n\r\n", b"5\r\n{}")
        started = time.monotonic()
        unfinished = _raw_post(target, base + "Content-Length: 100\r\n\r\n", b"{", timeout=5)
        held = time.monotonic() - started
        garbage = _raw_post(target, base + "Content-Length: 5\r\n\r\n", b"{{{{{")
        huge_head = _raw_post(target, base + "X: " + "a" * (32 << 10) + "\r\n\r\n", b"")
        health = _get_status(f"{_http(target)}/health", target.token)
    except OSError as exc:
        return failed(name, exc)
    checks = {
        "2 MiB body refused with 413": big.startswith(b"HTTP/1.1 413"),
        "chunked body refused with 411": chunked.startswith(b"HTTP/1.1 411"),
        "unfinished body dropped within 3 s": not unfinished and held < 3,
        "non-JSON body is a JSON-RPC parse error": b'"code": -32700' in garbage,
        "32 KiB head refused with 431": huge_head.startswith(b"HTTP/1.1 431"),
        "server still healthy": health == 200,
    }
    return result(name, checks, {"unfinished_held_s": held})


def attack_openenv_attach_foreign_session(target: Target) -> AttackResult:
    """Attach a WebSocket to a guessed session id, and a second one to a live session."""
    name = "openenv_attach_foreign_session"
    ws_base = target.url
    try:
        with ws_connection(f"{ws_base}/ws?session_id=guessed", 10) as ws:
            ws.send(json.dumps({"type": "reset", "data": {}}))
            guessed = json.loads(ws.recv(10))
        _, body = _rpc(target, "openenv/session/create", {}, target.token)
        session_id = body["result"]["session_id"]
        with ws_connection(f"{ws_base}/ws?session_id={session_id}", 10) as first:
            first.send(json.dumps({"type": "reset", "data": {"seed": 1}}))
            owner = json.loads(first.recv(10))
            with ws_connection(f"{ws_base}/ws?session_id={session_id}", 10) as second:
                second.send(json.dumps({"type": "reset", "data": {}}))
                intruder = json.loads(second.recv(10))
        _rpc(target, "openenv/session/close", {"session_id": session_id}, target.token)
    except (OSError, KeyError, TypeError) as exc:
        return failed(name, exc)
    checks = {
        "guessed id refused": guessed.get("type") == "error"
        and "Unknown session_id" in guessed["data"]["message"],
        "owner served": owner.get("type") == "observation",
        "second WebSocket refused": intruder.get("type") == "error"
        and "already has an attached WebSocket" in intruder["data"]["message"],
    }
    return result(name, checks, {})
