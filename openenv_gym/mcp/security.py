"""The MCP HTTP port's share of the server's access policy, and the SDK's own settings.

Every HTTP request passes the server's :class:`~openenv_gym.server.access.AccessPolicy`
(token, ``Origin``, ``Host``) before the SDK sees it (:class:`AccessMiddleware`); the SDK's own
DNS-rebinding check is on too, with hosts and origins derived from the same policy and the bind
address (:func:`transport_security`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable
from typing import Any

from openenv_gym.server.access import AccessPolicy

__all__ = ["AccessMiddleware", "transport_security"]

logger = logging.getLogger("openenv_gym.mcp")

_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")

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
