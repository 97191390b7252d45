"""``openenv-gym serve``: run an environment server; flags derive from ``ServerConfig``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any


def _serve(args: argparse.Namespace) -> int:
    from openenv_gym.providers.local import READY_PREFIX
    from openenv_gym.server.app import ServerConfig, run_server
    from openenv_gym.server.hosting import HostingPolicy, load_hosting_file, pool_fields
    from openenv_gym.server.limits import Limits

    try:
        specs = [*args.specs, *(load_hosting_file(args.hosting) if args.hosting else [])]
        specs += _engine_specs(args.vector_entry_point)
    except (ValueError, OSError) as exc:
        print(f"openenv-gym serve: {exc}", file=sys.stderr)
        return 2
    try:
        pool = pool_fields(
            {
                "concurrent_steps": args.concurrent_steps,
                "step_timeout": args.step_timeout,
                "step_isolation": args.step_isolation,
            },
            "openenv-gym serve",
        )
    except ValueError as exc:
        print(f"openenv-gym serve: {exc}", file=sys.stderr)
        return 2
    if not specs and not args.allow_any_id:
        print("openenv-gym serve: name env ids to host, or pass --allow-any-id", file=sys.stderr)
        return 2
    config = ServerConfig(
        specs=tuple(specs),
        allow_any_id=args.allow_any_id,
        policy=HostingPolicy(
            allow_kwargs=frozenset(args.env_kwargs_allow),
            set_attrs=frozenset(args.set_attr_allow),
            render_modes=None if args.render_modes is None else frozenset(args.render_modes),
            **pool,
        ),
        host=args.host,
        port=args.port,
        workers=args.workers,
        debug=args.debug,
        max_message_bytes=args.max_message_bytes,
        limits=Limits(
            max_sessions=args.max_sessions,
            max_envs_per_session=args.max_envs_per_session,
            max_envs=args.max_envs,
            max_connections=args.max_connections,
            max_connections_per_peer=args.max_connections_per_peer,
        ),
        token=args.token or os.environ.get("OPENENV_GYM_TOKEN") or None,
        idle_timeout=args.idle_timeout or None,
        threads=args.threads,
        certfile=args.certfile,
        keyfile=args.keyfile,
        mcp_port=args.mcp_port,
        mcp_mode=args.mcp_mode,
        mcp_tool_timeout=args.mcp_tool_timeout,
        allow_origins=tuple(args.allow_origin),
        allow_hosts=tuple(args.allow_host),
        handshake_timeout=args.handshake_timeout,
        close_timeout=args.close_timeout,
        metrics=args.metrics,
        openenv=args.openenv,
        compression=tuple(args.compression),
        keepalive_ping=args.keepalive_ping,
        busy_wait=args.busy_wait,
    )

    def ready(url: str) -> None:
        if args.announce:
            print(f"{READY_PREFIX}{url}", flush=True)
        logging.getLogger("openenv_gym.server").info(
            "serving %s on %s (%d worker(s), pid %d)",
            ", ".join(s if isinstance(s, str) else s.spec for s in config.specs)
            or "any gymnasium id",
            url,
            config.workers,
            os.getpid(),
        )

    try:
        run_server(config, on_ready=ready)
    except (ValueError, OSError) as exc:
        print(f"openenv-gym serve: {exc}", file=sys.stderr)
        return 1
    return 0


def _seconds(text: str) -> float:
    """Parse a number of seconds >= 0 (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return value


def _add_serve_limits(serve: argparse.ArgumentParser) -> None:
    """Add ``serve``'s address, limit and timeout flags; defaults come from ``ServerConfig``."""
    from openenv_gym.protocol.compression import CODECS
    from openenv_gym.server.app import ServerConfig
    from openenv_gym.server.limits import Limits

    config, limits = ServerConfig(), Limits()
    serve.add_argument("--host", default=config.host, help="address to bind (default loopback)")
    serve.add_argument("--port", type=int, default=config.port, help="port (0: pick a free one)")
    serve.add_argument(
        "--workers", type=int, default=config.workers, help="processes sharing the port"
    )
    serve.add_argument("--debug", action="store_true", help="send tracebacks in error replies")
    serve.add_argument("--max-message-bytes", type=int, default=config.max_message_bytes)
    serve.add_argument("--max-sessions", type=int, default=limits.max_sessions, help="per process")
    serve.add_argument("--max-envs-per-session", type=int, default=limits.max_envs_per_session)
    serve.add_argument("--max-envs", type=int, default=limits.max_envs, help="per process")
    serve.add_argument(
        "--max-connections",
        type=int,
        default=limits.max_connections,
        help="open connections per process (at least --max-sessions)",
    )
    serve.add_argument(
        "--max-connections-per-peer",
        type=int,
        default=limits.max_connections_per_peer,
        help="open connections per client address per process",
    )
    serve.add_argument(
        "--idle-timeout",
        type=float,
        default=config.idle_timeout,
        help="close sessions idle this many seconds (0: never)",
    )
    serve.add_argument(
        "--handshake-timeout",
        type=float,
        default=config.handshake_timeout,
        help="seconds a connection has for its upgrade and first message (HELLO)",
    )
    serve.add_argument(
        "--close-timeout",
        type=float,
        default=config.close_timeout,
        help="seconds a closing handshake may take before the connection is dropped",
    )
    serve.add_argument(
        "--compression",
        nargs="*",
        choices=CODECS,
        default=config.compression,
        metavar="CODEC",
        help=f"codecs clients may choose at HELLO ({', '.join(CODECS)}; none: no codec; "
        "default: all installed)",
    )
    serve.add_argument(
        "--openenv",
        action=argparse.BooleanOptionalAction,
        default=config.openenv,
        help="also speak OpenEnv's protocol on the port: /ws, /health, /schema, /metadata",
    )
    serve.add_argument(
        "--metrics",
        action=argparse.BooleanOptionalAction,
        default=config.metrics,
        help="count what is served; answer GET /metrics, /status.json and the page at /",
    )
    serve.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="an Origin admitted (e.g. https://app.example; repeatable); none by default, so "
        "no web page can drive the server",
    )
    serve.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host name admitted besides IP addresses and localhost (repeatable)",
    )


def _engine_specs(pairs: list[str]) -> list[Any]:
    """Turn ``--vector-entry-point ID=ENGINE`` pairs into hosted specs.

    Raises:
        ValueError: a pair has no ``=``.

    """
    from openenv_gym.server.hosting import HostedSpec

    hosted = []
    for pair in pairs:
        spec, sep, engine = pair.partition("=")
        if not (sep and spec and engine):
            raise ValueError(f"--vector-entry-point {pair!r}: expected ID=ENGINE")
        hosted.append(HostedSpec(spec, vector_entry_point=engine))
    return hosted


def add_commands(commands: Any) -> None:
    """Add ``serve`` to the command parser."""
    serve = commands.add_parser("serve", help="run an environment server")
    serve.add_argument("specs", nargs="*", help="gymnasium ids or module:attr entry points")
    serve.add_argument(
        "--allow-any-id",
        action="store_true",
        help="also host the env classes of gymnasium's registry (never openenv/* ids)",
    )
    serve.add_argument(
        "--hosting",
        metavar="FILE",
        help="a TOML/JSON hosting file: specs with allowed and fixed kwargs (server/hosting.py)",
    )
    serve.add_argument(
        "--vector-entry-point",
        action="append",
        default=[],
        metavar="ID=ENGINE",
        help="host ID with this native engine for server_vectorization='vector_entry_point': "
        "envpool:<task>, ale:<game> or module:attr (a VectorEnv class or factory)",
    )
    serve.add_argument(
        "--env-kwargs-allow",
        nargs="+",
        default=[],
        metavar="NAME",
        help="more MAKE kwargs clients may pass (besides make's own, render_mode, and scalar "
        "constructor parameters of gymnasium ids)",
    )
    serve.add_argument(
        "--set-attr-allow",
        nargs="+",
        default=[],
        metavar="NAME",
        help="attributes clients may set (SET_ATTR); none by default",
    )
    serve.add_argument(
        "--render-modes",
        nargs="+",
        metavar="MODE",
        help="render modes clients may ask for (default: the env's, minus human and *_list)",
    )
    _add_serve_limits(serve)
    serve.add_argument(
        "--token", help="shared secret clients must present (default: $OPENENV_GYM_TOKEN)"
    )
    from openenv_gym.providers.local import read_token_fd

    serve.add_argument(
        "--token-fd",
        dest="token",
        type=read_token_fd,
        metavar="FD",
        help="read --token from this inherited file descriptor to its end (not seen in argv)",
    )
    serve.add_argument(
        "--mcp-port", type=int, help="also serve the first env as MCP tools at http://HOST:PORT/mcp"
    )
    serve.add_argument("--mcp-mode", choices=["simulation", "production"], default="simulation")
    serve.add_argument(
        "--mcp-tool-timeout",
        type=float,
        metavar="SECONDS",
        help="an MCP tool call running longer is reported to the agent as a timeout (default 30)",
    )
    serve.add_argument("--certfile", help="PEM certificate chain: serve wss:// (TLS)")
    serve.add_argument("--keyfile", help="PEM private key of --certfile")
    serve.add_argument(
        "--threads",
        action="store_true",
        help="serve each session on a thread: a hung env stalls only its session",
    )
    serve.add_argument(
        "--concurrent-steps",
        type=int,
        metavar="N",
        help="pool sessions: step up to N envs at once on threads (0: inline; default: inline "
        "until a step takes over 2 ms, then up to 64 threads)",
    )
    serve.add_argument(
        "--step-timeout",
        type=float,
        metavar="SECONDS",
        help="pool sessions: default deadline of a step; past it the env is stopped",
    )
    serve.add_argument(
        "--step-isolation",
        choices=["none", "process"],
        help="pool sessions: 'process' runs each env in a child killed at its deadline",
    )
    from openenv_gym.server.app import ServerConfig

    serve.add_argument(
        "--keepalive-ping",
        type=float,
        default=ServerConfig.keepalive_ping,
        metavar="SECONDS",
        help="ping clients whose pool steps run this often (keepalive of long steps)",
    )
    serve.add_argument(
        "--busy-wait",
        type=_seconds,
        default=ServerConfig.busy_wait,
        metavar="SECONDS",
        help="after each reply, poll this long for the next request instead of sleeping "
        "(saves a wake-up per step; keeps a core busy meanwhile; default 0: off)",
    )
    serve.add_argument(
        "--announce",
        action="store_true",
        help="print 'openenv-gym ready URL' on stdout once listening",
    )
    serve.set_defaults(run=_serve)
