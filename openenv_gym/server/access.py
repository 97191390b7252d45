"""Who may talk to a server: one access check for every surface it serves.

The binary protocol, OpenEnv's ``/ws`` and HTTP routes and the MCP HTTP endpoint all pass the
same :meth:`AccessPolicy.check` on the request's headers before anything else happens:

* **Token**: with a token configured, exactly one ``Authorization: Bearer <token>`` header
  (compared in constant time); two ``Authorization`` headers are refused, not guessed at.
* **Origin**: browsers send ``Origin`` with every WebSocket upgrade and cross-site request; a
  request carrying one that the operator did not list (``--allow-origin``; none by default) is
  refused, so no web page can drive a server on the user's machine. Programs (our client,
  OpenEnv's, the MCP SDK's) send no ``Origin`` and are not affected.
* **Host**: against DNS rebinding (a page whose name resolves to 127.0.0.1), a ``Host`` must
  be an IP literal, ``localhost``, or a name the operator listed (``--allow-host``). A server
  with a token and no listed names accepts any ``Host``: a rebound page cannot present the
  token.

Pure: headers in, a verdict out. The connection turns a :class:`Refusal` into an HTTP reply.
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
from collections.abc import Iterable, Sequence
from http import HTTPStatus

__all__ = ["AccessPolicy", "Refusal"]

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


@dataclasses.dataclass(frozen=True)
class Refusal:
    """Why a request is refused: the HTTP status to answer and a one-line reason."""

    status: HTTPStatus
    reason: str


def _host_name(host: str) -> str:
    """Return the name part of a ``Host`` header value (port and IPv6 brackets removed)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    name, sep, port = host.rpartition(":")
    return name if sep and port.isdigit() and ":" not in name else host


def _is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@dataclasses.dataclass(frozen=True)
class AccessPolicy:
    """The operator's access rules, the same for every surface of one server.

    Attributes:
        token: shared secret clients present as ``Authorization: Bearer``; ``None``: none.
        allowed_origins: ``Origin`` values admitted (exact, e.g. ``"https://app.example"``);
            empty: a request carrying any ``Origin`` is refused.
        allowed_hosts: ``Host`` names admitted besides IP literals and ``localhost``.

    """

    token: str | None = None
    allowed_origins: frozenset[str] = frozenset()
    allowed_hosts: frozenset[str] = frozenset()

    @classmethod
    def from_options(
        cls,
        token: str | None,
        allowed_origins: Sequence[str] = (),
        allowed_hosts: Sequence[str] = (),
    ) -> AccessPolicy:
        """Build a policy from configuration values (names are compared lowercase)."""
        return cls(
            token=token or None,
            allowed_origins=frozenset(origin.rstrip("/") for origin in allowed_origins),
            allowed_hosts=frozenset(host.lower() for host in allowed_hosts),
        )

    def check(
        self, headers: Iterable[tuple[str, str]], *, require_token: bool = True
    ) -> Refusal | None:
        """Return why a request with these headers is refused, or ``None`` to admit it.

        Args:
            headers: the request's header ``(name, value)`` pairs, repeated names included.
            require_token: ``False`` for a liveness probe (``/healthz``): Origin and Host are
                checked, the token is not (Docker's HEALTHCHECK and orchestrators' probes
                carry none, and the reply reveals only that something listens).

        Returns:
            The refusal, or ``None`` when the request may proceed.

        """
        values: dict[str, list[str]] = {}
        for name, value in headers:
            values.setdefault(name.lower(), []).append(value)
        checks = [self._check_origin, self._check_host]
        if require_token:
            checks.append(self._check_token)
        for check in checks:
            refusal = check(values)
            if refusal is not None:
                return refusal
        return None

    def _check_origin(self, values: dict[str, list[str]]) -> Refusal | None:
        for origin in values.get("origin", []):
            if origin.rstrip("/") not in self.allowed_origins:
                allowed = ", ".join(sorted(self.allowed_origins)) or "none"
                return Refusal(
                    HTTPStatus.FORBIDDEN, f"origin {origin!r} is not allowed; allowed: {allowed}"
                )
        return None

    def _check_host(self, values: dict[str, list[str]]) -> Refusal | None:
        hosts = values.get("host", [])
        if len(hosts) > 1:
            return Refusal(HTTPStatus.BAD_REQUEST, "more than one Host header")
        name = _host_name(hosts[0]) if hosts else ""
        if name in self.allowed_hosts or name in _LOOPBACK_NAMES or _is_ip_literal(name):
            return None
        if self.token is not None and not self.allowed_hosts:
            return None  # a rebound page cannot present the token
        allowed = ", ".join(sorted(self.allowed_hosts | {"localhost", "IP addresses"}))
        return Refusal(HTTPStatus.FORBIDDEN, f"host {name!r} is not allowed; allowed: {allowed}")

    def _check_token(self, values: dict[str, list[str]]) -> Refusal | None:
        supplied = values.get("authorization", [])
        if len(supplied) > 1:
            return Refusal(HTTPStatus.BAD_REQUEST, "more than one Authorization header")
        if self.token is None:
            return None
        expected = f"Bearer {self.token}".encode()
        if supplied and hmac.compare_digest(supplied[0].encode(errors="surrogateescape"), expected):
            return None
        return Refusal(HTTPStatus.UNAUTHORIZED, "invalid or missing token")
