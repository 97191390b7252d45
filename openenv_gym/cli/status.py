"""``openenv-gym status URL... [--docker] [--once]``: a live table of a fleet of servers.

Reads ``GET /status.json`` of every server (``ws://``, ``wss://``, ``http(s)://`` or
``host:port``; Ray-started servers by the URLs their provider reports, Docker-started ones
found with ``--docker``) and shows one row per server and one per live session, refreshed every
``--interval`` seconds (``rich``'s live display; ``--once`` prints the tables once and exits:
0 if every server answered, 1 if one did not).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

__all__ = ["ServerStatus", "add_commands", "docker_targets", "fetch_status", "status_url"]

_MAX_STATUS_BYTES = 16 << 20
_SCHEMES = {"ws": "http", "wss": "https", "http": "http", "https": "https"}


@dataclasses.dataclass(frozen=True)
class Target:
    """One server to watch: its URL and the token it requires (if any)."""

    url: str
    token: str | None = None
    name: str = ""


@dataclasses.dataclass(frozen=True)
class ServerStatus:
    """What one server answered: its ``/status.json`` document, or why there is none."""

    target: Target
    status: dict[str, Any] | None
    error: str | None = None


def status_url(url: str) -> str:
    """Return the ``/status.json`` URL of a server URL (``ws://h:p`` -> ``http://h:p/...``).

    Raises:
        ValueError: the URL's scheme is none of ws, wss, http, https.

    """
    if "://" not in url:
        url = f"http://{url}"
    parts = urllib.parse.urlsplit(url)
    scheme = _SCHEMES.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"cannot watch {url!r}: expected ws://, wss://, http:// or host:port")
    return urllib.parse.urlunsplit((scheme, parts.netloc, "/status.json", "", ""))


def fetch_status(target: Target, *, timeout: float = 5.0) -> ServerStatus:
    """Read one server's ``/status.json`` (never raises: failures are in ``error``)."""
    headers = {"Authorization": f"Bearer {target.token}"} if target.token else {}
    try:
        request = urllib.request.Request(status_url(target.url), headers=headers)
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            body = reply.read(_MAX_STATUS_BYTES + 1)
        if len(body) > _MAX_STATUS_BYTES:
            return ServerStatus(target, None, f"status over {_MAX_STATUS_BYTES} bytes")
        return ServerStatus(target, json.loads(body))
    except urllib.error.HTTPError as exc:
        reason = exc.read(200).decode(errors="replace").strip()
        return ServerStatus(target, None, f"HTTP {exc.code}: {reason}")
    except (OSError, ValueError) as exc:
        return ServerStatus(target, None, f"{type(exc).__name__}: {exc}")


def docker_targets(token: str | None) -> list[Target]:
    """Return the running openenv-gym containers as targets (``providers.docker``).

    A container's token is ``token`` if given, else the one its provider gave it (its
    ``OPENENV_GYM_TOKEN``: whoever may list the engine's containers may read it anyway).
    """
    from openenv_gym.providers.docker import CONTAINER_PORT, list_containers

    targets = []
    for container in list_containers():
        if container.status != "running":
            continue
        bindings = (container.ports or {}).get(f"{CONTAINER_PORT}/tcp") or []
        if not bindings:
            continue
        environ = dict(
            entry.partition("=")[::2] for entry in container.attrs["Config"].get("Env") or []
        )
        url = f"ws://127.0.0.1:{bindings[0]['HostPort']}"
        targets.append(
            Target(url, token or environ.get("OPENENV_GYM_TOKEN"), f"docker {container.short_id}")
        )
    return targets


def _gather(targets: Sequence[Target], timeout: float) -> list[ServerStatus]:
    if not targets:
        return []
    with concurrent.futures.ThreadPoolExecutor(min(16, len(targets))) as pool:
        return list(pool.map(lambda t: fetch_status(t, timeout=timeout), targets))


def _tables(statuses: Sequence[ServerStatus]) -> Any:
    from rich.console import Group
    from rich.table import Table

    servers = Table(title="servers", title_justify="left")
    for column in ("server", "state", "workers", "specs", "sessions", "envs", "steps/s", "errors"):
        servers.add_column(column, justify="right" if column in ("sessions", "envs") else "left")
    sessions = Table(title="live sessions", title_justify="left")
    for column in (
        "server",
        "worker",
        "session",
        "protocol",
        "spec",
        "envs",
        "env steps",
        "requests",
        "errors",
        "idle s",
    ):
        sessions.add_column(column)
    for server in statuses:
        name = server.target.name or server.target.url
        if server.status is None:
            servers.add_row(name, f"[red]{server.error}[/red]", "-", "-", "-", "-", "-", "-")
            continue
        doc = server.status
        errors = sum(sum(row["errors"].values()) for row in doc["totals"])
        servers.add_row(
            name,
            "up",
            str(len(doc["workers"])),
            ", ".join(doc["specs"]) or "any id",
            str(doc["live_sessions"]),
            str(doc["live_envs"]),
            f"{doc['steps_per_s']:.1f}",
            str(errors),
        )
        for session in doc["sessions"]:
            sessions.add_row(
                name,
                str(session["worker"]),
                f"#{session['id']}",
                session["protocol"],
                session["spec"],
                str(session["num_envs"]),
                str(session["steps"]),
                str(session["requests"]),
                str(session["errors"]),
                f"{session['idle_s']:.1f}",
            )
    return Group(servers, sessions)


def _targets(args: argparse.Namespace) -> list[Target]:
    token = args.token or os.environ.get("OPENENV_GYM_TOKEN") or None
    targets = [Target(url, token) for url in args.urls]
    if args.docker:
        targets += docker_targets(args.token)
    return targets


def _status(args: argparse.Namespace) -> int:
    try:
        from rich.console import Console
    except ImportError:
        print("openenv-gym status needs rich: pip install 'openenv-gym[status]'", file=sys.stderr)
        return 2

    targets = _targets(args)
    if not targets:
        print("openenv-gym status: name server URLs, or pass --docker", file=sys.stderr)
        return 2
    console = Console(width=None if Console().is_terminal else 200)
    if args.once:
        statuses = _gather(targets, args.timeout)
        console.print(_tables(statuses))
        return 0 if all(s.status is not None for s in statuses) else 1
    from rich.live import Live

    with Live(_tables(_gather(targets, args.timeout)), console=console) as live:
        try:
            while True:
                time.sleep(args.interval)  # the refresh period of a display, not a sync wait
                live.update(
                    _tables(_gather(_targets(args) if args.docker else targets, args.timeout))
                )
        except KeyboardInterrupt:
            return 0


def add_commands(commands: Any) -> None:
    """Add ``status`` to the command parser."""
    status = commands.add_parser("status", help="a live table of servers, their sessions and rates")
    status.add_argument(
        "urls", nargs="*", metavar="URL", help="ws://, wss://, http:// or host:port"
    )
    status.add_argument("--docker", action="store_true", help="also every openenv-gym container")
    status.add_argument("--once", action="store_true", help="print the tables once and exit")
    status.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    status.add_argument("--timeout", type=float, default=5.0, help="seconds per server request")
    status.add_argument(
        "--token", help="the servers' token (default: $OPENENV_GYM_TOKEN; containers: their own)"
    )
    status.set_defaults(run=_status)
