"""The OpenAPI document of OpenEnv's routes on our port (``GET /openapi.json``).

OpenEnv 0.10's ``openenv validate --url`` reads ``info.version`` and ``paths`` from it and
decides the server's mode from the paths: ``/reset``, ``/step`` and ``/state`` over HTTP mean
simulation mode, none of them production mode. We serve episodes over ``/ws`` (stateful, one
env per connection) and MCP over ``POST /mcp``, not OpenEnv's stateless HTTP ``/reset`` and
``/step``: by that contract this is a production-mode server, and the document lists exactly
the routes that answer.
"""

from __future__ import annotations

from typing import Any

__all__ = ["OPENAPI_VERSION", "openapi_document"]

OPENAPI_VERSION = "1.0.0"
"""The version of OpenEnv's HTTP contract these routes follow (``info.version``)."""


def _json_get(summary: str) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "responses": {"200": {"description": "JSON", "content": {"application/json": {}}}},
        }
    }


def openapi_document(title: str) -> dict[str, Any]:
    """Return the OpenAPI 3.1 document of the routes a server with OpenEnv's surface answers.

    Args:
        title: the API's title (the env it serves).

    """
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": OPENAPI_VERSION},
        "paths": {
            "/health": _json_get("Liveness: {'status': 'healthy'}"),
            "/metadata": _json_get("The env's name and description"),
            "/schema": _json_get("Action, observation and state JSON schemas"),
            "/mcp": {
                "post": {
                    "summary": "MCP JSON-RPC 2.0: tools/list, tools/call, openenv/session/*",
                    "requestBody": {"content": {"application/json": {}}},
                    "responses": {"200": {"description": "a JSON-RPC response"}},
                }
            },
            "/ws": {
                "get": {
                    "summary": "WebSocket: OpenEnv's reset/step/state/close/mcp messages",
                    "responses": {"101": {"description": "Switching Protocols"}},
                }
            },
        },
    }
