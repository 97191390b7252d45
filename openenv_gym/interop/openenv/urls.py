"""The URL forms that name an OpenEnv server, and the HTTP and WebSocket URLs they lead to."""

from __future__ import annotations

import urllib.parse

__all__ = ["endpoints"]

SCHEMES = {
    "openenv+ws": ("http", "ws"),
    "openenv+wss": ("https", "wss"),
    "http": ("http", "ws"),
    "https": ("https", "wss"),
    "ws": ("http", "ws"),
    "wss": ("https", "wss"),
}
"""Each accepted scheme and the ``(http, websocket)`` schemes it stands for."""


def endpoints(url: str) -> tuple[str, str]:
    """Split an OpenEnv server URL into its HTTP base URL and its WebSocket session URL.

    Args:
        url: ``openenv+ws://host:port``, ``openenv+wss://host:port``, ``http(s)://host:port``
            or ``ws(s)://host:port/ws``, optionally under a path prefix.

    Returns:
        ``(http_base, ws_url)``, e.g. ``("http://h:1", "ws://h:1/ws")``.

    Raises:
        ValueError: an unknown scheme or no host.

    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in SCHEMES or not parts.netloc:
        raise ValueError(
            f"not an OpenEnv server URL: {url!r} (expected openenv+ws://host:port, "
            "openenv+wss://, http(s)://host:port or ws(s)://host:port/ws)"
        )
    http, ws = SCHEMES[parts.scheme]
    prefix = parts.path.rstrip("/")
    if parts.scheme in ("ws", "wss") and prefix.endswith("/ws"):
        prefix = prefix[: -len("/ws")]
    return f"{http}://{parts.netloc}{prefix}", f"{ws}://{parts.netloc}{prefix}/ws"
