"""The ``openenv-gym`` command: ``serve``, ``bench``, ``demo`` and ``docker ...``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from openenv_gym.errors import OpenEnvError

__all__ = ["main"]


def _serve(args: argparse.Namespace) -> int:
    from openenv_gym.providers.local import READY_PREFIX
    from openenv_gym.server.app import ServerConfig, run_server
    from openenv_gym.server.hosting import HostingPolicy, load_hosting_file
    from openenv_gym.server.limits import Limits

    try:
        specs = [*args.specs, *(load_hosting_file(args.hosting) if args.hosting else [])]
    except (ValueError, OSError) as exc:
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
        openenv=args.openenv,
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


def _demo(args: argparse.Namespace) -> int:
    import numpy as np

    from openenv_gym import RemoteVectorEnv

    started = time.perf_counter()
    with RemoteVectorEnv(args.env_id, args.num_envs, num_servers=args.servers) as envs:
        ready = time.perf_counter()
        envs.reset(seed=0)
        returns, episode_returns = np.zeros(args.num_envs), []
        steps_started = time.perf_counter()
        for _ in range(args.steps):
            _, rewards, terms, truncs, _ = envs.step(envs.action_space.sample())
            returns += rewards
            for index in np.flatnonzero(terms | truncs):
                episode_returns.append(returns[index])
                returns[index] = 0.0
        elapsed = time.perf_counter() - steps_started
    env_steps = args.steps * args.num_envs
    print(
        f"{args.num_envs} x {args.env_id} on {args.servers} local server(s), "
        f"ready in {ready - started:.2f} s"
    )
    print(
        f"{env_steps} env-steps in {elapsed:.2f} s = {env_steps / elapsed:,.0f} env-steps/s; "
        f"{len(episode_returns)} episodes, mean return "
        f"{np.mean(episode_returns) if episode_returns else float('nan'):.1f} (random policy)"
    )
    return 0


def _mcp(args: argparse.Namespace) -> int:
    import asyncio

    from openenv_gym.mcp import serve_stdio
    from openenv_gym.server.catalog import EnvCatalog

    env = EnvCatalog([args.env_id]).factory(args.env_id, {})()
    try:
        if args.mode == "production":  # the operator prepares the world; agents cannot reset it
            env.reset(seed=args.seed, options=json.loads(args.reset_options or "null"))
        asyncio.run(serve_stdio(env, mode=args.mode, name=args.env_id))
    finally:
        env.close()
    return 0


def _docker_build(args: argparse.Namespace) -> int:
    from pathlib import Path

    from openenv_gym.providers.docker_image import build_image

    tag = build_image(
        tag=args.tag,
        offline=args.offline,
        base_image=args.base_image,
        requirements=Path(args.requirements) if args.requirements else None,
        rebuild_base=args.rebuild_base,
        progress=lambda line: print(line, flush=True),
    )
    print(f"built {tag}")
    return 0


def _docker_up(args: argparse.Namespace) -> int:
    from openenv_gym.providers.docker import DockerProvider

    provider = DockerProvider(
        args.specs or None,
        image=args.image,
        num_servers=args.num_servers,
        cpus=args.cpus,
        memory=args.memory,
        keep=True,
        token=args.token,
    )
    for container_id, url in zip(provider.container_ids, provider.urls, strict=True):
        print(f"{container_id[:12]}  {url}")
    if args.token is None:  # a new one: clients need it (export it as OPENENV_GYM_TOKEN)
        print(f"OPENENV_GYM_TOKEN={provider.token}")
    return 0


def _docker_ps(args: argparse.Namespace) -> int:
    from openenv_gym.providers.docker import CONTAINER_PORT, OWNER_LABEL, list_containers

    print(f"{'CONTAINER':12}  {'STATUS':10}  {'URL':26}  {'OWNER':24}  IMAGE")
    for container in list_containers():
        bindings = (container.ports or {}).get(f"{CONTAINER_PORT}/tcp") or []
        url = f"ws://127.0.0.1:{bindings[0]['HostPort']}" if bindings else "-"
        image = (container.image.tags or [container.image.short_id])[0]
        owner = container.labels.get(OWNER_LABEL, "?")
        print(f"{container.short_id:12}  {container.status:10}  {url:26}  {owner:24}  {image}")
    return 0


def _docker_down(args: argparse.Namespace) -> int:
    from openenv_gym.providers.docker import prune

    removed = prune(include_cli=True)
    print(f"removed {len(removed)} container(s) {' '.join(removed)}".rstrip())
    return 0


def _docker_prune(args: argparse.Namespace) -> int:
    from openenv_gym.providers.docker import prune

    removed = prune(include_cli=args.all)
    print(f"removed {len(removed)} orphaned container(s) {' '.join(removed)}".rstrip())
    return 0


def _add_docker_commands(commands: Any) -> None:
    from openenv_gym.providers.docker import DEFAULT_CPUS, DEFAULT_MEMORY
    from openenv_gym.providers.docker_image import DEFAULT_IMAGE

    docker = commands.add_parser("docker", help="build and run server containers")
    sub = docker.add_subparsers(dest="docker_command", required=True)
    build = sub.add_parser("build", help="build the server image (wheelhouse, base, image)")
    build.add_argument("--tag", default=DEFAULT_IMAGE)
    build.add_argument(
        "--offline",
        action="store_true",
        help="no registry: build a Debian base with debootstrap + docker import",
    )
    build.add_argument(
        "--base-image",
        help="base image (default python:3.11-slim, or the debootstrap base with --offline)",
    )
    build.add_argument("--requirements", help="requirements file of env packages to install")
    build.add_argument("--rebuild-base", action="store_true", help="rebuild the offline base")
    build.set_defaults(run=_docker_build)
    up = sub.add_parser("up", help="start server containers and print their URLs")
    up.add_argument("specs", nargs="*", help="env ids to host (default: any gymnasium id)")
    up.add_argument("--image", default=DEFAULT_IMAGE)
    up.add_argument("-n", "--num-servers", type=int, default=1)
    up.add_argument("--cpus", type=float, default=DEFAULT_CPUS, help="CPU limit per container")
    up.add_argument("--memory", default=DEFAULT_MEMORY, help="memory limit per container")
    up.add_argument(
        "--token",
        default=os.environ.get("OPENENV_GYM_TOKEN"),
        help="token the servers require (default: $OPENENV_GYM_TOKEN, else a new one, printed)",
    )
    up.set_defaults(run=_docker_up)
    sub.add_parser("ps", help="list openenv-gym containers").set_defaults(run=_docker_ps)
    sub.add_parser("down", help="remove the containers `up` started").set_defaults(run=_docker_down)
    prune = sub.add_parser("prune", help="remove containers whose owner process is gone")
    prune.add_argument("--all", action="store_true", help="also those started by `up`")
    prune.set_defaults(run=_docker_prune)


def _add_serve_limits(serve: argparse.ArgumentParser) -> None:
    """Add ``serve``'s address, limit and timeout flags; defaults come from ``ServerConfig``."""
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
        "--openenv",
        action=argparse.BooleanOptionalAction,
        default=config.openenv,
        help="also speak OpenEnv's protocol on the port: /ws, /health, /schema, /metadata",
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="openenv-gym", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True)

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
        "--announce",
        action="store_true",
        help="print 'openenv-gym ready URL' on stdout once listening",
    )
    serve.set_defaults(run=_serve)

    demo = commands.add_parser("demo", help="a short random rollout on local servers")
    demo.add_argument("env_id", nargs="?", default="CartPole-v1")
    demo.add_argument("--num-envs", type=int, default=64)
    demo.add_argument("--servers", type=int, default=2)
    demo.add_argument("--steps", type=int, default=500)
    demo.set_defaults(run=_demo)

    mcp = commands.add_parser("mcp", help="serve one env as MCP tools over stdio")
    mcp.add_argument("env_id", help="gymnasium id or module:attr entry point")
    mcp.add_argument(
        "--mode",
        choices=["simulation", "production"],
        default="simulation",
        help="simulation: reset/step/state + env tools; production: env tools only",
    )
    mcp.add_argument("--seed", type=int, help="production: the seed of the one reset at start")
    mcp.add_argument("--reset-options", help='production: JSON reset options, e.g. {"task": "x"}')
    mcp.set_defaults(run=_mcp)

    _add_docker_commands(commands)

    # Listed for --help; main() hands "bench ..." to the suite's own parser.
    commands.add_parser("bench", help="throughput, latency and wire size side by side")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        from openenv_gym.bench.suite import main as bench_main

        logging.basicConfig(level=logging.WARNING)
        return bench_main(argv[1:])
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose or args.command == "serve" else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        return int(args.run(args))
    except OpenEnvError as exc:  # expected failures get one clear line, not a traceback
        print(f"openenv-gym {args.command}: {exc}", file=sys.stderr)
        return 1
