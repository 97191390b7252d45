"""An OpenEnv server's HTTP routes, as a client reads them: ``/schema`` and ``/health``."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from openenv_gym.errors import ConnectError
from openenv_gym.interop.openenv.schema import Field, field_from_schema
from openenv_gym.interop.openenv.urls import endpoints

__all__ = [
    "ACTION_EXCLUDE",
    "OBSERVATION_EXCLUDE",
    "fetch_json",
    "fields_from_server",
    "health_check",
]

ACTION_EXCLUDE = frozenset({"metadata"})
"""Action model fields that are not part of the action space."""
OBSERVATION_EXCLUDE = frozenset({"reward", "done", "metadata"})
"""Observation model fields that are not part of the observation space."""


def fetch_json(url: str, timeout: float, *, server: str) -> Any:
    """GET ``url`` and parse its JSON body, without any proxy.

    Args:
        url: the HTTP(S) URL.
        timeout: seconds for connecting and reading.
        server: the server URL as the caller gave it, named by errors.

    Raises:
        ConnectError: the server cannot be reached, answers with an error, or not with JSON.

    """
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return json.loads(response.read())
    except (OSError, ValueError) as exc:  # URLError, HTTPError, timeouts; bad JSON
        raise ConnectError(server, f"GET {url} failed: {exc}") from exc


def fields_from_server(url: str, timeout: float) -> tuple[Field, Field]:
    """Fetch the server's ``/schema`` and derive the action and observation fields.

    Args:
        url: the server URL (any form :func:`~openenv_gym.interop.openenv.urls.endpoints`
            accepts).
        timeout: seconds for the request.

    Returns:
        ``(action_field, observation_field)``.

    Raises:
        ValueError: ``url`` is not an OpenEnv server URL.
        ConnectError: the server cannot be reached or its ``/schema`` is not OpenEnv's.

    """
    schema = fetch_json(f"{endpoints(url)[0]}/schema", timeout, server=url)
    if not (isinstance(schema, dict) and "action" in schema and "observation" in schema):
        raise ConnectError(url, "GET /schema did not return action/observation schemas")
    return (
        field_from_schema(schema["action"], exclude=ACTION_EXCLUDE),
        field_from_schema(schema["observation"], exclude=OBSERVATION_EXCLUDE),
    )


def health_check(url: str, timeout: float) -> None:
    """Return once the OpenEnv server at ``url`` answers ``GET /health``.

    Raises:
        ConnectError: it does not answer, or not with JSON.

    """
    fetch_json(endpoints(url)[0] + "/health", timeout, server=url)
